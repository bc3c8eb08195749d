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

.venv/bin/ruff check credit_platform credit_platform_tests api
.venv/bin/credit-platform sql --check
exec .venv/bin/python -m pytest "$@"
