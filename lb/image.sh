#!/usr/bin/env bash
# Builds ringlb's two images offline, FROM scratch, from binaries already built in a Meson build folder:
#   ringlb-replica:latest  the statically linked replica server (replica/Dockerfile)
#   ringlb:latest          the daemon with the shared libraries ldd lists and the loader (lb/Dockerfile)
# Each image gets a fresh temporary context that holds only what it needs, so nothing else of the
# tree is sent to the engine. Prints each image's size. Needs the docker CLI and a running engine.
#
# usage: lb/image.sh [BUILD_DIR] [all|replica|lb]      (defaults: build, all)
# env:   RINGLB_REPLICA_TAG, RINGLB_LB_TAG override the tags.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build}"
which="${2:-all}"
replica_tag="${RINGLB_REPLICA_TAG:-ringlb-replica:latest}"
lb_tag="${RINGLB_LB_TAG:-ringlb:latest}"

case "$which" in all | replica | lb) ;; *) echo "image.sh: unknown image '$which' (all, replica, lb)" >&2; exit 2 ;; esac
[ -d "$build" ] || { echo "image.sh: build folder '$build' not found (run: make build)" >&2; exit 1; }
build="$(cd "$build" && pwd)"

ctx="$(mktemp -d "${TMPDIR:-/tmp}/ringlb-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT

# docker build, quiet: its output (including the legacy builder's deprecation notice) is shown only
# when the build fails.
docker_build() {
  local out
  out="$(docker build -q -t "$1" "$2" 2>&1)" || { echo "$out" >&2; echo "image.sh: docker build of $1 failed" >&2; exit 1; }
}

size_of() {
  local bytes
  bytes="$(docker image inspect -f '{{.Size}}' "$1")"
  printf '%s: %s bytes (%s KiB)\n' "$1" "$bytes" "$((bytes / 1024))"
}

build_replica() {
  local bin="$build/replica/ringlb-replica"
  [ -x "$bin" ] || { echo "image.sh: $bin not found (run: make build)" >&2; exit 1; }
  # A FROM scratch image can only run a static binary: refuse a dynamic one instead of shipping a
  # container that fails with "no such file or directory" at start.
  if ldd "$bin" >/dev/null 2>&1; then
    echo "image.sh: $bin is dynamically linked; configure with -Dstatic_replica=true" >&2
    exit 1
  fi
  mkdir -p "$ctx/replica"
  cp "$bin" "$ctx/replica/ringlb-replica"
  cp "$root/replica/Dockerfile" "$ctx/replica/Dockerfile"
  docker_build "$replica_tag" "$ctx/replica"
  size_of "$replica_tag"
}

# Copies the daemon, every library ldd resolves for it and the dynamic loader into rootfs/ at the same
# absolute paths, following symlinks so each file is a real copy.
build_lb() {
  local bin="$build/lb/ringlb"
  [ -x "$bin" ] || { echo "image.sh: $bin not found (run: make build)" >&2; exit 1; }
  local rootfs="$ctx/lb/rootfs"
  mkdir -p "$rootfs"
  cp "$bin" "$rootfs/ringlb"
  local lib
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  if ldd "$bin" | grep -q 'not found'; then
    echo "image.sh: ldd cannot resolve every library of $bin:" >&2
    ldd "$bin" | grep 'not found' >&2
    exit 1
  fi
  cp "$root/lb/Dockerfile" "$ctx/lb/Dockerfile"
  docker_build "$lb_tag" "$ctx/lb"
  size_of "$lb_tag"
}

case "$which" in
  all) build_replica; build_lb ;;
  replica) build_replica ;;
  lb) build_lb ;;
esac
