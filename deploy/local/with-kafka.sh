#!/usr/bin/env bash
# with-kafka.sh PORT COMMAND...: run COMMAND against a local broker on PORT, started here and
# stopped again afterwards whatever COMMAND's outcome. Used by `make test` and `make bench`.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="$1"; shift
export KAFKA_PORT="$port"
export JOURNEY_KAFKA_BOOTSTRAP="127.0.0.1:$port"
stop() { KAFKA_PORT="$port" "$here/kafka.sh" down; }
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$here/kafka.sh" up || exit $?
"$@"
