#!/usr/bin/env bash
# kcat.sh: make sure kcat is available for the guides' examples (tests/integration/test_guides.py).
# Installs Debian's `kcat` package when it is missing (as root, or through sudo).
set -euo pipefail
if command -v kcat >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1; then
  sudo="sudo -n"
else
  echo "kcat.sh: kcat is missing and I cannot install it (not root, no sudo)." >&2
  echo "kcat.sh: install Debian's 'kcat' package." >&2
  exit 1
fi
echo "kcat.sh: installing Debian's kcat package (once) ..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2 || true
$sudo apt-get install -y -qq --no-install-recommends kcat >&2
