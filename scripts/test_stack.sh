#!/usr/bin/env bash
# Set up .venv and Docker (scripts/docker_setup.sh: root or passwordless sudo), then run
# the production stack test alone: credit_platform_tests/stack/test_stack_docker.py builds
# the image, brings docker-compose.yml up with its own .env and drives it (about 15 min).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/docker_setup.sh
exec .venv/bin/python -m pytest credit_platform_tests/stack/test_stack_docker.py "$@"
