#!/usr/bin/env bash
# One crypto stack: with every feature on, the libraries and binaries build on aws-lc-rs only.
# No ring (a second rustls provider makes rustls's process-level default ambiguous), no
# OpenSSL or native-tls, no RustCrypto `rsa` (RUSTSEC-2023-0071). Dev-dependencies are
# left out: the tests turn ring on on purpose (tests/crypto_providers.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."

status=0
for crate in ring openssl-sys native-tls rsa; do
  tree=$(cargo tree --workspace --all-features --locked -e normal,build -i "$crate" 2>/dev/null || true)
  if [[ -n "$tree" ]]; then
    echo "one-crypto-stack: $crate is in the workspace's dependency graph:" >&2
    echo "$tree" | head -n 20 >&2
    status=1
  fi
done
tree=$(cargo tree --workspace --all-features --locked -e normal,build -i aws-lc-rs 2>/dev/null || true)
if [[ -z "$tree" ]]; then
  echo "one-crypto-stack: aws-lc-rs is not in the graph at all" >&2
  status=1
fi
[[ $status -eq 0 ]] && echo "one-crypto-stack: ok (aws-lc-rs only)"
exit $status
