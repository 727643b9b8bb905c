"""systemd integration of ringlb (issue 14), through real processes:

- the notify protocol (Type=notify), with a Python datagram socket as $NOTIFY_SOCKET in place of
  systemd: READY=1 comes only once the replicas are healthy (a static backend that is not up holds
  it back; it comes once the backend is started, and then /rep says healthy and /home answers),
  STOPPING=1 on SIGTERM before the process exits 0, WATCHDOG=1 repeatedly when $WATCHDOG_USEC is
  set and never when it is not;
- `ringlb --check URL` (the container healthcheck): 0 on a 2xx, 1 otherwise, 2 on a bad URL;
- the units lb/ringlb.service and lb/ringlb-docker.service: `systemd-analyze security
  --offline=true` rates each 4.0 or less (skipped without systemd-analyze).

A real `systemd-run -p Type=notify` is not used: PID 1 of the machines this runs on (containers,
CI) is often not systemd, and systemd-run needs it. No timing is asserted; every wait is bounded.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness
from harness import HOST
from lb_test import RINGLB, REPLICA


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, test):
        self.dir = tempfile.TemporaryDirectory(prefix="ringlb-notify-")
        test.addCleanup(self.dir.cleanup)
        self.path = os.path.join(self.dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        test.addCleanup(self.sock.close)
        self.sock.bind(self.path)
        self.got = []

    def read(self, timeout):
        """Every datagram that arrives within timeout s (at least one wait), added to self.got."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.got
            self.sock.settimeout(left)
            try:
                self.got.append(self.sock.recv(4096).decode())
            except socket.timeout:
                return self.got

    def wait_for(self, state, timeout):
        """The first datagram (already read or to come within timeout s) with line `state`."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.got:
                if state in msg.split("\n"):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {state} within {timeout} s; got {self.got}")
            self.sock.settimeout(left)
            try:
                self.got.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass


def states(messages):
    return [line for m in messages for line in m.split("\n") if line]


class Notify(unittest.TestCase):
    def start_lb(self, notify, *args, env=None):
        argv = [RINGLB, "--listen", f"{HOST}:{{port}}", "--hb-interval", "100", *args]
        return harness.start(self, argv, env=dict({"NOTIFY_SOCKET": notify.path}, **(env or {})),
                             ready_timeout=10.0)

    def test_ready_only_once_the_backend_is_healthy_then_stopping_on_sigterm(self):
        notify = NotifySocket(self)
        backend_port = harness.free_port()
        lb = self.start_lb(notify, "--provisioner", "static", "--backend", f"{HOST}:{backend_port}",
                           "--start-timeout", "600000")
        # Listening, but its one backend is not up: no READY=1 (heartbeats every 100 ms fail).
        self.assertNotIn("READY=1", states(notify.read(2.0)), lb.log())
        harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}", "--id", "late"],
                      port=backend_port)
        notify.wait_for("READY=1", 15.0)
        # At READY=1 the backend is healthy and every worker routes to it.
        details = harness.request(lb.port, "GET", "/rep?verbose=1").json()["message"]["details"]
        self.assertEqual([d["state"] for d in details], ["healthy"], details)
        self.assertEqual(harness.request(lb.port, "GET", "/home").status, 200)
        self.assertEqual(harness.request(lb.port, "GET", "/readyz").status, 200)
        self.assertNotIn("STOPPING=1", states(notify.got))
        lb.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 10.0)
        self.assertEqual(lb.proc.wait(timeout=15), 0, lb.log())
        self.assertEqual(states(notify.got).count("READY=1"), 1, notify.got)

    def test_ready_with_process_replicas_all_healthy(self):
        notify = NotifySocket(self)
        lb = self.start_lb(notify, "--replicas", "3")
        notify.wait_for("READY=1", 15.0)
        details = harness.request(lb.port, "GET", "/rep?verbose=1").json()["message"]["details"]
        self.assertEqual(sorted(d["state"] for d in details), ["healthy"] * 3, details)
        ready = [m for m in notify.got if "READY=1" in m.split("\n")][0]
        self.assertIn("STATUS=serving, 3 of 3 replicas healthy", ready)
        lb.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 10.0)
        self.assertEqual(lb.proc.wait(timeout=15), 0, lb.log())

    def test_watchdog_pings_when_asked_and_only_then(self):
        notify = NotifySocket(self)
        lb = self.start_lb(notify, "--replicas", "1", env={"WATCHDOG_USEC": "200000"})
        deadline = time.monotonic() + 15.0
        while states(notify.got).count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
            notify.read(0.5)
        self.assertGreaterEqual(states(notify.got).count("WATCHDOG=1"), 3, notify.got)
        lb.send_signal(signal.SIGTERM)
        self.assertEqual(lb.proc.wait(timeout=15), 0, lb.log())
        # Without WATCHDOG_USEC (or with WATCHDOG_PID naming another process): no ping.
        for env in ({}, {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}):
            quiet = NotifySocket(self)
            lb = self.start_lb(quiet, "--replicas", "1", env=env)
            quiet.wait_for("READY=1", 15.0)
            quiet.read(1.0)
            self.assertNotIn("WATCHDOG=1", states(quiet.got), env)
            lb.send_signal(signal.SIGTERM)
            self.assertEqual(lb.proc.wait(timeout=15), 0, lb.log())


class CheckUrl(unittest.TestCase):
    """ringlb --check URL, the healthcheck of the FROM scratch image (no shell, no curl)."""

    def check(self, *args):
        return subprocess.run([RINGLB, *args], capture_output=True, text=True, timeout=10).returncode

    def test_exit_codes(self):
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--replicas", "1",
                                  "--hb-interval", "100"], ready_timeout=10.0)
        harness.wait_routable(lb)
        self.assertEqual(self.check("--check", f"http://{HOST}:{lb.port}/readyz"), 0)
        self.assertEqual(self.check(f"--check=http://localhost:{lb.port}/healthz"), 0)
        self.assertEqual(self.check("--check-ready", f"{HOST}:{lb.port}"), 0)
        self.assertEqual(self.check("--check", f"http://{HOST}:{lb.port}/no-such"), 1)  # 400
        down = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--provisioner", "static",
                                    "--backend", f"{HOST}:{harness.free_port()}"], ready_timeout=10.0)
        self.assertEqual(self.check("--check", f"http://{HOST}:{down.port}/readyz"), 1)  # 503
        self.assertEqual(self.check("--check", f"http://{HOST}:{harness.free_port()}/readyz"), 1)
        for bad in ("foo", "https://127.0.0.1:1/", "http://example.com:80/", "http://127.0.0.1:0/",
                    "http://127.0.0.1:99999/", "http://127.0.0.1:5000/a b"):
            self.assertEqual(self.check("--check", bad), 2, bad)
        self.assertEqual(self.check("--check"), 2)


class Unit(unittest.TestCase):
    def test_security_exposure_is_at_most_4(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed")
        for unit in ("ringlb.service", "ringlb-docker.service"):
            path = harness.source_path("lb", unit)
            out = subprocess.run([analyze, "security", "--offline=true", "--no-pager", path],
                                 capture_output=True, text=True, timeout=60)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
            self.assertIsNotNone(m, out.stdout + out.stderr)
            self.assertLessEqual(float(m.group(1)), 4.0, f"{unit}:\n{out.stdout}")


if __name__ == "__main__":
    unittest.main()
