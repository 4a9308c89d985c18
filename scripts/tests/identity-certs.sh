#!/usr/bin/env bash
# Makes SPIFFE X.509-SVID test certificates with the openssl command line, into DIR:
#   root CA -> intermediate -> leaves, all for trust domain prod.example (P-256 keys, PKCS#8):
#   bundle.pem                       the trust bundle (the root)
#   server.pem / server.key          spiffe://prod.example/deploy-gate, DNS:localhost, IP:127.0.0.1
#   client.pem / client.key          spiffe://prod.example/ci
#   proxy.pem / proxy.key            spiffe://prod.example/envoy
#   wrong-domain, expired, leaf-ca, two-uris, non-spiffe, dns-only (.pem/.key): SVIDs that
#   break one rule each, signed by the same intermediate
#   other-bundle.pem, other-client.pem/.key: a second trust domain, other.example
# Every leaf .pem is the chain leaf + intermediate, as SPIFFE helpers write svid.pem.
# Used by tests/tls.rs; run by hand: scripts/tests/identity-certs.sh /tmp/certs
# Without DIR (as scripts/test runs every scripts/tests/*.sh) it checks itself: the set is
# made in a temporary folder and openssl verifies that the good leaves chain to the bundle
# and that the expired leaf and the other trust domain's leaf do not.
set -euo pipefail
if [[ $# -eq 0 ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$0" "$tmp" >/dev/null
  for leaf in server client proxy; do
    openssl verify -CAfile "$tmp/bundle.pem" -untrusted "$tmp/inter.pem" "$tmp/$leaf.leaf.pem" >/dev/null
  done
  if openssl verify -CAfile "$tmp/bundle.pem" -untrusted "$tmp/inter.pem" "$tmp/expired.leaf.pem" >/dev/null 2>&1; then
    echo "identity-certs.sh: the expired leaf verifies" >&2; exit 1
  fi
  if openssl verify -CAfile "$tmp/bundle.pem" "$tmp/other-client.leaf.pem" >/dev/null 2>&1; then
    echo "identity-certs.sh: other.example's leaf verifies against prod.example's bundle" >&2; exit 1
  fi
  echo "identity-certs.sh: certificate set verified"
  exit 0
fi
dir=$1
mkdir -p "$dir"
cd "$dir"

cat > ext.cnf <<'CNF'
[ca_inter]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://prod.example

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment, keyAgreement
extendedKeyUsage = serverAuth, clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://prod.example/deploy-gate, DNS:localhost, IP:127.0.0.1

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment, keyAgreement
extendedKeyUsage = serverAuth, clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://prod.example/ci

[proxy]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://prod.example/envoy

[wrong-domain]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://other.example/ci

[leaf-ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://prod.example/ci

[two-uris]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://prod.example/ci, URI:spiffe://prod.example/admin

[non-spiffe]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:https://prod.example/ci

[dns-only]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = DNS:ci.prod.example

[other-client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://other.example/ci
CNF

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# Roots: self-signed.
key root.key
openssl req -x509 -new -key root.key -subj "/O=prod.example/CN=root" -days 3650 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectAltName=URI:spiffe://prod.example" -out root.pem
cp root.pem bundle.pem
key other-root.key
openssl req -x509 -new -key other-root.key -subj "/O=other.example/CN=root" -days 3650 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectAltName=URI:spiffe://other.example" -out other-root.pem
cp other-root.pem other-bundle.pem

# sign NAME ISSUER SECTION [DAYS]: a CSR for NAME.key signed by ISSUER.pem/ISSUER.key.
sign() {
  local name=$1 issuer=$2 section=$3 days=${4:-825}
  openssl req -new -key "$name.key" -subj "/O=prod.example/CN=$name" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
    -days "$days" -extfile ext.cnf -extensions "$section" -out "$name.leaf.pem" 2>/dev/null
}

key inter.key
sign inter root ca_inter 1825
mv inter.leaf.pem inter.pem

for name in server client proxy wrong-domain leaf-ca two-uris non-spiffe dns-only; do
  key "$name.key"
  sign "$name" inter "$name"
  cat "$name.leaf.pem" inter.pem > "$name.pem"
done

key other-client.key
sign other-client other-root other-client
cp other-client.leaf.pem other-client.pem

# Expired: `openssl ca` is the command line tool that sets explicit validity dates.
key expired.key
openssl req -new -key expired.key -subj "/O=prod.example/CN=expired" -out expired.csr
mkdir -p ca-db
: > ca-db/index.txt
echo 1000 > ca-db/serial
cat > ca.cnf <<CNF
[ca]
default_ca = inter
[inter]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
certificate = inter.pem
private_key = inter.key
default_md = sha256
policy = anything
copy_extensions = none
[anything]
organizationName = optional
commonName = supplied
[expired]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
authorityKeyIdentifier = keyid:always
subjectAltName = URI:spiffe://prod.example/ci
CNF
openssl ca -batch -config ca.cnf -extensions expired -notext \
  -startdate 20200101000000Z -enddate 20210101000000Z \
  -in expired.csr -out expired.leaf.pem 2>/dev/null
cat expired.leaf.pem inter.pem > expired.pem

rm -f ./*.csr
echo "certificates in $dir"
