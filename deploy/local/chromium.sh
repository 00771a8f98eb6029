#!/usr/bin/env bash
# chromium.sh: make sure headless Chromium is available for the dashboard's browser test.
# Installs Debian's `chromium` package when it is missing (as root, or through sudo).
set -euo pipefail
for candidate in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
    command -v "$candidate"
    exit 0
  fi
done
if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1; then
  sudo="sudo -n"
else
  echo "chromium.sh: Chromium is missing and I cannot install it (not root, no sudo)." >&2
  echo "chromium.sh: install Debian's 'chromium' package, or set CHROMIUM=/path/to/chrome." >&2
  exit 1
fi
echo "chromium.sh: installing Debian's chromium package (once) ..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2 || true
if ! $sudo apt-get install -y -qq --no-install-recommends chromium >&2; then
  echo "chromium.sh: apt-get install chromium failed; install it by hand or set CHROMIUM." >&2
  exit 1
fi
command -v chromium
