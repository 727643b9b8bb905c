#!/usr/bin/env bash
# Hostile clients against ringlb, HAProxy and NGINX side by side (issue 10, "Benchmark"; bench/RESULTS.md,
# "Hostile clients"). Each LB fronts the same three ringlb-replica processes on 127.0.0.1, configured
# as in bench/peers/peers.sh (ringlb --provisioner static; HAProxy balance hdr(X-Request-Id) + hash-type
# consistent, nbthread 1; NGINX hash consistent, 1 worker), with two differences made so the attacks
# compare like with like:
#   - HAProxy health-checks its servers (check inter 500 fall 2 rise 1, as ringlb's heartbeats) and has
#     a stats socket, so whether the attack got a healthy server marked down can be read (chkdown);
#   - /metrics is answered by each LB itself: ringlb's own /metrics; HAProxy (http-request return) and
#     NGINX (a static file) a body of the same size, taken from ringlb's /metrics at the start. NGINX
#     has no local answer that grows like a metrics page, so a file of that size is the closest.
#
# Attacks (bench/hostile/attack.py; each LB is started fresh for each run and stopped after it, so one
# run's memory cannot show in the next):
#   pipeline PATH: one connection pipelines GET PATH as fast as the socket accepts, never reading, for
#     SECONDS s (PATH = /home, proxied, then /metrics, answered locally). The LB's RSS before, peak
#     during, growth; whether a fresh client is served halfway through, right after the sender stops
#     (attacker still connected), and how long after the attacker closes. The run stops early when the
#     LB's RSS passes RSS_CAP_KIB (default 1 GiB; reported as "> cap"), and ringlb (the LB that grew
#     without bound before issue 10) runs under prlimit --as (AS_LIMIT_MIB, default 2048) as a backstop.
#   fd: each LB started with RLIMIT_NOFILE 256 (soft and hard, prlimit --nofile=256:256; HAProxy, which
#     runs as root here and would raise its own limit, also gets `ulimit-n 256` and derives its maxconn
#     from it; NGINX keeps worker_connections 4096 and meets EMFILE as ringlb does). CONNS (400) idle
#     connections are held HOLD s (8: under ringlb's default 10 s --header-timeout, so it is not the
#     timeout that frees them), then closed. Reported: fresh GET /home served during the hold (probes
#     every 0.5 s), time from the close until a fresh client is served (polled every 10 ms, bounded by
#     RECOVER_LIMIT s), and for ringlb the replicas seen in a state other than healthy in
#     /rep?verbose=1 during and 2 s after; for HAProxy its servers' status and chkdown; NGINX has no
#     such state to read (n/a).
# Placement as peers.sh: the attacker on CPU 0, the LB and replicas on CPU 1.
#
# Targets (issue 10): ringlb's RSS growth <= HAProxy's, service back <= 1 s after the fd attack, no
# replica marked dead.
#
# BASELINE=PATH adds "ringlb-before": another ringlb binary (main before the fixes) with the same flags,
# attacked right after ringlb in each step, for a before/after comparison in one run.
#
# Output: a Markdown section on stdout (bench/hostile/report.py), bench/results/hostile.json, and the
# "Hostile clients" section of bench/RESULTS.md when WRITE_RESULTS=1.
#
# Usage: bench/hostile.sh [BUILD_DIR]
#   env: ROUNDS=1 SECONDS_PIPE=10 CONNS=400 HOLD=8 RECOVER_LIMIT=15 RSS_CAP_KIB=1048576 AS_LIMIT_MIB=2048
#        RESULTS=bench/results WRITE_RESULTS=0 LBS="ringlb haproxy nginx" BASELINE=path/to/older/ringlb
# Takes about ROUNDS x 4 to 6 minutes (the fd runs wait up to RECOVER_LIMIT s for service to come
# back); on exit it stops what it started.
set -euo pipefail
. "$(dirname "$0")/lib.sh"              # free_port, start_replicas, haproxy_lb_conf, nginx_lb_conf
. "$(dirname "$0")/peers/peers_lib.sh"  # wait_lb_home

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${1:-build}
ROUNDS=${ROUNDS:-1}
SECONDS_PIPE=${SECONDS_PIPE:-10}
CONNS=${CONNS:-400}
HOLD=${HOLD:-8}
RECOVER_LIMIT=${RECOVER_LIMIT:-15}
RSS_CAP_KIB=${RSS_CAP_KIB:-1048576}
AS_LIMIT_MIB=${AS_LIMIT_MIB:-2048}
RESULTS=${RESULTS:-$ROOT/bench/results}
WRITE_RESULTS=${WRITE_RESULTS:-0}
BASELINE=${BASELINE:-}
default_lbs="ringlb haproxy nginx"
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || { echo "hostile: BASELINE=$BASELINE is not an executable" >&2; exit 1; }
  default_lbs="ringlb ringlb-before haproxy nginx"
fi
read -r -a LBS <<<"${LBS:-$default_lbs}"
RINGLB=$BUILD/lb/ringlb
REPLICA=$BUILD/replica/ringlb-replica
ATTACK=$HERE/hostile/attack.py

for tool in haproxy nginx python3 taskset prlimit; do
  command -v "$tool" >/dev/null ||
    { echo "hostile: $tool is not installed (deps/install.sh bench)" >&2; exit 1; }
done
for bin in "$RINGLB" "$REPLICA"; do
  [ -x "$bin" ] || { echo "hostile: no $bin (build first: ninja -C $BUILD)" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] ||
  { echo "hostile: needs two CPUs (attacker on CPU 0, the servers on CPU 1)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/ringlb-hostile.XXXXXX)
chmod 755 "$tmp"  # NGINX's worker (nobody when started as root) reads metrics.txt here
started=() lb_pids=()
stop_lb() {
  for pid in "${lb_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${lb_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  lb_pids=()
}
cleanup() {
  stop_lb
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${KEEP_TMP:-}" ] && echo "hostile: kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT

client_cpu=(taskset -c 0)
server_cpu=(taskset -c 1)

# --- the three replicas ---------------------------------------------------------------------------
start_replicas "$REPLICA" "${server_cpu[@]}"  # sets replica_ports, replica_pids, backends

# start_lb KIND NOFILE: starts LB KIND (ringlb, ringlb-before, haproxy, nginx) on a free port, with
# RLIMIT_NOFILE NOFILE (soft and hard) unless it is "-"; sets lb_port, lb_pid (the process to measure: NGINX's
# worker) and lb_extra (attack.py options for its replica states).
start_lb() {
  local kind=$1 nofile=$2 limit=() log=$tmp/$1-$RANDOM.log
  [ "$nofile" = - ] || limit=(prlimit "--nofile=$nofile:$nofile")
  lb_port=$(free_port) lb_extra=()
  case $kind in
    ringlb | ringlb-before)
      local bin=$RINGLB
      [ "$kind" = ringlb ] || bin=$BASELINE
      "${server_cpu[@]}" "${limit[@]}" prlimit "--as=$((AS_LIMIT_MIB << 20))" "$bin" --provisioner static \
        "${backends[@]}" --listen "127.0.0.1:$lb_port" --log-level warn 2>"$log" &
      lb_pid=$!
      lb_pids+=("$lb_pid")
      lb_extra=(--admin-port "$lb_port")
      wait_lb_home "$lb_port"
      ;;
    haproxy)
      local global="  stats socket $tmp/haproxy.sock mode 600"
      if [ "$nofile" = - ]; then global="  maxconn 4096
$global"; else global="  ulimit-n $nofile
$global"; fi
      local metrics="  http-request return status 200 content-type \"text/plain; version=0.0.4\""
      metrics+=" file $tmp/metrics.txt if { path /metrics }"
      haproxy_lb_conf "$lb_port" 1 "$global" "$metrics" "check inter 500 fall 2 rise 1" \
        >"$tmp/haproxy.cfg"
      rm -f "$tmp/haproxy.sock"
      haproxy -c -q -f "$tmp/haproxy.cfg"
      "${server_cpu[@]}" "${limit[@]}" haproxy -db -f "$tmp/haproxy.cfg" >"$log" 2>&1 &
      lb_pid=$!
      lb_pids+=("$lb_pid")
      lb_extra=(--haproxy-stats "$tmp/haproxy.sock")
      wait_lb_home "$lb_port"
      ;;
    nginx)
      nginx_lb_conf "$tmp" "$lb_port" 1 "$log" "    location = /metrics {
      default_type \"text/plain; version=0.0.4\";
      alias $tmp/metrics.txt;
    }" >"$tmp/nginx.conf"
      "${server_cpu[@]}" "${limit[@]}" nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$log" -g 'daemon off;' &
      lb_pids+=($!)
      wait_lb_home "$lb_port"
      lb_pid=$(pgrep -P "${lb_pids[-1]}" | head -1)
      [ -n "$lb_pid" ] || { echo "hostile: no nginx worker" >&2; exit 1; }
      ;;
  esac
  lb_log=$log
}

# The body the peers answer /metrics with: ringlb's own, as it is at the start.
start_lb ringlb -
python3 - "$lb_port" "$tmp/metrics.txt" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5) as r:
    open(sys.argv[2], "wb").write(r.read())
PY
chmod 644 "$tmp/metrics.txt"
stop_lb

# log_lines FILE: the LB's log lines (warnings and errors) during the run, first 5 and a count.
log_summary() {
  python3 - "$1" <<'PY'
import json, sys
lines = [l.rstrip("\n") for l in open(sys.argv[1], errors="replace") if l.strip()]
print(json.dumps({"lines": len(lines), "first": lines[:5]}))
PY
}

mkdir -p "$tmp/runs"
for round in $(seq 1 "$ROUNDS"); do
  for path in /home /metrics; do
    for lb in "${LBS[@]}"; do
      echo "hostile: round $round, pipeline $path, $lb" >&2
      start_lb "$lb" -
      out=$tmp/runs/$round-pipeline${path//\//-}-$lb.json
      "${client_cpu[@]}" python3 "$ATTACK" pipeline --port "$lb_port" --pid "$lb_pid" --path "$path" \
        --seconds "$SECONDS_PIPE" --rss-cap "$RSS_CAP_KIB" --out "$out"
      stop_lb
      python3 - "$out" "$(log_summary "$lb_log")" "$lb" "$round" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d.update(log=json.loads(sys.argv[2]), lb=sys.argv[3], round=int(sys.argv[4]))
json.dump(d, open(sys.argv[1], "w"), indent=1)
PY
    done
  done
  for lb in "${LBS[@]}"; do
    echo "hostile: round $round, fd attack, $lb" >&2
    start_lb "$lb" 256
    out=$tmp/runs/$round-fd-$lb.json
    "${client_cpu[@]}" python3 "$ATTACK" fd --port "$lb_port" --conns "$CONNS" --hold "$HOLD" \
      --recover-limit "$RECOVER_LIMIT" "${lb_extra[@]}" --out "$out"
    soft=$(awk '/Max open files/ {print $4}' "/proc/$lb_pid/limits")
    stop_lb
    python3 - "$out" "$(log_summary "$lb_log")" "$lb" "$round" "$soft" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d.update(log=json.loads(sys.argv[2]), lb=sys.argv[3], round=int(sys.argv[4]), nofile_soft=int(sys.argv[5]))
json.dump(d, open(sys.argv[1], "w"), indent=1)
PY
  done
done

python3 - "$tmp/meta.json" <<EOF
import json, os, sys
json.dump({
  "command": ("BASELINE=$BASELINE " if "$BASELINE" else "") + "bench/hostile.sh $BUILD",
  "env": {"ROUNDS": $ROUNDS, "SECONDS_PIPE": $SECONDS_PIPE, "CONNS": $CONNS, "HOLD": $HOLD,
          "RECOVER_LIMIT": $RECOVER_LIMIT, "RSS_CAP_KIB": $RSS_CAP_KIB, "AS_LIMIT_MIB": $AS_LIMIT_MIB},
  "loadavg": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
  "metrics_body_bytes": os.path.getsize("$tmp/metrics.txt"),
  "versions": {
    "ringlb": "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
              + "$(cd "$ROOT" && git diff --quiet HEAD -- lb ring 2>/dev/null || echo ' (modified)')",
    "haproxy": "$(haproxy -v | head -1 | awk '{print $3}')",
    "nginx": "$(nginx -v 2>&1 | sed 's|.*nginx/||')",
  },
}, open(sys.argv[1], "w"), indent=1)
EOF
mkdir -p "$RESULTS"
write=()
[ "$WRITE_RESULTS" = 1 ] && write=(--write)
python3 "$HERE/hostile/report.py" "$tmp" "$RESULTS" "${write[@]}"
