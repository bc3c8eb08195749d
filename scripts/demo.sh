#!/usr/bin/env bash
# Set up .venv, then run the platform end to end on the embedded defaults (no servers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/credit-platform demo "$@"
