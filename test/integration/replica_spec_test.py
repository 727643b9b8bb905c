"""The replica spec options (issue 14), through real ringlb and ringlb-replica processes:

- --health-path: the heartbeat GET goes to that path. A real replica path (/home) brings the
  replicas in; a path the replica does not serve (404) keeps them out (never healthy, /readyz 503,
  /rep?verbose=1 says the heartbeat got 404); the default (/heartbeat) works as before.
- hostile values of --replica-env, --replica-cmd, --replica-cpus, --replica-memory and
  --health-path (flags and RINGLB_* variables) stop the daemon at start with exit 2 and one line
  naming the option, before anything is started.

The docker side (env, command and limits on real containers) is test/docker/replica_spec_test.py.
No timing is asserted; every wait is bounded.
"""
import subprocess
import time
import unittest

import harness
from harness import HOST
from lb_test import RINGLB, LbTestCase


class HealthPath(LbTestCase):
    def test_a_served_path_brings_replicas_in(self):
        lb = self.start_lb("--health-path", "/home", "--hb-interval", "100")
        self.assertEqual(harness.request(lb.port, "GET", "/readyz").status, 200)

    def test_a_path_the_replica_does_not_serve_keeps_them_out(self):
        lb = self.start_lb("--health-path", "/no-such-path", "--hb-interval", "100", "--heal", "off",
                           wait_ready=False)
        def details():
            return harness.request(lb.port, "GET", "/rep?verbose=1").json()["message"]["details"]
        harness.wait_until(lambda: [d for d in details() if d["last_cause"] == "heartbeat answered 404"],
                           10.0, "a replica whose heartbeat got 404", 0.05)
        self.assertFalse([d for d in details() if d["state"] == "healthy"], details())
        self.assertEqual(harness.request(lb.port, "GET", "/readyz").status, 503)


class HostileValues(unittest.TestCase):
    CASES = [
        (["--replica-env", "1BAD=x"], "--replica-env"),
        (["--replica-env", "NOEQUALS"], "--replica-env"),
        (["--replica-env", "PORT=1"], "--replica-env"),
        (["--replica-env", "A=line\nbreak"], "--replica-env"),
        (["--replica-cmd", "[]"], "--replica-cmd"),
        (["--replica-cmd", '["ok", 1]'], "--replica-cmd"),
        (["--replica-cmd", "   "], "--replica-cmd"),
        (["--replica-cpus", "0"], "--replica-cpus"),
        (["--replica-cpus", "nan"], "--replica-cpus"),
        (["--replica-memory", "1m"], "--replica-memory"),
        (["--replica-memory", "-5g"], "--replica-memory"),
        (["--replica-memory", "99999999999g"], "--replica-memory"),
        (["--health-path", "heartbeat"], "--health-path"),
        (["--health-path", "/a b"], "--health-path"),
        (["--health-path", "/x\r\nHost: evil"], "--health-path"),
    ]

    def run_lb(self, args, env=None):
        return subprocess.run([RINGLB, "--listen", f"{HOST}:{harness.free_port()}", *args],
                              capture_output=True, text=True, timeout=10,
                              env=dict(__import__("os").environ, **(env or {})))

    def test_flags(self):
        for args, name in self.CASES:
            with self.subTest(args=args):
                out = self.run_lb(args)
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertIn(name, out.stderr)
                if "\n" not in args[1]:  # the value is quoted as it is
                    self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)

    def test_variables(self):
        for env in ({"RINGLB_REPLICA_ENV": "A=1,2B=3"}, {"RINGLB_REPLICA_MEMORY": "5m"},
                    {"RINGLB_HEALTH_PATH": "nope"}):
            with self.subTest(env=env):
                out = self.run_lb([], env)
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertIn(list(env)[0], out.stderr)


if __name__ == "__main__":
    unittest.main()
