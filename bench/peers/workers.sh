#!/usr/bin/env bash
# Every core: ringlb workers vs HAProxy threads vs NGINX workers, side by side in one interleaved run
# (issue 12, "Benchmark"; bench/RESULTS.md, "Every core: ringlb workers vs HAProxy threads vs NGINX
# workers"; method in ../shared/BENCHMARKING.md).
#
# Three ringlb-replica processes (server1..server3) on 127.0.0.1 and, in front of the same three, one
# LB per target, all started at once and idle while another is measured:
#   ringlb-N    --provisioner static, default ring, key X-Request-Id, `--workers N` (its listener:
#               one SO_REUSEPORT socket per worker);
#   haproxy-N   as bench/peers/peers.sh (balance hdr(X-Request-Id) + hash-type consistent,
#               http-reuse always, forwardfor, no logging), `nbthread N` (one listening socket, its
#               default);
#   nginx-N     as bench/peers/peers.sh (hash $http_x_request_id consistent, upstream keepalive 64,
#               X-Forwarded-For, no access log), `worker_processes N` (one listening socket shared
#               by the workers, its default);
# for each N in THREADS (default "1 2"). The configurations come from bench/lib.sh, as for peers.sh
# and hostile.sh, so every comparison runs the peers the same way.
#
# Placement: nothing is pinned. An LB with two threads needs both cores, so wrk, the replicas and the
# LB all float over the machine's CPUs and compete for them; the report gives the machine's total
# busy share next to each figure, which tells what bounds requests/s (see "What limits req/s" in the
# report).
#
# Per round, target after target, wrk -t1 -c$CONNECTIONS with request_id.lua (a random 6-digit
# X-Request-Id per request) runs WARMUP s, then DURATION s measured with --latency
# (bench/peers/peers_lib.sh measure_wrk, measure.py): CPU of the LB from /proc/PID/stat, all its threads (NGINX: master + workers), of the replicas and of wrk, the
# machine's busy share, each LB thread's CPU (--per-thread), and before each window a bounded wait
# for the machine to be quiet (other processes' CPU at most QUIET_MAX % of one CPU, for up to
# QUIET_WAIT s); a window in which others used more is measured again, up to RETRIES times. The
# order within a round is ringlb-1 ringlb-2 haproxy-1 haproxy-2 nginx-1 nginx-2 (the pairs that the
# issue's ratios compare are at most two windows apart), reversed in every second round so that no
# target always comes first after the quiet wait or last.
#
# NICE=N (e.g. -10; default 0: unchanged) runs the whole benchmark (replicas, LBs, wrk) at that nice
# value, so that on a shared machine other sessions' builds take less of the cores during the
# measured windows; all measured processes get the same value, so their share against one another is
# unchanged. The section says when it was used.
#
# Then the same targets at an equal offered load (bench/peers/peers_lib.sh measure_rate): for each
# thread count N, RATE_SHARE (default 0.8) of the slowest N-thread LB's median closed-loop req/s,
# sent by ringlb-loadgen -c$CONNECTIONS --rid -r RATE (its latency counted from each request's
# scheduled time when every connection was busy then), ROUNDS more interleaved rounds. In the closed
# loop a faster LB runs at a higher load, which on these shared cores widens its tail; the p99
# target is compared at the same work.
#
# Time bound: 2 phases x 6 targets x ROUNDS windows of about WARMUP + DURATION + 2 s (12 minutes
# with the defaults on a quiet machine: five short rounds rather than three long ones, since the
# noise of this shared machine comes in bursts that a repeated short window escapes). Waits and
# repeats are spent only while the rest of the run still fits in BUDGET s (default 1560): once it
# would not, the remaining windows are measured without waiting or repeating (the report counts
# them), so the whole run stays under BUDGET + about 30 s of start-up and report.
#
# Output: a Markdown section on stdout (workers_report.py), bench/results/workers.json, and the
# section in bench/RESULTS.md when WRITE_RESULTS=1.
#
# Usage: bench/peers/workers.sh [BUILD_DIR]
#   env: ROUNDS=5 DURATION=8 WARMUP=2 CONNECTIONS=64 SEED=42 THREADS="1 2" QUIET_MAX=25
#        QUIET_WAIT=20 RETRIES=1 BUDGET=1560 RATE_SHARE=0.8 RESULTS=bench/results WRITE_RESULTS=0
#        RINGLB=path/to/ringlb (default BUILD_DIR/lb/ringlb) NICE=0
# On exit it stops what it started.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"      # free_port, start_replicas, haproxy_lb_conf, nginx_lb_conf
. "$(dirname "$0")/peers_lib.sh"  # wait_lb_home, cpu_busy, measure_wrk

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-build}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
SEED=${SEED:-42}
QUIET_MAX=${QUIET_MAX:-25}
QUIET_WAIT=${QUIET_WAIT:-20}
RETRIES=${RETRIES:-1}
BUDGET=${BUDGET:-1560}
RESULTS=${RESULTS:-$ROOT/bench/results}
WRITE_RESULTS=${WRITE_RESULTS:-0}
NICE=${NICE:-0}
read -r -a COUNTS <<<"${THREADS:-1 2}"
RINGLB=${RINGLB:-$BUILD/lb/ringlb}
REPLICA=$BUILD/replica/ringlb-replica
LOADGEN=$BUILD/bench/loadgen/ringlb-loadgen
RATE_SHARE=${RATE_SHARE:-0.8}
export HERE

need_tools workers wrk haproxy nginx python3 pgrep
for bin in "$RINGLB" "$REPLICA" "$LOADGEN"; do
  [ -x "$bin" ] || { echo "workers: no $bin (build first: ninja -C $BUILD)" >&2; exit 1; }
done

bench_tmp workers

client_cpu=()  # nothing pinned: see the header
if [ "$NICE" != 0 ]; then
  renice -n "$NICE" -p $$ >/dev/null
  [ "$(ps -o ni= -p $$ | tr -d ' ')" = "$NICE" ] || { echo "workers: could not set nice $NICE" >&2; exit 1; }
fi
t_start=$SECONDS
quiet_before=$(cpu_busy 2)

start_replicas "$REPLICA"  # sets replica_ports, replica_pids, backends
replica_csv=$(IFS=,; echo "${replica_pids[*]}")

# Every LB, N threads each; port_of[TARGET], pids_of[TARGET] (the processes whose CPU is the LB's).
declare -A port_of pids_of
TARGETS=()
for n in "${COUNTS[@]}"; do
  TARGETS+=("ringlb-$n" "haproxy-$n" "nginx-$n")

  port=$(free_port)
  "$RINGLB" --provisioner static "${backends[@]}" --listen "127.0.0.1:$port" --workers "$n" \
    --log-level warn 2>"$tmp/ringlb-$n.log" &
  started+=($!)
  port_of[ringlb-$n]=$port pids_of[ringlb-$n]=$!

  port=$(free_port)
  haproxy_lb_conf "$port" "$n" "  maxconn 4096
  pidfile $tmp/haproxy-$n.pid" "" "" >"$tmp/haproxy-$n.cfg"
  haproxy -c -q -f "$tmp/haproxy-$n.cfg"
  haproxy -db -f "$tmp/haproxy-$n.cfg" >"$tmp/haproxy-$n.log" 2>&1 &
  started+=($!)
  port_of[haproxy-$n]=$port pids_of[haproxy-$n]=$!

  port=$(free_port)
  mkdir -p "$tmp/nginx-$n"
  nginx_lb_conf "$tmp/nginx-$n" "$port" "$n" "$tmp/nginx-$n/error.log" "" >"$tmp/nginx-$n.conf"
  nginx -p "$tmp/nginx-$n" -c "$tmp/nginx-$n.conf" -e "$tmp/nginx-$n/error.log" -g 'daemon off;' &
  started+=($!)
  port_of[nginx-$n]=$port pids_of[nginx-$n]=$!
done
for t in "${TARGETS[@]}"; do wait_lb_home "${port_of[$t]}"; done
ORDER=()
for lb in ringlb haproxy nginx; do
  for n in "${COUNTS[@]}"; do ORDER+=("$lb-$n"); done
done

# NGINX's CPU is its master's and its workers'; the workers exist once it answered.
declare -A threads_of
for n in "${COUNTS[@]}"; do
  master=${pids_of[nginx-$n]}
  workers=$(pgrep -P "$master" | paste -sd, -)
  [ "$(echo "$workers" | tr , '\n' | grep -c .)" = "$n" ] ||
    { echo "workers: nginx-$n has workers '$workers', expected $n" >&2; exit 1; }
  pids_of[nginx-$n]=$master,$workers
  [ "$(pgrep -c -P "${pids_of[haproxy-$n]}" || true)" = 0 ] ||
    { echo "workers: haproxy-$n forked" >&2; exit 1; }
done
# Threads of each LB process at the start (ringlb: control loop + workers, once the split is in).
for t in "${TARGETS[@]}"; do
  threads_of[$t]=$(for p in ${pids_of[$t]//,/ }; do awk '/^Threads:/ {print $2}' "/proc/$p/status"; done |
                   paste -sd+ -)
done

# --- interleaved rounds: closed loop (wrk), then an equal offered load (ringlb-loadgen) ----------
# phase KIND DIR: ROUNDS interleaved rounds of every target; KIND closed runs measure_wrk, rate runs
# measure_rate at rate_of[N] for a target with N threads. Windows land in DIR/ROUND-TARGET.*.
mkdir -p "$tmp/rounds" "$tmp/rated"
window=$((WARMUP + DURATION + 2))
total=$((2 * ROUNDS * ${#TARGETS[@]})) done_windows=0
declare -A rate_of
phase() {
  local kind=$1 dir=$2 round target i wait_s retries left order
  for round in $(seq 1 "$ROUNDS"); do
    echo "workers: $kind round $round/$ROUNDS (machine $(cpu_busy 1)% of one CPU busy)" >&2
    order=("${ORDER[@]}")
    if [ $((round % 2)) = 0 ]; then
      order=()
      for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do order+=("${ORDER[$i]}"); done
    fi
    for target in "${order[@]}"; do
      left=$((total - done_windows))
      # Wait and repeat only while the windows left still fit in the budget at their plain length.
      # (a window that waits and is repeated costs up to 2 x QUIET_WAIT + DURATION + 2 s more)
      if [ $((SECONDS - t_start + left * window + 2 * QUIET_WAIT + DURATION + 2)) -le "$BUDGET" ]
      then
        wait_s=$QUIET_WAIT retries=$RETRIES
      else
        wait_s=0 retries=0
        echo "workers: $target: no quiet wait or repeat (budget ${BUDGET} s)" >&2
      fi
      echo "workers: $kind round $round/$ROUNDS, $target" >&2
      if [ "$kind" = closed ]; then
        QUIET_WAIT=$wait_s RETRIES=$retries measure_wrk "$dir/$round-$target" \
          "http://127.0.0.1:${port_of[$target]}/home" "$((SEED + round))" \
          "lb=${pids_of[$target]}" "replicas=$replica_csv" --per-thread
      else
        QUIET_WAIT=$wait_s RETRIES=$retries measure_rate "$dir/$round-$target" \
          "http://127.0.0.1:${port_of[$target]}/home" "$((SEED + round))" \
          "${rate_of[${target##*-}]}" \
          "lb=${pids_of[$target]}" "replicas=$replica_csv" --per-thread
      fi
      python3 - "$dir/$round-$target.json" "$wait_s" "$done_windows" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
d["quiet_wait_allowed_s"] = float(sys.argv[2])
d["seq"] = int(sys.argv[3])
json.dump(d, open(sys.argv[1], "w"))
EOF
      done_windows=$((done_windows + 1))
    done
  done
}

phase closed "$tmp/rounds"
# The equal load of N threads: RATE_SHARE of the slowest N-thread LB's median closed-loop req/s, in
# hundreds, so that every LB can carry it and their latencies are compared at the same work.
for n in "${COUNTS[@]}"; do
  rate_of[$n]=$(python3 - "$tmp/rounds" "$n" "$RATE_SHARE" <<'EOF'
import glob, os, statistics, sys
sys.path.insert(0, os.environ["HERE"])
from report import parse_wrk
run, n, share = sys.argv[1], sys.argv[2], float(sys.argv[3])
medians = []
for lb in ("ringlb", "haproxy", "nginx"):
    rates = []
    for path in glob.glob(os.path.join(run, f"*-{lb}-{n}.wrk")):
        requests, seconds = parse_wrk(open(path).read())[:2]
        rates.append(requests / seconds)
    medians.append(statistics.median(rates))
print(max(100, int(share * min(medians) / 100) * 100))
EOF
)
  echo "workers: equal load for $n thread(s): ${rate_of[$n]} requests/s" >&2
done
phase rate "$tmp/rated"
quiet_after=$(cpu_busy 2)

# --- meta and report ------------------------------------------------------------------------------
# Peak RSS in KiB, summed over the LB's processes.
hwm() { for p in ${1//,/ }; do awk '/^VmHWM:/ {print $2}' "/proc/$p/status"; done | awk '{s += $1} END {print s}'; }
{
  echo "{"
  for t in "${TARGETS[@]}"; do
    echo "\"$t\": {\"port\": ${port_of[$t]}, \"pids\": \"${pids_of[$t]}\", \"threads\": \"${threads_of[$t]}\", \"peak_rss_kib\": $(hwm "${pids_of[$t]}")},"
  done
  echo "\"_\": null}"
} >"$tmp/lbs.json"
python3 - "$tmp/meta.json" "$tmp/lbs.json" <<EOF
import json, sys
lbs = json.load(open(sys.argv[2])); lbs.pop("_")
json.dump({
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "command": "$([ "$NICE" = 0 ] || echo "NICE=$NICE ")WRITE_RESULTS=$WRITE_RESULTS bench/peers/workers.sh $BUILD",
  "targets": "${TARGETS[*]}".split(),
  "counts": [int(x) for x in "${COUNTS[*]}".split()],
  "lbs": lbs,
  "env": {"ROUNDS": $ROUNDS, "DURATION": $DURATION, "WARMUP": $WARMUP, "RETRIES": $RETRIES,
          "CONNECTIONS": $CONNECTIONS, "SEED": $SEED, "QUIET_MAX": $QUIET_MAX,
          "QUIET_WAIT": $QUIET_WAIT, "BUDGET": $BUDGET, "NICE": $NICE, "RATE_SHARE": $RATE_SHARE},
  "rates": {$(for n in "${COUNTS[@]}"; do echo -n "\"$n\": ${rate_of[$n]}, "; done)},
  "versions": {
    "ringlb": "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
              + "$(cd "$ROOT" && git diff --quiet HEAD -- lb ring 2>/dev/null || echo ' (modified)')",
    "haproxy": "$(haproxy -v | head -1 | awk '{print $3}')",
    "nginx": "$(nginx -v 2>&1 | sed 's|.*nginx/||')",
    "wrk": "$(wrk -v 2>&1 | head -1 | awk '{print $2}')",
  },
  "machine": {"cpu": "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)",
              "cpus": $(nproc), "kernel": "$(uname -r)",
              "os": "$(. /etc/os-release && echo "$PRETTY_NAME")"},
  "loadavg_end": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
  "quiet_before_pct": $quiet_before, "quiet_after_pct": $quiet_after,
  "elapsed_s": $((SECONDS - t_start)),
}, open(sys.argv[1], "w"), indent=1)
EOF
cp "$tmp"/haproxy-*.cfg "$tmp"/nginx-*.conf "$tmp/rounds/"
mkdir -p "$RESULTS"
write=()
[ "$WRITE_RESULTS" = 1 ] && write=(--write)
python3 "$HERE/workers_report.py" "$tmp" "$RESULTS" "${write[@]}"
