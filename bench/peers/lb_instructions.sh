#!/usr/bin/env bash
# User-space instructions and syscalls per proxied request of ringlb (bench/RESULTS.md, "Peers:
# ringlb vs HAProxy vs NGINX", where the proxy's hot path was made cheaper). Figures that do not
# depend on what else this shared machine is doing, unlike requests/s.
#
# Three ringlb-replica processes on 127.0.0.1 behind ringlb (--provisioner static, default ring).
# Each ringlb binary given is measured in two modes: keep-alive (ringlb-loadgen, 64 connections, a
# random X-Request-Id per request) and a new connection per request (--no-keepalive: HTTP/1.0, as
# ab does).
#   instructions: ringlb runs under valgrind's callgrind and answers SMALL requests in one run,
#     LARGE in another; the difference of the two totals over LARGE - SMALL is the cost of one
#     request without start-up and shutdown (as bench/instructions.sh does for the replica). The
#     kernel's part (loopback TCP, epoll: most of the LB's CPU time) is not in it.
#   syscalls: ringlb runs normally, strace -c -f counts its system calls over LARGE requests
#     (skipped when strace is not installed).
#
# Two builds side by side (main before and after a change): every further argument is another
# ringlb, given as a build folder (its lb/ringlb) or as the binary itself; the replicas and the load
# generator come from the first build. Each binary is counted in the same run, interleaved (round
# by round, within a round mode by mode, binary after binary), and the table ends with each one's
# ratio to the first: the per-request cost of a change, free of the machine's drift. ROUNDS > 1
# repeats the interleaved counts and reports medians (callgrind's count repeats within about 1%,
# but the loop's batching, so the count per request, depends a little on timing).
#
# WORKERS="1 2" measures each binary once per worker count (`--workers N`), as further variants in
# the same interleaving (issue 12: instructions per request at 1 and 2 workers, equal within 3%).
# callgrind runs one thread at a time, which changes when each thread runs but not what it counts;
# with N workers the totals include every thread (control loop and workers), so the per-request
# figure also carries what the workers report to the control loop over the longer run. Empty
# WORKERS (the default) passes no --workers flag: the binary's default.
#
# A further argument may also be a binary followed by flags, in one argument ("build/lb/ringlb
# --access-log json --access-log-file /tmp/a.log"): the same binary with an option on, side by side
# with it off (bench/peers/access_log.sh's instruction counts).
#
# Usage: bench/peers/lb_instructions.sh [BUILD_DIR] [OTHER_BUILD_DIR_OR_RINGLB...]
#   e.g. bench/peers/lb_instructions.sh /tmp/main-before/build /tmp/main-after/build
#        WORKERS="1 2" SYSCALLS=0 bench/peers/lb_instructions.sh build
#   env: SMALL=2000 LARGE=12000 ROUNDS=1 SYSCALLS=1 (0 skips the strace counts) WORKERS=
# Takes one to two minutes per variant (binary x worker count) and round; on exit it stops what it
# started.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"      # free_port, start_replicas
. "$(dirname "$0")/peers_lib.sh"  # wait_lb_home

BUILD=${1:-build}
shift || true
BINARIES=("$BUILD/lb/ringlb")
for other in "$@"; do
  if [ -d "$other" ]; then BINARIES+=("$other/lb/ringlb"); else BINARIES+=("$other"); fi
done
SMALL=${SMALL:-2000}
LARGE=${LARGE:-12000}
ROUNDS=${ROUNDS:-1}
SYSCALLS=${SYSCALLS:-1}
read -r -a WORKER_COUNTS <<<"${WORKERS:-}"
REPLICA=$BUILD/replica/ringlb-replica
LOADGEN=$BUILD/bench/loadgen/ringlb-loadgen

for tool in valgrind python3; do
  command -v "$tool" >/dev/null || { echo "lb_instructions: $tool is not installed" >&2; exit 1; }
done
for bin in "${BINARIES[@]}" "$REPLICA" "$LOADGEN"; do
  [ -x "${bin%% *}" ] || { echo "lb_instructions: no ${bin%% *} (build first)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/ringlb-lb-instructions.XXXXXX)
started=() lb_pid=
cleanup() {
  [ -n "$lb_pid" ] && kill "$lb_pid" 2>/dev/null && wait "$lb_pid" 2>/dev/null
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

start_replicas "$REPLICA"  # sets backends

# The variants measured: "BINARY" or "BINARY --workers N", binary by binary.
VARIANTS=()
for bin in "${BINARIES[@]}"; do
  if [ ${#WORKER_COUNTS[@]} -eq 0 ]; then
    VARIANTS+=("$bin")
  else
    for n in "${WORKER_COUNTS[@]}"; do VARIANTS+=("$bin --workers $n"); done
  fi
done

# load PORT MODE N: N requests through the LB on PORT; fails unless every one answered 200.
load() {
  local flags=(--rid --seed 1 -c 64)
  [ "$2" = newconn ] && flags+=(--no-keepalive)
  "$LOADGEN" -q "${flags[@]}" -n "$3" -T 120 -j "$tmp/loadgen.json" \
    "http://127.0.0.1:$1/home" >/dev/null 2>&1
  python3 - "$tmp/loadgen.json" "$3" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["totals"]
if t["ok"] != int(sys.argv[2]):
    sys.exit(f"lb_instructions: only {t['ok']} of {sys.argv[2]} requests answered 200")
EOF
}

# count VARIANT MODE N: callgrind's total for ringlb VARIANT (a binary and its extra flags, split on
# spaces) answering N requests in MODE, over all its threads.
count() {
  local port out variant
  read -r -a variant <<<"$1"
  port=$(free_port)
  out=$tmp/callgrind.out
  valgrind --tool=callgrind --callgrind-out-file="$out" "${variant[@]}" --provisioner static \
    "${backends[@]}" --listen "127.0.0.1:$port" --log-level warn 2>"$tmp/valgrind.log" &
  lb_pid=$!
  wait_lb_home "$port" 30  # callgrind starts slowly
  load "$port" "$2" "$3"
  kill -TERM "$lb_pid"
  wait "$lb_pid" || true
  lb_pid=
  awk '/^summary:/ {print $2}' "$out"
}

# syscalls VARIANT MODE N: system calls of ringlb VARIANT per request over N requests in MODE
# (strace -c -f: every thread).
syscalls() {
  local port strace_pid variant
  read -r -a variant <<<"$1"
  port=$(free_port)
  "${variant[@]}" --provisioner static "${backends[@]}" --listen "127.0.0.1:$port" --log-level warn \
    2>"$tmp/ringlb.log" &
  lb_pid=$!
  wait_lb_home "$port"
  load "$port" "$2" 1000  # warm: the upstream pools fill
  strace -c -f -o "$tmp/strace.txt" -p "$lb_pid" 2>/dev/null &
  strace_pid=$!
  sleep 0.5
  load "$port" "$2" "$3"
  kill -INT "$strace_pid"
  wait "$strace_pid" || true
  kill -TERM "$lb_pid"
  wait "$lb_pid" || true
  lb_pid=
  # strace -c's total line: "100.00  SECONDS  USECS/CALL  CALLS  ERRORS total"
  awk -v n="$3" '$NF == "total" {printf "%.2f\n", $(NF - 2) / n}' "$tmp/strace.txt"
}

echo "round,binary,mode,small_total,large_total,per_request,syscalls" >"$tmp/counts.csv"
for round in $(seq 1 "$ROUNDS"); do
  for mode in keepalive newconn; do
    for bin in "${VARIANTS[@]}"; do
      echo "lb_instructions: round $round/$ROUNDS, $bin, $mode" >&2
      small=$(count "$bin" "$mode" "$SMALL")
      large=$(count "$bin" "$mode" "$LARGE")
      calls=n/a
      [ "$SYSCALLS" = 1 ] && command -v strace >/dev/null && calls=$(syscalls "$bin" "$mode" "$LARGE")
      echo "$round,$bin,$mode,$small,$large,$(( (large - small) / (LARGE - SMALL) )),$calls" >>"$tmp/counts.csv"
    done
  done
done

python3 - "$tmp/counts.csv" "$SMALL" "$LARGE" "$ROUNDS" "${VARIANTS[@]}" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
small, large, rounds, variants = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
# With WORKERS, each variant is also compared with the same binary at the first worker count.
by_workers = any(" --workers " in v for v in variants)
print(f"Instructions per request: (callgrind total at {large:,} requests - total at {small:,}) / "
      f"{large - small:,}; median of {rounds} interleaved round(s); syscalls by strace -c over {large:,}.")
print()
print("| ringlb binary | connections | instructions / request (each round) | median | vs the first "
      + ("| vs the same binary's first --workers " if by_workers else "") + "| syscalls / request |")
print("|---|---|---|---|---|---|" + ("---|" if by_workers else ""))
def ratio(m, base):
    return f"{m / base:.4f} ({100 * (m / base - 1):+.1f}%)"
for mode in ("keepalive", "newconn"):
    label = "keep-alive" if mode == "keepalive" else "new per request"
    first, first_of = None, {}
    for i, v in enumerate(variants):
        rs = [r for r in rows if r["binary"] == v and r["mode"] == mode]
        per = [int(r["per_request"]) for r in rs]
        calls = [float(r["syscalls"]) for r in rs if r["syscalls"] != "n/a"]
        m = statistics.median(per)
        first = m if first is None else first
        binary = v.split(" --workers ")[0]
        is_first = binary not in first_of
        same = first_of.setdefault(binary, m)
        print(f"| {v} | {label} | {', '.join(f'{x:,}' for x in per)} | {m:,.0f} "
              f"| {'1' if i == 0 else ratio(m, first)} "
              + (f"| {'1' if is_first else ratio(m, same)} " if by_workers else "")
              + f"| {format(statistics.median(calls), '.2f') if calls else 'n/a'} |")
EOF
