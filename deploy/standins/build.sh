#!/usr/bin/env bash
# Builds the stand-in base images for a machine that reaches no container registry (the
# stack test's CI machine): a Debian 12 root file system made by debootstrap and imported
# as credit-platform-standin/debian:bookworm, then python, mariadb and haproxy images on it
# from this folder's Dockerfiles (Debian's own python3.11, MariaDB 10.11 and HAProxy 2.6).
# (The classic builder: these Dockerfiles need no BuildKit feature, and a Docker CLI
# without the buildx plugin refuses DOCKER_BUILDKIT=1.)
# docker-compose.yml names the official images; only the variables PYTHON_BASE_IMAGE,
# MARIADB_IMAGE and HAPROXY_IMAGE point it here. Repeat runs reuse what exists.
#   deploy/standins/build.sh          (root: debootstrap and the Docker socket)
set -euo pipefail
cd "$(dirname "$0")"

PREFIX=credit-platform-standin
DEBIAN_IMAGE=$PREFIX/debian:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "debootstrap: Debian bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
  tar -C "$rootfs" -c . | docker import - "$DEBIAN_IMAGE" >/dev/null
fi

# name, tag: the official image each one stands in for
for image in python:3.11-slim mariadb:10.11 haproxy:2.6; do
  name=${image%%:*}
  echo "building $PREFIX/$image"
  DOCKER_BUILDKIT=0 docker build --quiet --build-arg "DEBIAN_BASE=$DEBIAN_IMAGE" \
    --file "$name.Dockerfile" --tag "$PREFIX/$image" . >/dev/null
done
