#!/usr/bin/python3
"""ringlb-loadgen against real ringlb-replica processes on 127.0.0.1 (stdlib only).

Every run is bounded (-n, -d, --time-limit) and also by a subprocess timeout; every process this test
starts is stopped by its pid in cleanup. Binaries come from RINGLB_LOADGEN and RINGLB_REPLICA (set by
meson), else from RINGLB_BUILD (default: build)."""
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

BUILD = os.environ.get("RINGLB_BUILD", "build")
LOADGEN = os.environ.get("RINGLB_LOADGEN", os.path.join(BUILD, "bench/loadgen/ringlb-loadgen"))
REPLICA = os.environ.get("RINGLB_REPLICA", os.path.join(BUILD, "replica/ringlb-replica"))
RUN_TIMEOUT = 30  # seconds, for any one loadgen run


def free_port():
    """A port nothing listens on right now (the kernel's choice for a bound and closed socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, limit=5.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {limit} s")


def stop(proc):
    """Stops a process this test started, by its pid: SIGTERM, then SIGKILL after 3 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)


def start_replica(rid, port=None, debug=False):
    """Starts a replica on a free (or the given) 127.0.0.1 port and waits until it accepts. The
    caller stops it (stop(proc))."""
    port = port or free_port()
    args = [REPLICA, "--address", "127.0.0.1", "--port", str(port), "--id", rid]
    if debug:
        args.append("--debug-routes")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
    except Exception:
        stop(proc)
        raise
    return proc, port


def loadgen(*args, timeout=RUN_TIMEOUT):
    """Runs ringlb-loadgen quietly with a JSON report. Returns (exit code, report or None, wall s,
    stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "report.json")
        t0 = time.monotonic()
        p = subprocess.run([LOADGEN, "-q", "--json", path, *args], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        wall = time.monotonic() - t0
        report = None
        if os.path.exists(path):
            with open(path) as f:
                report = json.load(f)
        return p.returncode, report, wall, p.stderr


class LoadgenReplicaTest(unittest.TestCase):
    """Three replicas shared by the tests that only read from them."""

    IDS = ("101", "202", "three")

    @classmethod
    def setUpClass(cls):
        cls.procs, cls.ports = [], {}
        try:
            for rid in cls.IDS:
                proc, port = start_replica(rid, debug=True)
                cls.procs.append(proc)
                cls.ports[rid] = port
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for proc in cls.procs:
            stop(proc)

    def url(self, rid, path="/home"):
        return f"http://127.0.0.1:{self.ports[rid]}{path}"

    def assert_consistent(self, r):
        t = r["totals"]
        self.assertEqual(t["started"], t["responses"] + t["errors"] + t["unfinished"])
        self.assertEqual(t["responses"], t["ok"] + (t["failed"] - t["errors"]))
        self.assertEqual(t["errors"], sum(r["errors"].values()))
        self.assertEqual(t["responses"], sum(r["status"].values()))
        self.assertEqual(t["responses"], sum(r["replicas"].values()) + r["unattributed"])
        self.assertEqual(t["responses"], r["latency_us"]["count"])
        intervals = r["timeline"]["intervals"]
        self.assertEqual(t["started"], sum(i["started"] for i in intervals))
        self.assertEqual(t["ok"], sum(i["ok"] for i in intervals))
        self.assertEqual(t["failed"], sum(i["failed"] for i in intervals))

    def test_counts_sum_to_the_total_and_name_the_replica(self):
        for rid in self.IDS:
            code, r, _, err = loadgen("-n", "3000", "-c", "8", self.url(rid))
            self.assertEqual(code, 0, err)
            self.assert_consistent(r)
            self.assertEqual(r["totals"]["started"], 3000)
            self.assertEqual(r["totals"]["ok"], 3000)
            self.assertEqual(r["replicas"], {rid: 3000})
            self.assertEqual(r["status"], {"200": 3000})
            self.assertEqual(r["unattributed"], 0)
            self.assertEqual(r["ended_by"], "count")
            self.assertEqual(r["config"]["requests"], 3000)

    def test_percentiles_are_ordered_and_plausible(self):
        code, r, _, err = loadgen("-n", "5000", "-c", "16", self.url("101"))
        self.assertEqual(code, 0, err)
        lat = r["latency_us"]
        order = [lat[k] for k in ("min", "p50", "p90", "p99", "p99_9", "max")]
        self.assertEqual(order, sorted(order))
        self.assertGreater(lat["min"], 0)
        self.assertLessEqual(lat["min"], lat["mean"])
        self.assertLessEqual(lat["mean"], lat["max"])
        self.assertLess(lat["max"], 5_000_000)  # below the default 5 s timeout

    def test_rate_spreads_requests_evenly(self):
        code, r, wall, err = loadgen("-d", "2", "-r", "200", "-c", "4", "-i", "100",
                                     self.url("202"))
        self.assertEqual(code, 0, err)
        self.assert_consistent(r)
        started = r["totals"]["started"]
        self.assertGreaterEqual(started, 380)  # R * D = 400
        self.assertLessEqual(started, 401)
        self.assertEqual(r["totals"]["ok"], started)
        intervals = r["timeline"]["intervals"]
        self.assertEqual(len(intervals), 20)
        self.assertEqual(r["timeline"]["interval_ms"], 100)
        # 20 per 100 ms. A stall of this loaded machine (the load generator's thread not run for a
        # while) moves a few starts into the next interval, where the schedule catches up: most
        # intervals still hold 15..25, and none holds the burst an unpaced run would (400 at once).
        inner = [i["started"] for i in intervals[1:-1]]
        even = [n for n in inner if 15 <= n <= 25]
        self.assertGreaterEqual(len(even), len(inner) - 4, intervals)
        self.assertLessEqual(max(inner), 60, intervals)
        self.assertEqual(r["ended_by"], "duration")
        self.assertLess(wall, 4.0)

    def test_rate_counts_latency_from_the_schedule_when_the_target_falls_behind(self):
        # One connection, a request due every 20 ms, each answered after 50 ms: the target falls
        # further behind with every request. Request k is due at 20k ms and answered at about
        # 50(k + 1) ms, so its latency from the schedule is about 30k + 50 ms (a client of a real
        # service waits that long); timed from its send, each would read 50 ms.
        code, r, _, err = loadgen("-d", "1", "-r", "50", "-c", "1",
                                  self.url("three", "/sleep?ms=50"))
        self.assertEqual(code, 0, err)
        self.assert_consistent(r)
        self.assertEqual(r["config"]["latency_from"], "schedule")
        n = r["totals"]["ok"]
        self.assertGreaterEqual(n, 10)
        self.assertLessEqual(n, 21)
        lat = r["latency_us"]
        self.assertGreaterEqual(lat["p50"], 150_000, lat)
        self.assertGreaterEqual(lat["max"], 30_000 * (n - 2) + 50_000, lat)
        # Below the target's pace (a request every 200 ms), nothing waits: each reads its 50 ms.
        code, r, _, err = loadgen("-d", "1", "-r", "5", "-c", "1",
                                  self.url("three", "/sleep?ms=50"))
        self.assertEqual(code, 0, err)
        self.assertEqual(r["totals"]["ok"], 5)
        self.assertGreaterEqual(r["latency_us"]["min"], 50_000)
        self.assertLess(r["latency_us"]["max"], 300_000, r["latency_us"])
        # Unpaced, the latency is from the send.
        code, r, _, err = loadgen("-n", "5", "-c", "1", self.url("three", "/sleep?ms=50"))
        self.assertEqual(code, 0, err)
        self.assertEqual(r["config"]["latency_from"], "send")
        self.assertLess(r["latency_us"]["max"], 300_000, r["latency_us"])

    def test_rate_does_not_blame_the_target_for_the_load_generators_own_stall(self):
        # Four connections, a request due every 5 ms to a target that answers at once: the
        # connections sit free between tokens. Stopped for 400 ms (SIGSTOP, as a preempted or
        # paused process would be), the load generator owes about 80 tokens when it resumes; the
        # target held none of them back, so their latencies stay small. Timed from the schedule, a
        # token taken by a connection that was busy for a moment after the resumption would read up
        # to 400 ms.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "report.json")
            p = subprocess.Popen([LOADGEN, "-q", "--json", path, "-d", "1.5", "-r", "200", "-c", "4",
                                  self.url("101")], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                time.sleep(0.5)
                p.send_signal(signal.SIGSTOP)
                time.sleep(0.4)
                p.send_signal(signal.SIGCONT)
                _, err = p.communicate(timeout=RUN_TIMEOUT)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self.assertEqual(p.returncode, 0, err)
            with open(path) as f:
                r = json.load(f)
        self.assert_consistent(r)
        # It caught up: the overdue tokens were sent, not dropped.
        self.assertGreaterEqual(r["totals"]["ok"], 280, r["totals"])
        # At most the request in flight when it stopped reads the stall.
        self.assertLess(r["latency_us"]["p99"], 100_000, r["latency_us"])

    def test_duration_run_stops_within_its_bound(self):
        code, r, wall, err = loadgen("-d", "1", "-c", "16", self.url("three"))
        self.assertEqual(code, 0, err)
        self.assert_consistent(r)
        self.assertEqual(r["ended_by"], "duration")
        self.assertGreater(r["totals"]["ok"], 100)
        self.assertGreaterEqual(r["elapsed_s"], 0.95)
        self.assertLess(r["elapsed_s"], 1.5)
        self.assertLess(wall, 2.5)
        self.assertEqual(len(r["timeline"]["intervals"]), 1)

    def test_no_keepalive_opens_one_connection_per_request(self):
        code, r, _, err = loadgen("-n", "500", "-c", "4", "--no-keepalive", self.url("101"))
        self.assertEqual(code, 0, err)
        self.assert_consistent(r)
        self.assertEqual(r["totals"]["ok"], 500)
        self.assertEqual(r["totals"]["connects"], 500)
        self.assertFalse(r["config"]["keepalive"])
        code, r, _, err = loadgen("-n", "500", "-c", "4", self.url("101"))
        self.assertEqual(code, 0, err)
        self.assertEqual(r["totals"]["ok"], 500)
        self.assertEqual(r["totals"]["connects"], 4)

    def test_error_statuses_are_counted_and_failed(self):
        code, r, _, err = loadgen("-n", "200", "-c", "4", self.url("202", "/nope"))
        self.assertEqual(code, 0, err)
        self.assert_consistent(r)
        self.assertEqual(r["status"], {"404": 200})
        self.assertEqual(r["totals"]["failed"], 200)
        self.assertEqual(r["totals"]["errors"], 0)
        self.assertEqual(r["unattributed"], 200)

    def test_post_sends_its_body(self):
        code, r, _, err = loadgen("-n", "20", "-c", "2", "-m", "POST", "-b", "100000",
                                  self.url("202", "/sink"))
        self.assertEqual(code, 0, err)
        self.assertEqual(r["status"], {"200": 20})
        # Each answer is {"bytes": 100000}.
        self.assertEqual(r["totals"]["body_bytes"], 20 * len('{"bytes": 100000}'))

    def test_per_request_timeout_counts_timeouts(self):
        code, r, wall, err = loadgen("-n", "8", "-c", "4", "-t", "200",
                                     self.url("three", "/sleep?ms=2000"))
        self.assertEqual(code, 0, err)
        self.assert_consistent(r)
        self.assertEqual(r["errors"]["timeout"], 8)
        self.assertLess(wall, 2.0)

    def test_hard_time_limit_ends_a_stuck_run(self):
        code, r, wall, err = loadgen("-n", "100", "-c", "4", "-t", "20000", "-T", "1",
                                     self.url("three", "/sleep?ms=5000"))
        self.assertEqual(code, 0, err)
        self.assert_consistent(r)
        self.assertEqual(r["ended_by"], "time_limit")
        self.assertEqual(r["totals"]["unfinished"], 4)
        self.assertLess(wall, 2.5)


class LoadgenFailureTest(unittest.TestCase):

    def test_dead_port_counts_connect_errors_and_does_not_hang(self):
        # A port we hold bound without listening: connects are refused, and no other process on
        # the machine can take it meanwhile (a port that was merely free a moment ago was taken
        # once by another suite's server, and the run "could send").
        dead = socket.socket()
        self.addCleanup(dead.close)
        dead.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{dead.getsockname()[1]}/home"
        code, r, wall, err = loadgen("-n", "100", "-c", "4", url)
        self.assertEqual(code, 1, "nothing could be sent: exit 1")
        self.assertIn("no request could be sent", err)
        self.assertEqual(r["totals"]["started"], 100)
        self.assertEqual(r["errors"]["connect_refused"], 100)
        self.assertEqual(r["totals"]["responses"], 0)
        self.assertLess(wall, 10)  # a hang guard with room for a loaded machine, not a speed check
        code, r, wall, err = loadgen("-d", "1", "-c", "4", url)
        self.assertEqual(code, 1)
        self.assertGreater(r["errors"]["connect_refused"], 0)
        self.assertEqual(r["totals"]["started"], r["errors"]["connect_refused"])
        self.assertLess(wall, 5)

    def test_keepalive_connections_reconnect_after_the_replica_dies(self):
        proc, port = start_replica("before")
        self.addCleanup(stop, proc)
        run = subprocess.Popen([LOADGEN, "-q", "--json", "-", "-d", "2.5", "-r", "400", "-c", "8",
                                "-i", "250", "-t", "1000", f"http://127.0.0.1:{port}/home"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        self.addCleanup(stop, run)
        time.sleep(0.7)
        proc.kill()
        proc.wait(3)
        time.sleep(0.5)
        after, _ = start_replica("after", port=port)
        self.addCleanup(stop, after)
        out, err = run.communicate(timeout=RUN_TIMEOUT)
        self.assertEqual(run.returncode, 0, err)
        r = json.loads(out)
        t = r["totals"]
        self.assertEqual(t["started"], t["responses"] + t["errors"] + t["unfinished"])
        self.assertGreater(t["errors"], 0)
        self.assertGreater(r["replicas"].get("before", 0), 100)
        self.assertGreater(r["replicas"].get("after", 0), 100)
        last = r["timeline"]["intervals"][-1]
        self.assertGreater(last["ok"], 0)
        self.assertEqual(last["failed"], 0)
        self.assertEqual(len(r["timeline"]["intervals"]), 10)
        self.assertIn("ringlb-loadgen:", err)  # with --json - the summary goes to stderr


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def do_GET(self):
        RecordingHandler.seen.append(self.headers.get("X-Request-Id"))
        body = b'{"message": "Hello from Server: py", "status": "successful"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class LoadgenRequestIdTest(unittest.TestCase):

    def test_rid_sends_seeded_six_digit_ids(self):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        url = f"http://127.0.0.1:{server.server_address[1]}/home"
        runs = []
        for _ in range(2):
            RecordingHandler.seen = []
            code, r, _, err = loadgen("-n", "50", "-c", "1", "--rid", "--seed", "42", url)
            self.assertEqual(code, 0, err)
            self.assertEqual(r["replicas"], {"py": 50})
            runs.append(list(RecordingHandler.seen))
        self.assertEqual(len(runs[0]), 50)
        for rid in runs[0]:
            self.assertRegex(rid, r"^[1-9][0-9]{5}$")
        self.assertEqual(runs[0], runs[1], "the same seed gives the same ids")
        self.assertGreater(len(set(runs[0])), 45)
        RecordingHandler.seen = []
        code, _, _, err = loadgen("-n", "5", "-c", "1", url)
        self.assertEqual(code, 0, err)
        self.assertEqual(RecordingHandler.seen, [None] * 5, "no header without --rid")


class LoadgenUsageTest(unittest.TestCase):

    def test_refuses_any_target_but_127_0_0_1(self):
        for url in ("http://10.0.0.1:80/home", "http://example.com/", "http://[::1]:5000/"):
            code, r, _, err = loadgen("-n", "1", url, timeout=5)
            self.assertEqual(code, 2, url)
            self.assertIsNone(r)
            self.assertIn("only to 127.0.0.1", err)

    def test_usage_errors(self):
        cases = [
            ([], "target URL"),
            (["http://127.0.0.1:1/"], "-n"),
            (["-n", "0", "http://127.0.0.1:1/"], "-n"),
            (["-d", "100", "-T", "10", "http://127.0.0.1:1/"], "--time-limit"),
            (["-n", "1", "-c", "0", "http://127.0.0.1:1/"], "-c"),
            (["-n", "1", "--bogus", "http://127.0.0.1:1/"], "unknown option"),
            (["-n", "1", "https://127.0.0.1:1/"], "http://"),
        ]
        for args, words in cases:
            p = subprocess.run([LOADGEN, *args], capture_output=True, text=True, timeout=5)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(words, p.stderr, args)

    def test_help(self):
        p = subprocess.run([LOADGEN, "--help"], capture_output=True, text=True, timeout=5)
        self.assertEqual(p.returncode, 0)
        self.assertIn("usage: ringlb-loadgen", p.stdout)


if __name__ == "__main__":
    unittest.main()
