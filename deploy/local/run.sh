#!/usr/bin/env bash
# run.sh COMMAND...: `make run`. Start the local broker, run COMMAND in the foreground, and on
# the way out (Ctrl-C included) stop the broker so that nothing is left behind.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# If our output goes through a pipe that Ctrl-C closed (make run | tee), a write must not kill
# this script before it has stopped the broker.
trap '' PIPE
stop() {
  trap - EXIT INT TERM
  { echo; echo "stopping the local Kafka broker..."; "$here/kafka.sh" down; } 2>&1 \
    || "$here/kafka.sh" down >/dev/null 2>&1
}
trap stop EXIT
# Ctrl-C reaches the pipeline too (same process group); it shuts down cleanly, then we stop Kafka.
trap ':' INT
trap 'exit 143' TERM
# One place sets the port: the pipeline connects to the broker this script starts.
export KAFKA_PORT="${KAFKA_PORT:-9092}"
export JOURNEY_KAFKA_BOOTSTRAP="${JOURNEY_KAFKA_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}"
"$here/kafka.sh" up || exit $?
"$@"
status=$?
# 130 = stopped with Ctrl-C: that is how a run ends.
[ "$status" -eq 130 ] && status=0
exit "$status"
