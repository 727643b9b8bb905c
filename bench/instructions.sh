#!/usr/bin/env bash
# User-space instructions per request of ringlb-replica and of nginx answering the same GET /home,
# counted by valgrind's callgrind (bench/RESULTS.md, "Replica vs nginx: instructions per request").
#
# This machine's VM exposes no hardware counters (perf stat -e instructions: <not supported>), and
# callgrind's count does not depend on what else the machine is doing. Each server runs alone under
# callgrind (nginx as one process: master_process off) and answers SMALL, then LARGE keep-alive
# requests from ringlb-loadgen (64 connections) in two separate runs; the difference of the two
# totals divided by LARGE - SMALL is the cost of one request without start-up and shutdown. The
# kernel's share (the loopback TCP stack, about 90% of the CPU time here) is not counted.
#
# Usage: bench/instructions.sh [BUILD_DIR]    env: SMALL=2000 LARGE=12000 REPEAT=2
# Takes about a minute; on exit it kills what it started.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BUILD=${1:-build}
SMALL=${SMALL:-2000}
LARGE=${LARGE:-12000}
REPEAT=${REPEAT:-2}
REPLICA=$BUILD/replica/ringlb-replica
LOADGEN=$BUILD/bench/loadgen/ringlb-loadgen
BODY='{"message": "Hello from Server: 1", "status": "successful"}'

for tool in valgrind nginx python3; do
  command -v "$tool" >/dev/null || { echo "instructions: $tool is not installed" >&2; exit 1; }
done
for bin in "$REPLICA" "$LOADGEN"; do
  [ -x "$bin" ] || { echo "instructions: no $bin (build first)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/ringlb-instructions.XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# Runs target $1 under callgrind, sends $2 requests, stops it and prints callgrind's total.
count() {
  local target=$1 requests=$2 port out stop_signal
  port=$(free_port)
  out=$tmp/$target-$requests.callgrind
  if [ "$target" = replica ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$REPLICA" --address 127.0.0.1 --port "$port" --id 1 2>"$tmp/valgrind.log" &
    stop_signal=TERM
  else
    nginx_home_conf "$tmp" "$port" "$BODY" "master_process off; daemon off;" >"$tmp/nginx.conf"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/error.log" 2>"$tmp/valgrind.log" &
    stop_signal=QUIT  # nginx's graceful stop
  fi
  server_pid=$!
  wait_home "$port" "$BODY" 20  # callgrind starts slowly
  "$LOADGEN" -q -n "$requests" -c 64 -T 120 -j "$tmp/loadgen.json" \
    "http://127.0.0.1:$port/home" >/dev/null
  python3 - "$tmp/loadgen.json" "$requests" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["totals"]
if t["ok"] != int(sys.argv[2]):
    sys.exit(f"instructions: only {t['ok']} of {sys.argv[2]} requests answered 200")
EOF
  kill -"$stop_signal" "$server_pid"
  wait "$server_pid" || true
  server_pid=
  awk '/^summary:/ {print $2}' "$out"
}

echo "target,repeat,small_total,large_total,per_request" >"$tmp/counts.csv"
for repeat in $(seq 1 "$REPEAT"); do
  for target in replica nginx; do
    small=$(count "$target" "$SMALL")
    large=$(count "$target" "$LARGE")
    echo "$target,$repeat,$small,$large,$(( (large - small) / (LARGE - SMALL) ))" >>"$tmp/counts.csv"
  done
done

python3 - "$tmp/counts.csv" "$SMALL" "$LARGE" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"| target | repeat | total at {int(sys.argv[2]):,} req | total at {int(sys.argv[3]):,} req "
      "| instructions / request |")
print("|---|---|---|---|---|")
per = {}
for r in rows:
    per.setdefault(r["target"], []).append(int(r["per_request"]))
    print(f"| {r['target']} | {r['repeat']} | {int(r['small_total']):,} | {int(r['large_total']):,} "
          f"| {int(r['per_request']):,} |")
med = {t: statistics.median(v) for t, v in per.items()}
print()
print(f"median instructions per request: replica {med['replica']:,.0f}, nginx {med['nginx']:,.0f}; "
      f"ratio replica/nginx {med['replica'] / med['nginx']:.2f}")
EOF
