"""Logs (issue 14), through real ringlb and replica processes.

- --access-log json: one line per request with the client, method, path, status, bytes in and out,
  the replica that answered and its ring id (as /rep?verbose=1 says), retries and the X-Request-Id
  routed; hostile bytes (quotes, CR LF in a header, invalid UTF-8) leave every line one valid JSON
  object. --access-log text: one printable line per request.
- logrotate: the file renamed, then SIGHUP: the next lines go to a new file at the same path, none
  is lost or torn.
- Without --access-log-file the lines go to stderr, whole, between the daemon's own lines.
- A FIFO whose reader never reads: requests are answered, lines dropped and counted in a warn line,
  memory bounded, SIGTERM still ends the daemon.
- Replica output comes prefixed "replica NAME: " through a pipe, each line whole.
- A replica that dies is logged at warn; /add and /rm log the caller's address and what changed; a
  static backend that never comes up is logged at warn with its address.
"""
import json
import os
import re
import signal
import socket
import tempfile
import time
import unittest

import harness
from heal_test import Loadgen, write_wrapper

RINGLB = harness.build_path("lb", "ringlb")
HOST = harness.HOST
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


class LogTestCase(unittest.TestCase):
    def folder(self):
        d = tempfile.TemporaryDirectory(prefix="ringlb-alog-")
        self.addCleanup(d.cleanup)
        return d.name

    def start_lb(self, *args, replicas=3):
        argv = [RINGLB, "--listen", f"{HOST}:{{port}}", "--replicas", str(replicas), *args]
        lb = harness.start(self, argv, ready_timeout=10.0)
        if "--provisioner" not in args:
            harness.wait_lb_ready(lb, replicas)
        return lb

    def details(self, lb):
        resp = harness.request(lb.port, "GET", "/rep?verbose=1")
        return {d["name"]: d for d in resp.json()["message"]["details"]}

    def read_lines(self, path, n, timeout=5.0):
        """The lines of path once it holds at least n (the workers flush every 100 ms)."""
        def enough():
            if not os.path.exists(path):
                return None
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
            return lines[:-1] if len(lines) - 1 >= n else None
        return harness.wait_until(enough, timeout, f"{n} lines in {path}")


class AccessLog(LogTestCase):
    def test_json_lines_say_what_happened_to_each_request(self):
        path = os.path.join(self.folder(), "access.log")
        lb = self.start_lb("--access-log", "json", "--access-log-file", path)
        ring_ids = {name: d["ring_id"] for name, d in self.details(lb).items()}
        sent = []
        with harness.Connection(lb.port) as c:
            for i in range(20):
                rid = str(200000 + 7919 * i)
                resp = c.request("GET", f"/home?i={i}", {"X-Request-Id": rid})
                self.assertEqual(resp.status, 200)
                sent.append((rid, f"/home?i={i}", resp.json()["message"].split(": ")[1], len(resp.raw)))
            resp = c.request("POST", "/nowhere", {"X-Request-Id": "p1"}, b"x" * 100)
            self.assertEqual(resp.status, 400)  # a replica's 404, the assignment's 400
        lines = [json.loads(l) for l in self.read_lines(path, 21)]
        # Lines about /rep (harness waits) come first; the test's requests follow in order.
        mine = [l for l in lines if l["request_id"] in {s[0] for s in sent} | {"p1"}]
        self.assertEqual(len(mine), 21, lines)
        for line, (rid, target, server, nbytes) in zip(mine, sent):
            self.assertEqual(set(line), {"time", "client", "method", "path", "status", "bytes_in",
                                         "bytes_out", "replica", "ring_id", "duration_ms", "retries",
                                         "request_id"})
            self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertEqual((line["client"], line["method"], line["path"], line["status"]),
                             (HOST, "GET", target, 200))
            self.assertEqual((line["replica"], line["ring_id"]), (server, ring_ids[server]))
            self.assertEqual((line["request_id"], line["retries"]), (rid, 0))
            self.assertEqual(line["bytes_out"], nbytes)
            self.assertGreater(line["bytes_in"], 40)
            self.assertGreaterEqual(line["duration_ms"], 0)
        post = mine[-1]
        self.assertEqual((post["method"], post["path"], post["status"]), ("POST", "/nowhere", 400))
        self.assertGreaterEqual(post["bytes_in"], 100 + 40)

    def test_hostile_bytes_leave_one_valid_json_object_per_line(self):
        path = os.path.join(self.folder(), "access.log")
        lb = self.start_lb("--access-log", "json", "--access-log-file", path, "--hash-key", "path")
        hostile_ids = [b'q"uote\\back', b"\xff\xfe invalid utf-8 \xc3", b'"}, {"status": 999',
                       "caf\u00e9 \u20ac".encode()]
        with harness.Connection(lb.port) as c:
            for rid in hostile_ids:
                c.send(b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + rid + b"\r\n\r\n")
                self.assertEqual(c.read_response().status, 200)
            c.send(b'GET /a"b\\c%00%0a?x="} HTTP/1.1\r\nHost: x\r\n\r\n')
            self.assertEqual(c.read_response().status, 400)
        raw = self.read_lines(path, 4 + 1)
        lines = [json.loads(l.decode("utf-8")) for l in raw]  # each line is UTF-8 and one object
        ids = [l["request_id"] for l in lines]
        self.assertIn('q"uote\\back', ids)
        self.assertIn("\ufffd\ufffd invalid utf-8 \ufffd", ids)
        self.assertIn('"}, {"status": 999', ids)
        self.assertIn("caf\u00e9 \u20ac", ids)
        self.assertIn('/a"b\\c%00%0a?x="}', [l["path"] for l in lines])
        self.assertEqual({l["status"] for l in lines}, {200, 400})

    def test_text_lines(self):
        path = os.path.join(self.folder(), "access.log")
        lb = self.start_lb("--access-log", "text", "--access-log-file", path)
        with harness.Connection(lb.port) as c:
            c.send(b'GET /home?q="x" HTTP/1.1\r\nHost: x\r\nX-Request-Id: 424242\r\n\r\n')
            body = c.read_response().json()["message"]
        server = body.split(": ")[1]
        ring_id = self.details(lb)[server]["ring_id"]
        lines = harness.wait_until(
            lambda: [l for l in self.read_lines(path, 1) if b"rid=424242" in l], 5.0, "the line")
        line = lines[0].decode("ascii")
        self.assertRegex(line, r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 127\.0\.0\.1 '
                               r'"GET /home\?q=\\x22x\\x22 HTTP/1\.1" 200 in=\d+ out=\d+ '
                               rf"replica={server} ring_id={ring_id} ms=\d+\.\d{{3}} retries=0 rid=424242$")

    def test_logrotate_rename_then_sighup_writes_a_new_file(self):
        folder = self.folder()
        path = os.path.join(folder, "access.log")
        lb = self.start_lb("--access-log", "json", "--access-log-file", path)
        time.sleep(0.3)  # the lines of the start's own requests are written (every 100 ms)
        with open(path, "rb") as f:
            baseline = f.read().count(b'"path":"/home"')
        load = Loadgen(self, lb.port, rate=300, duration=4.0, connections=4)
        time.sleep(1.5)
        os.rename(path, path + ".1")
        lb.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: "reload done" in lb.log(), 5.0, "the reload")
        report = load.result()
        t = report["totals"]
        self.assertEqual((t["failed"], t["errors"]), (0, 0), report)
        harness.wait_until(lambda: os.path.exists(path), 5.0, "the new file")
        time.sleep(0.3)  # the last flush (every 100 ms)
        with open(path + ".1", "rb") as f:
            old = f.read()
        with open(path, "rb") as f:
            new = f.read()
        for text in (old, new):
            self.assertTrue(text.endswith(b"\n"))
            for l in text.split(b"\n")[:-1]:
                json.loads(l)  # whole lines only
        n_old, n_new = old.count(b"\n"), new.count(b"\n")
        self.assertGreater(n_old, 50)
        self.assertGreater(n_new, 50)
        homes = sum(1 for l in (old + new).split(b"\n")[:-1] if json.loads(l)["path"] == "/home")
        self.assertEqual(homes - baseline, t["ok"], "every request logged once, in one file or the other")

    def test_stderr_by_default_with_whole_lines_under_load(self):
        lb = self.start_lb("--access-log", "json", "--log-level", "debug")
        time.sleep(0.3)
        baseline = lb.log().count('"path":"/home"')
        load = Loadgen(self, lb.port, rate=500, duration=3.0, connections=8)
        report = load.result()
        self.assertEqual(report["totals"]["failed"], 0)
        harness.request(lb.port, "GET", "/rep")
        time.sleep(0.3)
        lines = lb.log().splitlines()
        access = [l for l in lines if l.startswith("{")]
        homes = [json.loads(l) for l in access if '"path":"/home"' in l]
        self.assertEqual(len(homes) - baseline, report["totals"]["ok"])
        for l in lines:  # nothing torn: a line is the daemon's, a replica's or an access line
            self.assertTrue(TS.match(l) or l.startswith("replica ") or
                            (l.startswith("{") and json.loads(l)), repr(l))


    def test_a_reader_that_stops_costs_dropped_lines_never_a_blocked_loop(self):
        # The access log is a FIFO whose reader holds it open and never reads: every write finds
        # it full. Requests go on being answered, the lines are dropped and counted in a warn
        # line, memory stays bounded, and SIGTERM still ends the daemon.
        path = os.path.join(self.folder(), "access.fifo")
        os.mkfifo(path)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        lb = self.start_lb("--access-log", "json", "--access-log-file", path)
        load = Loadgen(self, lb.port, rate=800, duration=4.0, connections=8)
        report = load.result()
        t = report["totals"]
        self.assertEqual((t["failed"], t["errors"], t["unfinished"]), (0, 0, 0), report)
        self.assertEqual(set(report["status"]), {"200"})
        harness.wait_until(
            lambda: [m for _, lvl, m in harness.log_events(lb.log())
                     if lvl == "warn" and re.match(r"access log: worker \d+ dropped \d+ lines", m)],
            10.0, "the warn line counting dropped lines")
        self.assertIn("Resource temporarily unavailable", lb.log())
        self.assertLess(harness.rss_kib(lb.pid), 200 * 1024)
        code, _ = lb.stop(signal.SIGTERM, timeout=15)
        self.assertEqual(code, 0, lb.log())


class Logs(LogTestCase):
    def test_replica_output_is_prefixed_and_kept_whole(self):
        wrapper = write_wrapper(self, 'i=0; while [ $i -lt 300 ]; do echo "wrapper line $i of $2 '
                                      'with some padding to make it longer ......................"; '
                                      'i=$((i+1)); done; printf "ctl\\033[31mbyte\\n" >&2; '
                                      'exec "$REPLICA" "$@"')
        lb = self.start_lb("--replica-bin", wrapper, "--access-log", "json")
        harness.wait_until(lambda: lb.log().count("wrapper line 299") == 3, 5.0, "the output")
        log = lb.log()
        for name in ("server1", "server2", "server3"):
            for i in (0, 150, 299):
                self.assertIn(f"replica {name}: wrapper line {i} of {name} with", log)
            self.assertIn(f"replica {name}: ctl?[31mbyte\n", log)  # control bytes as '?'
            self.assertIn(f"replica {name}: listening on", log)  # not doubled
            self.assertNotIn(f"replica {name}: replica {name}:", log)
        for l in log.splitlines():
            self.assertTrue(TS.match(l) or l.startswith("replica ") or l.startswith("{"), repr(l))
        self.assertNotIn("\x1b", log)

    def test_dead_replica_is_a_warning_and_admin_changes_name_the_caller(self):
        lb = self.start_lb("--hb-interval", "100")
        victim = self.details(lb)["server2"]
        os.kill(int(victim["id"]), signal.SIGKILL)
        harness.wait_until(
            lambda: any(lvl == "warn" and m.startswith("replica server2: healthy -> dead (exited")
                        for _, lvl, m in harness.log_events(lb.log())), 10.0, "the warn line")
        resp = harness.request(lb.port, "POST", "/add", {"Content-Type": "application/json"},
                               json.dumps({"n": 1, "hostnames": ["extra1"]}).encode())
        self.assertEqual(resp.status, 200, resp)
        resp = harness.request(lb.port, "DELETE", "/rm", {"Content-Type": "application/json"},
                               json.dumps({"n": 1, "hostnames": ["extra1"]}).encode())
        self.assertEqual(resp.status, 200, resp)
        infos = [m for _, lvl, m in harness.log_events(lb.log()) if lvl == "info"]
        self.assertIn("admin: /add from 127.0.0.1: added 1 replicas (extra1)", infos)
        self.assertIn("admin: /rm from 127.0.0.1: removing 1 replicas (extra1)", infos)

    def test_a_static_backend_that_never_comes_up_is_a_warning(self):
        with socket.socket() as s:  # a port nothing listens on: bound, never listening
            s.bind((HOST, 0))
            dead_port = s.getsockname()[1]
            up = harness.start(self, [harness.build_path("replica", "ringlb-replica"), "--id", "up",
                                      "--port", "{port}", "--address", HOST])
            lb = self.start_lb("--provisioner", "static", "--backend", f"{HOST}:{up.port}",
                               "--backend", f"{HOST}:{dead_port}", "--start-timeout", "300")
            harness.wait_until(
                lambda: [m for _, lvl, m in harness.log_events(lb.log()) if lvl == "warn" and
                         m.startswith(f"replica backend2: starting -> dead (no heartbeat from "
                                      f"{HOST}:{dead_port} within --start-timeout)")],
                10.0, "the warn line for the backend that never came up")


if __name__ == "__main__":
    unittest.main()
