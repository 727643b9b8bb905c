# Shell helpers shared by the bench/ scripts (source it: . "$(dirname "$0")/lib.sh").
# Everything listens on and sends to 127.0.0.1 only; every wait is bounded.

# need_tools NAME TOOL...: exits with "NAME: TOOL is not installed" unless every TOOL is on PATH.
need_tools() {
  local name=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null ||
      { echo "$name: $tool is not installed (deps/install.sh bench)" >&2; exit 1; }
  done
}

# bench_tmp NAME: makes the scratch folder $tmp (/tmp/ringlb-NAME.XXXXXX) and the list started (the
# pids the script starts); on exit every pid in started is stopped and $tmp removed (kept, and its
# path printed, when KEEP_TMP is set).
bench_tmp() {
  BENCH_NAME=$1
  tmp=$(mktemp -d "/tmp/ringlb-$1.XXXXXX")
  started=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local pid
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP_TMP:-}" ]; then echo "$BENCH_NAME: kept $tmp" >&2; else rm -rf "$tmp"; fi
}

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_home PORT BODY [SECONDS]: waits (default 5 s) until 127.0.0.1:PORT answers GET /home with
# exactly BODY as application/json; fails with a clear message otherwise.
wait_home() {
  python3 - "$1" "$2" "${3:-5}" <<'PY'
import http.client, sys, time
port, body, limit = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3])
deadline = time.monotonic() + limit
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=max(1.0, limit / 4))
        c.request("GET", "/home")
        r = c.getresponse()
        got = r.read()
        if r.status == 200 and got == body and r.getheader("Content-Type") == "application/json":
            sys.exit(0)
        sys.exit(f"port {port}: /home answered {r.status} {r.getheader('Content-Type')} {got!r}")
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"port {port}: no answer within {limit:g} s")
        time.sleep(0.05)
PY
}

# nginx_home_conf DIR PORT BODY [MAIN_DIRECTIVES]: an nginx.conf on stdout, one worker, that answers
# GET /home on 127.0.0.1:PORT with BODY as application/json (`return 200`), no access log, keep-alive
# connections never closed by a request count; its pid and temp files under DIR.
nginx_home_conf() {
  cat <<CONF
worker_processes 1;
${4:-}
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  server {
    listen 127.0.0.1:$2;
    location /home {
      default_type application/json;
      return 200 '$3';
    }
  }
}
CONF
}

# step NAME COMMAND...: runs COMMAND bounded by $step_timeout seconds, says how long it took, and
# adds NAME to the array failed when it fails (the caller reports them at the end).
failed=()
step() {
  local name=$1; shift
  echo "== $name: $*" >&2
  local t0=$SECONDS
  if timeout --kill-after=10 "$step_timeout" "$@"; then
    echo "== $name: done in $((SECONDS - t0)) s" >&2
  else
    echo "== $name: FAILED (exit $?) after $((SECONDS - t0)) s" >&2
    failed+=("$name")
  fi
}

# --- Three replicas and the peer LBs in front of them ----------------------------------------------
# One definition of how the side-by-side scripts (bench/peers/peers.sh, bench/peers/workers.sh,
# bench/peers/lb_instructions.sh, bench/hostile.sh) start the replicas and configure HAProxy and NGINX,
# so that every comparison runs the peers the same way. The caller owns the array `started` (the pids
# it stops on exit) and the variable `tmp` (its temporary folder).

# home_body I: the /home body of replica serverI.
home_body() { echo "{\"message\": \"Hello from Server: server$1\", \"status\": \"successful\"}"; }

# start_replicas REPLICA [PREFIX...]: starts the ringlb-replica binary REPLICA as server1..server3 on
# free ports of 127.0.0.1, each under PREFIX when given (e.g. taskset -c 1), logs in $tmp/replicaI.log;
# waits until each answers /home. Sets replica_ports, replica_pids and backends (ringlb's --backend
# flags for the three) and appends the pids to started.
start_replicas() {
  local replica=$1 i port
  shift
  replica_ports=() replica_pids=() backends=()
  for i in 1 2 3; do
    port=$(free_port)
    "$@" "$replica" --address 127.0.0.1 --port "$port" --id "server$i" 2>"$tmp/replica$i.log" &
    started+=($!)
    replica_pids+=($!)
    replica_ports+=("$port")
    backends+=(--backend "127.0.0.1:$port")
  done
  for i in 1 2 3; do wait_home "${replica_ports[$((i - 1))]}" "$(home_body "$i")"; done
}

# haproxy_lb_conf PORT NBTHREAD GLOBAL_LINES FRONTEND_LINES SERVER_OPTIONS: HAProxy's configuration on
# stdout: listens on 127.0.0.1:PORT with NBTHREAD threads, HTTP keep-alive on both sides with
# `http-reuse always`, X-Forwarded-For, no logging, and `balance hdr(X-Request-Id)` + `hash-type
# consistent` over the replicas in replica_ports (server1..server3, each followed by SERVER_OPTIONS).
# GLOBAL_LINES and FRONTEND_LINES (may be empty) are added verbatim to the global and frontend sections.
haproxy_lb_conf() {
  local i
  printf 'global\n  nbthread %s\n' "$2"
  [ -z "$3" ] || printf '%s\n' "$3"
  cat <<EOF

defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
  http-reuse always

frontend fe
  bind 127.0.0.1:$1
EOF
  [ -z "$4" ] || printf '%s\n' "$4"
  cat <<EOF
  default_backend replicas

backend replicas
  balance hdr(X-Request-Id)
  hash-type consistent
EOF
  for i in 1 2 3; do
    echo "  server server$i 127.0.0.1:${replica_ports[$((i - 1))]}${5:+ $5}"
  done
}

# nginx_lb_conf DIR PORT WORKERS ERROR_LOG SERVER_LINES: NGINX's configuration on stdout: WORKERS
# worker processes (the one listening socket they share, nginx's default), pid and temp files under
# DIR, listens on 127.0.0.1:PORT, `hash $http_x_request_id consistent` over the replicas in
# replica_ports with keep-alive upstream (HTTP/1.1, 64 idle connections, never closed by a request
# count), X-Forwarded-For, no access log. SERVER_LINES (may be empty) go into the server block before
# `location /`.
nginx_lb_conf() {
  local port
  cat <<EOF
worker_processes $3;
pid $1/nginx.pid;
error_log $4;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  upstream replicas {
    hash \$http_x_request_id consistent;
EOF
  for port in "${replica_ports[@]}"; do echo "    server 127.0.0.1:$port;"; done
  cat <<EOF
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$2;
EOF
  [ -z "$5" ] || printf '%s\n' "$5"
  cat <<'EOF'
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
EOF
}
