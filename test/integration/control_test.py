"""The control plane under racing operators, removals and signals (issue 11 items 2-6, issue 10
item 9), through real ringlb and ringlb-replica processes on 127.0.0.1:

- admission counts /add requests still in progress: two concurrent /add of 53 on the slots ring
  cannot overfill it (the daemon used to abort), and 20 clients racing /add and /rm at the limit in
  every ring mode get only 200 or 4xx, never see N above --max-replicas, and /rep then lists only
  replicas that answer; more than 1024 static backends route (registry_pick used fixed buffers);
- a name is free once /rm answered, while the removed replica still drains its request;
- a new replica takes the lowest free ring id: after removing all and adding three, the slots ring
  routes every key as the assignment's ring over ids 1..3 does (84.4/4.7/10.9%), and /rm server2
  then /add S9 gives S9 exactly server2's keys;
- a static backend marked dead comes back after --rise good heartbeats with --heal on; /readyz says
  whether a replica is healthy (503 with the reason otherwise), /healthz stays 200, and
  `ringlb --check-ready` (docker-compose.yml's healthcheck) exits 0 or 1 accordingly;
- /add that fails answers once its rollback has stopped what it started;
- SIGHUP without a config file reloads nothing and the daemon goes on; a second SIGTERM hurries the shutdown and still exits 0 with the
  replicas stopped; a third exits at once;
- every 405 of an admin route carries Allow.

Replicas are started through a small wrapper (--replica-bin) that adds --debug-routes (for /sleep)
and gives names special behaviour: bad* exits at once, slowstop* takes 1 s to stop. Every loop is
bounded in count and time; no assertion is about speed.
"""
import json
import os
import random
import signal
import stat
import subprocess
import tempfile
import threading
import time
import unittest
from collections import Counter

import harness
from harness import Connection, HOST
from lb_test import LbTestCase, RINGLB, REPLICA, pid_gone

WRAPPER = """#!/bin/sh
# ringlb-replica for control_test: argv is --id NAME --die-with-parent.
name="$2"
case "$name" in bad*) echo "$name refuses to start" >&2; exit 3;; esac
case "$name" in slowstop*)
  "{real}" --debug-routes "$@" &
  child=$!
  trap 'sleep 1; kill $child; wait $child; exit 0' TERM
  wait $child
  exit 0;;
esac
exec "{real}" --debug-routes "$@"
"""

M, K = 512, 9  # the assignment's slots ring


def slots_owner_table(ids):
    """{residue of the key mod M: owning ring id} of the assignment's ring over ids (linear probing,
    H(i) = i^2 + 2i + 17, Phi(i, j) = i^2 + j^2 + 2j + 25), computed here from the formulas."""
    slots = [None] * M
    for i in sorted(ids):
        for j in range(K):
            s = (i * i + j * j + 2 * j + 25) % M
            while slots[s] is not None:
                s = (s + 1) % M
            slots[s] = i
    table = {}
    for key in range(M):
        s = (key * key + 2 * key + 17) % M
        while slots[s] is None:
            s = (s + 1) % M
        table[key] = slots[s]
    return table


KEYS = range(100000, 100000 + M)  # six-digit request ids, one of each residue mod M


class ControlTestCase(LbTestCase):
    def setUp(self):
        super().setUp()
        d = tempfile.mkdtemp(prefix="ringlb-control-")
        self.wrapper = os.path.join(d, "replica.sh")
        with open(self.wrapper, "w") as f:
            f.write(WRAPPER.replace("{real}", REPLICA))
        os.chmod(self.wrapper, stat.S_IRWXU)
        self.addCleanup(lambda: (os.unlink(self.wrapper), os.rmdir(d)))

    def start_lb(self, *args, replicas=3, wait_ready=True):
        if "--provisioner" not in args:
            args = ("--replica-bin", self.wrapper, *args)
        return super().start_lb(*args, replicas=replicas, wait_ready=wait_ready)

    def details(self, lb):
        return self.rep(lb, verbose=True).json()["message"]["details"]

    def wait_healthy(self, lb, n, timeout=20.0):
        def ok():
            if not lb.running():
                raise AssertionError(f"ringlb exited with {lb.proc.returncode}: {lb.log()}")
            counted = [d for d in self.details(lb) if d["counts"]]
            return len(counted) == n and all(d["state"] == "healthy" for d in counted)
        harness.wait_until(ok, timeout, f"{n} healthy replicas", 0.05)

    def route(self, lb, keys):
        """{key: replica name} for GET /home with X-Request-Id: key, on one keep-alive connection."""
        out = {}
        with Connection(lb.port, timeout=10) as conn:
            for key in keys:
                resp = conn.request("GET", "/home", {"X-Request-Id": str(key)})
                self.assertEqual(resp.status, 200, resp)
                out[key] = resp.json()["message"].split(": ", 1)[1]
        return out

    def children(self, lb):
        """{pid: argv} of lb's child processes, from /proc."""
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != lb.pid:
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out[int(pid)] = f.read().split(b"\0")
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
        return out


class Admission(ControlTestCase):
    def test_two_concurrent_adds_of_53_on_slots_cannot_overfill_the_ring(self):
        lb = self.start_lb("--ring", "slots", "--hb-interval", "200")
        barrier = threading.Barrier(2)
        answers = []

        def add():
            with Connection(lb.port, timeout=60) as conn:
                barrier.wait(10)
                try:
                    answers.append(conn.request("POST", "/add", body={"n": 53}).status)
                except (AssertionError, OSError) as e:
                    answers.append(repr(e))
        threads = [threading.Thread(target=add) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        self.assertTrue(lb.running(), f"ringlb died: {lb.proc.returncode}\n{lb.log()[-3000:]}")
        self.assertEqual(sorted(answers), [200, 400], lb.log()[-3000:])
        self.assertEqual(self.rep(lb).json()["message"]["N"], 56)

    def race(self, ring):
        limit = 6
        lb = self.start_lb("--ring", ring, "--max-replicas", str(limit), "--hb-interval", "100",
                           "--drain-timeout", "500")
        statuses = Counter()
        seen_n = []
        stop = threading.Event()
        deadline = time.monotonic() + 5

        def client(seed):
            rnd = random.Random(seed)
            while time.monotonic() < deadline:
                if rnd.random() < 0.5:
                    path, method, body = "/add", "POST", {"n": rnd.randint(1, 3)}
                else:
                    path, method, body = "/rm", "DELETE", {"n": rnd.randint(1, 2)}
                try:
                    with harness.Connection(lb.port, timeout=30) as conn:
                        resp = conn.request(method, path, body=body)
                    statuses[resp.status] += 1
                    if resp.status == 200:
                        seen_n.append(resp.json()["message"]["N"])
                except (AssertionError, OSError) as e:
                    statuses[repr(e)[:80]] += 1

        def monitor():
            while not stop.is_set():
                try:
                    seen_n.append(self.rep(lb).json()["message"]["N"])
                except (AssertionError, OSError):
                    pass
                stop.wait(0.02)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        mon = threading.Thread(target=monitor)
        mon.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stop.set()
        mon.join(10)
        self.assertTrue(lb.running(), f"ringlb died: {lb.proc.returncode}\n{lb.log()[-3000:]}")
        bad = {s: c for s, c in statuses.items() if not (s == 200 or (isinstance(s, int) and 400 <= s < 500))}
        self.assertEqual(bad, {}, f"answers other than 200 and 4xx: {statuses}")
        self.assertGreater(statuses[200], 0, statuses)
        self.assertLessEqual(max(seen_n), limit, f"N went above --max-replicas {limit}")

        # Once settled, every replica /rep lists answers at the address it reports.
        def listed_answer():
            counted = [d for d in self.details(lb) if d["counts"]]
            for d in counted:
                host, port = d["address"].rsplit(":", 1)
                try:
                    if harness.request(int(port), "GET", "/heartbeat").status != 200:
                        return False
                except (OSError, AssertionError):
                    return False
            return counted or True
        harness.wait_until(listed_answer, 20, "every listed replica to answer", 0.1)
        self.assertEqual(sorted(self.names(lb)),
                         sorted(d["name"] for d in self.details(lb) if d["counts"]))

    def test_race_at_the_limit_slots(self):
        self.race("slots")

    def test_race_at_the_limit_ketama(self):
        self.race("ketama")

    def test_race_at_the_limit_maglev(self):
        self.race("maglev")

    def test_more_than_1024_static_backends_route(self):
        replicas = [harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}", "--id", f"r{i}"])
                    for i in range(4)]
        # 4 that answer and 1,996 ports nothing listens on (an address may be given only once).
        ports = [r.port for r in replicas]
        ports += harness.free_ports(1996, exclude=ports)
        backends = ",".join(f"{HOST}:{p}" for p in ports)
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--provisioner", "static",
                                  "--hb-interval", "5000", "--hb-timeout", "3000",
                                  "--balance-factor", "1.5"],
                           env={"RINGLB_BACKEND": backends}, ready_timeout=20)
        self.lbs.append(lb)

        def ready():
            if not lb.running():
                raise AssertionError(f"ringlb exited with {lb.proc.returncode}: {lb.log()[-2000:]}")
            return harness.request(lb.port, "GET", "/readyz").status == 200
        harness.wait_until(ready, 30, "a healthy backend", 0.1)
        for i in range(50):
            resp = harness.request(lb.port, "GET", "/home")
            self.assertEqual(resp.status, 200, f"request {i}: {resp}\n{lb.log()[-3000:]}")
        self.assertTrue(lb.running())


class Names(ControlTestCase):
    def test_a_name_is_free_once_rm_answered(self):
        lb = self.start_lb("--hb-interval", "100", "--drain-timeout", "10000")
        key = next(k for k, name in self.route(lb, range(100000, 100200)).items() if name == "server1")
        slow = {}

        def sleeper():
            with Connection(lb.port, timeout=20) as conn:
                slow["resp"] = conn.request("GET", "/sleep?ms=2000", {"X-Request-Id": str(key)})
        t = threading.Thread(target=sleeper)
        t.start()
        harness.wait_until(lambda: any(d["name"] == "server1" and d["inflight"] == 1
                                       for d in self.details(lb)), 5, "the slow request on server1")
        with Connection(lb.port, timeout=20) as conn:
            resp = conn.request("DELETE", "/rm", body={"n": 1, "hostnames": ["server1"]})
            self.assertEqual(resp.status, 200, resp)
            resp = conn.request("POST", "/add", body={"n": 1, "hostnames": ["server1"]})
            self.assertEqual(resp.status, 200, resp)
        self.assertEqual(sorted(self.names(lb)), ["server1", "server2", "server3"])
        # While the old server1 drains, /metrics still has one series per label set (Prometheus
        # rejects a scrape with two samples of one series).
        self.assertTrue(any(d["name"] == "server1" and d["state"] == "draining" for d in self.details(lb)))
        samples = [line.rsplit(" ", 1)[0] for line in
                   harness.request(lb.port, "GET", "/metrics").body.decode().splitlines()
                   if line and not line.startswith("#")]
        self.assertEqual(len(samples), len(set(samples)), sorted(samples))
        t.join(20)
        self.assertEqual(slow["resp"].status, 200, slow["resp"])  # the drain kept its work
        self.assertEqual(self.route(lb, [key])[key], "server1")


class RingIds(ControlTestCase):
    def ids(self, lb):
        return {d["name"]: d["ring_id"] for d in self.details(lb) if d["counts"]}

    def test_remove_all_then_add_three_routes_as_ids_1_to_3(self):
        lb = self.start_lb("--ring", "slots", "--hb-interval", "100", "--drain-timeout", "500")
        resp = harness.request(lb.port, "DELETE", "/rm", body={"n": 3})
        self.assertEqual(resp.status, 200, resp)
        with Connection(lb.port, timeout=30) as conn:
            resp = conn.request("POST", "/add", body={"n": 3})
        self.assertEqual(resp.status, 200, resp)
        self.wait_healthy(lb, 3)
        ids = self.ids(lb)
        self.assertEqual(sorted(ids.values()), [1, 2, 3], ids)
        table = slots_owner_table([1, 2, 3])
        routed = self.route(lb, KEYS)
        self.assertEqual({k: ids[n] for k, n in routed.items()}, {k: table[k % M] for k in KEYS})
        shares = Counter(ids[n] for n in routed.values())
        self.assertEqual([round(100 * shares[i] / M, 1) for i in (1, 2, 3)], [84.4, 4.7, 10.9])

    def test_rm_server2_then_add_s9_gives_s9_exactly_server2s_keys(self):
        lb = self.start_lb("--ring", "slots", "--hb-interval", "100", "--drain-timeout", "500")
        before = self.route(lb, KEYS)
        resp = harness.request(lb.port, "DELETE", "/rm", body={"n": 1, "hostnames": ["server2"]})
        self.assertEqual(resp.status, 200, resp)
        with Connection(lb.port, timeout=30) as conn:
            resp = conn.request("POST", "/add", body={"n": 1, "hostnames": ["S9"]})
        self.assertEqual(resp.status, 200, resp)
        self.wait_healthy(lb, 3)
        self.assertEqual(self.ids(lb)["S9"], 2)
        after = self.route(lb, KEYS)
        expected = {k: ("S9" if n == "server2" else n) for k, n in before.items()}
        self.assertEqual(after, expected)
        self.assertIn("S9", after.values())


class Health(ControlTestCase):
    def test_static_backend_comes_back_with_heal_on_and_readyz_follows(self):
        replica = harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}", "--id", "solo"])
        port = replica.port
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--provisioner", "static",
                                  "--backend", f"{HOST}:{port}", "--hb-interval", "100",
                                  "--fall", "2", "--rise", "2", "--heal", "on"])
        self.lbs.append(lb)
        state = lambda: self.details(lb)[0]["state"]  # noqa: E731
        check = lambda: subprocess.run([RINGLB, "--check-ready", f"{HOST}:{lb.port}"],  # noqa: E731
                                       capture_output=True, timeout=10).returncode
        harness.wait_until(lambda: state() == "healthy", 10, "the backend to be healthy")
        resp = harness.request(lb.port, "GET", "/readyz")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.json()["status"], "successful")
        self.assertEqual(check(), 0)

        replica.kill()
        harness.wait_until(lambda: state() == "dead", 10, "the backend to be dead")
        resp = harness.request(lb.port, "GET", "/readyz")
        self.assertEqual(resp.status, 503, resp)
        self.assertEqual(resp.json(), {"message": "<Error> not ready: none of 1 replicas is healthy (1 dead)",
                                       "status": "failure"})
        self.assertEqual(harness.request(lb.port, "GET", "/healthz").status, 200)  # liveness
        self.assertEqual(check(), 1)

        harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}", "--id", "solo"], port=port)
        harness.wait_until(lambda: state() == "healthy", 10, "the restarted backend to be healthy")
        self.assertEqual(harness.request(lb.port, "GET", "/home").status, 200)
        self.assertEqual(harness.request(lb.port, "GET", "/readyz").status, 200)
        self.assertEqual(check(), 0)

    def test_readyz_with_no_replicas_and_compose_uses_it(self):
        lb = self.start_lb(replicas=0, wait_ready=False)
        harness.wait_until(lambda: harness.request(lb.port, "GET", "/healthz").status == 200, 10, "/healthz")
        resp = harness.request(lb.port, "GET", "/readyz")
        self.assertEqual(resp.status, 503, resp)
        self.assertEqual(resp.json()["message"], "<Error> not ready: the pool has no replicas")
        with open(harness.source_path("docker-compose.yml")) as f:
            compose = f.read()
        self.assertRegex(compose, r'test: \["CMD", "/ringlb", "--check", "http://127\.0\.0\.1:\d+/readyz"\]')


class Healing(ControlTestCase):
    def test_a_replica_that_cannot_start_is_replaced_again_and_again(self):
        # Every start fails before a process exists (no such binary), so each dead replica is
        # retired with nothing left holding it while the registry's tick walks its replicas (the
        # tick used to read it after freeing it: found under ASan). Healing keeps trying with its
        # backoff, the daemon lives and answers, and SIGTERM still exits 0.
        lb = LbTestCase.start_lb(self, "--replica-bin", os.path.join(tempfile.gettempdir(), "no-such-replica"),
                                 "--heal-backoff-max", "100", "--hb-interval", "100",
                                 replicas=1, wait_ready=False)

        def heals():
            if not lb.running():
                raise AssertionError(f"ringlb exited with {lb.proc.returncode}: {lb.log()}")
            text = harness.request(lb.port, "GET", "/metrics").body.decode()
            line = [l for l in text.splitlines() if l.startswith("ringlb_heals_total ")]
            return int(line[0].split()[1]) if line else 0
        # More than 1 s of replacements, so several land on the once-a-second pool reaping tick.
        harness.wait_until(lambda: heals() >= 15, 30, "15 replacements of a replica that cannot start", 0.1)
        self.assertNotEqual([d["state"] for d in self.details(lb)], ["healthy"])
        self.assertEqual(harness.request(lb.port, "GET", "/readyz").status, 503)
        code, _ = lb.stop(signal.SIGTERM, timeout=15)
        self.assertEqual(code, 0, lb.log())


class Rollback(ControlTestCase):
    def test_failed_add_answers_after_its_replicas_are_stopped(self):
        lb = self.start_lb("--hb-interval", "100", replicas=1)
        with Connection(lb.port, timeout=30) as conn:
            resp = conn.request("POST", "/add", body={"n": 2, "hostnames": ["slowstop1", "bad1"]})
            left = [argv for argv in self.children(lb).values() if b"slowstop1" in argv]
        self.assertEqual(resp.status, 500, resp)
        self.assertIn("bad1", resp.json()["message"])
        self.assertEqual(left, [], "the /add answered before its rollback stopped slowstop1")
        self.assertEqual(self.names(lb), ["server1"])


class Signals(ControlTestCase):
    def slow_request(self, lb, result):
        def run():
            try:
                with Connection(lb.port, timeout=20) as conn:
                    result["status"] = conn.request("GET", "/sleep?ms=8000").status
            except (AssertionError, OSError) as e:
                result["status"] = repr(e)
        t = threading.Thread(target=run)
        t.start()
        harness.wait_until(lambda: any(d["inflight"] for d in self.details(lb)), 5, "the slow request")
        return t

    def test_sighup_without_a_config_file_reloads_nothing_and_goes_on(self):
        # (reload_test.py tests what a reload changes.)
        lb = self.start_lb()
        lb.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: "reload done: 0 changed" in lb.log() or not lb.running(), 5,
                           "the SIGHUP log line")
        self.assertTrue(lb.running(), f"exit {lb.proc.returncode}: {lb.log()}")
        self.assertEqual(harness.request(lb.port, "GET", "/home").status, 200)
        self.assertEqual(sorted(self.names(lb)), ["server1", "server2", "server3"])

    def test_second_sigterm_hurries_and_still_removes_the_replicas(self):
        lb = self.start_lb()
        pids = self.pids(lb)
        result = {}
        t = self.slow_request(lb, result)
        lb.send_signal(signal.SIGTERM)
        harness.wait_until(lambda: "stopping" in lb.log(), 5, "the first signal's log line")
        lb.proc.send_signal(signal.SIGTERM)
        code, _ = lb.stop(timeout=15)
        t.join(20)
        self.assertEqual(code, 0, lb.log())
        self.assertIn("hurrying", lb.log())
        self.assertNotEqual(result.get("status"), 200, "the hurried shutdown waited for the request")
        for name, pid in pids.items():
            self.assertTrue(pid_gone(pid), f"{name} still runs")

    def test_an_add_completed_after_a_hurried_shutdown_is_refused_and_starts_nothing(self):
        # The second signal closes the registry while the proxy still finishes the exchanges it
        # is reading: an /add whose body completes after that gets 503 and starts no replica.
        lb = self.start_lb(replicas=1)
        body = json.dumps({"n": 1, "hostnames": ["late1"]}).encode()
        polls = [0]

        def requests_seen():  # ringlb_requests_total, less the /metrics requests made here
            text = harness.request(lb.port, "GET", "/metrics").body.decode()
            polls[0] += 1
            line = [l for l in text.splitlines() if l.startswith("ringlb_requests_total ")]
            return int(line[0].split()[1]) - polls[0]
        before = requests_seen()
        with Connection(lb.port, timeout=20) as conn:
            conn.send(b"POST /add HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n" +
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:5])
            # The head was read (so the connection is busy, not idle, when the stop begins).
            harness.wait_until(lambda: requests_seen() == before + 1, 5, "the LB to read the /add head", 0.02)
            lb.send_signal(signal.SIGTERM)
            harness.wait_until(lambda: "stopping" in lb.log(), 5, "the first signal's log line")
            lb.proc.send_signal(signal.SIGTERM)
            # The registry closing stops the replica (the proxy still waits for this body).
            harness.wait_until(lambda: "replica server1: stopped" in lb.log(), 10,
                               "the hurried shutdown to stop the replica")
            conn.send(body[5:])
            resp = conn.read_response("POST")
            spawned = [argv for argv in self.children(lb).values() if b"late1" in argv]
        self.assertEqual(resp.status, 503, resp)
        self.assertEqual(spawned, [], "a replica was started after the registry closed")
        code, _ = lb.stop(timeout=15)
        self.assertEqual(code, 0, lb.log())
        self.assertNotIn("late1", lb.log())

    def test_third_sigterm_exits_at_once(self):
        lb = self.start_lb()
        result = {}
        t = self.slow_request(lb, result)
        lb.send_signal(signal.SIGTERM)
        harness.wait_until(lambda: "stopping" in lb.log(), 5, "the first signal's log line")
        lb.proc.send_signal(signal.SIGTERM)
        harness.wait_until(lambda: "hurrying" in lb.log() or not lb.running(), 5, "the second signal")
        if lb.running():
            lb.proc.send_signal(signal.SIGTERM)
        code, _ = lb.stop(timeout=15)
        t.join(20)
        # The hurried stop waits up to 2 s for the replica busy with /sleep to end (SIGTERM, then
        # SIGKILL): the third signal comes within it.
        self.assertEqual(code, 1, lb.log())
        self.assertIn("a third time: exiting now", lb.log())

    def test_on_exit_keep_needs_docker(self):
        out = subprocess.run([RINGLB, "--on-exit", "keep"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--on-exit keep needs --provisioner docker", out.stderr)
        out = subprocess.run([RINGLB, "--on-exit", "later"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 2)
        self.assertIn("must be remove or keep", out.stderr)


class MethodNotAllowed(ControlTestCase):
    def test_every_405_carries_allow(self):
        lb = self.start_lb()
        for method, path, allow in (("GET", "/add", "POST"), ("POST", "/rm", "DELETE"),
                                    ("POST", "/rep", "GET, HEAD"), ("DELETE", "/healthz", "GET, HEAD"),
                                    ("PUT", "/readyz", "GET, HEAD"), ("POST", "/metrics", "GET, HEAD")):
            resp = harness.request(lb.port, method, path, body=b"" if method != "GET" else None)
            self.assertEqual(resp.status, 405, (method, path, resp))
            self.assertEqual(resp.header("Allow"), allow, (method, path, resp))


if __name__ == "__main__":
    unittest.main()
