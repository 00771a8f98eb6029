#!/usr/bin/env bash
# run.sh COMMAND...: `make run`. Start the local broker, run COMMAND in the foreground, and on
# the way out (Ctrl-C included) stop the broker so that nothing is left behind.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
stop() {
  trap - EXIT INT TERM
  echo
  echo "stopping the local Kafka broker..."
  "$here/kafka.sh" down
}
trap stop EXIT
# Ctrl-C reaches the pipeline too (same process group); it shuts down cleanly, then we stop Kafka.
trap ':' INT
trap 'exit 143' TERM
"$here/kafka.sh" up || exit $?
"$@"
status=$?
# 130 = stopped with Ctrl-C: that is how a run ends.
[ "$status" -eq 130 ] && status=0
exit "$status"
