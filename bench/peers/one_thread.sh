#!/usr/bin/env bash
# Where one LB thread's CPU and latency go: ringlb `--workers 1` against HAProxy `nbthread 1` in front
# of the same three replicas (bench/RESULTS.md, "One thread: where the CPU and the tail go"). A
# diagnosis next to bench/peers/workers.sh, which gives the issue's figures: this one splits them.
#
# Per round and target (interleaved, the order reversed every second round), wrk -t1 -c64 with a
# random X-Request-Id runs WARMUP s, then DURATION s measured. For that window it reports, per
# request: the LB's CPU split into user and system time (/proc/PID/stat), its voluntary (it slept in
# epoll_wait) and involuntary (it was preempted) context switches (/proc/PID/status), the three
# replicas' CPU, and, when perf can count tracepoints here, the LB's epoll_wait calls; and wrk's
# latency percentiles up to 99.9 (a done() hook added to bench/peers/request_id.lua).
#
# SCHED=1 adds a table of who waited for a CPU: per target, one more wrk run of WARMUP + 6 s, with
# `perf sched record` over 2 s in its middle, summarised per process name by sched_summary.py (the
# LB, the replicas, wrk, the idle CPUs: switches, CPU time, run-queue delay).
#
# OTHER=path/to/ringlb adds a second ringlb binary as target "ringlb-other" (an A/B of a change, with
# its environment in OTHER_ENV, e.g. OTHER_ENV="RINGLB_X=1").
#
# Usage: bench/peers/one_thread.sh [BUILD_DIR]
#   env: ROUNDS=3 DURATION=10 WARMUP=2 CONNECTIONS=64 SEED=42 SCHED=0 OTHER= OTHER_ENV=
# Everything listens on 127.0.0.1; on exit it stops what it started.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"      # free_port, start_replicas, haproxy_lb_conf
. "$(dirname "$0")/peers_lib.sh"  # wait_lb_home

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
SEED=${SEED:-42}
OTHER=${OTHER:-}
OTHER_ENV=${OTHER_ENV:-}
SCHED=${SCHED:-0}
RINGLB=$BUILD/lb/ringlb

need_tools one_thread wrk haproxy
[ "$SCHED" = 1 ] && need_tools one_thread perf  # before the rounds, not after them

bench_tmp one-thread

# The wrk script: request_id.lua's requests, and percentiles printed at the end.
cp "$HERE/request_id.lua" "$tmp/wrk.lua"
cat >>"$tmp/wrk.lua" <<'EOF'

done = function(summary, latency, requests)
  local out = {}
  for _, p in ipairs({50, 90, 99, 99.9}) do
    out[#out + 1] = string.format("%.2f", latency:percentile(p) / 1000)
  end
  io.write("PCT " .. table.concat(out, " ") .. "\n")
end
EOF

start_replicas "$BUILD/replica/ringlb-replica"
declare -A port_of pid_of
TARGETS=(ringlb-1 haproxy-1)
port=$(free_port)
"$RINGLB" --provisioner static "${backends[@]}" --listen "127.0.0.1:$port" --workers 1 \
  --log-level warn 2>"$tmp/ringlb.log" &
started+=($!) && port_of[ringlb-1]=$port pid_of[ringlb-1]=$!
if [ -n "$OTHER" ]; then
  port=$(free_port)
  env $OTHER_ENV "$OTHER" --provisioner static "${backends[@]}" --listen "127.0.0.1:$port" --workers 1 \
    --log-level warn 2>"$tmp/other.log" &
  started+=($!) && port_of[ringlb-other]=$port pid_of[ringlb-other]=$!
  TARGETS=(ringlb-1 ringlb-other haproxy-1)
fi
port=$(free_port)
haproxy_lb_conf "$port" 1 "  maxconn 4096" "" "" >"$tmp/haproxy.cfg"
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
started+=($!) && port_of[haproxy-1]=$port pid_of[haproxy-1]=$!
for t in "${TARGETS[@]}"; do wait_lb_home "${port_of[$t]}"; done

# The clock ticks of PID in user and system mode; its voluntary and involuntary context switches;
# the three replicas' ticks together.
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
switches() {
  awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "/proc/$1/status"
}
# Nanoseconds PID's main thread waited on a run queue while runnable (/proc/PID/schedstat, 2nd
# field).
run_wait() { awk '{print $2}' "/proc/$1/schedstat"; }
replica_ticks() {
  local p
  for p in "${replica_pids[@]}"; do cat "/proc/$p/stat"; done | awk '{s += $14 + $15} END {print s}'
}
perf_ok=0
perf stat -e syscalls:sys_enter_epoll_wait -p $$ -o /dev/null -- sleep 0.1 >/dev/null 2>&1 && perf_ok=1
hz=$(getconf CLK_TCK)

echo -n "| round | target | req/s | CPU µs/req (user + sys) | p50 / p90 / p99 / p99.9 ms "
echo -n "| slept / preempted per 1k req | run-queue wait µs/req | epoll_wait / req "
echo "| replicas' CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  order=("${TARGETS[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[$i]}"); done
  fi
  for t in "${order[@]}"; do
    url=http://127.0.0.1:${port_of[$t]}/home pid=${pid_of[$t]}
    wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$tmp/wrk.lua" "$url" -- "$SEED" >/dev/null
    read -r u0 s0 < <(ticks "$pid"); read -r v0 n0 < <(switches "$pid")
    r0=$(replica_ticks) q0=$(run_wait "$pid")
    if [ "$perf_ok" = 1 ]; then
      perf stat -x, -e syscalls:sys_enter_epoll_wait -p "$pid" -o "$tmp/perf.txt" -- \
        sleep "$DURATION" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s "$tmp/wrk.lua" "$url" -- "$SEED")
    read -r u1 s1 < <(ticks "$pid"); read -r v1 n1 < <(switches "$pid")
    r1=$(replica_ticks) q1=$(run_wait "$pid")
    epolls=n/a
    if [ "$perf_ok" = 1 ]; then
      wait "$perf_pid" || true
      epolls=$(awk -F, '$3 ~ /epoll_wait/ {print $1}' "$tmp/perf.txt")
    fi
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    pct=$(echo "$out" | awk '/^PCT/ {print $2 " / " $3 " / " $4 " / " $5}')
    python3 - "$round" "$t" "$reqs" "$DURATION" "$hz" "$u0" "$u1" "$s0" "$s1" "$v0" "$v1" "$n0" "$n1" \
      "$r0" "$r1" "$epolls" "$pct" "$q0" "$q1" <<'PY'
import sys
rnd, t, reqs, dur, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
u0, u1, s0, s1, v0, v1, n0, n1, r0, r1 = map(int, sys.argv[6:16])
epolls, pct = sys.argv[16], sys.argv[17]
q0, q1 = int(sys.argv[18]), int(sys.argv[19])
us = lambda ticks: ticks * 1e6 / hz / reqs
user, system = us(u1 - u0), us(s1 - s0)
ep = "n/a" if epolls in ("n/a", "") else f"{int(epolls) / reqs:.3f}"
print(f"| {rnd} | {t} | {reqs / dur:,.0f} | {user + system:.2f} ({user:.2f} + {system:.2f}) | {pct} | "
      f"{(v1 - v0) * 1000 / reqs:.1f} / {(n1 - n0) * 1000 / reqs:.1f} | {(q1 - q0) / 1e3 / reqs:.2f} "
      f"| {ep} | {us(r1 - r0):.2f} |")
PY
  done
done

[ "$SCHED" = 1 ] || exit 0
echo
echo "Who waited for a CPU (perf sched, 2 s in the middle of a 6 s wrk run per target):"
echo
echo -n "| target | process | switched in | CPU time | run-queue delay | delays > 0.5 ms "
echo "| median run |"
echo "|---|---|---|---|---|---|---|"
for t in "${TARGETS[@]}"; do
  url=http://127.0.0.1:${port_of[$t]}/home
  wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$tmp/wrk.lua" "$url" -- "$SEED" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d6s -s "$tmp/wrk.lua" "$url" -- "$SEED" >/dev/null &
  wrk_pid=$!
  sleep 2
  perf sched record -o "$tmp/sched-$t.data" -- sleep 2 >/dev/null 2>&1
  wait "$wrk_pid"
  python3 "$HERE/sched_summary.py" "$tmp/sched-$t.data" "$t"
done
