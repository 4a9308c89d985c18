#!/usr/bin/env bash
# Tests the two modes of service-backed tests (crates/portcullis-test-support): without the
# service a test is skipped with one line saying what to start; under
# PORTCULLIS_REQUIRE_SERVICES=1 (scripts/test, CI) the same test fails instead.
set -uo pipefail
cd "$(dirname "$0")/../.."

passed=0 failed=0
not_grep() { ! grep -q "$1" <<<"$2"; }
check() {
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   - $what"
  else failed=$((failed + 1)); echo "FAIL - $what"; fi
}

probe() {
  env -u PORTCULLIS_REQUIRE_SERVICES -u PORTCULLIS_TEST_PROBE_URL "$@" \
    cargo test -q --locked -p portcullis-test-support --test probe -- --ignored --nocapture 2>&1
}

out=$(probe) ; status=$?
check "without the service the test passes" test "$status" -eq 0
check "... printing one line that names the service and how to start it" \
  grep -q "skipped: PORTCULLIS_TEST_PROBE_URL is not set: .*scripts/with-services" <<<"$out"
check "... and it did not run" not_grep "probe service at" "$out"

out=$(probe PORTCULLIS_REQUIRE_SERVICES=1) ; status=$?
check "under PORTCULLIS_REQUIRE_SERVICES=1 a missing service fails the test" test "$status" -ne 0
check "... saying it is required" grep -q "PORTCULLIS_REQUIRE_SERVICES=1: required" <<<"$out"

out=$(probe PORTCULLIS_REQUIRE_SERVICES=1 PORTCULLIS_TEST_PROBE_URL=http://127.0.0.1:9) ; status=$?
check "with the service named the test runs" test "$status" -eq 0
check "... for real" grep -q "probe service at http://127.0.0.1:9" <<<"$out"

echo "require-services: $passed passed, $failed failed"
((failed == 0))
