# shellcheck shell=bash
# A throwaway OpenLDAP slapd on 127.0.0.1 for tests, seeded with people and groups. Source
# after scripts/lib/service.sh.
#
#   start_ldap    # exports PORTCULLIS_TEST_LDAP_URL, PORTCULLIS_TEST_LDAP_BASE,
#                 #         PORTCULLIS_TEST_LDAP_BIND_DN, PORTCULLIS_TEST_LDAP_BIND_PASSWORD
#
# The seed (scripts/services/ldap-seed.ldif) has people alice, bob, carol and dave under
# ou=people, groupOfNames under ou=groups (nested: `release` contains the `deployers` group),
# and a service account under ou=services. Each person's password is `<name>-password`.
# The memberof overlay maintains `memberOf` on people. slapd runs in the foreground
# (`-d 0`) so it is stopped by PID with everything else.

start_ldap() {
  local dir port slapd
  slapd=$(command -v slapd || echo /usr/sbin/slapd)
  [[ -x $slapd ]] || { echo "ldap: slapd not found; run scripts/install-deps" >&2; return 1; }
  dir="$PORTCULLIS_SERVICE_DIR/ldap"
  mkdir -p "$dir/db"
  cat >"$dir/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile $dir/slapd.pid
argsfile $dir/slapd.args
database mdb
maxsize 104857600
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw admin-secret
directory $dir/db
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint true
CONF
  port=$(service_free_port)
  service_start ldap "$slapd" -d 0 -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/"
  service_wait_tcp ldap "$port" 30 || return 1
  ldapadd -x -H "ldap://127.0.0.1:$port/" -D "cn=admin,dc=example,dc=org" -w admin-secret \
    -f "$(dirname "${BASH_SOURCE[0]}")/ldap-seed.ldif" >"$dir/seed.log" 2>&1 \
    || { cat "$dir/seed.log" >&2; return 1; }
  export PORTCULLIS_TEST_LDAP_URL="ldap://127.0.0.1:$port"
  export PORTCULLIS_TEST_LDAP_BASE="dc=example,dc=org"
  export PORTCULLIS_TEST_LDAP_BIND_DN="cn=reader,ou=services,dc=example,dc=org"
  export PORTCULLIS_TEST_LDAP_BIND_PASSWORD="reader-password"
}
