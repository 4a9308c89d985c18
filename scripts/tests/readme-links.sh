#!/usr/bin/env bash
# Every rustdoc link in a crate README has a docs.rs definition, so the README crates.io
# renders has no dead links (scripts/readme-links writes them after a doc build).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec scripts/readme-links --check
