# shellcheck shell=bash
# Start real services on 127.0.0.1 for tests, wait until they answer, stop them on exit.
#
#   source scripts/lib/service.sh
#   port=$(service_free_port)
#   service_start web python3 -m http.server --bind 127.0.0.1 "$port"
#   service_wait_tcp web "$port" 10          # or: service_wait_cmd web 10 curl -fsS URL
#   ...                                       # every started service is stopped on EXIT
#
# Services that daemonize themselves (slapd, pg_ctl) are registered from their pid file with
# service_adopt NAME PIDFILE. Logs go to $PORTCULLIS_SERVICE_DIR/NAME.log and are printed
# when a service fails to come up. Only PIDs this shell started or adopted are ever signalled.

if [[ -z ${PORTCULLIS_SERVICE_DIR:-} ]]; then
  PORTCULLIS_SERVICE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-services.XXXXXX")
  _PORTCULLIS_SERVICE_DIR_OWNED=1
fi
export PORTCULLIS_SERVICE_DIR
declare -gA _PORTCULLIS_SERVICE_PIDS=()
_PORTCULLIS_SERVICE_TRAP_SET=${_PORTCULLIS_SERVICE_TRAP_SET:-}

_service_log() { printf 'service: %s\n' "$*" >&2; }

# A TCP port on 127.0.0.1 that was free a moment ago.
service_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_service_install_trap() {
  if [[ -z $_PORTCULLIS_SERVICE_TRAP_SET ]]; then
    trap '_service_exit' EXIT
    trap 'exit 130' INT TERM
    _PORTCULLIS_SERVICE_TRAP_SET=1
  fi
}

# service_start NAME COMMAND [ARGS...]: run COMMAND in the background, logging to NAME.log.
service_start() {
  local name=$1; shift
  local log="$PORTCULLIS_SERVICE_DIR/$name.log"
  "$@" >"$log" 2>&1 &
  _PORTCULLIS_SERVICE_PIDS[$name]=$!
  echo "$!" >"$PORTCULLIS_SERVICE_DIR/$name.pid"
  _service_install_trap
  _service_log "started $name (pid $!, log $log)"
}

# service_adopt NAME PIDFILE: stop this daemon on exit too.
service_adopt() {
  local name=$1 pidfile=$2 pid
  pid=$(<"$pidfile") || { _service_log "$name: no pid file $pidfile"; return 1; }
  _PORTCULLIS_SERVICE_PIDS[$name]=$pid
  _service_install_trap
  _service_log "adopted $name (pid $pid)"
}

# service_pid NAME: the PID of a started or adopted service.
service_pid() { printf '%s\n' "${_PORTCULLIS_SERVICE_PIDS[$1]:-}"; }

_service_alive() {
  local pid=${_PORTCULLIS_SERVICE_PIDS[$1]:-}
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

_service_fail() {
  local name=$1; shift
  _service_log "$name: $*"
  if [[ -f "$PORTCULLIS_SERVICE_DIR/$name.log" ]]; then
    _service_log "last lines of $name.log:"
    tail -n 20 "$PORTCULLIS_SERVICE_DIR/$name.log" >&2
  fi
  return 1
}

# service_wait_cmd NAME TIMEOUT_SECONDS COMMAND [ARGS...]: wait until COMMAND succeeds.
# Fails at once if the service died, or after TIMEOUT_SECONDS.
service_wait_cmd() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  while true; do
    if ! _service_alive "$name"; then
      _service_fail "$name" "exited before it answered"
      return 1
    fi
    if "$@" >/dev/null 2>&1; then
      _service_log "$name is up"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      _service_fail "$name" "did not answer within ${timeout}s"
      return 1
    fi
    sleep 0.1
  done
}

_service_tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# service_wait_tcp NAME PORT [TIMEOUT_SECONDS=30]: wait until 127.0.0.1:PORT accepts.
service_wait_tcp() {
  service_wait_cmd "$1" "${3:-30}" _service_tcp_open "$2"
}

# service_stop NAME: SIGTERM, then SIGKILL after 10 s.
service_stop() {
  local name=$1 pid=${_PORTCULLIS_SERVICE_PIDS[$1]:-} i
  [[ -n $pid ]] || return 0
  unset "_PORTCULLIS_SERVICE_PIDS[$name]"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { _service_log "stopped $name"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  _service_log "killed $name (it ignored SIGTERM)"
}

# On exit: stop everything, and remove the log folder if this shell made it (logs of a
# service that failed to start were already printed).
_service_exit() {
  service_stop_all
  if [[ -n ${_PORTCULLIS_SERVICE_DIR_OWNED:-} ]]; then rm -rf "$PORTCULLIS_SERVICE_DIR"; fi
}

# service_stop_all: stop every service this shell started or adopted.
service_stop_all() {
  local name
  for name in "${!_PORTCULLIS_SERVICE_PIDS[@]}"; do
    service_stop "$name"
  done
}
