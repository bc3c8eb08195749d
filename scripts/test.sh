#!/usr/bin/env bash
# Set up .venv and run the whole test suite (MariaDB tests are required when CI is set).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ -n "${CI:-}" ] && ! mariadb-admin --host=127.0.0.1 --user=root ping >/dev/null 2>&1; then
  if command -v start-stop-daemon >/dev/null && [ -x /usr/sbin/mariadbd ]; then
    echo "MariaDB is down; starting it for the required MariaDB tests"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 1 30); do
      mariadb-admin --host=127.0.0.1 --user=root ping >/dev/null 2>&1 && break
      sleep 1
    done
  fi
fi

# The browser test drives Debian's chromium (headless; Playwright downloads no browser).
# Installed once, when missing: as root, or through passwordless sudo.
install_chromium() {
  local as_root=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || return 1
    as_root=(sudo -n)
  fi
  command -v apt-get >/dev/null || return 1
  echo "installing Debian's chromium for the browser test"
  "${as_root[@]}" apt-get update -qq &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}
if [ ! -x /usr/bin/chromium ] && ! install_chromium; then
  echo "warning: chromium is missing and could not be installed (needs apt-get and root or" \
    "sudo); the browser test skips, or fails when CI is set" >&2
fi

# The Docker stack test (credit_platform_tests/stack/test_stack_docker.py) is required under
# CI: install and start Docker there. Elsewhere it runs when an engine answers, and skips
# saying so when none does (bash scripts/test_stack.sh sets one up and runs it alone).
# Its images (stand-in bases where no registry answers, then the project image) are built
# in the background meanwhile; the test waits for that build (a lock) instead of starting
# its own.
if [ -n "${CI:-}" ]; then
  bash scripts/docker_setup.sh
  mkdir -p test-output
  .venv/bin/python -m bench.docker_stack prepare >test-output/docker-prepare.log 2>&1 &
fi

.venv/bin/ruff check credit_platform credit_platform_tests api bench
.venv/bin/credit-platform sql --check

# Under CI, the whole suite (no arguments): the Docker stack test runs in a pytest of its
# own beside the rest of the suite. It spends most of its time waiting on containers, so
# the two together take about the longer one's time instead of the sum. Its output goes
# to test-output/stack-tests.log and is printed once both are done; either failing fails.
# The suite lists its 20 slowest tests, the first place to look when CI grows slow.
if [ -n "${CI:-}" ] && [ "$#" -eq 0 ]; then
  mkdir -p test-output
  .venv/bin/python -m pytest -m docker -p no:cacheprovider >test-output/stack-tests.log 2>&1 &
  stack_tests=$!
  suite_status=0
  .venv/bin/python -m pytest -m "not docker" --durations=20 || suite_status=$?
  stack_status=0
  wait "$stack_tests" || stack_status=$?
  echo
  echo "=== the Docker stack test (test-output/stack-tests.log) ==="
  cat test-output/stack-tests.log
  if [ "$suite_status" != 0 ] || [ "$stack_status" != 0 ]; then
    echo "tests failed: the suite exited $suite_status, the Docker stack test $stack_status" >&2
    exit 1
  fi
  exit 0
fi
exec .venv/bin/python -m pytest "$@"
