"""Configuration file and reload (issue 14), through real ringlb and replica processes.

- --config FILE: the file's options apply, a flag and a RINGLB_* variable win over it, and a bad
  file (missing, unknown option, bad value) stops ringlb at start with exit 2 and one line naming
  the file and the line.
- SIGHUP under load (ringlb-loadgen, bounded in rate and time): the heartbeat interval and the log
  level change live, the access log is switched on (a value the workers read: their lines appear),
  and no request fails; /rep?verbose=1 shows the new values. The heartbeat timers are re-armed: a
  SIGSTOPped replica that a 60 s interval would not notice for a minute is found dead once the
  interval went to 100 ms.
- An invalid file on SIGHUP changes nothing and the log says why; an option that needs a restart
  (ring, pool) is logged and left as it was.
- --version prints the project version and the libraries' versions.
"""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest

import harness
from heal_test import Loadgen

RINGLB = harness.build_path("lb", "ringlb")
HOST = harness.HOST


class ReloadTestCase(unittest.TestCase):
    def config(self, text):
        """A config file holding text; rewrite it with self.rewrite(path, text)."""
        folder = tempfile.TemporaryDirectory(prefix="ringlb-reload-")
        self.addCleanup(folder.cleanup)
        path = os.path.join(folder.name, "ringlb.conf")
        self.rewrite(path, text)
        return path

    def rewrite(self, path, text):
        # Through a rename, as an editor or a config manager would: a reload never reads half a file.
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)

    def start_lb(self, conf, *args, replicas=3, env=None):
        argv = [RINGLB, "--listen", f"{HOST}:{{port}}", "--config", conf, "--replicas", str(replicas),
                *args]
        lb = harness.start(self, argv, env=env, ready_timeout=10.0)
        harness.wait_lb_ready(lb, replicas)
        return lb

    def rep(self, lb):
        resp = harness.request(lb.port, "GET", "/rep?verbose=1")
        self.assertEqual(resp.status, 200, resp)
        return resp.json()["message"]

    def settings(self, lb):
        return self.rep(lb)["config"]

    def messages(self, lb, level=None):
        return [msg for _, lvl, msg in harness.log_events(lb.log()) if level is None or lvl == level]

    def reload(self, lb):
        """SIGHUP, then waits until ringlb says the reload ended (done or failed); returns the
        log lines it wrote for it."""
        before = len(harness.log_events(lb.log()))
        lb.send_signal(signal.SIGHUP)

        def ended():
            events = harness.log_events(lb.log())[before:]
            if any(m.startswith("reload done") or m.startswith("reload failed") for _, _, m in events):
                return events
            return None
        return harness.wait_until(ended, 10.0, "the reload to end")


class ConfigFile(ReloadTestCase):
    def test_the_file_applies_and_flags_and_environment_win(self):
        conf = self.config("# a comment\n\nhb-interval = 250\nretries = 4\nstrikes = 6\n"
                           "log-level = warn\n")
        lb = self.start_lb(conf, "--strikes", "9", env={"RINGLB_RETRIES": "5"})
        s = self.settings(lb)
        self.assertEqual(s["hb_interval_ms"], 250)  # file
        self.assertEqual(s["retries"], 5)           # environment over file
        self.assertEqual(s["strikes"], 9)           # flag over file
        self.assertEqual(s["log_level"], "warn")
        self.assertEqual(s["fall"], 2)              # default

    def test_a_bad_file_stops_the_start_naming_file_and_line(self):
        cases = [("hb-interval = 250\nbogus-option = 1\n", 2, "unknown option 'bogus-option'"),
                 ("\n# c\nhb-interval = soon\n", 3, "hb-interval 'soon' must be a whole number"),
                 ("listen\n", 1, "expected 'option = value'")]
        for text, line, why in cases:
            conf = self.config(text)
            proc = subprocess.run([RINGLB, "--listen", f"{HOST}:0", "--config", conf],
                                  capture_output=True, text=True, timeout=10)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)
            self.assertIn(f"{conf}:{line}: ", proc.stderr)
            self.assertIn(why, proc.stderr)
        proc = subprocess.run([RINGLB, "--listen", f"{HOST}:0"], capture_output=True, text=True,
                              timeout=10, env=dict(os.environ, RINGLB_CONFIG="/nonexistent/ringlb.conf"))
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("'/nonexistent/ringlb.conf': No such file or directory", proc.stderr)

    def test_version(self):
        proc = subprocess.run([RINGLB, "--version"], capture_output=True, text=True, timeout=10)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(harness.source_path("meson.build")) as f:
            version = re.search(r"version: '([^']+)'", f.read()).group(1)
        lines = proc.stdout.splitlines()
        self.assertEqual(lines[0], f"ringlb {version}")
        for lib in ("libuv", "llhttp", "libcurl", "jansson"):
            self.assertTrue(any(re.fullmatch(lib + r" \d+\.\d+(\.\d+)?\S*", l) for l in lines),
                            f"{lib} in {lines}")


class Reload(ReloadTestCase):
    def test_sighup_under_load_changes_heartbeat_log_level_and_access_log_and_no_request_fails(self):
        folder = tempfile.TemporaryDirectory(prefix="ringlb-reload-")
        self.addCleanup(folder.cleanup)
        access = os.path.join(folder.name, "access.log")
        conf = self.config("hb-interval = 500\nlog-level = info\n")
        lb = self.start_lb(conf)
        self.assertEqual(self.settings(lb)["hb_interval_ms"], 500)
        load = Loadgen(self, lb.port, rate=400, duration=5.0, connections=8)
        time.sleep(1.5)
        self.rewrite(conf, "hb-interval = 150\nlog-level = debug\naccess-log = json\n"
                           f"access-log-file = {access}\n")
        events = self.reload(lb)
        report = load.result()
        t = report["totals"]
        self.assertEqual((t["failed"], t["errors"], t["unfinished"]), (0, 0, 0),
                         f"loadgen: {report['totals']} {report['errors']} {report['status']}\n{lb.log()}")
        self.assertEqual(set(report["status"]), {"200"}, report["status"])
        self.assertGreater(t["ok"], 500)
        said = [m for _, _, m in events]
        for line in ("reload: hb-interval '500' -> '150'", "reload: log-level 'info' -> 'debug'",
                     "reload: access-log (default) -> 'json'"):
            self.assertIn(line, said)
        self.assertTrue(any(m.startswith("reload done: 4 changed, 0 left") for m in said), said)
        s = self.settings(lb)
        self.assertEqual((s["hb_interval_ms"], s["log_level"], s["access_log"]), (150, "debug", "json"))
        # The workers took the new configuration: the requests after the reload are logged.
        with open(access) as f:
            lines = [json.loads(l) for l in f]
        self.assertGreater(len(lines), 100)
        self.assertEqual({l["status"] for l in lines if l["path"] == "/home"}, {200})
        # debug lines now appear (a debug line the daemon writes per worker listener is only at
        # start; a refused request logs one at debug).
        with harness.Connection(lb.port) as c:
            c.send(b"GET /home HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            self.assertEqual(c.read_response().status, 400)
        harness.wait_until(lambda: any(m.startswith("refused a request") for m in self.messages(lb, "debug")),
                           5.0, "a debug line")

    def test_the_heartbeat_timers_take_the_new_interval(self):
        # With a minute between heartbeats, a hung (SIGSTOPped) replica would stay "healthy" for a
        # minute; after the reload to 100 ms it is found dead within a few heartbeats.
        # (A first heartbeat that missed its timeout would wait a minute for the next one: the
        # start gets a generous timeout.)
        conf = self.config("hb-interval = 60000\nhb-timeout = 5000\n")
        lb = self.start_lb(conf)
        victim = self.rep(lb)["details"][1]
        self.rewrite(conf, "hb-interval = 100\nhb-timeout = 300\n")
        said = [m for _, _, m in self.reload(lb)]
        self.assertIn("reload: hb-interval '60000' -> '100'", said)
        os.kill(int(victim["id"]), signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(int(victim["id"]), signal.SIGCONT))
        harness.wait_until(
            lambda: any(re.match(r"replica %s: healthy -> dead \(2 heartbeats failed" % victim["name"], m)
                        for m in self.messages(lb, "warn")),
            10.0, "the stopped replica to be found dead at the new interval")

    def test_an_invalid_file_changes_nothing_and_says_why(self):
        conf = self.config("hb-interval = 400\nretries = 3\n")
        lb = self.start_lb(conf)
        before = self.settings(lb)
        for text, why in [("hb-interval = 100\nretries = lots\n", f"{conf}:2: retries 'lots' must be"),
                          ("hb-interval = 100\nno-such = 1\n", f"{conf}:2: unknown option 'no-such'"),
                          ("hb-interval = 100\naccess-log = json\naccess-log-file = /nonexistent/dir/a.log\n",
                           "cannot open the access log '/nonexistent/dir/a.log'")]:
            self.rewrite(conf, text)
            events = self.reload(lb)
            errors = [m for _, lvl, m in events if lvl == "error"]
            self.assertEqual(len(errors), 1, events)
            self.assertIn(why, errors[0])
            self.assertIn("the running configuration is kept", errors[0])
            self.assertFalse(any(m.startswith("reload: ") for _, _, m in events), events)
            self.assertEqual(self.settings(lb), before)
        os.unlink(conf)
        events = self.reload(lb)
        self.assertIn("No such file or directory", [m for _, lvl, m in events if lvl == "error"][0])
        self.assertEqual(self.settings(lb), before)
        self.assertEqual(harness.request(lb.port, "GET", "/home").status, 200)

    def test_an_option_that_needs_a_restart_is_logged_and_left(self):
        conf = self.config("ring = ketama\npool = first\nretries = 2\n")
        lb = self.start_lb(conf)
        keys = [str(100000 + 7919 * i) for i in range(30)]

        def owners():
            return {k: harness.request(lb.port, "GET", "/home", {"X-Request-Id": k}).json()["message"]
                    for k in keys}
        before = owners()
        self.rewrite(conf, "ring = maglev\npool = second\nretries = 1\n")
        events = self.reload(lb)
        warns = [m for _, lvl, m in events if lvl == "warn"]
        self.assertIn("reload: ring needs a restart, left as 'ketama'", warns)
        self.assertIn("reload: pool needs a restart, left as 'first'", warns)
        self.assertIn("reload: retries '2' -> '1'", [m for _, _, m in events])
        self.assertEqual(self.settings(lb)["retries"], 1)
        self.assertEqual(owners(), before)  # the ring is the one it started with


if __name__ == "__main__":
    unittest.main()
