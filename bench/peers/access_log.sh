#!/usr/bin/env bash
# Access log cost (issue 14, "Logs"; bench/RESULTS.md, "Access log cost"; method in
# ../shared/BENCHMARKING.md): the CPU a request costs ringlb with --access-log off and with it on,
# side by side in one interleaved run.
#
# Three ringlb-replica processes on 127.0.0.1 and, in front of the same three, ringlb twice, started at
# once and idle while the other is measured, alike but for the log:
#   off    --provisioner static, --workers $WORKERS, --log-level warn;
#   json   the same with --access-log json --access-log-file $tmp/access.log (a file on the
#          machine's disk: lines are formatted per worker and written from the threadpool);
#   text   the same with --access-log text (when MODES includes it).
# Per round, mode after mode (the order reversed every second round), wrk -t1 -c$CONNECTIONS with
# request_id.lua (a random X-Request-Id per request) runs WARMUP s, then DURATION s measured
# (peers_lib.sh measure_wrk, measure.py: the LB's CPU from /proc/PID/stat, all threads, the
# threadpool's writes included; a bounded wait for a quiet machine before each window). Reported
# per mode: the median requests/s and LB CPU seconds per 100k requests over the rounds, and the
# median of the same-round ratios on/off of CPU per request (the figure the issue's target, at most
# 1.10, is about). The log file's line count is checked against the requests wrk made.
#
# Usage: bench/peers/access_log.sh [BUILD_DIR]
#   env: ROUNDS=5 DURATION=5 WARMUP=1 CONNECTIONS=32 WORKERS=1 MODES="off json text" SEED=42
#        QUIET_MAX=25 QUIET_WAIT=10 RETRIES=1 RINGLB=path/to/ringlb
# Time bound: ROUNDS x modes x about (WARMUP + DURATION + 2 s + the quiet wait, at most QUIET_WAIT);
# 2 minutes with the defaults on a quiet machine. On exit it stops what it started.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"      # free_port, start_replicas
. "$(dirname "$0")/peers_lib.sh"  # wait_lb_home, cpu_busy, measure_wrk

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-32}
WORKERS=${WORKERS:-1}
SEED=${SEED:-42}
QUIET_MAX=${QUIET_MAX:-25}
QUIET_WAIT=${QUIET_WAIT:-10}
RETRIES=${RETRIES:-1}
read -r -a MODES <<<"${MODES:-off json text}"
RINGLB=${RINGLB:-$BUILD/lb/ringlb}
REPLICA=$BUILD/replica/ringlb-replica

need_tools access_log wrk python3
for bin in "$RINGLB" "$REPLICA"; do
  [ -x "$bin" ] || { echo "access_log: no $bin (build first: ninja -C $BUILD)" >&2; exit 1; }
done

bench_tmp access-log
client_cpu=()

start_replicas "$REPLICA"  # sets replica_ports, replica_pids, backends

declare -A port_of pid_of
for mode in "${MODES[@]}"; do
  port=$(free_port)
  extra=()
  [ "$mode" = off ] || extra=(--access-log "$mode" --access-log-file "$tmp/access-$mode.log")
  "$RINGLB" --provisioner static "${backends[@]}" --listen "127.0.0.1:$port" --workers "$WORKERS" \
    --log-level warn "${extra[@]}" 2>"$tmp/ringlb-$mode.log" &
  started+=($!)
  port_of[$mode]=$port pid_of[$mode]=$!
done
for mode in "${MODES[@]}"; do wait_lb_home "${port_of[$mode]}"; done

mkdir -p "$tmp/rounds"
for round in $(seq 1 "$ROUNDS"); do
  order=("${MODES[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#MODES[@]} - 1; i >= 0; i--)); do order+=("${MODES[$i]}"); done
  fi
  for mode in "${order[@]}"; do
    echo "access_log: round $round/$ROUNDS, $mode" >&2
    measure_wrk "$tmp/rounds/$round-$mode" "http://127.0.0.1:${port_of[$mode]}/home" \
      "$((SEED + round))" "lb=${pid_of[$mode]}"
  done
done
sleep 0.5  # the last lines reach the files (every worker writes at least every 100 ms)

python3 - "$tmp" "$ROUNDS" "${MODES[*]}" <<'EOF'
import json, os, re, statistics, sys
tmp, rounds, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def wrk_requests(path):
    text = open(path).read()
    m = re.search(r"(\d+) requests in ([\d.]+)s", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return int(m.group(1)), float(m.group(2)), int(errors.group(1)) if errors else 0
per = {m: [] for m in modes}
for r in range(1, rounds + 1):
    for m in modes:
        d = json.load(open(f"{tmp}/rounds/{r}-{m}.json"))
        n, secs, bad = wrk_requests(f"{tmp}/rounds/{r}-{m}.wrk")
        per[m].append({"rps": n / secs, "cpu_per_100k": d["groups_cpu_s"]["lb"] / n * 1e5,
                       "others": d["others_cpu_pct"], "bad": bad, "n": n})
print(f"| mode | req/s (median) | LB CPU s per 100k requests (median) | CPU per request vs off, same-round ratios (median; min-max) | others' CPU % (max) |")
print("|---|---|---|---|---|")
for m in modes:
    rps = statistics.median(x["rps"] for x in per[m])
    cpu = statistics.median(x["cpu_per_100k"] for x in per[m])
    if m == "off" or "off" not in per:
        ratio = "1.00"
    else:
        rs = [a["cpu_per_100k"] / b["cpu_per_100k"] for a, b in zip(per[m], per["off"])]
        ratio = f"{statistics.median(rs):.3f} ({min(rs):.3f}-{max(rs):.3f})"
    print(f"| {m} | {rps/1000:.1f}k | {cpu:.2f} | {ratio} | {max(x['others'] for x in per[m]):.0f} |")
print()
print("| round | " + " | ".join(f"{m}: req/s, CPU s/100k" for m in modes) + " |")
print("|---|" + "---|" * len(modes))
for r in range(rounds):
    print(f"| {r + 1} | " + " | ".join(f"{per[m][r]['rps'] / 1000:.1f}k, {per[m][r]['cpu_per_100k']:.2f}"
                                     for m in modes) + " |")
for m in modes:
    if m == "off":
        continue
    path = f"{tmp}/access-{m}.log"
    lines = sum(1 for _ in open(path, "rb"))
    print(f"\n{m}: {lines} lines in the access log ({os.path.getsize(path) / lines:.0f} bytes a line), "
          f"for {sum(x['n'] for x in per[m])} measured requests plus warm-ups", file=sys.stderr)
    drops = open(f"{tmp}/ringlb-{m}.log").read().count("dropped")
    if drops:
        print(f"{m}: the log says lines were dropped ({drops} warn lines)", file=sys.stderr)
bad = sum(x["bad"] for m in modes for x in per[m])
if bad:
    print(f"non-2xx answers: {bad}", file=sys.stderr)
EOF
