# shellcheck shell=bash
# moto (PyPI `moto[server]`) as STS/IAM and S3 on 127.0.0.1. Source after scripts/lib/service.sh.
#
#   start_moto      # exports PORTCULLIS_TEST_MOTO_URL (an endpoint URL for any AWS SDK)
#
# moto accepts AssumeRole but ignores PolicyArns and SourceIdentity and validates neither
# durations nor session names, so those rules are tested in our own code; moto proves the
# SDK round trip (GetCallerIdentity with the vended keys). As S3 it honours conditional
# writes (`If-None-Match: *` on PutObject → 412), which portcullis-delivery's S3Store relies
# on for immutable revisions; it does not check signatures (any keys do).

moto_python() { command -v python3; }

start_moto() {
  local python port
  python=$(moto_python) || return 1
  "$python" -c 'import moto.server' 2>/dev/null \
    || { echo "moto: moto[server] is not installed; run scripts/install-deps" >&2; return 1; }
  port=$(service_free_port)
  service_start moto "$python" -m moto.server -H 127.0.0.1 -p "$port"
  service_wait_cmd moto 60 curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" || return 1
  export PORTCULLIS_TEST_MOTO_URL="http://127.0.0.1:$port"
}
