#!/usr/bin/env bash
# scripts/load-policy-delivery builds examples/policy-delivery with every feature its
# [[example]] requires: when `graphql` and `edge` became required the script stopped
# building, and nothing noticed until the next measurement.
set -euo pipefail
cd "$(dirname "$0")/../.."
required=$(awk '/^name = "policy-delivery"$/ { found = 1 } found && /^required-features/ { print; exit }' Cargo.toml |
  grep -o '"[a-z0-9-]*"' | tr -d '"')
built=$(grep -A1 'cargo build --release --example policy-delivery' scripts/load-policy-delivery |
  grep -o -- '--features [a-z0-9,-]*' | sed 's/--features //' | tr ',' '\n')
[[ -n $required && -n $built ]] || { echo "load-script-features: cannot read the features" >&2; exit 1; }
for feature in $required; do
  if ! grep -qx "$feature" <<<"$built"; then
    echo "scripts/load-policy-delivery builds without feature $feature, which examples/policy-delivery requires" >&2
    exit 1
  fi
done
echo "load-script-features: ok"
