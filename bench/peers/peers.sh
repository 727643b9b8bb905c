#!/usr/bin/env bash
# ringlb against HAProxy and NGINX in front of the same three replicas, side by side (issues #3 and
# #6; bench/RESULTS.md, "Peers: ringlb vs HAProxy vs NGINX"; method in BENCHMARKING.md).
#
# Three ringlb-replica processes (server1..server3) listen on 127.0.0.1. In front of the same three:
#   ringlb   --provisioner static, default ketama ring, routing key X-Request-Id (its default);
#   HAProxy  balance hdr(X-Request-Id) + hash-type consistent, nbthread 1, http-reuse always,
#            option forwardfor, no logging;
#   NGINX    hash $http_x_request_id consistent, 1 worker, upstream keepalive, HTTP/1.1 upstream,
#            X-Forwarded-For, access_log off;
# and "direct": wrk against server1 alone, the ceiling of what this client can ask. Every LB adds
# X-Forwarded-For, as ringlb always does, so each does the same work per request.
#
# Placement: wrk (and ab, and the load generator) on CPU 0; every LB and the three replicas on CPU 1.
# The replicas are pinned with the LBs rather than left to float, so that they never take time from
# wrk's core and every LB competes with the same replicas for the same core: an LB that needs less CPU
# per request leaves more to the replicas and shows more requests/s. REPLICA_CPU=float lets them float.
#
# Per round (ringlb, haproxy, nginx, direct, repeated ROUNDS times) wrk -t1 -c64 with
# request_id.lua (a random 6-digit X-Request-Id per request) runs WARMUP s, then DURATION s measured
# with --latency. measure.py brackets the measured run with /proc/PID/stat of the LB process (the
# nginx worker), of the replicas and of wrk, and /proc/stat for the rest of the machine; before
# each window it waits up to QUIET_WAIT s for the machine to be quiet (others' CPU at most
# QUIET_MAX % of one CPU) and records what it saw; a window in which other processes still used
# more than QUIET_MAX % is measured again, up to RETRIES times (the report counts the repeats and
# marks windows that stayed noisy). Then, through each target once: ab -n 10000 -c 100
# (HTTP/1.0, no keep-alive; LB and ab CPU measured the same way) and, through each LB, ringlb-loadgen over the same 10,000 request ids
# (--rid --seed SEED) for the distribution over the replicas. Peak RSS is VmHWM of each LB process
# at the end.
#
# BASELINE=PATH adds a fifth target, "ringlb-before": another ringlb binary (an older build) with
# the same flags, measured in the same rounds right after ringlb, for a before/after comparison that
# the machine's drift cannot fake.
#
# Output: a Markdown report on stdout, bench/results/peers.json and bench/results/peers.png (needs
# gnuplot). report.py computes medians and ratios from the raw files.
#
# Usage: bench/peers/peers.sh [BUILD_DIR]
#   env: ROUNDS=3 DURATION=10 WARMUP=2 CONNECTIONS=64 SEED=42 REPLICA_CPU=1|float
#        QUIET_MAX=25 QUIET_WAIT=15 RETRIES=2 RESULTS=bench/results BASELINE=path/to/older/ringlb
# Takes about ROUNDS x 4 x (WARMUP + DURATION + 2) s plus ab and the distribution runs (under a
# minute): about 4 minutes on a quiet machine. On a busy one each window may wait QUIET_WAIT + 1 s
# and be repeated RETRIES times: at most ROUNDS x 4 x (WARMUP + (RETRIES + 1) x (QUIET_WAIT +
# DURATION + 2)) s, 17 minutes with the defaults, within bench/run.sh's 20-minute step limit. On exit
# it stops what it started.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"      # free_port, start_replicas, haproxy_lb_conf, nginx_lb_conf
. "$(dirname "$0")/peers_lib.sh"  # wait_lb_home, cpu_busy, measure_wrk

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
SEED=${SEED:-42}
REPLICA_CPU=${REPLICA_CPU:-1}
QUIET_MAX=${QUIET_MAX:-25}
QUIET_WAIT=${QUIET_WAIT:-15}
RETRIES=${RETRIES:-2}
RESULTS=${RESULTS:-$ROOT/bench/results}
RINGLB=$BUILD/lb/ringlb
REPLICA=$BUILD/replica/ringlb-replica
LOADGEN=$BUILD/bench/loadgen/ringlb-loadgen
BASELINE=${BASELINE:-}
TARGETS=(ringlb haproxy nginx direct)
LBS=(ringlb haproxy nginx)
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || { echo "peers: BASELINE=$BASELINE is not an executable" >&2; exit 1; }
  TARGETS=(ringlb ringlb-before haproxy nginx direct)
  LBS=(ringlb ringlb-before haproxy nginx)
fi

need_tools peers wrk ab haproxy nginx python3 taskset
for bin in "$RINGLB" "$REPLICA" "$LOADGEN"; do
  [ -x "$bin" ] || { echo "peers: no $bin (build first: ninja -C $BUILD)" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "peers: needs two CPUs (wrk on CPU 0, the servers on CPU 1)" >&2; exit 1; }

bench_tmp peers

client_cpu=(taskset -c 0)
server_cpu=(taskset -c 1)
replica_cpu=("${server_cpu[@]}")
[ "$REPLICA_CPU" = float ] && replica_cpu=()

quiet_before=$(cpu_busy 2)

# --- the three replicas ---------------------------------------------------------------------------
start_replicas "$REPLICA" "${replica_cpu[@]}"  # sets replica_ports, replica_pids, backends

# --- ringlb ---------------------------------------------------------------------------------------
ringlb_port=$(free_port)
"${server_cpu[@]}" "$RINGLB" --provisioner static "${backends[@]}" --listen "127.0.0.1:$ringlb_port" \
  --log-level warn 2>"$tmp/ringlb.log" &
ringlb_pid=$!
started+=("$ringlb_pid")
before_port= before_pid=
if [ -n "$BASELINE" ]; then
  before_port=$(free_port)
  "${server_cpu[@]}" "$BASELINE" --provisioner static "${backends[@]}" \
    --listen "127.0.0.1:$before_port" --log-level warn 2>"$tmp/ringlb-before.log" &
  before_pid=$!
  started+=("$before_pid")
fi

# --- HAProxy --------------------------------------------------------------------------------------
haproxy_port=$(free_port)
haproxy_lb_conf "$haproxy_port" 1 "  maxconn 4096
  pidfile $tmp/haproxy.pid" "" "" >"$tmp/haproxy.cfg"
haproxy -c -q -f "$tmp/haproxy.cfg"
"${server_cpu[@]}" haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
haproxy_pid=$!
started+=("$haproxy_pid")

# --- NGINX ----------------------------------------------------------------------------------------
nginx_port=$(free_port)
nginx_lb_conf "$tmp" "$nginx_port" 1 "$tmp/nginx-error.log" "" >"$tmp/nginx.conf"
"${server_cpu[@]}" nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/nginx-error.log" -g 'daemon off;' &
nginx_master=$!
started+=("$nginx_master")

wait_lb_home "$ringlb_port"
[ -z "$BASELINE" ] || wait_lb_home "$before_port"
wait_lb_home "$haproxy_port"
wait_lb_home "$nginx_port"
nginx_worker=$(pgrep -P "$nginx_master" | head -1)
[ -n "$nginx_worker" ] || { echo "peers: no nginx worker" >&2; exit 1; }
[ "$(pgrep -c -P "$haproxy_pid" || true)" = 0 ] || { echo "peers: haproxy forked" >&2; exit 1; }

declare -A port_of=([ringlb]=$ringlb_port [ringlb-before]=$before_port [haproxy]=$haproxy_port
                    [nginx]=$nginx_port [direct]=${replica_ports[0]})
declare -A lb_pid=([ringlb]=$ringlb_pid [ringlb-before]=$before_pid [haproxy]=$haproxy_pid
                   [nginx]=$nginx_worker [direct]=)
replica_csv=$(IFS=,; echo "${replica_pids[*]}")

# --- wrk rounds -----------------------------------------------------------------------------------
mkdir -p "$tmp/rounds" "$tmp/ab" "$tmp/dist"
for round in $(seq 1 "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    url=http://127.0.0.1:${port_of[$target]}/home
    echo "peers: round $round/$ROUNDS, $target" >&2
    measure_wrk "$tmp/rounds/$round-$target" "$url" "$((SEED + round))" \
      "lb=${lb_pid[$target]}" "replicas=$replica_csv"
  done
done

# --- ab: no keep-alive, one connection per request ------------------------------------------------
for target in "${TARGETS[@]}"; do
  echo "peers: ab through $target" >&2
  python3 "$HERE/measure.py" --out "$tmp/ab/$target.json" --stdout "$tmp/ab/$target.txt" \
    --group "lb=${lb_pid[$target]}" --group "replicas=$replica_csv" \
    --quiet-max "$QUIET_MAX" --quiet-wait "$QUIET_WAIT" -- \
    "${client_cpu[@]}" ab -q -n 10000 -c 100 -s 10 "http://127.0.0.1:${port_of[$target]}/home" \
    || true  # a failed run is reported from its output
done

# --- distribution of the same 10,000 request ids --------------------------------------------------
for target in "${LBS[@]}"; do
  echo "peers: distribution through $target" >&2
  "${client_cpu[@]}" "$LOADGEN" --rid --seed "$SEED" -n 10000 -c 10 -q -T 60 \
    -j "$tmp/dist/$target.json" "http://127.0.0.1:${port_of[$target]}/home" >/dev/null 2>&1
done

quiet_after=$(cpu_busy 2)

# --- peak memory and versions ---------------------------------------------------------------------
hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
before_hwm=None
[ -z "$BASELINE" ] || before_hwm=$(hwm "$before_pid")
python3 - "$tmp/meta.json" <<EOF
import json, sys
json.dump({
  "date": "$(date -u +%Y-%m-%d)",
  "command": "bench/peers/peers.sh $BUILD",
  "targets": "${TARGETS[*]}".split(),
  "baseline": "$BASELINE" or None,
  "env": {"ROUNDS": $ROUNDS, "DURATION": $DURATION, "WARMUP": $WARMUP, "RETRIES": $RETRIES,
          "CONNECTIONS": $CONNECTIONS, "SEED": $SEED, "REPLICA_CPU": "$REPLICA_CPU",
          "QUIET_MAX": $QUIET_MAX, "QUIET_WAIT": $QUIET_WAIT},
  "peak_rss_kib": {"ringlb": $(hwm "$ringlb_pid"), "ringlb-before": $before_hwm,
                   "haproxy": $(hwm "$haproxy_pid"), "nginx": $(hwm "$nginx_worker")},
  "replica_peak_rss_kib": $(hwm "${replica_pids[0]}"),
  "versions": {
    "ringlb": "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
              + "$(cd "$ROOT" && git diff --quiet HEAD -- lb ring 2>/dev/null || echo ' (modified)')",
    "haproxy": "$(haproxy -v | head -1 | awk '{print $3}')",
    "nginx": "$(nginx -v 2>&1 | sed 's|.*nginx/||')",
    "wrk": "$(wrk -v 2>&1 | head -1 | awk '{print $2}')",
    "ab": "$(ab -V | head -1 | awk '{print $5}' | tr -d ',')",
  },
  "machine": {"cpu": "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)",
              "cpus": $(nproc), "kernel": "$(uname -r)"},
  "quiet_before_pct": $quiet_before, "quiet_after_pct": $quiet_after,
}, open(sys.argv[1], "w"), indent=1)
EOF

cp "$tmp/haproxy.cfg" "$tmp/nginx.conf" "$tmp/rounds/" 2>/dev/null || true
mkdir -p "$RESULTS"
python3 "$HERE/report.py" "$tmp" "$RESULTS"
