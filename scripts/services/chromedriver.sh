# shellcheck shell=bash
# Debian's ChromeDriver (driving Debian's headless Chromium) on 127.0.0.1, for page tests.
# Source after scripts/lib/service.sh.
#
#   start_chromedriver   # exports PORTCULLIS_TEST_WEBDRIVER_URL and PORTCULLIS_TEST_CHROMIUM
#
# Tests start Chromium through it with --headless --no-sandbox and a fresh profile, and
# flags that keep it off the network (see tests/access_broker.rs).

start_chromedriver() {
  local port
  [[ -x /usr/bin/chromedriver && -x /usr/bin/chromium ]] \
    || { echo "chromedriver: chromium and chromium-driver are not installed; run scripts/install-deps" >&2; return 1; }
  port=$(service_free_port)
  service_start chromedriver /usr/bin/chromedriver --port="$port" --allowed-ips=127.0.0.1
  service_wait_cmd chromedriver 60 curl -fsS -o /dev/null "http://127.0.0.1:$port/status" || return 1
  export PORTCULLIS_TEST_WEBDRIVER_URL="http://127.0.0.1:$port"
  export PORTCULLIS_TEST_CHROMIUM=/usr/bin/chromium
}
