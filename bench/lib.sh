# Shell helpers shared by the bench/ scripts (source it: . "$(dirname "$0")/lib.sh").
# Everything listens on and sends to 127.0.0.1 only; every wait is bounded.

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
