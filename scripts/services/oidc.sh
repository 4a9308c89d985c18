# shellcheck shell=bash
# A real OpenID Connect provider (PyPI `oidc-provider-mock`, needs Python >= 3.12) on
# 127.0.0.1. Source after scripts/lib/service.sh.
#
#   start_oidc      # exports PORTCULLIS_TEST_OIDC_URL (the issuer, e.g. http://127.0.0.1:PORT)

# The first Python >= 3.12 found: on PATH, then under pyenv.
oidc_python() {
  local candidate
  for candidate in python3.13 python3.12 "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3.1[2-9]; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "oidc: no Python >= 3.12 found (oidc-provider-mock needs one)" >&2
  return 1
}

start_oidc() {
  local python port
  python=$(oidc_python) || return 1
  "$python" -c 'import oidc_provider_mock' 2>/dev/null \
    || { echo "oidc: oidc-provider-mock is not installed; run scripts/install-deps" >&2; return 1; }
  port=$(service_free_port)
  service_start oidc "$python" -m oidc_provider_mock -p "$port" -H 127.0.0.1
  service_wait_cmd oidc 60 curl -fsS -o /dev/null "http://127.0.0.1:$port/.well-known/openid-configuration" \
    || return 1
  export PORTCULLIS_TEST_OIDC_URL="http://127.0.0.1:$port"
}
