# Shell helpers of the bench/peers scripts (source it after bench/lib.sh). 127.0.0.1 only; every
# wait is bounded.

# home_body I: the /home body of replica serverI.
home_body() { echo "{\"message\": \"Hello from Server: server$1\", \"status\": \"successful\"}"; }

# wait_lb_home PORT [SECONDS]: waits (default 10 s) until the LB on 127.0.0.1:PORT answers GET /home
# with the body of one of server1..server3 (which one depends on how it hashes the request id).
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
        sys.exit(f"port {port}: /home answered {r.status} {got!r}")
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"port {port}: no answer within {limit:g} s")
        time.sleep(0.05)
PY
}
