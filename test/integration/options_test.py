"""Options of ringlb that had no test, checked through real ringlb and ringlb-replica processes on
127.0.0.1 (issue 11, item 7):

- --balance-factor: a replica holding more than its bounded share of requests in flight (slow
  /sleep requests) is walked past for a key it owns, and gets the key back once they finish;
  without the option the key stays.
- --hash-key rid, path, ip, header:NAME, cookie:NAME: the same key reaches the same replica,
  different keys spread over the replicas, and a request without the key is still served (a fresh
  random request id, so such requests spread too).
- --admin-token: admin routes answer 401 without the token or with a wrong one, 200 with it, and
  change nothing when refused; /healthz and proxied routes stay open.
- --admin-listen: admin routes answer only on the admin listener, proxied routes only on the main
  one.
- --heal-name same: a killed replica comes back under its own name and ring id, with its keys.
- /metrics: Prometheus text that `promtool check metrics` accepts (Debian's prometheus package;
  skipped without it), whose counters move by what the requests did.

No timing is asserted; every wait and request loop is bounded.
"""
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import unittest

import harness
from harness import Connection, HOST
from heal_test import HealTestCase, write_wrapper, owners
from lb_test import LbTestCase

HOME = re.compile(r"^Hello from Server: (\S+)$")


def served_by(resp):
    """The replica name in a /home (or /sleep) answer; fails on anything else."""
    assert resp.status == 200, resp
    m = HOME.match(resp.json()["message"])
    assert m, resp
    return m.group(1)


def home(port, headers=None, source=None):
    """GET /home on a fresh connection (from local address source when given): the replica."""
    with Connection(port, source=source) as conn:
        return served_by(conn.request("GET", "/home", headers))


def metrics(port, headers=None):
    """GET /metrics: (response, {sample name with labels: value})."""
    resp = harness.request(port, "GET", "/metrics", headers)
    samples = {}
    if resp.status == 200:
        for line in resp.body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
    return resp, samples


class BalanceFactor(HealTestCase):
    def slow(self, lb, key, ms=8000):
        """A GET /sleep?ms=... with X-Request-Id key on a thread of its own; returns a dict that
        gets "resp" when it is answered, and the thread. 8 s: long enough for the checks made
        while it is in flight even on a loaded machine."""
        out = {}

        def run():
            with Connection(lb.port, timeout=ms / 1000 + 20) as conn:
                out["resp"] = conn.request("GET", f"/sleep?ms={ms}", {"X-Request-Id": key})
        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(thread.join, ms / 1000 + 25)
        return out, thread

    def inflight(self, lb, name):
        return self.details(lb)[name]["inflight"]

    def key_of(self, lb, name):
        rng = random.Random(21)
        keys = [str(k) for k in rng.sample(range(100000, 1000000), 60)]
        return next(k for k, owner in owners(lb.port, keys).items() if owner == name)

    def test_a_replica_over_the_bound_is_skipped_for_its_own_key(self):
        wrapper = write_wrapper(self, 'exec "$REPLICA" "$@" --debug-routes')
        # c = 2 over 3 healthy replicas: a replica may hold ceil(2 x (in flight + 1) / 3).
        lb = self.start_lb("--replica-bin", wrapper, "--balance-factor", "2")
        key = self.key_of(lb, "server1")
        first, t1 = self.slow(lb, key)
        harness.wait_until(lambda: self.inflight(lb, "server1") == 1, 10.0, "one slow request")
        # 1 in flight, bound ceil(2 x 2 / 3) = 2: server1 keeps its key.
        self.assertEqual(home(lb.port, {"X-Request-Id": key}), "server1")
        second, t2 = self.slow(lb, key)
        harness.wait_until(lambda: self.inflight(lb, "server1") == 2, 10.0, "two slow requests")
        # 2 in flight, bound ceil(2 x 3 / 3) = 2: reached, so the key goes to another replica. A
        # worker knows the other workers' in-flight counts from the control plane's sums, which
        # reach it within a report interval (20 ms) of the change: probed for up to 2 s.
        harness.wait_until(lambda: home(lb.port, {"X-Request-Id": key}) != "server1", 2.0,
                           "the bound to apply on the worker the probe reaches")
        self.assertEqual(self.inflight(lb, "server1"), 2)
        t1.join(30)
        t2.join(30)
        self.assertEqual(served_by(first["resp"]), "server1")
        self.assertEqual(served_by(second["resp"]), "server1")
        harness.wait_until(lambda: self.inflight(lb, "server1") == 0, 10.0, "the slow requests")
        self.assertEqual(home(lb.port, {"X-Request-Id": key}), "server1")

    def test_without_the_option_the_key_stays_however_many_are_in_flight(self):
        wrapper = write_wrapper(self, 'exec "$REPLICA" "$@" --debug-routes')
        lb = self.start_lb("--replica-bin", wrapper)
        key = self.key_of(lb, "server1")
        slow = [self.slow(lb, key) for _ in range(3)]
        harness.wait_until(lambda: self.inflight(lb, "server1") == 3, 10.0, "three slow requests")
        self.assertEqual(home(lb.port, {"X-Request-Id": key}), "server1")
        for out, thread in slow:
            thread.join(30)
            self.assertEqual(served_by(out["resp"]), "server1")


class HashKey(HealTestCase):
    """For each source: 5 repeats of a key reach one replica; 40 different keys reach more than one
    (all 40 on one replica of 3 by chance: 3^-39); 40 requests without the key are served and
    spread too (each gets a fresh random request id)."""

    def check(self, lb, send, keys, missing=None):
        for key in keys[:5]:
            self.assertEqual({send(key) for _ in range(5)}, {send(key)}, f"key {key!r}")
        self.assertGreater(len({send(key) for key in keys}), 1, "different keys do not spread")
        if missing is not None:
            self.assertGreater(len({missing() for _ in range(40)}), 1, "no fallback key")

    def test_rid(self):
        lb = self.start_lb("--hash-key", "rid")
        keys = [str(100000 + 7919 * i) for i in range(40)]
        self.check(lb, lambda k: home(lb.port, {"X-Request-Id": k}), keys,
                   lambda: home(lb.port))

    def test_header(self):
        lb = self.start_lb("--hash-key", "header:X-User")
        keys = [f"user-{i}" for i in range(40)]
        self.check(lb, lambda k: home(lb.port, {"X-User": k}), keys,
                   lambda: home(lb.port, {"X-Other": "user-1"}))
        # The header is the key, not X-Request-Id: a fixed X-Request-Id does not pin the replica.
        self.assertGreater(len({home(lb.port, {"X-User": k, "X-Request-Id": "123456"})
                                for k in keys}), 1)

    def test_cookie(self):
        lb = self.start_lb("--hash-key", "cookie:session")
        keys = [f"s{i:04d}" for i in range(40)]
        self.check(lb, lambda k: home(lb.port, {"Cookie": f"theme=dark; session={k}; lang=en"}),
                   keys, lambda: home(lb.port, {"Cookie": "theme=dark; sessionx=s0001"}))
        # Where the cookie sits in the header does not matter.
        for k in keys[:5]:
            self.assertEqual(home(lb.port, {"Cookie": f"session={k}"}),
                             home(lb.port, {"Cookie": f"a=1; b=2; session={k}"}))

    def test_ip(self):
        lb = self.start_lb("--hash-key", "ip")
        # Every 127.0.0.0/8 address is the loopback: clients from 127.0.0.2..41 reach 127.0.0.1.
        keys = [f"127.0.0.{i}" for i in range(2, 42)]
        self.check(lb, lambda ip: home(lb.port, source=ip), keys)
        # The address is the key: request ids do not move a client.
        self.assertEqual({home(lb.port, {"X-Request-Id": str(100000 + i)}, source="127.0.0.9")
                          for i in range(10)}, {home(lb.port, source="127.0.0.9")})

    def test_path(self):
        # The replicas answer 404 for other paths; with --assignment-404 off it passes through
        # and is counted per replica in /metrics, which tells which replica got each path.
        lb = self.start_lb("--hash-key", "path", "--assignment-404", "off")

        def send(path):
            _, before = metrics(lb.port)
            resp = harness.request(lb.port, "GET", path)
            self.assertIn(resp.status, (200, 404), resp)
            _, after = metrics(lb.port)
            got = [name for name in after if name.startswith("ringlb_replica_requests_total")
                   and after[name] != before.get(name, 0)]
            self.assertEqual(len(got), 1, (before, after))
            return re.search(r'ring_id="([^"]+)"', got[0]).group(1)
        self.check(lb, send, [f"/p/{i}" for i in range(40)])
        # The query string is not part of the key.
        self.assertEqual({send(f"/home?x={i}") for i in range(10)}, {send("/home")})


class AdminToken(HealTestCase):
    TOKEN = "s3cret-token"
    AUTH = {"Authorization": f"Bearer {TOKEN}"}

    def test_admin_routes_need_the_token_and_healthz_does_not(self):
        lb = LbTestCase.start_lb(self, "--admin-token", self.TOKEN, wait_ready=False)
        harness.wait_until(lambda: self.ready(lb), 15.0, "ringlb to list 3 healthy replicas", 0.05)
        for headers in (None, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Bearer {self.TOKEN}x"},
                        {"Authorization": self.TOKEN}, {"X-Admin-Token": self.TOKEN}):
            with self.subTest(headers=headers):
                for method, path, body in (("GET", "/rep", None), ("GET", "/metrics", None),
                                           ("POST", "/add", {"n": 1, "hostnames": ["S9"]}),
                                           ("DELETE", "/rm", {"n": 1, "hostnames": ["server1"]})):
                    resp = harness.request(lb.port, method, path, headers, body)
                    self.assertEqual(resp.status, 401, (method, path, resp))
                    self.assertEqual(resp.json()["status"], "failure")
        rep = harness.request(lb.port, "GET", "/rep", self.AUTH)
        self.assertEqual(rep.status, 200, rep)
        self.assertEqual(rep.json()["message"], {"N": 3, "replicas": ["server1", "server2",
                                                                        "server3"]})
        self.assertEqual(harness.request(lb.port, "GET", "/metrics", self.AUTH).status, 200)
        self.assertEqual(harness.request(lb.port, "GET", "/healthz").status, 200)
        self.assertEqual(harness.request(lb.port, "GET", "/home").status, 200)
        resp = harness.request(lb.port, "POST", "/add", self.AUTH, {"n": 1, "hostnames": ["S9"]})
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.json()["message"]["replicas"], ["server1", "server2", "server3",
                                                              "S9"])

    def ready(self, lb):
        resp = harness.request(lb.port, "GET", "/rep?verbose=1", self.AUTH)
        if resp.status != 200:
            return False
        details = resp.json()["message"]["details"]
        return len(details) == 3 and all(d["state"] == "healthy" for d in details)


class AdminListen(HealTestCase):
    def test_admin_routes_only_on_the_admin_listener(self):
        admin_port = harness.free_port()
        lb = LbTestCase.start_lb(self, "--admin-listen", f"{HOST}:{admin_port}", wait_ready=False)
        harness.wait_until(lambda: harness.listening(lb.pid, admin_port), 10.0,
                           "the admin listener")

        def ready():
            resp = harness.request(admin_port, "GET", "/rep?verbose=1")
            details = resp.json()["message"]["details"]
            return all(d["state"] == "healthy" for d in details) and len(details) == 3
        harness.wait_until(ready, 15.0, "3 healthy replicas", 0.05)
        # The admin listener: every admin route, and nothing is proxied.
        self.assertEqual(harness.request(admin_port, "GET", "/rep").json()["message"]["N"], 3)
        self.assertEqual(harness.request(admin_port, "GET", "/healthz").status, 200)
        resp = harness.request(admin_port, "GET", "/metrics")
        self.assertEqual(resp.status, 200)
        self.assertIn(b"ringlb_requests_total", resp.body)
        resp = harness.request(admin_port, "GET", "/home")
        self.assertEqual(resp.status, 404, resp)
        self.assertNotIn(b"Hello from Server", resp.body)
        # The main listener: proxied routes only; an admin path goes to a replica like any other
        # (which does not know it: the assignment's 400) and changes nothing.
        self.assertRegex(home(lb.port), r"^server[123]$")
        for method, path, body in (("GET", "/rep", None), ("GET", "/metrics", None),
                                   ("POST", "/add", {"n": 1, "hostnames": ["S9"]}),
                                   ("DELETE", "/rm", {"n": 1, "hostnames": ["server1"]})):
            resp = harness.request(lb.port, method, path, None, body)
            self.assertEqual(resp.status, 400, (method, path, resp))
            self.assertIn(f"'{path}' endpoint does not exist in server replicas",
                          resp.json()["message"])
        self.assertEqual(harness.request(admin_port, "GET", "/rep").json()["message"],
                         {"N": 3, "replicas": ["server1", "server2", "server3"]})


class HealNameSame(HealTestCase):
    def test_a_killed_replica_comes_back_under_its_name_with_its_keys(self):
        lb = self.start_lb("--heal-name", "same", "--hb-interval", "100")
        keys = [str(k) for k in random.Random(17).sample(range(100000, 1000000), 200)]
        before = owners(lb.port, keys)
        det = self.details(lb)
        old_pid = int(det["server2"]["id"])
        os.kill(old_pid, signal.SIGKILL)

        def back():
            d = self.details(lb).get("server2")
            return d if d and d["state"] == "healthy" and int(d["id"]) != old_pid else None
        new = harness.wait_until(back, 15.0, "server2 to come back", 0.02)
        self.assertEqual(new["ring_id"], det["server2"]["ring_id"])
        self.assertEqual(self.names(lb), ["server1", "server2", "server3"])
        self.assertEqual(owners(lb.port, keys), before)
        replaced = [msg for _, _, msg in harness.log_events(lb.log()) if "replaced by" in msg]
        self.assertEqual(replaced, [f"replica server2: replaced by server2 (ring id "
                                    f"{det['server2']['ring_id']})"])


class Metrics(HealTestCase):
    def test_prometheus_text_whose_counters_move(self):
        lb = self.start_lb()
        resp, m0 = metrics(lb.port)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Content-Type"), "text/plain; version=0.0.4")
        with Connection(lb.port) as conn:
            for i in range(10):
                self.assertEqual(conn.request("GET", "/home",
                                              {"X-Request-Id": str(200000 + i)}).status, 200)
            for i in range(3):
                self.assertEqual(conn.request("GET", f"/missing/{i}").status, 400)
        resp, m1 = metrics(lb.port)
        delta = {k: m1[k] - m0.get(k, 0) for k in m1}
        # 13 proxied requests and the second /metrics; one connection for the 13, one per /metrics.
        self.assertEqual(delta["ringlb_requests_total"], 14)
        self.assertEqual(delta["ringlb_connections_total"], 2)
        self.assertEqual(delta['ringlb_responses_total{class="2xx"}'], 11)  # + the first /metrics
        self.assertEqual(delta['ringlb_responses_total{class="4xx"}'], 3)
        self.assertEqual(delta['ringlb_responses_total{class="5xx"}'], 0)
        per_replica = sum(v for k, v in delta.items()
                          if k.startswith("ringlb_replica_requests_total{"))
        self.assertGreaterEqual(per_replica, 10)
        # Per-replica series are labelled by ring id; the name is in ringlb_replica_info and the
        # state a value (1: healthy).
        for ring_id, name in ((1, "server1"), (2, "server2"), (3, "server3")):
            self.assertEqual(m1[f'ringlb_replica_info{{ring_id="{ring_id}",name="{name}"}}'], 1)
            self.assertEqual(m1[f'ringlb_replica_state{{ring_id="{ring_id}"}}'], 1)
            self.assertEqual(m1[f'ringlb_replica_inflight{{ring_id="{ring_id}"}}'], 0)
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool is not installed (deps/install.sh test: Debian's prometheus)")
        check = subprocess.run([promtool, "check", "metrics"], input=resp.body,
                               capture_output=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


if __name__ == "__main__":
    unittest.main()
