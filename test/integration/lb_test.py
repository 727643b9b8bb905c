"""ringlb (the load balancer daemon) as a client sees it: the admin API of ASSIGNMENT.md §2 with its
exact bodies, proxying with stickiness and the assignment's slots ring, load through ab and wrk,
pipelining, self-healing after a replica is killed, large bodies (10 MiB both ways, to a slow reader
and from a slow backend, with the LB's memory sampled throughout), chunked uploads on keep-alive
connections, and config errors.

Every ringlb a test starts must exit 0 on SIGTERM within a few seconds (tearDown checks the ones the
test left running): ringlb exits 1 when libuv handles are still open at exit, so this also catches
leaked handles. Everything listens on 127.0.0.1; every loop is bounded in count and time.
"""
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import Connection, HOST

RINGLB = harness.build_path("lb", "ringlb")
REPLICA = harness.build_path("replica", "ringlb-replica")


def rep_body(names):
    return json.dumps({"message": {"N": len(names), "replicas": list(names)},
                       "status": "successful"}).encode()


def error_body(text):
    return json.dumps({"message": f"<Error> {text}", "status": "failure"}).encode()


def home_body(name):
    return f'{{"message": "Hello from Server: {name}", "status": "successful"}}'.encode()


# Largest growth of the LB's RSS allowed while it streams a 10 MiB body: its own buffers (a 16 KiB
# read buffer per connection, writes queued up to 256 KiB before the other side stops reading) and
# malloc's slack, never the body. 2 MiB: 188-216 KiB were measured over 20 runs of each of the three
# tests below; with the LB's backpressure disabled they grew by 2.5-6.4 MiB and all failed.
MEMORY_BOUND_KIB = 2048


class RssSampler:
    """Samples the RSS of process pid every 2 ms on a thread while the with-block runs: baseline
    (before it), peak, samples. Bounded: it stops when the block ends or after 120 s."""

    def __init__(self, pid):
        self.pid = pid
        self.baseline = harness.rss_kib(pid)
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.peak = max(self.peak, harness.rss_kib(self.pid))
            except (FileNotFoundError, AssertionError):
                return
            self.samples += 1
            self._stop.wait(0.002)

    def growth_kib(self):
        return self.peak - self.baseline

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


class PyBackend:
    """A backend on 127.0.0.1 in Python, for what the replica cannot do: it records the head of
    every request other than /heartbeat (heads: exact bytes), and with slow=True reads bodies slowly
    (16 KiB every 2 ms, with a 64 KiB receive buffer). POST answers {"bytes": N}, any other request
    the /home body of "py" (so the LB's heartbeats and readiness checks pass), with extra headers:
    Keep-Alive and X-Hop (hop-by-hop, the latter named by Connection: a proxy drops both) and
    X-Backend: py. HTTP/1.1 keep-alive
    with Content-Length bodies only. A thread per connection; everything stops in the test's
    cleanup, bounded."""

    def __init__(self, test, slow=False):
        self.slow, self.heads = slow, []
        self.listener = socket.socket()
        if slow:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()
        test.addCleanup(self.close)

    def close(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(5)
        self.listener.close()

    def _accept(self):
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock):
        sock.settimeout(0.1)
        buf = b""
        deadline = time.monotonic() + 120
        with sock:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    if b"\r\n\r\n" not in buf:
                        data = sock.recv(65536)
                        if not data:
                            return
                        buf += data
                        continue
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    lines = head.decode("latin-1").split("\r\n")
                    if not lines[0].startswith("GET /heartbeat "):
                        self.heads.append(head + b"\r\n\r\n")
                    headers = {n.strip().lower(): v.strip() for n, _, v in
                               (line.partition(":") for line in lines[1:])}
                    left = int(headers.get("content-length", "0")) - len(buf)
                    got, buf = len(buf), b""
                    while left > 0 and time.monotonic() < deadline:
                        try:
                            data = sock.recv(min(16 * 1024 if self.slow else 65536, left))
                        except socket.timeout:
                            continue
                        if not data:
                            return
                        got, left = got + len(data), left - len(data)
                        if self.slow:
                            time.sleep(0.002)
                    if lines[0].startswith("POST "):
                        body = json.dumps({"bytes": got}).encode()
                    else:
                        body = home_body("py")
                    close = headers.get("connection", "").lower() == "close"
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Keep-Alive: timeout=60\r\nX-Backend: py\r\n"
                                 b"Connection: X-Hop\r\nX-Hop: 1\r\n"
                                 b"Content-Length: %d\r\n%s\r\n" % (
                                     len(body), b"Connection: close\r\n" if close else b"")
                                 + body)
                    if close:
                        return
                except socket.timeout:
                    continue
                except OSError:
                    return


def slots_prediction(rid, n=3, m=512, k=9):
    """The assignment's ring: server i (1..n) at Φ(i, j) for j < k with linear probing, placed in
    ascending id order; a request at H(rid) goes to the nearest occupied slot clockwise."""
    ring = [0] * m
    for i in range(1, n + 1):
        for j in range(k):
            s = (i * i + j * j + 2 * j + 25) % m
            for _ in range(m):
                if not ring[s]:
                    break
                s = (s + 1) % m
            ring[s] = i
    slot = (rid * rid + 2 * rid + 17) % m
    for step in range(m):
        owner = ring[(slot + step) % m]
        if owner:
            return f"server{owner}"
    raise AssertionError("empty ring")


def pid_gone(pid):
    """True when pid no longer exists or is a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" in line.split()[1]
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while read
        return True
    return False


class LbTestCase(unittest.TestCase):
    def setUp(self):
        self.lbs = []

    def start_lb(self, *args, replicas=3, wait_ready=True):
        argv = [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info", *args]
        if "--provisioner" not in args:
            argv += ["--replicas", str(replicas)]
        lb = harness.start(self, argv, ready_timeout=10.0)
        self.lbs.append(lb)
        if wait_ready:
            self.wait_ready(lb, replicas)
        return lb

    def wait_ready(self, lb, n, timeout=15.0):
        harness.wait_lb_ready(lb, n, timeout)

    def rep(self, lb, verbose=False):
        resp = harness.request(lb.port, "GET", "/rep?verbose=1" if verbose else "/rep")
        self.assertEqual(resp.status, 200, resp)
        return resp

    def names(self, lb):
        return self.rep(lb).json()["message"]["replicas"]

    def pids(self, lb):
        details = self.rep(lb, verbose=True).json()["message"]["details"]
        return {d["name"]: int(d["id"]) for d in details}

    def assert_clean_stop(self, lb, within=5.0):
        code, elapsed = lb.stop(signal.SIGTERM, timeout=within + 5)
        self.assertEqual(code, 0, f"exit code {code}; log:\n{lb.log()}")
        self.assertLess(elapsed, within, f"took {elapsed:.2f} s to stop; log:\n{lb.log()}")

    def tearDown(self):
        for lb in self.lbs:
            if lb.running():
                self.assert_clean_stop(lb)


class Admin(LbTestCase):
    def test_rep_lists_the_three_default_replicas(self):
        lb = self.start_lb()
        resp = self.rep(lb)
        self.assertEqual(resp.body, rep_body(["server1", "server2", "server3"]))
        self.assertEqual(resp.header("Content-Type"), "application/json")

    def test_add_and_rm_worked_examples(self):
        lb = self.start_lb()
        before = self.pids(lb)
        resp = harness.request(lb.port, "POST", "/add",
                               body={"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]})
        self.assertEqual(resp.status, 200, resp)
        after_add = ["server1", "server2", "server3", "S5", "S4", "S10", "S11"]
        self.assertEqual(resp.body, rep_body(after_add))
        self.assertEqual(self.rep(lb).body, rep_body(after_add))
        self.wait_ready(lb, 7)
        pids = self.pids(lb)
        self.assertEqual(set(pids), set(after_add))
        for name in before:
            self.assertEqual(pids[name], before[name])

        resp = harness.request(lb.port, "DELETE", "/rm", body={"n": 3, "hostnames": ["S5", "S4"]})
        self.assertEqual(resp.status, 200, resp)
        msg = resp.json()["message"]
        self.assertEqual(msg["N"], 4)
        left = msg["replicas"]
        self.assertEqual(len(left), 4)
        self.assertNotIn("S5", left)
        self.assertNotIn("S4", left)
        others = [n for n in after_add if n not in ("S5", "S4")]
        removed = [n for n in others if n not in left]
        self.assertEqual(len(removed), 1, left)
        self.assertEqual(left, [n for n in others if n not in removed])  # order kept
        self.assertEqual(resp.body, rep_body(left))
        self.assertEqual(self.rep(lb).body, rep_body(left))
        for name in ["S5", "S4"] + removed:
            harness.wait_until(lambda: pid_gone(pids[name]), 15.0, f"replica {name} (pid {pids[name]}) to exit")
        for name in left:
            self.assertFalse(pid_gone(pids[name]), f"{name} should still run")
        self.assertEqual(harness.request(lb.port, "GET", "/home").status, 200)

    def test_hostname_list_longer_than_n(self):
        lb = self.start_lb()
        payload = {"n": 2, "hostnames": ["S5", "S4", "S10", "S11"]}
        resp = harness.request(lb.port, "POST", "/add", body=payload)
        self.assertEqual(resp.status, 400)
        self.assertEqual(resp.body, b'{"message": "<Error> Length of hostname list is more than newly added '
                                    b'instances", "status": "failure"}')
        resp = harness.request(lb.port, "DELETE", "/rm", body=payload)
        self.assertEqual(resp.status, 400)
        self.assertEqual(resp.body, b'{"message": "<Error> Length of hostname list is more than removable '
                                    b'instances", "status": "failure"}')
        self.assertEqual(self.rep(lb).body, rep_body(["server1", "server2", "server3"]))

    def test_bad_inputs_fail_with_4xx_and_change_nothing(self):
        lb = self.start_lb("--max-replicas", "5", "--admin-body-limit", "1024")
        initial = self.rep(lb).body
        cases = [
            ("not json", "POST", "/add", b"{n: 1", 400),
            ("not json rm", "DELETE", "/rm", b"hello", 400),
            ("not an object", "POST", "/add", b"[1, 2]", 400),
            ("n missing", "POST", "/add", {"hostnames": ["S1"]}, 400),
            ("n missing rm", "DELETE", "/rm", {"hostnames": ["server1"]}, 400),
            ("n a string", "POST", "/add", {"n": "1"}, 400),
            ("n a float", "POST", "/add", {"n": 1.5}, 400),
            ("n zero", "POST", "/add", {"n": 0}, 400),
            ("n negative", "POST", "/add", {"n": -1}, 400),
            ("n zero rm", "DELETE", "/rm", {"n": 0}, 400),
            ("n negative rm", "DELETE", "/rm", {"n": -2}, 400),
            ("above max-replicas", "POST", "/add", {"n": 3}, 400),
            ("invalid name space", "POST", "/add", {"n": 1, "hostnames": ["bad name"]}, 400),
            ("invalid name empty", "POST", "/add", {"n": 1, "hostnames": [""]}, 400),
            ("invalid name slash", "POST", "/add", {"n": 1, "hostnames": ["a/b"]}, 400),
            ("invalid name too long", "POST", "/add", {"n": 1, "hostnames": ["a" * 64]}, 400),
            ("hostnames not a list", "POST", "/add", {"n": 1, "hostnames": "S1"}, 400),
            ("hostname not a string", "POST", "/add", {"n": 1, "hostnames": [5]}, 400),
            ("duplicate name add", "POST", "/add", {"n": 2, "hostnames": ["S1", "S1"]}, 400),
            ("duplicate name rm", "DELETE", "/rm", {"n": 2, "hostnames": ["server1", "server1"]}, 400),
            ("existing name", "POST", "/add", {"n": 1, "hostnames": ["server2"]}, 409),
            ("unknown name", "DELETE", "/rm", {"n": 1, "hostnames": ["nobody"]}, 404),
            ("remove more than exist", "DELETE", "/rm", {"n": 4}, 400),
            ("wrong method add", "GET", "/add", None, 405),
            ("wrong method rm", "POST", "/rm", {"n": 1}, 405),
            ("wrong method rep", "DELETE", "/rep", None, 405),
            ("body over the limit", "POST", "/add", b'{"n": 1, "hostnames": ["' + b"a" * 2000 + b'"]}', 413),
        ]
        for what, method, path, body, status in cases:
            with self.subTest(what):
                resp = harness.request(lb.port, method, path, body=body)
                self.assertEqual(resp.status, status, resp)
                doc = resp.json()
                self.assertEqual(list(doc), ["message", "status"])
                self.assertEqual(doc["status"], "failure")
                self.assertTrue(doc["message"].startswith("<Error> "), doc)
                self.assertGreater(len(doc["message"]), len("<Error> "))
                self.assertEqual(self.rep(lb).body, initial, f"/rep changed after {what}")

    def test_static_pool_refuses_add(self):
        replica = harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}", "--id", "solo"])
        lb = self.start_lb("--provisioner", "static", "--backend", f"{HOST}:{replica.port}", replicas=1)
        before = self.rep(lb).body
        resp = harness.request(lb.port, "POST", "/add", body={"n": 1})
        self.assertGreaterEqual(resp.status, 400)
        self.assertLess(resp.status, 500)
        self.assertEqual(resp.json()["status"], "failure")
        self.assertIn("static", resp.json()["message"])
        self.assertEqual(self.rep(lb).body, before)
        self.assert_clean_stop(lb)
        code, _ = replica.stop()
        self.assertEqual(code, 0)


class Proxying(LbTestCase):
    def test_home_answers_from_a_replica_and_unknown_paths_are_400(self):
        lb = self.start_lb()
        resp = harness.request(lb.port, "GET", "/home")
        self.assertEqual(resp.status, 200)
        self.assertIn(resp.body, [home_body(f"server{i}") for i in (1, 2, 3)])
        resp = harness.request(lb.port, "GET", "/other")
        self.assertEqual(resp.status, 400)
        self.assertEqual(resp.body, b'{"message": "<Error> \'/other\' endpoint does not exist in server '
                                    b'replicas", "status": "failure"}')

    def test_same_request_id_reaches_the_same_replica(self):
        lb = self.start_lb()
        rng = random.Random(7)
        seen = set()
        with Connection(lb.port) as conn:
            for _ in range(20):
                rid = str(rng.randrange(100000, 1000000))
                bodies = {conn.request("GET", "/home", {"X-Request-Id": rid}).body for _ in range(5)}
                self.assertEqual(len(bodies), 1, f"X-Request-Id {rid} reached {bodies}")
                seen |= bodies
        self.assertTrue(seen <= {home_body(f"server{i}") for i in (1, 2, 3)}, seen)

    def test_slots_ring_matches_the_assignment(self):
        lb = self.start_lb("--ring", "slots")
        rng = random.Random(11)
        rids = [rng.randrange(100000, 1000000) for _ in range(200)] + [132574, 100000, 999999]
        hit = set()
        with Connection(lb.port) as conn:
            for rid in rids:
                resp = conn.request("GET", "/home", {"X-Request-Id": str(rid)})
                self.assertEqual(resp.status, 200)
                want = slots_prediction(rid)
                hit.add(want)
                self.assertEqual(resp.body, home_body(want), f"rid {rid}")
        self.assertGreaterEqual(len(hit), 2, "the sample should reach more than one server")

    def test_pipelined_requests_are_answered_in_order(self):
        lb = self.start_lb()
        reqs = (b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-Id: 111111\r\n\r\n"
                b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /rep HTTP/1.1\r\nHost: x\r\n\r\n")
        with Connection(lb.port) as conn:
            conn.send(reqs)
            first, second, third = (conn.read_response() for _ in range(3))
            self.assertEqual(first.status, 200)
            self.assertIn(b"Hello from Server", first.body)
            self.assertEqual(second.status, 400)
            self.assertIn(b"'/other'", second.body)
            self.assertEqual(third.status, 200)
            self.assertEqual(third.body, rep_body(["server1", "server2", "server3"]))
            # The connection is still usable afterwards.
            self.assertEqual(conn.request("GET", "/home").status, 200)

    def test_http10_connection_is_closed_after_the_answer(self):
        lb = self.start_lb()
        with Connection(lb.port) as conn:
            conn.send(b"GET /home HTTP/1.0\r\n\r\n")
            resp = conn.read_response()
            self.assertEqual(resp.status, 200)
            self.assertIn(b"Hello from Server", resp.body)
            self.assertEqual(conn.read_until_closed(), b"")

    def start_big_pair(self):
        """A replica with the debug routes behind an LB that has only it (static provisioner)."""
        replica = harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}", "--id", "big",
                                       "--debug-routes"])
        lb = self.start_lb("--provisioner", "static", "--backend", f"{HOST}:{replica.port}", replicas=1)
        return replica, lb

    def stop_big_pair(self, replica, lb):
        self.assert_clean_stop(lb)
        code, _ = replica.stop()
        self.assertEqual(code, 0)

    def test_10_mb_download_to_a_slow_reader_keeps_lb_memory_bounded(self):
        # The client reads 16 KiB every 2 ms (about 8 MB/s), far slower than the replica writes:
        # the LB must stop reading the replica while its writes to the client queue (backpressure)
        # instead of holding the body. Its RSS may grow by its buffers, never by the body.
        replica, lb = self.start_big_pair()
        size = 10 * 1024 * 1024
        with Connection(lb.port, timeout=30) as conn, RssSampler(lb.pid) as rss:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            conn.send(f"GET /bytes?n={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.sock.recv(1)
                self.assertTrue(chunk, "the LB closed before the response head")
                head += chunk
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
            self.assertIn(f"\r\nContent-Length: {size}\r\n".encode(), head)
            got = 0
            deadline = time.monotonic() + 60
            while got < size and time.monotonic() < deadline:
                chunk = conn.sock.recv(min(16 * 1024, size - got))
                self.assertTrue(chunk, f"the LB closed after {got} of {size} body bytes")
                self.assertEqual(chunk.count(b"x"), len(chunk))
                got += len(chunk)
                time.sleep(0.002)
            self.assertEqual(got, size, "the slow download did not finish within 60 s")
            # The connection stays usable after the big response.
            self.assertEqual(conn.request("GET", "/home").status, 200)
        self.assertGreater(rss.samples, 50, "too few RSS samples to see the transfer")
        self.assertLess(rss.growth_kib(), MEMORY_BOUND_KIB,
                        f"LB RSS grew by {rss.growth_kib()} KiB for a {size >> 10} KiB body "
                        f"(from {rss.baseline} KiB, peak {rss.peak} KiB)")
        self.stop_big_pair(replica, lb)

    def test_10_mb_upload_to_a_slow_replica_keeps_lb_memory_bounded(self):
        # The backend reads the body 16 KiB every 2 ms: the LB must stop reading the client while
        # its writes to the backend queue, instead of holding the body.
        sink = PyBackend(self, slow=True)
        lb = self.start_lb("--provisioner", "static", "--backend", f"{HOST}:{sink.port}", replicas=1)
        size = 10 * 1024 * 1024
        with Connection(lb.port, timeout=60) as conn, RssSampler(lb.pid) as rss:
            resp = conn.request("POST", "/sink", body=b"y" * size)
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json(), {"bytes": size})
            self.assertEqual(conn.request("GET", "/home").status, 200)
        self.assertGreater(rss.samples, 50, "too few RSS samples to see the transfer")
        self.assertLess(rss.growth_kib(), MEMORY_BOUND_KIB,
                        f"LB RSS grew by {rss.growth_kib()} KiB for a {size >> 10} KiB body "
                        f"(from {rss.baseline} KiB, peak {rss.peak} KiB)")
        self.assert_clean_stop(lb)

    def test_10_mb_upload_and_download_at_full_speed(self):
        replica, lb = self.start_big_pair()
        size = 10 * 1024 * 1024
        with Connection(lb.port, timeout=30) as conn, RssSampler(lb.pid) as rss:
            resp = conn.request("POST", "/sink", body=b"y" * size)
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json(), {"bytes": size})
            resp = conn.request("GET", f"/bytes?n={size}")
            self.assertEqual(resp.status, 200)
            self.assertEqual(len(resp.body), size)
            self.assertEqual(resp.body.count(b"x"), size)
        self.assertLess(rss.growth_kib(), MEMORY_BOUND_KIB,
                        f"LB RSS grew by {rss.growth_kib()} KiB for a {size >> 10} KiB body "
                        f"(from {rss.baseline} KiB, peak {rss.peak} KiB)")
        self.stop_big_pair(replica, lb)

    def test_heads_are_rewritten_hop_by_hop_dropped_and_forwarding_headers_added(self):
        backend = PyBackend(self)
        lb = self.start_lb("--provisioner", "static", "--backend", f"{HOST}:{backend.port}", replicas=1)
        with Connection(lb.port) as conn:
            del backend.heads[:]  # the readiness checks' requests
            # Connection also names X-Secret: one more hop-by-hop header (RFC 9110 §7.6.1).
            conn.send(b"GET /home?a=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n"
                      b"x-secret: s\r\n"
                      b"Keep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n"
                      b"x-custom: v w\r\nTrailer: x-checksum\r\nX-Empty:\r\nProxy-Connection: x\r\n"
                      b"upgrade: y\r\n\r\n")
            resp = conn.read_response()
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.body, home_body("py"))
            self.assertEqual(resp.header("X-Backend"), "py")
            self.assertIsNone(resp.header("Keep-Alive"), resp)
            self.assertIsNone(resp.header("X-Hop"), resp)  # named by the backend's Connection
            self.assertEqual(len(backend.heads), 1, backend.heads)
            head = backend.heads[0].decode("latin-1")
            rid = re.search(r"\r\nX-Request-Id: (\d+)\r\n", head)
            self.assertIsNotNone(rid, head)
            self.assertEqual(len(rid.group(1)), 6, head)
            # Trailer is end to end (RFC 9110 §6.6.2): it stays.
            self.assertEqual(head, "GET /home?a=1 HTTP/1.1\r\nHost: h\r\nx-custom: v w\r\n"
                                   "Trailer: x-checksum\r\nX-Empty: \r\n"
                                   "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n"
                                   f"X-Request-Id: {rid.group(1)}\r\n\r\n")
            # HTTP/1.0 with a request id and no Host: the LB speaks HTTP/1.1 to the backend.
            conn.send(b"GET /home HTTP/1.0\r\nX-Request-Id: 123456\r\n\r\n")
            resp = conn.read_response()
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.header("Connection"), "close")
            self.assertEqual(backend.heads[1], b"GET /home HTTP/1.1\r\nX-Request-Id: 123456\r\n"
                                               b"Host: ringlb\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n")
        self.assert_clean_stop(lb)

    def test_chunked_upload_is_forwarded_and_the_connection_stays_usable(self):
        replica, lb = self.start_big_pair()
        rng = random.Random(5)
        sizes = [1, 15, 16, 4096, 65535, 65536, 100000] + [rng.randrange(1, 70000) for _ in range(20)]
        chunks = b"".join(b"%X\r\n" % n + bytes([97 + i % 26]) * n + b"\r\n"
                          for i, n in enumerate(sizes))
        head = b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        with Connection(lb.port, timeout=30) as conn:
            # Head, chunks and the last chunk sent in pieces, then a request on the same connection.
            conn.send(head)
            for at in range(0, len(chunks), 50000):
                conn.send(chunks[at:at + 50000])
            conn.send(b"0\r\n\r\n")
            resp = conn.read_response()
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json(), {"bytes": sum(sizes)})
            self.assertEqual(conn.request("GET", "/home").body, home_body("big"))
            # Chunk extensions and a trailer, and the next request in the same write: it must
            # start exactly where the chunked body ends.
            conn.send(head + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
                      + b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = conn.read_response()
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json(), {"bytes": 5})
            resp = conn.read_response()
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.body, home_body("big"))
            # An empty chunked body.
            conn.send(head + b"0\r\n\r\n")
            resp = conn.read_response()
            self.assertEqual(resp.json(), {"bytes": 0})
            self.assertEqual(conn.request("GET", "/home").status, 200)
        self.stop_big_pair(replica, lb)


class Load(LbTestCase):
    def test_ab_10000_requests_http10(self):
        lb = self.start_lb()
        out = subprocess.run(["ab", "-q", "-n", "10000", "-c", "100", "-s", "10",
                              f"http://{HOST}:{lb.port}/home"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        text = out.stdout
        self.assertRegex(text, r"Complete requests:\s+10000\b", text)
        self.assertNotIn("Non-2xx responses", text)
        m = re.search(r"Failed requests:\s+(\d+)(?:\s*\n\s*\(Connect: (\d+), Receive: (\d+), "
                      r"Length: (\d+), Exceptions: (\d+)\))?", text)
        self.assertIsNotNone(m, text)
        if int(m.group(1)):  # only body length differences (server names differ) are acceptable
            self.assertEqual((m.group(2), m.group(3), m.group(5)), ("0", "0", "0"), text)
        self.assertIsNone(re.search(r"Write errors:\s+[1-9]", text), text)

    def test_wrk_keep_alive(self):
        lb = self.start_lb()
        out = subprocess.run(["wrk", "-t1", "-c32", "-d3s", "--timeout", "5s",
                              f"http://{HOST}:{lb.port}/home"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertNotIn("Socket errors", out.stdout, out.stdout)
        self.assertNotIn("Non-2xx", out.stdout, out.stdout)
        m = re.search(r"(\d+) requests in", out.stdout)
        self.assertIsNotNone(m, out.stdout)
        self.assertGreater(int(m.group(1)), 100, out.stdout)


class Healing(LbTestCase):
    def test_killed_replica_loses_no_request_and_is_replaced(self):
        lb = self.start_lb("--hb-interval", "100", "--hb-timeout", "200")
        pids = self.pids(lb)
        victim = "server2"
        rng = random.Random(3)
        failures = []
        deadline = time.monotonic() + 20
        done = 0
        conn = Connection(lb.port)
        self.addCleanup(conn.close)
        for i in range(2000):
            if time.monotonic() > deadline:
                break
            if i == 300:
                os.kill(pids[victim], signal.SIGKILL)
            try:
                resp = conn.request("GET", "/home", {"X-Request-Id": str(rng.randrange(100000, 1000000))})
                if resp.status != 200:
                    failures.append((i, resp.status, resp.body))
            except (OSError, AssertionError) as e:
                failures.append((i, "error", str(e)))
                conn.close()
                conn = Connection(lb.port)
                self.addCleanup(conn.close)
            done += 1
        self.assertEqual(failures, [], f"log:\n{lb.log()}")
        self.assertGreaterEqual(done, 1000, "the loop should get well past the kill within 20 s")

        def healed():
            names = self.names(lb)
            return names if len(names) == 3 and victim not in names else None
        names = harness.wait_until(healed, 15.0, "a replacement for server2", 0.1)
        self.assertEqual([n for n in names if n in ("server1", "server3")], ["server1", "server3"])
        new = [n for n in names if n not in pids]
        self.assertEqual(len(new), 1, names)
        self.wait_ready(lb, 3)
        self.assertTrue(pid_gone(pids[victim]))


class Config(unittest.TestCase):
    def test_bad_values_exit_2_with_one_line(self):
        twice = f"{HOST}:{harness.free_port()}"
        for args, option in [(["--replicas", "abc"], "--replicas"), (["--ring", "nope"], "--ring"),
                             (["--provisioner", "static", "--backend", f"{twice},{HOST}:1",
                               "--backend", twice], "--backend")]:
            with self.subTest(option):
                out = subprocess.run([RINGLB, "--listen", f"{HOST}:{harness.free_port()}", *args],
                                     capture_output=True, text=True, timeout=10,
                                     stdin=subprocess.DEVNULL)
                self.assertEqual(out.returncode, 2, out.stderr)
                lines = out.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, out.stderr)
                self.assertIn(option, lines[0])
                self.assertIn(args[-1], lines[0])


if __name__ == "__main__":
    unittest.main()
