#!/usr/bin/env bash
# Single-node KRaft Kafka broker for local development and tests, without Docker.
#
#   deploy/local/kafka.sh up | down | status | logs [-f|N] | reset | fetch | help
#
# Jars come from Maven Central via Maven (deploy/local/pom.xml) into
# .cache/kafka-<version>/libs; per-port state lives in .local/kafka-<port>/.
# See deploy/local/README.md. Works from any cwd.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_OPTS="${KAFKA_OPTS:-}"
KAFKA_CACHE_DIR="${KAFKA_CACHE_DIR:-$REPO_ROOT/.cache}"
KAFKA_M2_REPO="${KAFKA_M2_REPO:-$KAFKA_CACHE_DIR/m2}"
if [[ -z "${JAVA:-}" ]]; then
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi
fi
MVN="${MVN:-mvn}"

SCALA_BINARY=2.13
POM="$SCRIPT_DIR/pom.xml"
LOG4J2_CONFIG="$SCRIPT_DIR/log4j2.yaml"

log() { printf 'kafka.sh: %s\n' "$*"; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit "${2:-1}"; }

usage() {
  cat <<EOF
usage: $(basename "$0") up|down|status|logs [-f|N]|reset|fetch|help

  up      fetch jars if needed, format storage once, start the broker and wait
          until it answers (idempotent)
  down    stop the broker (SIGTERM, SIGKILL after \$KAFKA_STOP_TIMEOUT s; idempotent)
  status  exit 0 if running and answering, 3 if not running, 1 if the process
          is alive but the port does not answer
  logs    print the last 100 (or N) lines of the broker log; -f follows it
  reset   delete the data of this port's broker (it must be stopped)
  fetch   only download the jars into the cache

environment (current value):
  KAFKA_VERSION=$KAFKA_VERSION  KAFKA_HOST=$KAFKA_HOST  KAFKA_PORT=$KAFKA_PORT
  (controller port = KAFKA_PORT+1)  KAFKA_START_TIMEOUT=$KAFKA_START_TIMEOUT
  KAFKA_STOP_TIMEOUT=$KAFKA_STOP_TIMEOUT  KAFKA_HEAP_OPTS="$KAFKA_HEAP_OPTS"
  KAFKA_OPTS (extra JVM options)  JAVA=$JAVA  MVN=$MVN
  KAFKA_CACHE_DIR=$KAFKA_CACHE_DIR  KAFKA_M2_REPO=$KAFKA_M2_REPO
EOF
}

# ---------------------------------------------------------------- validation
[[ "$KAFKA_VERSION" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] \
  || die "KAFKA_VERSION must look like 4.4.0, got '$KAFKA_VERSION'" 2
KAFKA_MAJOR="${BASH_REMATCH[1]}"
KAFKA_MINOR="${BASH_REMATCH[2]}"
if (( KAFKA_MAJOR < 3 || (KAFKA_MAJOR == 3 && KAFKA_MINOR < 3) )); then
  die "KAFKA_VERSION $KAFKA_VERSION is too old: KRaft-only setup needs Kafka >= 3.3" 2
fi
[[ "$KAFKA_PORT" =~ ^[0-9]+$ ]] && (( KAFKA_PORT >= 1 && KAFKA_PORT <= 65534 )) \
  || die "KAFKA_PORT must be a port number (1..65534), got '$KAFKA_PORT'" 2
[[ "$KAFKA_START_TIMEOUT" =~ ^[0-9]+$ ]] || die "KAFKA_START_TIMEOUT must be whole seconds" 2
[[ "$KAFKA_STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "KAFKA_STOP_TIMEOUT must be whole seconds" 2
CONTROLLER_PORT=$((KAFKA_PORT + 1))

# The address clients (and the controller quorum) connect to: a wildcard bind
# address cannot be advertised.
case "$KAFKA_HOST" in
  0.0.0.0|::|'') CONNECT_HOST=127.0.0.1 ;;
  *) CONNECT_HOST="$KAFKA_HOST" ;;
esac

DIST_DIR="$KAFKA_CACHE_DIR/kafka-$KAFKA_VERSION"
LIBS_DIR="$DIST_DIR/libs"
LIBS_STAMP="$DIST_DIR/libs.complete"

STATE_DIR="$REPO_ROOT/.local/kafka-$KAFKA_PORT"
DATA_DIR="$STATE_DIR/data"
PROPS="$STATE_DIR/server.properties"
LOG_FILE="$STATE_DIR/kafka.log"
PID_FILE="$STATE_DIR/kafka.pid"
FORMAT_STAMP="$STATE_DIR/formatted.stamp"

# ------------------------------------------------------------------- helpers
sha256() { if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1; }

# take_lock FD FILE: serialise concurrent invocations (no-op without flock).
# fd 9 guards the per-port state dir, fd 8 the jar cache of a version; neither
# may leak into the broker (see cmd_up: 8>&- 9>&-).
take_lock() {
  command -v flock >/dev/null || return 0
  mkdir -p "$(dirname "$2")"
  eval "exec $1>\"\$2\""
  flock -w "$((KAFKA_START_TIMEOUT + KAFKA_STOP_TIMEOUT + 600))" "$1" \
    || die "timed out waiting for the lock $2 (another kafka.sh still running?)"
}

cmdline_of() {
  if [[ -r "/proc/$1/cmdline" ]]; then tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
  else ps -ww -o args= -p "$1" 2>/dev/null || true; fi
}

# Is PID our broker for this port (guards against recycled pids)?
is_our_broker() {
  local pid="$1" cmd
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(cmdline_of "$pid")"
  [[ "$cmd" == *kafka.Kafka* && "$cmd" == *"$PROPS"* ]]
}

# Prints the pid of our running broker (from the pid file, else by scanning
# /proc for our exact server.properties path); returns 1 if there is none.
broker_pid() {
  local pid=""
  [[ -f "$PID_FILE" ]] && pid="$(tr -dc '0-9' <"$PID_FILE")"
  if [[ -n "$pid" ]] && is_our_broker "$pid"; then echo "$pid"; return 0; fi
  if [[ -d /proc ]]; then
    # Fallback if the pid file got lost: the JVM whose command line names our
    # server.properties (one grep over all command lines, then verified).
    local f
    for f in $(grep -lsF -- "$PROPS" /proc/[0-9]*/cmdline 2>/dev/null || true); do
      pid="${f#/proc/}"; pid="${pid%/cmdline}"
      if is_our_broker "$pid"; then echo "$pid" >"$PID_FILE"; echo "$pid"; return 0; fi
    done
  fi
  return 1
}

port_answers() { # host port
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

port_listening() { # port -> 0 if something listens on it (any address)
  local port="$1"
  # Trust ss when it exists: a TCP connect can "succeed" through a transparent
  # proxy for addresses that are not local at all.
  if command -v ss >/dev/null && ss -Hltn >/dev/null 2>&1; then
    [[ -n "$(ss -Hltn "( sport = :$port )" 2>/dev/null)" ]]
    return
  fi
  port_answers "$CONNECT_HOST" "$port" || port_answers 127.0.0.1 "$port"
}

port_owner() { # port -> a human description of the listening process, if knowable
  local port="$1" out=""
  if command -v ss >/dev/null; then
    out="$(ss -Hltnp "( sport = :$port )" 2>/dev/null | grep -o 'users:(.*)' | head -n1 || true)"
  fi
  if [[ -z "$out" ]] && command -v lsof >/dev/null; then
    out="$(lsof -nP -iTCP:"$port" -sTCP:LISTEN 2>/dev/null | awk 'NR>1 {print $1" pid="$2; exit}' || true)"
  fi
  local pid
  pid="$(grep -o 'pid=[0-9]*' <<<"$out" | head -n1 | cut -d= -f2 || true)"
  if [[ -n "$pid" ]]; then
    out="$out: $(cmdline_of "$pid" | cut -c1-200)"
  fi
  printf '%s' "${out:-unknown process (run: ss -ltnp | grep :$port)}"
}

tail_log() { # lines
  if [[ -s "$LOG_FILE" ]]; then
    echo "----- last $1 lines of $LOG_FILE -----" >&2
    tail -n "$1" "$LOG_FILE" >&2
    echo "-----" >&2
    local first
    first="$(grep -m1 -E '^\[[^]]*\] (ERROR|FATAL) ' "$LOG_FILE" | cut -c1-400 || true)"
    [[ -n "$first" ]] && echo "first error: $first" >&2
  else
    echo "(log $LOG_FILE is empty)" >&2
  fi
}

java_major() {
  local v
  v="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | head -n1)"
  v="${v#1.}"               # 1.8 -> 8
  printf '%s' "${v%%.*}"
}

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 \
    || die "java not found ('$JAVA'). Install a JDK/JRE >= $(min_java) (e.g. apt-get install openjdk-17-jre-headless) or set JAVA=/path/to/java or JAVA_HOME."
  local v need
  v="$(java_major)"; need="$(min_java)"
  [[ "$v" =~ ^[0-9]+$ ]] || die "could not determine the Java version of '$JAVA'"
  (( v >= need )) || die "Kafka $KAFKA_VERSION needs Java >= $need, but '$JAVA' is Java $v. Set JAVA or JAVA_HOME to a newer JDK."
}
min_java() { if (( KAFKA_MAJOR >= 4 )); then echo 17; else echo 11; fi; }

# ------------------------------------------------------------------ the jars
libs_complete() {
  [[ -f "$LIBS_STAMP" && -f "$LIBS_DIR/kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar" ]] \
    && [[ "$(cat "$LIBS_STAMP")" == "$(sha256 "$POM")" ]]
}

fetch_jars() {
  libs_complete && return 0
  take_lock 8 "$KAFKA_CACHE_DIR/kafka-$KAFKA_VERSION.lock"
  libs_complete && return 0      # somebody else finished it while we waited
  command -v "$MVN" >/dev/null 2>&1 \
    || die "the Kafka $KAFKA_VERSION jars are not cached in $LIBS_DIR and Maven ('$MVN') is not installed. Install Maven (apt-get install maven) or set MVN."
  local tmp="$DIST_DIR/libs.partial" mvn_log="$DIST_DIR/mvn.log" t0=$SECONDS
  rm -rf "$tmp" "$LIBS_DIR" "$LIBS_STAMP"
  mkdir -p "$tmp"
  local profile=()
  (( KAFKA_MAJOR < 4 )) && profile=(-Dkafka.major=3)
  log "fetching org.apache.kafka:kafka_${SCALA_BINARY}:$KAFKA_VERSION with Maven into $LIBS_DIR ..."
  if ! "$MVN" -B -q -f "$POM" -Dmaven.repo.local="$KAFKA_M2_REPO" \
        -Dkafka.version="$KAFKA_VERSION" ${profile[@]+"${profile[@]}"} \
        dependency:copy-dependencies -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
    tail -n 30 "$mvn_log" >&2 || true
    rm -rf "$tmp"
    die "Maven could not fetch Kafka $KAFKA_VERSION (full output: $mvn_log). Is Maven Central reachable and does the version exist?"
  fi
  [[ -f "$tmp/kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar" ]] \
    || { rm -rf "$tmp"; die "Maven finished but kafka_${SCALA_BINARY}-${KAFKA_VERSION}.jar is missing (see $mvn_log)"; }
  mv "$tmp" "$LIBS_DIR"
  sha256 "$POM" >"$LIBS_STAMP"
  log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------- configuration
java_cmd() { # main-class args... ; prints nothing, fills JAVA_CMD
  local logopt
  if (( KAFKA_MAJOR >= 4 )); then
    logopt="-Dlog4j2.configurationFile=$LOG4J2_CONFIG"
  else
    logopt="-Dlog4j.configuration=file:$STATE_DIR/log4j.properties"
  fi
  # shellcheck disable=SC2206  # word splitting of the *_OPTS variables is intended
  JAVA_CMD=("$JAVA" $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
            -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
            "-Dkafka.logs.dir=$STATE_DIR" "$logopt" $KAFKA_OPTS
            -cp "$LIBS_DIR/*" "$@")
}

write_config() {
  mkdir -p "$STATE_DIR" "$DATA_DIR"
  cat >"$PROPS.tmp" <<EOF
# Generated by deploy/local/kafka.sh on every 'up' -- edit the script, not this file.
# Kafka $KAFKA_VERSION, single node KRaft (combined broker + controller).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$CONNECT_HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$CONNECT_HOST:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA_DIR

# The project creates its topics itself.
auto.create.topics.enable=false
num.partitions=12
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Small machine: few threads, and a log-cleaner buffer that fits a 512 MiB heap
# (Faust changelog topics are compacted, so the cleaner must run).
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
log.retention.hours=168
EOF
  mv "$PROPS.tmp" "$PROPS"
  if (( KAFKA_MAJOR < 4 )); then
    cat >"$STATE_DIR/log4j.properties" <<'EOF'
# Generated by deploy/local/kafka.sh (Kafka 3.x uses log4j 1.x / reload4j).
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
EOF
  fi
}

new_cluster_id() { # Kafka's Uuid format: 16 random bytes, base64url, no padding, not starting with '-'
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* && ${#id} -eq 22 ]] && { printf '%s' "$id"; return; }
  done
}

format_storage() {
  if [[ -f "$FORMAT_STAMP" && -f "$DATA_DIR/meta.properties" ]]; then
    local was
    was="$(sed -n 's/^kafka\.version=//p' "$FORMAT_STAMP")"
    if [[ -n "$was" && "$was" != "$KAFKA_VERSION" ]]; then
      log "note: $DATA_DIR was formatted by Kafka $was; if Kafka $KAFKA_VERSION refuses it (e.g. a downgrade), run: KAFKA_PORT=$KAFKA_PORT $0 reset"
    fi
    return 0
  fi
  rm -rf "$DATA_DIR" "$FORMAT_STAMP"
  mkdir -p "$DATA_DIR"
  local id out
  id="$(new_cluster_id)"
  java_cmd kafka.tools.StorageTool format -t "$id" -c "$PROPS"
  log "formatting $DATA_DIR (cluster id $id)"
  if ! out="$("${JAVA_CMD[@]}" 2>&1 </dev/null)"; then
    printf '%s\n' "$out" >&2
    rm -rf "$DATA_DIR"
    die "formatting the storage failed"
  fi
  printf 'cluster.id=%s\nkafka.version=%s\n' "$id" "$KAFKA_VERSION" >"$FORMAT_STAMP"
}

# ------------------------------------------------------------------ commands
wait_ready() { # pid -> 0 when the broker answers; dies otherwise
  local pid="$1" deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      tail_log 30
      die "the broker (pid $pid) exited during start-up; full log: $LOG_FILE"
    fi
    if grep -q 'Kafka Server started' "$LOG_FILE" 2>/dev/null \
        && port_answers "$CONNECT_HOST" "$KAFKA_PORT"; then
      return 0
    fi
    sleep 0.5
  done
  tail_log 30
  log "stopping the broker (pid $pid) that did not start within ${KAFKA_START_TIMEOUT}s"
  stop_pid "$pid"
  die "timed out after ${KAFKA_START_TIMEOUT}s waiting for Kafka on $CONNECT_HOST:$KAFKA_PORT (raise KAFKA_START_TIMEOUT?); full log: $LOG_FILE"
}

cmd_up() {
  take_lock 9 "$STATE_DIR/.lock"
  local pid t0=$SECONDS
  if pid="$(broker_pid)"; then
    if port_answers "$CONNECT_HOST" "$KAFKA_PORT"; then
      log "already running: Kafka on $CONNECT_HOST:$KAFKA_PORT (pid $pid), log: $LOG_FILE"
      return 0
    fi
    log "broker process $pid exists but does not answer yet; waiting ..."
    wait_ready "$pid"
    log "Kafka is up on $CONNECT_HOST:$KAFKA_PORT (pid $pid), log: $LOG_FILE"
    return 0
  fi
  rm -f "$PID_FILE"

  check_java
  local p
  for p in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
    if port_listening "$p"; then
      local what="broker"; [[ "$p" == "$CONTROLLER_PORT" ]] && what="controller (KAFKA_PORT+1)"
      die "port $p for the Kafka $what is already in use by another process: $(port_owner "$p"). Stop it or choose another KAFKA_PORT."
    fi
  done
  fetch_jars
  write_config
  format_storage

  if [[ -s "$LOG_FILE" ]]; then mv -f "$LOG_FILE" "$LOG_FILE.1"; fi
  java_cmd kafka.Kafka "$PROPS"
  printf '%s starting: %s\n' "$(date '+%F %T')" "${JAVA_CMD[*]}" >"$LOG_FILE"
  log "starting Kafka $KAFKA_VERSION on $CONNECT_HOST:$KAFKA_PORT (controller :$CONTROLLER_PORT) ..."
  # setsid (only without job control, so that it execs instead of forking and
  # $! stays the JVM's pid): own session, a Ctrl-C in the calling terminal/make
  # does not reach the broker. 8>&- 9>&-: do not hand our lock fds to the broker.
  if [[ $- != *m* ]] && command -v setsid >/dev/null; then
    setsid "${JAVA_CMD[@]}" </dev/null >>"$LOG_FILE" 2>&1 8>&- 9>&- &
  else
    nohup "${JAVA_CMD[@]}" </dev/null >>"$LOG_FILE" 2>&1 8>&- 9>&- &
  fi
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_ready "$pid"
  log "Kafka is up on $CONNECT_HOST:$KAFKA_PORT (pid $pid) after $((SECONDS - t0)) s; log: $LOG_FILE"
}

stop_pid() { # pid: SIGTERM, wait, SIGKILL
  local pid="$1" deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.3; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    local i; for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # Our own child when called from wait_ready: reap it quietly.
  wait "$pid" 2>/dev/null || true
}

cmd_down() {
  take_lock 9 "$STATE_DIR/.lock"
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PID_FILE"
    log "not running (port $KAFKA_PORT)"
    return 0
  fi
  log "stopping Kafka on port $KAFKA_PORT (pid $pid) ..."
  local t0=$SECONDS
  stop_pid "$pid"
  rm -f "$PID_FILE"
  log "stopped after $((SECONDS - t0)) s"
}

cmd_status() {
  local pid
  if ! pid="$(broker_pid)"; then
    echo "not running (Kafka on port $KAFKA_PORT)"
    return 3
  fi
  if port_answers "$CONNECT_HOST" "$KAFKA_PORT"; then
    echo "running: Kafka on $CONNECT_HOST:$KAFKA_PORT (pid $pid), log: $LOG_FILE"
    return 0
  fi
  echo "process $pid is alive but $CONNECT_HOST:$KAFKA_PORT does not answer (starting or unhealthy), log: $LOG_FILE"
  return 1
}

cmd_logs() {
  [[ -f "$LOG_FILE" ]] || die "no log yet at $LOG_FILE"
  case "${1:-}" in
    -f|--follow) exec tail -n 100 -F "$LOG_FILE" ;;
    '') exec tail -n 100 "$LOG_FILE" ;;
    *) [[ "$1" =~ ^[0-9]+$ ]] || die "usage: logs [-f|N]" 2; exec tail -n "$1" "$LOG_FILE" ;;
  esac
}

cmd_reset() {
  local pid
  take_lock 9 "$STATE_DIR/.lock"
  if pid="$(broker_pid)"; then
    die "Kafka on port $KAFKA_PORT is running (pid $pid); run 'down' first"
  fi
  rm -rf "$DATA_DIR" "$FORMAT_STAMP"
  log "deleted $DATA_DIR (it is re-formatted on the next 'up')"
}

case "${1:-help}" in
  up) cmd_up ;;
  down|stop) cmd_down ;;
  status) cmd_status ;;
  logs) cmd_logs "${2:-}" ;;
  reset) cmd_reset ;;
  fetch) fetch_jars; log "jars in $LIBS_DIR" ;;
  help|-h|--help) usage ;;
  *) usage >&2; exit 2 ;;
esac
