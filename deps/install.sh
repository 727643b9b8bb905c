#!/usr/bin/env bash
# Installs the Debian packages ringlb needs to build, test and benchmark.
# Idempotent: when every package is present it only checks and exits 0 (fast).
# Usage: deps/install.sh [build|test|bench|docker|fuzz]...   (default: build test)
set -euo pipefail

build=(g++ meson ninja-build pkg-config libuv1-dev node-llhttp libcurl4-openssl-dev libjansson-dev libssl-dev
       libxxhash-dev libgtest-dev libbenchmark-dev python3)
build+=(libnghttp2-dev)  # HTTP/2 to clients (lb/data/h2_client.cc)
test=(wrk apache2-utils curl gnuplot-nox prometheus chromium python3-websocket systemd)
test+=(python3-h2)  # HTTP/2 hostile frames (test/integration/h2_test.py)
bench=(haproxy nginx-light gnuplot-nox linux-perf valgrind)
bench+=(nghttp2-client)  # h2load (bench/peers/h2.sh)
docker=(docker.io docker-compose)
# libFuzzer targets (test/fuzz): clang and its runtime libraries (libFuzzer, ASan, UBSan).
fuzz=(clang-14 libclang-rt-14-dev)

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(build test)
want=()
for g in "${groups[@]}"; do
  case "$g" in
    build) want+=("${build[@]}") ;;
    test) want+=("${test[@]}") ;;
    bench) want+=("${bench[@]}") ;;
    docker) want+=("${docker[@]}") ;;
    fuzz) want+=("${fuzz[@]}") ;;
    *) echo "deps/install.sh: unknown group '$g' (build, test, bench, docker, fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
