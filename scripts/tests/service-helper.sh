#!/usr/bin/env bash
# Tests for scripts/lib/service.sh against a real server (python3 -m http.server).
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../lib/service.sh
source scripts/lib/service.sh

passed=0 failed=0
check() {
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   - $what"
  else failed=$((failed + 1)); echo "FAIL - $what"; fi
}
not() { ! "$@"; }
dead() { ! kill -0 "$1" 2>/dev/null; }
is_port() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536)); }

port=$(service_free_port)
check "free port is a port number" is_port "$port"

service_start web python3 -m http.server --bind 127.0.0.1 "$port"
check "waits until the server accepts" service_wait_tcp web "$port" 20
check "the server answers HTTP" curl -fsS -o /dev/null "http://127.0.0.1:$port/"
check "service_wait_cmd runs a probe" service_wait_cmd web 5 curl -fsS -o /dev/null "http://127.0.0.1:$port/"
web_pid=$(service_pid web)
service_stop web
check "stop ends the process" dead "$web_pid"
check "the port is closed after stop" not _service_tcp_open "$port"

service_start dies sh -c 'echo "config error: no such file" >&2; exit 3'
check "a service that dies fails the wait at once" not service_wait_tcp dies "$(service_free_port)" 20
check "its log is kept" grep -q "config error" "$PORTCULLIS_SERVICE_DIR/dies.log"

service_start silent sleep 30
start=$SECONDS
check "a service that never answers times out" not service_wait_tcp silent "$(service_free_port)" 1
check "the timeout is honoured" [ $((SECONDS - start)) -le 5 ]
silent_pid=$(service_pid silent)
service_stop_all
check "stop_all stops the rest" dead "$silent_pid"

echo "service-helper: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
