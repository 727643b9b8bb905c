#!/usr/bin/env bash
# TLS termination: ringlb beside HAProxy, same certificate, same three replicas, one interleaved run
# (issue 15, "Benchmark"; bench/RESULTS.md, "TLS termination"; method in ../shared/BENCHMARKING.md).
#
# Three ringlb-replica processes (server1..server3) on 127.0.0.1 and, in front of the same three:
#   ringlb    --provisioner static, key X-Request-Id, --workers 1, --tls-cert/--tls-key;
#   haproxy   bench/lib.sh's configuration (balance hdr(X-Request-Id) + hash-type consistent,
#             http-reuse always, forwardfor), nbthread 1, `bind ... ssl crt` with the same pair,
#             TLS 1.2 minimum, ALPN http/1.1, X-Forwarded-Proto: https set (as ringlb does).
# The pair is made here with `openssl req` (KEY=ec, P-256, by default; KEY=rsa: RSA 2048).
#
# Two measures, each a wrk window per LB per round, in rounds whose order alternates:
#   new        wrk -t1 -c$NEW_CONNECTIONS, every request with Connection: close: one TLS connection
#              per request (wrk keeps its client session, so the handshakes are resumptions when the
#              server issued a ticket: both LBs do);
#   keepalive  wrk -t1 -c$CONNECTIONS over long-lived TLS connections.
# Per window (bench/peers/peers_lib.sh measure_wrk and measure.py): requests/s, CPU seconds of the LB
# process (all threads) from /proc, wrk's own CPU, and the machine's other load. The report: medians
# over the rounds and the ratio ringlb/HAProxy of CPU per request, round by round.
#
# A third measure (IDLE=1, the default), before the rounds: memory per idle keep-alive TLS
# connection of each LB, by bench/peers/tls_idle.py: IDLE_WARM connections serving a request each,
# VmRSS, IDLE_COUNT more each serving a keep-alive request then left idle, VmRSS again; the
# difference over IDLE_COUNT (and each idle connection then serves one more request). ROUNDS=0 with
# IDLE=1 measures only that.
#
# Usage: bench/peers/tls.sh [BUILD_DIR]
#   env: ROUNDS=3 DURATION=6 WARMUP=2 CONNECTIONS=64 NEW_CONNECTIONS=16 KEY=ec SEED=42
#        QUIET_MAX=25 QUIET_WAIT=10 RETRIES=1 RINGLB=path/to/ringlb IDLE=1 IDLE_WARM=20 IDLE_COUNT=400
# Output: a Markdown section on stdout. Stops what it started on exit.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"      # free_port, start_replicas, haproxy_lb_conf
. "$(dirname "$0")/peers_lib.sh"  # measure_wrk (needs CONNECTIONS, WARMUP, DURATION, ...)

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
NEW_CONNECTIONS=${NEW_CONNECTIONS:-16}
KEY=${KEY:-ec}
SEED=${SEED:-42}
QUIET_MAX=${QUIET_MAX:-25}
QUIET_WAIT=${QUIET_WAIT:-10}
RETRIES=${RETRIES:-1}
RINGLB=${RINGLB:-$BUILD/lb/ringlb}
IDLE=${IDLE:-1}
IDLE_WARM=${IDLE_WARM:-20}
IDLE_COUNT=${IDLE_COUNT:-400}
REPLICA=$BUILD/replica/ringlb-replica
need_tools tls wrk haproxy openssl python3

bench_tmp tls-bench

case $KEY in
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) newkey=(-newkey rsa:2048) ;;
  *) echo "tls: KEY must be ec or rsa" >&2; exit 2 ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"

start_replicas "$REPLICA"
replica_csv=$(IFS=,; echo "${replica_pids[*]}")

declare -A port_of pid_of
port=$(free_port)
"$RINGLB" --provisioner static "${backends[@]}" --listen "127.0.0.1:$port" --workers 1 \
  --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" --log-level warn 2>"$tmp/ringlb.log" &
started+=($!)
port_of[ringlb]=$port pid_of[ringlb]=$!

port=$(free_port)
haproxy_lb_conf "$port" 1 "  maxconn 4096
  pidfile $tmp/haproxy.pid
  ssl-default-bind-options ssl-min-ver TLSv1.2" "  http-request set-header X-Forwarded-Proto https" "" |
  sed "s|^  bind 127.0.0.1:$port\$|  bind 127.0.0.1:$port ssl crt $tmp/haproxy.pem alpn http/1.1|" >"$tmp/haproxy.cfg"
grep -q "ssl crt" "$tmp/haproxy.cfg" || { echo "tls: haproxy bind line not found" >&2; exit 1; }
haproxy -c -q -f "$tmp/haproxy.cfg"
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
started+=($!)
port_of[haproxy]=$port pid_of[haproxy]=$!

for t in ringlb haproxy; do
  for _ in $(seq 100); do
    curl -sf --cacert "$tmp/cert.pem" -H "X-Request-Id: 123456" "https://127.0.0.1:${port_of[$t]}/home" \
      >/dev/null && break
    sleep 0.1
  done
  curl -sf --cacert "$tmp/cert.pem" "https://127.0.0.1:${port_of[$t]}/home" >/dev/null ||
    { echo "tls: $t does not answer over TLS" >&2; exit 1; }
done

if [ "$IDLE" != 0 ]; then
  echo "Memory per idle keep-alive TLS connection: $IDLE_WARM connections serving a request each, then"
  echo "$IDLE_COUNT more serving a keep-alive request each and left idle (bench/peers/tls_idle.py), VmRSS of the"
  echo "LB before and after them; each idle connection then served one more request."
  echo
  echo "| target | RSS before (KiB) | RSS after (KiB) | per idle connection (KiB) | served after idling |"
  echo "|---|---|---|---|---|"
  for t in ringlb haproxy; do
    echo "tls: idle connections, $t" >&2
    python3 "$HERE/tls_idle.py" --port "${port_of[$t]}" --pid "${pid_of[$t]}" --warm "$IDLE_WARM" \
      --count "$IDLE_COUNT" --row "$t"
  done
  echo
fi

mkdir -p "$tmp/rounds"
client_cpu=()
for round in $(seq 1 "$ROUNDS"); do
  order=(ringlb haproxy)
  [ $((round % 2)) = 1 ] || order=(haproxy ringlb)
  for mode in new keepalive; do
    for t in "${order[@]}"; do
      echo "tls: round $round/$ROUNDS, $mode, $t" >&2
      if [ "$mode" = new ]; then c=$NEW_CONNECTIONS; arg=close; else c=$CONNECTIONS; arg=keep; fi
      # measure_wrk runs request_id.lua; this benchmark needs its own script (Connection: close).
      "${client_cpu[@]}" wrk -t1 -c"$c" -d"${WARMUP}s" -s "$HERE/tls_request.lua" \
        "https://127.0.0.1:${port_of[$t]}/home" -- "$SEED" "$arg" >/dev/null
      python3 "$HERE/measure.py" --out "$tmp/rounds/$round-$mode-$t.json" \
        --stdout "$tmp/rounds/$round-$mode-$t.wrk" --group "lb=${pid_of[$t]}" \
        --group "replicas=$replica_csv" --quiet-max "$QUIET_MAX" --quiet-wait "$QUIET_WAIT" -- \
        wrk -t1 -c"$c" -d"${DURATION}s" --timeout 5s -s "$HERE/tls_request.lua" \
        "https://127.0.0.1:${port_of[$t]}/home" -- "$((SEED + round))" "$arg"
    done
  done
done

[ "$ROUNDS" -gt 0 ] || exit 0
python3 - "$tmp/rounds" "$ROUNDS" "$KEY" "$DURATION" "$CONNECTIONS" "$NEW_CONNECTIONS" <<'PY'
import json, os, re, statistics, sys
folder, rounds, key, duration, conns, new_conns = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
def load(r, mode, t):
    d = json.load(open(os.path.join(folder, f"{r}-{mode}-{t}.json")))
    text = open(os.path.join(folder, f"{r}-{mode}-{t}.wrk")).read()
    n = int(re.search(r"(\d+) requests in", text).group(1))
    errs = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"req_s": n / d["wall_s"], "cpu_us": 1e6 * d["groups_cpu_s"]["lb"] / max(n, 1),
            "wrk_cpu": 100 * d["command_cpu_s"] / d["wall_s"], "others": d["others_cpu_pct"],
            "errors": (errs.group(1) if errs else "") + (f" non-2xx {non2xx.group(1)}" if non2xx else "")}
print(f"Key {key}; wrk -t1, {duration} s windows, {rounds} interleaved rounds; "
      f"new: -c{new_conns} with Connection: close; keepalive: -c{conns}.\n")
print("| measure | target | req/s (median) | LB CPU µs per request (median) | wrk CPU % | others' CPU % (max) | errors |")
print("|---|---|---|---|---|---|---|")
ratios = {}
for mode in ("new", "keepalive"):
    for t in ("ringlb", "haproxy"):
        rs = [load(r, mode, t) for r in range(1, rounds + 1)]
        errs = "; ".join(sorted({x["errors"] for x in rs if x["errors"]})) or "none"
        print(f"| {mode} | {t} | {statistics.median(x['req_s'] for x in rs):,.0f} | "
              f"{statistics.median(x['cpu_us'] for x in rs):.1f} | "
              f"{statistics.median(x['wrk_cpu'] for x in rs):.0f} | {max(x['others'] for x in rs):.0f} | {errs} |")
    ratios[mode] = [load(r, mode, "ringlb")["cpu_us"] / load(r, mode, "haproxy")["cpu_us"]
                    for r in range(1, rounds + 1)]
print()
for mode, rs in ratios.items():
    print(f"- {mode}: ringlb / HAProxy CPU per request, round by round: "
          + ", ".join(f"{x:.2f}" for x in rs) + f" (median {statistics.median(rs):.2f})")
PY
