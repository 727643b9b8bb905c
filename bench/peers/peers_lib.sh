# Shell helpers of the bench/peers scripts (source it after bench/lib.sh, which starts the replicas
# and writes the peers' configurations). 127.0.0.1 only; every wait is bounded.

PEERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# wait_lb_home PORT [SECONDS]: waits (default 10 s) until the LB on 127.0.0.1:PORT answers GET /home
# with the body of one of server1..server3 (which one depends on how it hashes the request id). A 503
# is "not ready yet" (a multi-worker ringlb answers it until its workers hold a routing snapshot with
# a replica in it), so it polls on; any other answer fails at once.
wait_lb_home() {
  python3 - "$1" "${2:-10}" <<'PY'
import http.client, sys, time
port, limit = int(sys.argv[1]), float(sys.argv[2])
bodies = {f'{{"message": "Hello from Server: server{i}", "status": "successful"}}'.encode()
          for i in (1, 2, 3)}
deadline = time.monotonic() + limit
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=max(1.0, limit / 4))
        c.request("GET", "/home", headers={"X-Request-Id": "123456"})
        r = c.getresponse()
        got = r.read()
        if r.status == 200 and got in bodies:
            sys.exit(0)
        if r.status != 503 or time.monotonic() > deadline:
            sys.exit(f"port {port}: /home answered {r.status} {got!r}")
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"port {port}: no answer within {limit:g} s")
    time.sleep(0.05)
PY
}

# cpu_busy SECONDS: busy share of all CPUs over SECONDS, in percent of one CPU (as
# replica_vs_nginx.sh and measure.py count it).
cpu_busy() {
  python3 - "$1" <<'EOF'
import os, sys, time
def sample():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6], sum(v)
b0, t0 = sample(); time.sleep(float(sys.argv[1])); b1, t1 = sample()
print(f"{100.0 * (b1 - b0) / (t1 - t0) * os.cpu_count():.0f}")
EOF
}

# measure_window OUT STDOUT GROUP... -- COMMAND...: COMMAND under measure.py, which first waits up to
# $QUIET_WAIT s for the machine to be quiet and brackets the run with /proc/PID/stat of each GROUP
# (NAME=PID,PID...) and COMMAND's own CPU; an argument starting with -- before the -- (e.g.
# --per-thread) goes to measure.py as it is. A window in which other processes used more than
# $QUIET_MAX % of a CPU is measured again, up to $RETRIES times. Writes OUT.json (measure.py's
# record) and COMMAND's output to STDOUT.
measure_window() {
  local out=$1 stdout=$2 attempt others groups=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case $1 in --*) groups+=("$1") ;; *) groups+=(--group "$1") ;; esac
    shift
  done
  [ $# -gt 1 ] || { echo "measure_window: no -- COMMAND" >&2; return 2; }
  shift
  for attempt in $(seq 0 "$RETRIES"); do
    python3 "$PEERS_DIR/measure.py" --out "$out.json" --stdout "$stdout" --attempt "$attempt" \
      "${groups[@]}" --quiet-max "$QUIET_MAX" --quiet-wait "$QUIET_WAIT" -- "$@"
    others=$(python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["others_cpu_pct"]))' \
      "$out.json")
    [ "$others" -gt "$QUIET_MAX" ] || break
    echo "peers: other processes used ${others}% of a CPU in that window" >&2
  done
}

# measure_wrk OUT URL SEED GROUP...: one measured window of the interleaved rounds. wrk -t1
# -c$CONNECTIONS with request_id.lua (a random 6-digit X-Request-Id per request, seeded by SEED) runs
# $WARMUP s unmeasured, then $DURATION s under measure_window. Writes OUT.json (measure.py's record)
# and OUT.wrk (wrk's output). wrk runs under the prefix in the array client_cpu (may be empty).
measure_wrk() {
  local out=$1 url=$2 seed=$3
  shift 3
  "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$PEERS_DIR/request_id.lua" "$url" \
    -- "$seed" >/dev/null
  measure_window "$out" "$out.wrk" "$@" -- \
    "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s --latency \
    -s "$PEERS_DIR/request_id.lua" "$url" -- "$seed"
}

# measure_rate OUT URL SEED RATE GROUP...: one window at a fixed offered load, as measure_wrk but
# with ringlb-loadgen ($LOADGEN) sending RATE requests/s spread evenly over $CONNECTIONS connections
# (a random 6-digit X-Request-Id per request, seeded by SEED): $WARMUP s unmeasured, then $DURATION s
# under measure_window. Its latency counts from each request's scheduled time when every connection
# was busy then (no coordinated omission), so a target that falls behind shows it. Writes OUT.json
# (measure.py's record) and OUT.lg.json (loadgen's report). The load generator runs under the prefix
# in the array client_cpu (may be empty), as wrk does.
measure_rate() {
  local out=$1 url=$2 seed=$3 rate=$4
  shift 4
  local lg=("${client_cpu[@]}" "$LOADGEN" -q -c "$CONNECTIONS" --rid --seed "$seed" -r "$rate")
  "${lg[@]}" -d "$WARMUP" "$url" >/dev/null
  measure_window "$out" "$out.out" "$@" -- "${lg[@]}" -d "$DURATION" -t 5000 -j "$out.lg.json" "$url"
}
