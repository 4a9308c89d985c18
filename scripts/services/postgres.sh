# shellcheck shell=bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for tests. Source after scripts/lib/service.sh.
#
#   start_postgres      # exports PORTCULLIS_TEST_POSTGRES_URL (superuser, database postgres)
#
# The cluster lives under $PORTCULLIS_SERVICE_DIR and is stopped (by PID) when the shell exits.
# As root, initdb and postgres run as the `postgres` user, which Debian's package creates.

_postgres_bin() {
  local initdb
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  [[ -n $initdb ]] || initdb=$(command -v initdb || true)
  [[ -n $initdb ]] || { echo "postgres: initdb not found; run scripts/install-deps" >&2; return 1; }
  dirname "$initdb"
}

start_postgres() {
  local bin dir port as=()
  bin=$(_postgres_bin) || return 1
  dir="$PORTCULLIS_SERVICE_DIR/postgres"
  mkdir -p "$dir"
  if [[ $(id -u) -eq 0 ]]; then
    chmod o+x "$PORTCULLIS_SERVICE_DIR"   # let postgres reach its folder (no listing)
    chown postgres: "$dir"
    as=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  port=$(service_free_port)
  # fsync off: a test cluster is thrown away, so durability buys nothing but time.
  service_start postgres "${as[@]}" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200
  service_wait_cmd postgres 60 "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres || return 1
  export PORTCULLIS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
}
