#!/usr/bin/env bash
# HTTP/2 to clients: ringlb beside HAProxy and NGINX with h2load, same three replicas, one interleaved
# run (issue 15, "Benchmark"; bench/RESULTS.md, "HTTP/2 to clients").
#
# Three ringlb-replica processes (server1..server3) on 127.0.0.1 and, in front of the same three, each
# with one thread or process, speaking h2c (prior knowledge) to h2load and HTTP/1.1 keep-alive to the
# replicas, consistent hashing on the request URI:
#   ringlb    --provisioner static --hash-key path --workers 1;
#   haproxy   bench/lib.sh's configuration with `balance uri` and `bind ... proto h2`, nbthread 1;
#   nginx     bench/lib.sh's configuration with `hash $request_uri consistent` and `listen ... http2`,
#             worker_processes 1.
# The load: h2load -t1 -c$CONNECTIONS -m$STREAMS (concurrent streams per connection) over $KEYS URIs
# /home?k=N, a $WARMUP s warm-up run, then $DURATION s measured under measure.py (requests/s, CPU of the LB
# process, h2load's CPU, the machine's other load), in $ROUNDS rounds whose order rotates.
#
# Usage: bench/peers/h2.sh [BUILD_DIR]
#   env: ROUNDS=3 DURATION=6 WARMUP=2 CONNECTIONS=16 STREAMS=10 KEYS=300 QUIET_MAX=25 QUIET_WAIT=10
#        RINGLB=path/to/ringlb
# Output: a Markdown section on stdout. Stops what it started on exit.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"  # free_port, start_replicas, haproxy_lb_conf, nginx_lb_conf

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-16}
STREAMS=${STREAMS:-10}
KEYS=${KEYS:-300}
QUIET_MAX=${QUIET_MAX:-25}
QUIET_WAIT=${QUIET_WAIT:-10}
RINGLB=${RINGLB:-$BUILD/lb/ringlb}
REPLICA=$BUILD/replica/ringlb-replica
need_tools h2 h2load haproxy nginx python3 curl

bench_tmp h2-bench

start_replicas "$REPLICA"
replica_csv=$(IFS=,; echo "${replica_pids[*]}")

declare -A port_of pid_of
port=$(free_port)
"$RINGLB" --provisioner static "${backends[@]}" --listen "127.0.0.1:$port" --workers 1 \
  --hash-key path --log-level warn 2>"$tmp/ringlb.log" &
started+=($!)
port_of[ringlb]=$port pid_of[ringlb]=$!

port=$(free_port)
haproxy_lb_conf "$port" 1 "  maxconn 4096" "" "" |
  sed -e "s|^  bind 127.0.0.1:$port\$|  bind 127.0.0.1:$port proto h2|" \
      -e "s|^  balance hdr(X-Request-Id)\$|  balance uri|" >"$tmp/haproxy.cfg"
grep -q "proto h2" "$tmp/haproxy.cfg" && grep -q "balance uri" "$tmp/haproxy.cfg" ||
  { echo "h2: haproxy configuration lines not found" >&2; exit 1; }
haproxy -c -q -f "$tmp/haproxy.cfg"
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
started+=($!)
port_of[haproxy]=$port pid_of[haproxy]=$!

port=$(free_port)
mkdir -p "$tmp/nginx"
nginx_lb_conf "$tmp/nginx" "$port" 1 "$tmp/nginx/error.log" "" |
  sed -e "s|^    listen 127.0.0.1:$port;\$|    listen 127.0.0.1:$port http2;|" \
      -e 's|^    hash $http_x_request_id consistent;$|    hash $request_uri consistent;|' >"$tmp/nginx.conf"
grep -q "http2;" "$tmp/nginx.conf" && grep -q 'hash $request_uri' "$tmp/nginx.conf" ||
  { echo "h2: nginx configuration lines not found" >&2; exit 1; }
nginx -p "$tmp/nginx" -c "$tmp/nginx.conf" -g "daemon off;" 2>"$tmp/nginx.stderr" &
started+=($!)
port_of[nginx]=$port
for _ in $(seq 100); do [ -s "$tmp/nginx/nginx.pid" ] && break; sleep 0.1; done
nginx_master=$(cat "$tmp/nginx/nginx.pid")
pid_of[nginx]=$(pgrep -P "$nginx_master" | paste -sd, -)  # the worker process(es)

targets=(ringlb haproxy nginx)
for t in "${targets[@]}"; do
  for _ in $(seq 100); do
    curl -sf --http2-prior-knowledge "http://127.0.0.1:${port_of[$t]}/home?k=1" >/dev/null && break
    sleep 0.1
  done
  curl -sf --http2-prior-knowledge "http://127.0.0.1:${port_of[$t]}/home?k=1" >/dev/null ||
    { echo "h2: $t does not answer h2c" >&2; exit 1; }
  for k in $(seq 1 "$KEYS"); do echo "http://127.0.0.1:${port_of[$t]}/home?k=$k"; done >"$tmp/uris-$t"
done

mkdir -p "$tmp/rounds"
for round in $(seq 1 "$ROUNDS"); do
  n=${#targets[@]}
  for i in $(seq 0 $((n - 1))); do
    t=${targets[$(((i + round) % n))]}
    echo "h2: round $round/$ROUNDS, $t" >&2
    h2load -t1 -c"$CONNECTIONS" -m"$STREAMS" -D "$WARMUP" -i "$tmp/uris-$t" >/dev/null  # warm-up
    python3 "$HERE/measure.py" --out "$tmp/rounds/$round-$t.json" --stdout "$tmp/rounds/$round-$t.txt" \
      --group "lb=${pid_of[$t]}" --group "replicas=$replica_csv" --quiet-max "$QUIET_MAX" \
      --quiet-wait "$QUIET_WAIT" -- \
      h2load -t1 -c"$CONNECTIONS" -m"$STREAMS" -D "$DURATION" -i "$tmp/uris-$t"
  done
done

python3 - "$tmp/rounds" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$STREAMS" "$KEYS" <<'PY'
import json, os, re, statistics, sys
folder, rounds, duration, conns, streams, keys = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
def load(r, t):
    d = json.load(open(os.path.join(folder, f"{r}-{t}.json")))
    text = open(os.path.join(folder, f"{r}-{t}.txt")).read()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    rate = re.search(r"finished in [^,]+, ([\d.]+) req/s", text)
    req_s = float(rate.group(1)) if rate else 0.0
    done = int(m.group(3)) if m else 0
    return {"req_s": req_s, "cpu_us": 1e6 * d["groups_cpu_s"]["lb"] / max(done, 1),
            "client_cpu": 100 * d["command_cpu_s"] / d["wall_s"], "others": d["others_cpu_pct"],
            "failed": (int(m.group(5)) + int(m.group(6))) if m else -1,
            "non2xx": sum(int(codes.group(i)) for i in (2, 3, 4)) if codes else -1}  # -1: no line
print(f"h2load -t1 -c{conns} -m{streams}, {keys} URIs, {duration} s measured windows, "
      f"{rounds} rounds in rotating order; h2c (prior knowledge) to each LB, HTTP/1.1 keep-alive "
      f"to the same three replicas.\n")
print("| target | req/s (median) | LB CPU µs per request (median) | h2load CPU % | others' CPU % (max) | failed | non-2xx |")
print("|---|---|---|---|---|---|---|")
for t in ("ringlb", "haproxy", "nginx"):
    rs = [load(r, t) for r in range(1, rounds + 1)]
    print(f"| {t} | {statistics.median(x['req_s'] for x in rs):,.0f} | "
          f"{statistics.median(x['cpu_us'] for x in rs):.1f} | "
          f"{statistics.median(x['client_cpu'] for x in rs):.0f} | {max(x['others'] for x in rs):.0f} | "
          f"{sum(x['failed'] for x in rs)} | {sum(x['non2xx'] for x in rs)} |")
PY
