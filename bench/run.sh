#!/usr/bin/env bash
# The benchmarks, in one command (`make bench`); figures and method in bench/RESULTS.md and
# ../shared/BENCHMARKING.md:
#   1. ring_bench: ring lookup and build per mode (Google Benchmark; built only when Debian's
#      libbenchmark-dev is installed), three repetitions, medians;    about 1 minute
#   2. bench/replica_vs_nginx.sh: the replica against nginx on GET /home, interleaved rounds;
#      about ROUNDS x 2 x (WARMUP + DURATION + 1) s, 80 s with its defaults
#   3. bench/instructions.sh: their instructions per request under callgrind; about a minute
#   4. bench/peers/peers.sh: ringlb vs HAProxy vs NGINX; see its header for its time
#   5. bench/hostile.sh: the non-reading pipeliner and the fd attack against the same three LBs
#      (issue 10); about 5 minutes
#   6. bench/peers/workers.sh: ringlb --workers 1 and 2 vs HAProxy nbthread and NGINX
#      worker_processes 1 and 2 (issue 12); 6 to 15 minutes (bounded by its BUDGET)
# Each step is bounded by a timeout (STEP_TIMEOUT seconds, default 1200). A failing step is
# reported and the others still run; the exit status is 1 when any failed. The experiments A-1..A-4
# are bench/analysis.sh (`make analysis`).
#
# Usage: bench/run.sh [BUILD_DIR]     (default build)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" 2>/dev/null && pwd) ||
  { echo "bench: no build folder ${1:-build}" >&2; exit 1; }
step_timeout=${STEP_TIMEOUT:-1200}
cd "$root"
. bench/lib.sh

if [ -x "$build/bench/ring_bench" ]; then
  step ring_bench "$build/bench/ring_bench" --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true --benchmark_min_time=0.5
else
  echo "== ring_bench: not built (needs libbenchmark-dev: deps/install.sh build), skipped" >&2
fi
step replica_vs_nginx bash bench/replica_vs_nginx.sh "$build"
step instructions bash bench/instructions.sh "$build"
step peers bash bench/peers/peers.sh "$build"
step hostile bash bench/hostile.sh "$build"
step workers bash bench/peers/workers.sh "$build"

if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: failed: ${failed[*]}" >&2
  exit 1
fi
