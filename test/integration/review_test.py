"""Attacks on the multi-worker split (issue 12) through the real path: real ringlb and ringlb-replica
processes on 127.0.0.1, ringlb at --workers 2 and --workers 4 (every test runs both).

- Pipelined admin requests on many connections at once: each answered, in order, complete.
- An admin call whose client leaves before the answer: the action still happens, the answer is
  dropped, and the daemon serves on and stops cleanly.
- /metrics counts every answer a client had before it asked, over every worker.
- SIGTERM with idle keep-alive clients and in-flight requests spread over the workers; SIGTERM with
  an /add in flight; a second SIGTERM (hurry) mid-drain: every loop closes (exit 0, no "handles
  left open"), in-flight clients get an answer or a close, never a hang.
- --max-conns is the total over the workers: that many clients are served at once.

Nothing is timed; every wait is bounded.
"""
import json
import signal
import socket
import threading
import time
import unittest

import harness
from harness import Connection
from heal_test import write_wrapper
from lb_test import LbTestCase, pid_gone, RINGLB

WORKER_COUNTS = (2, 4)


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics:\n{text}")


def read_all(sock, limit=10.0):
    """Reads until EOF or a reset (bounded); returns the bytes and whether the connection ended (a
    client still in a closed listener's backlog is reset by the kernel)."""
    sock.settimeout(limit)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except (socket.timeout, OSError):
        return data, False


class ReviewTestCase(LbTestCase):
    def start_lb(self, workers, *args, replicas=3, wait_ready=True):
        argv = [RINGLB, "--listen", f"{harness.HOST}:{{port}}", "--log-level", "info",
                "--workers", str(workers), *args]
        if "--provisioner" not in args:
            argv += ["--replicas", str(replicas)]
        lb = harness.start(self, argv, ready_timeout=10.0)
        self.lbs.append(lb)
        if wait_ready:
            self.wait_ready(lb, replicas)
            harness.wait_until(lambda: all(d["state"] == "healthy" for d in self.details(lb)),
                               15.0, "every replica to be healthy", 0.02)
        return lb

    def details(self, lb):
        return self.rep(lb, verbose=True).json()["message"]["details"]

    def assert_exit_clean(self, lb, within=20.0):
        code, _ = lb.stop(signal.SIGTERM, timeout=within)
        log = lb.log()
        self.assertEqual(code, 0, log[-4000:])
        self.assertNotIn("handles left open", log)


class PipelinedAdmin(ReviewTestCase):
    def test_pipelined_admin_requests_on_many_connections_are_answered_in_order(self):
        routes = [("GET", "/healthz", 200), ("GET", "/rep", 200), ("GET", "/metrics", 200),
                  ("GET", "/readyz", 200), ("GET", "/home", 200), ("POST", "/rep", 405),
                  ("HEAD", "/rep", 200)]
        for workers in WORKER_COUNTS:
            with self.subTest(workers=workers):
                lb = self.start_lb(workers)
                conns = [Connection(lb.port, timeout=15.0) for _ in range(24)]
                try:
                    wire = b"".join(f"{m} {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                                    for m, p, _ in routes)
                    for c in conns:
                        c.send(wire)
                    for i, c in enumerate(conns):
                        for m, p, status in routes:
                            resp = c.read_response(m)
                            self.assertEqual(resp.status, status, f"conn {i}: {m} {p}: {resp}")
                            if p == "/metrics":
                                self.assertIn(b"ringlb_requests_total", resp.body)
                            if p == "/rep" and m == "GET":
                                self.assertEqual(resp.json()["message"]["N"], 3)
                finally:
                    for c in conns:
                        c.close()
                self.assert_exit_clean(lb)


class AdminClientGone(ReviewTestCase):
    def test_add_whose_client_left_still_adds_and_the_daemon_stops_clean(self):
        for workers in WORKER_COUNTS:
            with self.subTest(workers=workers):
                lb = self.start_lb(workers)
                body = b'{"n": 1}'
                # Several clients send /add or /rep and leave at once, on every worker.
                for path, method, b in [("/add", "POST", body)] + [("/rep", "GET", b"")] * 16:
                    s = socket.create_connection((harness.HOST, lb.port), timeout=5)
                    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(b)}\r\n"
                              f"Content-Type: application/json\r\n\r\n".encode() + b)
                    s.close()
                harness.wait_until(lambda: self.rep(lb).json()["message"]["N"] == 4, 20.0,
                                   "the /add of a client that left to happen", 0.05)
                harness.wait_until(lambda: all(d["state"] == "healthy" for d in self.details(lb)),
                                   15.0, "every replica to be healthy", 0.05)
                for i in range(40):
                    resp = harness.request(lb.port, "GET", "/home", {"X-Request-Id": f"k{i}"})
                    self.assertEqual(resp.status, 200, resp)
                self.assert_exit_clean(lb)


class MetricsAfterSync(ReviewTestCase):
    def test_metrics_counts_every_answer_before_it_over_every_worker(self):
        for workers in WORKER_COUNTS:
            with self.subTest(workers=workers):
                lb = self.start_lb(workers)
                before = harness.request(lb.port, "GET", "/metrics")
                self.assertEqual(before.status, 200)
                b = before.body.decode()
                conns = [Connection(lb.port) for _ in range(16)]
                n = 0
                try:
                    for r in range(10):
                        for i, c in enumerate(conns):
                            resp = c.request("GET", "/home", {"X-Request-Id": f"m{r}-{i}"})
                            self.assertEqual(resp.status, 200)
                            n += 1
                    after = harness.request(lb.port, "GET", "/metrics")
                finally:
                    for c in conns:
                        c.close()
                a = after.body.decode()
                two = 'ringlb_responses_total{class="2xx"}'
                # The first /metrics answer itself is counted after it was rendered.
                self.assertEqual(metric(a, two) - metric(b, two), n + 1, a)
                self.assertEqual(metric(a, "ringlb_requests_total") -
                                 metric(b, "ringlb_requests_total"), n + 1, a)
                self.assertEqual(metric(a, "ringlb_workers"), workers, a)
                self.assert_exit_clean(lb)


class Shutdown(ReviewTestCase):
    def slow_lb(self, workers):
        wrapper = write_wrapper(self, 'exec "$REPLICA" "$@" --debug-routes')
        return self.start_lb(workers, "--replica-bin", wrapper)

    def test_sigterm_with_idle_keepalive_and_inflight_clients_on_every_worker(self):
        for workers in WORKER_COUNTS:
            with self.subTest(workers=workers):
                lb = self.slow_lb(workers)
                pids = self.pids(lb)
                idle = []
                for i in range(24):
                    c = Connection(lb.port, timeout=15.0)
                    self.assertEqual(c.request("GET", "/home", {"X-Request-Id": f"i{i}"}).status, 200)
                    idle.append(c)
                results = [None] * 12

                def slow(i):
                    try:
                        with Connection(lb.port, timeout=20.0) as c:
                            r = c.request("GET", "/sleep?ms=1500", {"X-Request-Id": f"s{i}"})
                            results[i] = (r.status, r.header("Connection", ""))
                    except (AssertionError, OSError, ValueError) as e:
                        results[i] = (0, repr(e))
                threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(12)]
                for t in threads:
                    t.start()
                harness.wait_until(lambda: sum(d["inflight"] for d in self.details(lb)) == 12,
                                   20.0, "12 requests in flight", 0.02)
                lb.send_signal(signal.SIGTERM)
                for t in threads:
                    t.join(30)
                self.assertFalse(any(t.is_alive() for t in threads), "a client hangs")
                self.assertEqual([r[0] for r in results], [200] * 12, results)
                self.assertTrue(all(r[1].lower() == "close" for r in results), results)
                for c in idle:  # each idle keep-alive connection was closed by its worker
                    data, eof = read_all(c.sock, 10.0)
                    self.assertTrue(eof and data == b"", (eof, data))
                    c.close()
                self.assert_exit_clean(lb)
                for name, pid in pids.items():
                    self.assertTrue(pid_gone(pid), f"replica {name} still runs")

    def test_sigterm_with_admin_calls_in_flight(self):
        for workers in WORKER_COUNTS:
            for hurry in (False, True):
                with self.subTest(workers=workers, hurry=hurry):
                    lb = self.start_lb(workers)
                    socks = []
                    for path, method, b in ([("/add", "POST", b'{"n": 2}')] * 2 +
                                            [("/rep", "GET", b""), ("/metrics", "GET", b""),
                                             ("/readyz", "GET", b"")] * 4):
                        s = socket.create_connection((harness.HOST, lb.port), timeout=5)
                        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                  f"{len(b)}\r\n\r\n".encode() + b)
                        socks.append(s)
                    lb.send_signal(signal.SIGTERM)
                    if hurry:
                        time.sleep(0.05)
                        lb.send_signal(signal.SIGTERM)
                    for s in socks:  # an answer (any status) or a close; never a hang
                        data, eof = read_all(s, 20.0)
                        s.close()
                        self.assertTrue(eof, f"no close after {data[:200]!r}")
                        if data:
                            self.assertRegex(data[:12], rb"^HTTP/1\.1 [2-5]\d\d", data)
                    self.assert_exit_clean(lb, within=30.0)

    def test_second_sigterm_mid_drain_closes_every_loop(self):
        for workers in WORKER_COUNTS:
            with self.subTest(workers=workers):
                lb = self.slow_lb(workers)
                pids = self.pids(lb)
                results = [None] * 8

                def slow(i):
                    try:
                        with Connection(lb.port, timeout=20.0) as c:
                            r = c.request("GET", "/sleep?ms=5000", {"X-Request-Id": f"h{i}"})
                            results[i] = r.status
                    except (AssertionError, OSError, ValueError) as e:
                        results[i] = repr(e)
                threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(8)]
                for t in threads:
                    t.start()
                harness.wait_until(lambda: sum(d["inflight"] for d in self.details(lb)) == 8,
                                   20.0, "8 requests in flight", 0.02)
                lb.send_signal(signal.SIGTERM)
                harness.wait_until(lambda: "stopping" in lb.log(), 5.0, "the first signal", 0.02)
                lb.send_signal(signal.SIGTERM)
                code, _ = lb.stop(signal.SIGCONT, timeout=20.0)
                for t in threads:
                    t.join(25)
                self.assertFalse(any(t.is_alive() for t in threads), "a client hangs")
                log = lb.log()
                self.assertEqual(code, 0, log[-4000:])
                self.assertNotIn("handles left open", log)
                for name, pid in pids.items():
                    self.assertTrue(pid_gone(pid), f"replica {name} still runs")


class Drain(ReviewTestCase):
    def test_rm_drains_every_workers_exchanges_before_the_replica_stops(self):
        """/rm of a replica with slow requests in flight on several workers: each finishes 200 from
        it (the drain waits for every worker's in-flight count, not one worker's), and the
        replica's process is gone afterwards."""
        for workers in WORKER_COUNTS:
            with self.subTest(workers=workers):
                wrapper = write_wrapper(self, 'exec "$REPLICA" "$@" --debug-routes')
                lb = self.start_lb(workers, "--replica-bin", wrapper, "--drain-timeout", "60000")
                pids = self.pids(lb)
                victim = sorted(pids)[0]
                keys = []
                for i in range(400):
                    if len(keys) == 12:
                        break
                    r = harness.request(lb.port, "GET", "/home", {"X-Request-Id": f"d{i}"})
                    if r.json()["message"].removeprefix("Hello from Server: ") == victim:
                        keys.append(f"d{i}")
                self.assertEqual(len(keys), 12, "keys owned by the victim")
                results = [None] * len(keys)

                def slow(i):
                    try:
                        with Connection(lb.port, timeout=20.0) as c:
                            r = c.request("GET", "/sleep?ms=1500", {"X-Request-Id": keys[i]})
                            results[i] = (r.status, r.body[:100])
                    except (AssertionError, OSError, ValueError) as e:
                        results[i] = (0, repr(e))
                threads = [threading.Thread(target=slow, args=(i,), daemon=True)
                           for i in range(len(keys))]
                for t in threads:
                    t.start()
                harness.wait_until(lambda: sum(d["inflight"] for d in self.details(lb)) == len(keys),
                                   20.0, "the slow requests in flight", 0.02)
                resp = harness.request(lb.port, "DELETE", "/rm", body={"n": 1, "hostnames": [victim]})
                self.assertEqual(resp.status, 200, resp)
                for t in threads:
                    t.join(30)
                self.assertFalse(any(t.is_alive() for t in threads), "a client hangs")
                self.assertEqual([r[0] for r in results], [200] * len(keys), results)
                harness.wait_until(lambda: pid_gone(pids[victim]), 15.0, "the drained replica to stop")
                self.assert_exit_clean(lb)


class AdminHalfClose(ReviewTestCase):
    def test_admin_client_that_half_closes_gets_its_answer_then_a_close(self):
        for workers in WORKER_COUNTS:
            with self.subTest(workers=workers):
                lb = self.start_lb(workers)
                for path in ["/rep", "/metrics", "/readyz", "/healthz"] * 4:
                    s = socket.create_connection((harness.HOST, lb.port), timeout=5)
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    s.shutdown(socket.SHUT_WR)
                    data, eof = read_all(s, 10.0)
                    s.close()
                    self.assertTrue(eof, path)
                    self.assertTrue(data.startswith(b"HTTP/1.1 200"), (path, data[:200]))
                self.assert_exit_clean(lb)


class OutOfDescriptors(ReviewTestCase):
    def test_sigterm_while_listeners_pause_on_emfile_closes_every_loop(self):
        """Under a 96-descriptor limit with --max-conns far above it, 150 idle clients run every
        worker out of descriptors (accept pauses: the listener handle closed, a spare descriptor
        kept). The daemon still serves once they leave, and a SIGTERM while they are held (some
        listeners paused) closes every loop: exit 0, no handle left open."""
        for workers in WORKER_COUNTS:
            for leave_first in (True, False):
                with self.subTest(workers=workers, leave_first=leave_first):
                    argv = ["prlimit", "--nofile=96:96", RINGLB, "--listen",
                            f"{harness.HOST}:{{port}}", "--log-level", "info", "--workers",
                            str(workers), "--max-conns", "100000", "--replicas", "3"]
                    lb = harness.start(self, argv, ready_timeout=10.0)
                    self.lbs.append(lb)
                    self.wait_ready(lb, 3)
                    socks = []
                    try:
                        for _ in range(150):
                            s = socket.socket()
                            s.settimeout(5)
                            s.connect((harness.HOST, lb.port))  # the backlog takes it
                            socks.append(s)
                        time.sleep(1.5)  # accept pauses and resumes meanwhile
                        if leave_first:
                            for s in socks:
                                s.close()
                            socks = []

                            def home_ok():
                                try:
                                    return harness.request(lb.port, "GET", "/home").status == 200
                                except (OSError, AssertionError):
                                    return False
                            harness.wait_until(home_ok, 15.0, "/home to answer after the flood")
                        self.assert_exit_clean(lb)
                    finally:
                        for s in socks:
                            s.close()


class MaxConnsTotal(ReviewTestCase):
    def test_max_conns_clients_are_served_at_once_whatever_worker_they_reach(self):
        for workers in WORKER_COUNTS:
            with self.subTest(workers=workers):
                lb = self.start_lb(workers, "--max-conns", str(2 * workers))
                # 2 x workers keep-alive clients, each holding its connection open while the next
                # one connects: every one is within the total, so every one is served.
                conns = []
                try:
                    for i in range(2 * workers):
                        c = Connection(lb.port, timeout=3.0)
                        conns.append(c)
                        resp = c.request("GET", "/home", {"X-Request-Id": f"c{i}"})
                        self.assertEqual(resp.status, 200, f"client {i} of {2 * workers}")
                    # One more is over the total: it waits, whatever worker it reached, until a
                    # client closes on any worker.
                    extra = socket.create_connection((harness.HOST, lb.port), timeout=5)
                    self.addCleanup(extra.close)
                    extra.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-Id: extra\r\n\r\n")
                    extra.settimeout(1.0)
                    with self.assertRaises(socket.timeout, msg="a client over --max-conns was served"):
                        extra.recv(100)
                    for c in conns:
                        c.close()
                    extra.settimeout(10.0)
                    self.assertTrue(extra.recv(100).startswith(b"HTTP/1.1 200"))
                finally:
                    for c in conns:
                        c.close()
                self.assert_exit_clean(lb)


if __name__ == "__main__":
    unittest.main()
