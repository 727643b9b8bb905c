#!/usr/bin/env bash
# The analysis experiments of the assignment's Task 4 (issue #6), in one command (`make analysis`):
#   A-1  bench/a1_balance.py   10,000 requests over N = 3, assignment ring vs ringlb's default
#   A-2  bench/a2_scale.py     N = 2..6 grown with /add, 10,000 requests at each N
#   A-4  bench/a4_hashes.py    six rings (hash functions, ketama, maglev): balance and keys moved
#   A-3  bench/a3_heal.py      a replica killed under steady load
#   peers bench/peers/peers.sh ringlb vs HAProxy vs NGINX
# Each writes bench/results/<name>.json and .png and its section of bench/RESULTS.md. Everything
# runs on 127.0.0.1 with the real ringlb and its replica processes; every step is bounded by a
# timeout (STEP_TIMEOUT seconds, default 900). A failing step is reported and the others still run; the
# exit status is 1 when any failed.
#
# Usage: bench/analysis.sh [BUILD_DIR]     (default build; needs python3 and gnuplot with pngcairo)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" 2>/dev/null && pwd) ||
  { echo "analysis: no build folder ${1:-build}" >&2; exit 1; }
export RINGLB_BUILD=$build PYTHONDONTWRITEBYTECODE=1
step_timeout=${STEP_TIMEOUT:-900}
cd "$root"
. bench/lib.sh

for f in lb/ringlb replica/ringlb-replica bench/loadgen/ringlb-loadgen; do
  [ -x "$build/$f" ] || { echo "analysis: no $build/$f (build first: make build)" >&2; exit 1; }
done
for tool in python3 gnuplot; do
  command -v "$tool" >/dev/null ||
    { echo "analysis: $tool is not installed (deps/install.sh bench)" >&2; exit 1; }
done

step A-1 python3 bench/a1_balance.py
step A-2 python3 bench/a2_scale.py
step A-4 python3 bench/a4_hashes.py
step A-3 python3 bench/a3_heal.py
step peers bash bench/peers/peers.sh "$build"

if [ ${#failed[@]} -gt 0 ]; then
  echo "analysis: failed: ${failed[*]}" >&2
  exit 1
fi
echo "analysis: results in bench/results/, figures in bench/RESULTS.md" >&2
