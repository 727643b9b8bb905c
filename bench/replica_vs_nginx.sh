#!/usr/bin/env bash
# ringlb-replica against nginx answering the same GET /home, side by side (bench/RESULTS.md,
# "Replica vs nginx"; method in BENCHMARKING.md).
#
# Both serve {"message": "Hello from Server: 1", "status": "successful"} as application/json on
# 127.0.0.1; nginx with one worker, `return 200`, access_log off. `wrk -t1 -c64` measures them in
# interleaved rounds (replica, nginx, replica, nginx, ...), each after a warm-up. Over each measured
# window perf stat counts the server process: instructions per request when the CPU exposes
# hardware counters, CPU time (task-clock) per request always. Also reported: wrk's own CPU (one
# wrk thread saturates its core at 40-60k requests/s here) and the CPU that other processes used.
# The servers run on CPU 1 and wrk on CPU 0 when there are two CPUs.
#
# Usage: bench/replica_vs_nginx.sh [BUILD_DIR]    env: ROUNDS=3 DURATION=10 WARMUP=2
# Takes about ROUNDS x 2 x (WARMUP + DURATION + 1) s plus 4 s of quiet checks; on exit it kills
# what it started.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPLICA=$BUILD/replica/ringlb-replica
BODY='{"message": "Hello from Server: 1", "status": "successful"}'

need_tools replica_vs_nginx wrk nginx perf python3
[ -x "$REPLICA" ] || { echo "replica_vs_nginx: no $REPLICA (build first)" >&2; exit 1; }

bench_tmp replica-vs-nginx

server_cpu=() client_cpu=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 1) client_cpu=(taskset -c 0)
fi

# Busy share of all CPUs over $1 seconds, in percent of one CPU (/proc/stat).
cpu_busy() {
  python3 - "$1" <<'EOF'
import sys, time
def sample():  # user nice system idle iowait irq softirq steal: busy and all but guest time
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy, sum(v)
b0, t0 = sample(); time.sleep(float(sys.argv[1])); b1, t1 = sample()
import os
print(f"{100.0 * (b1 - b0) / (t1 - t0) * os.cpu_count():.0f}")
EOF
}

quiet_before=$(cpu_busy 2)

replica_port=$(free_port)
"${server_cpu[@]}" "$REPLICA" --address 127.0.0.1 --port "$replica_port" --id 1 \
  2>"$tmp/replica.log" &
replica_pid=$!
started+=("$replica_pid")

nginx_port=$(free_port)
nginx_home_conf "$tmp" "$nginx_port" "$BODY" >"$tmp/nginx.conf"
"${server_cpu[@]}" nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/error.log" -g 'daemon off;' &
nginx_master=$!
started+=("$nginx_master")

wait_home "$replica_port" "$BODY"
wait_home "$nginx_port" "$BODY"
nginx_worker=$(pgrep -P "$nginx_master" | head -1)
[ -n "$nginx_worker" ] || { echo "replica_vs_nginx: no nginx worker" >&2; exit 1; }

# Hardware counters and syscall tracepoints where this machine has them (a VM may have no PMU).
# The idle replica makes the probe say "<not counted>"; "<not supported>" means no such counter.
events=task-clock
for event in instructions raw_syscalls:sys_enter; do
  if perf stat -e "$event" -x, -o "$tmp/probe.csv" -p "$replica_pid" -- sleep 0.1 2>/dev/null &&
     grep -q ",$event," "$tmp/probe.csv" && ! grep -q "<not supported>" "$tmp/probe.csv"; then
    events=$events,$event
  fi
done

busy_jiffies() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }  # as cpu_busy

echo "round,target,requests,seconds,errors,server_ms,instructions,syscalls,wrk_ms,busy_ms" >"$tmp/rounds.csv"
for round in $(seq 1 "$ROUNDS"); do
  for target in replica nginx; do
    port=$replica_port pid=$replica_pid
    [ "$target" = nginx ] && port=$nginx_port pid=$nginx_worker
    url=http://127.0.0.1:$port/home
    "${client_cpu[@]}" wrk -t1 -c64 -d"${WARMUP}s" "$url" >/dev/null
    out=$tmp/$target-$round
    busy0=$(busy_jiffies)
    perf stat -e "$events" -x, -o "$out.perf" -p "$pid" -- sleep "$DURATION" &
    perf_pid=$!
    "${client_cpu[@]}" perf stat -e task-clock -x, -o "$out.wrkcpu" \
      wrk -t1 -c64 -d"${DURATION}s" "$url" >"$out.wrk"
    wait "$perf_pid"
    busy1=$(busy_jiffies)
    busy_ms=$(( (busy1 - busy0) * 1000 / $(getconf CLK_TCK) ))
    python3 - "$round" "$target" "$out" "$busy_ms" >>"$tmp/rounds.csv" <<'EOF'
import re, sys
round_, target, out, busy_ms = sys.argv[1:]
wrk = open(out + ".wrk").read()
m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", wrk)
requests, seconds = int(m.group(1)), float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(3)]
errors = sum(int(x) for x in
             re.findall(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout):? (\d+)", wrk))
def perf(path, event):
    for line in open(path):
        f = line.split(",")
        if len(f) > 2 and f[2] == event and f[0][:1].isdigit():
            return float(f[0])
    return ""
print(f"{round_},{target},{requests},{seconds},{errors},{perf(out + '.perf', 'task-clock')},"
      f"{perf(out + '.perf', 'instructions')},{perf(out + '.perf', 'raw_syscalls:sys_enter')},"
      f"{perf(out + '.wrkcpu', 'task-clock')},{busy_ms}")
EOF
  done
done

quiet_after=$(cpu_busy 2)

python3 - "$tmp/rounds.csv" "$quiet_before" "$quiet_after" "$DURATION" <<'EOF'
import csv, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
quiet_before, quiet_after, duration = sys.argv[2], sys.argv[3], float(sys.argv[4])
def num(x): return float(x) if x else None
print("| round | target | req/s | server CPU | µs CPU / req | instructions / req | syscalls / req "
      "| wrk CPU | others' CPU | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
by = {"replica": [], "nginx": []}
for r in rows:
    req, sec = int(r["requests"]), float(r["seconds"])
    server_ms, instr, wrk_ms = num(r["server_ms"]), num(r["instructions"]), num(r["wrk_ms"])
    syscalls, busy_ms = num(r["syscalls"]), float(r["busy_ms"])
    rate = req / sec
    ipr = instr / req if instr else None
    spr = f"{syscalls / req:.2f}" if syscalls else "n/a"
    others = busy_ms - (server_ms or 0) - (wrk_ms or 0)
    by[r["target"]].append((int(r["round"]), rate, ipr, server_ms * 1000 / req))
    print(f"| {r['round']} | {r['target']} | {rate:,.0f} | {server_ms / duration / 10:.0f}% | "
          f"{server_ms * 1000 / req:.2f} | {f'{ipr:,.0f}' if ipr else 'n/a'} | {spr} | "
          f"{wrk_ms / sec / 10:.0f}% | {max(others, 0) / sec / 10:.0f}% | {r['errors']} |")
print()
med = {t: statistics.median(v[1] for v in by[t]) for t in by}
cpu = {t: statistics.median(v[3] for v in by[t]) for t in by}
pairs = [a[1] / b[1] for a, b in zip(by["replica"], by["nginx"])]
print(f"median req/s: replica {med['replica']:,.0f}, nginx {med['nginx']:,.0f}; "
      f"ratio replica/nginx {med['replica'] / med['nginx']:.2f} "
      f"(same-round pairs: {', '.join(f'{p:.2f}' for p in pairs)})")
print(f"median CPU per request: replica {cpu['replica']:.2f} µs, nginx {cpu['nginx']:.2f} µs; "
      f"ratio {cpu['replica'] / cpu['nginx']:.2f}")
if all(v[2] for t in by for v in by[t]):
    ipr = {t: statistics.median(v[2] for v in by[t]) for t in by}
    print(f"median instructions per request: replica {ipr['replica']:,.0f}, "
          f"nginx {ipr['nginx']:,.0f}; ratio {ipr['replica'] / ipr['nginx']:.2f}")
else:
    print("instructions per request: n/a (perf stat -e instructions: no hardware counters)")
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
              if l.startswith("model name")), "?")
print(f"machine: {model}, {len(os.sched_getaffinity(0))} CPUs; {quiet_before}% of one CPU busy in "
      f"the 2 s before the run, {quiet_after}% in the 2 s after")
EOF
