"""Several LBs on one pool (issue 13), docker provisioner, real Docker engine: two ringlb processes on
different ports with the same --pool (and --name-prefix) route every key alike, because the
membership and the ring ids are the engine's (labels, kept current through its event stream), not
one LB's memory.

- 2,000 keys (X-Request-Id, the hash key) answered by the same replica through either LB; an /add on
  one LB is listed and routed the same way by the other (the time it took is printed), an /rm on
  the other is followed by the first;
- one LB SIGKILLed: the other goes on serving, can /add and /rm; the killed one started again adopts
  the pool and routes every key as the survivor does (no key moved);
- two /add at once on the two LBs: no ring id is given twice (the engine arbitrates the claim);
  two /add of the same name at once: one 200, one 409, and both LBs list it once;
- a replica container killed: exactly one replacement container starts (one LB heals, the engine's
  claim is the lock), and both LBs route its keys to it under the same ring id;
- two LBs on one --replica-port-range, /adds at once: every replica gets a port of its own (the
  port is claimed through the engine with the ring id) and answers on it as itself.

Built on lb_docker_test's DockerLbTestCase: host networking on 127.0.0.1, a pool and --name-prefix
unique to each test (so runs side by side need no lock), every container of the pool force-removed
in the cleanup. The two LBs of a test take disjoint halves of the run's port slice, except in the
test of the shared range. Waits are bounded; no assertion is on time. Exit 77 without an engine unless
RINGLB_REQUIRE_DOCKER=1.
"""
import json
import os
import signal
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import engine_testlib  # noqa: E402
import harness  # noqa: E402
import lb_docker_test  # noqa: E402
from lb_docker_test import (DockerLbTestCase, PORT_BASE, PORT_RANGE, admin_request,  # noqa: E402
                            engine, inspect, served_by)
from lb_test import LbTestCase  # noqa: E402

RANGE_A = f"{PORT_BASE}-{PORT_BASE + 49}"
RANGE_B = f"{PORT_BASE + 50}-{PORT_BASE + 99}"
KEYS = range(500000, 502000)  # 2,000 X-Request-Id values
# --start-timeout 60 s: with two runs at once on two cores a container took 5 s to start, and a
# replica that loses its ring id claim creates another one (no assertion is on time).
LB_ARGS = ("--hb-interval", "100", "--on-exit", "keep", "--start-timeout", "60000")


class SeveralLbs(DockerLbTestCase):
    # --on-exit keep: an LB stopped at the end of a test leaves the pool to the other one (which
    # would heal what a removing LB takes down); the cleanup removes the pool.
    def two_lbs(self, replicas=3):
        a = self.start_lb(*LB_ARGS, port_range=RANGE_A, replicas=replicas)
        b = self.start_lb(*LB_ARGS, port_range=RANGE_B, replicas=replicas)
        return a, b

    def assert_clean_stop(self, lb, within=10.0):
        """SIGTERM: exit 0 (the pool is left to the other LB and removed by the cleanup)."""
        LbTestCase.assert_clean_stop(self, lb, within)

    def ring_ids(self, lb):
        """{name: ring id} of the replicas lb counts."""
        return {d["name"]: d["ring_id"] for d in self.details(lb) if d["counts"]}

    def wait_same(self, lbs, n, timeout=20.0):
        """Until every LB has n healthy replicas, the same names under the same ring ids; returns
        {name: ring id} and the seconds it took."""
        t0 = time.monotonic()
        for lb in lbs:
            try:
                self.wait_ready(lb, n, timeout)
            except AssertionError as e:
                views = "\n".join(f"{x.port}: {self.details(x)}" for x in lbs)
                logs = "\n".join(x.log()[-6000:] for x in lbs)
                raise AssertionError(f"{e}\n{views}\n{logs}") from None

        def same():
            views = [self.ring_ids(lb) for lb in lbs]
            return views[0] if all(v == views[0] for v in views) and len(views[0]) == n else None
        ids = harness.wait_until(same, timeout, f"{len(lbs)} LBs to list the same {n} replicas", 0.05)
        return ids, time.monotonic() - t0

    def assert_unique_ring_ids(self):
        running = [c for c in self.pool_containers() if c["State"] == "running"]
        ids = [c["Labels"]["ringlb.ring-id"] for c in running]
        self.assertEqual(len(ids), len(set(ids)), f"a ring id twice: {sorted(ids)}")
        return running

    def assert_route_alike(self, lbs):
        routes = [self.route(lb, KEYS) for lb in lbs]
        for r in routes[1:]:
            diff = [k for k in KEYS if r[k] != routes[0][k]]
            self.assertEqual(diff[:10], [], f"{len(diff)} of {len(KEYS)} keys routed differently")
        return routes[0]

    def pool_starts(self, since):
        """Names of the pool's containers started since (time.time()), from the engine's log."""
        query = urllib.parse.quote(json.dumps({"type": ["container"], "event": ["start"],
                                               "label": [f"ringlb.pool={self.pool}"]}))
        status, body = engine("GET", f"/events?since={since:.9f}&until={time.time():.9f}"
                                     f"&filters={query}")
        self.assertEqual(status, 200, body)
        if isinstance(body, dict):
            body = json.dumps(body)
        lines = (body or "").splitlines() if isinstance(body, str) else []
        return [self.plain(e["Actor"]["Attributes"]["name"]) for e in map(json.loads, lines)]

    def test_two_lbs_route_alike_and_follow_each_others_add_and_rm(self):
        a, b = self.two_lbs()
        ids, _ = self.wait_same([a, b], 3)
        self.assertEqual(sorted(ids.values()), [1, 2, 3])
        self.assert_route_alike([a, b])

        resp = admin_request(a.port, "POST", "/add", body={"n": 2})
        self.assertEqual(resp.status, 200, resp)
        ids, took = self.wait_same([a, b], 5)
        print(f"\nthe other LB listed the 2 new replicas healthy {took * 1000:.0f} ms after /add "
              f"answered", file=sys.stderr)
        self.assertEqual(sorted(ids.values()), [1, 2, 3, 4, 5])
        routes = self.assert_route_alike([a, b])
        new = [n for n in ids if ids[n] in (4, 5)]
        self.assertTrue(set(new) & set(routes.values()), "no key reached the new replicas")
        self.assert_unique_ring_ids()

        # /rm on the other LB of a replica the first one started.
        resp = admin_request(b.port, "DELETE", "/rm", body={"n": 1, "hostnames": [new[0]]})
        self.assertEqual(resp.status, 200, resp)
        ids, _ = self.wait_same([a, b], 4)
        self.assertNotIn(new[0], ids)
        routes = self.assert_route_alike([a, b])
        self.assertNotIn(new[0], set(routes.values()))
        self.wait_containers(list(ids), timeout=30)

    def test_sigkilled_lb_other_serves_adds_removes_and_restart_adopts(self):
        a, b = self.two_lbs()
        resp = admin_request(a.port, "POST", "/add", body={"n": 1})  # B learns it from the engine
        self.assertEqual(resp.status, 200, resp)
        self.wait_same([a, b], 4)
        before = self.assert_route_alike([a, b])

        a.proc.kill()
        a.proc.wait(timeout=10)
        self.assertEqual(self.route(b, KEYS), before, "the survivor moved keys")
        resp = admin_request(b.port, "POST", "/add", body={"n": 1})
        self.assertEqual(resp.status, 200, resp)
        resp = admin_request(b.port, "DELETE", "/rm", body={"n": 1, "hostnames": ["server2"]})
        self.assertEqual(resp.status, 200, resp)
        self.wait_ready(b, 4)
        survivor = self.ring_ids(b)
        self.assertNotIn("server2", survivor)
        self.wait_containers(list(survivor), timeout=30)
        routes = self.route(b, KEYS)

        again = self.start_lb(*LB_ARGS, port_range=RANGE_A, replicas=4)
        ids, _ = self.wait_same([again, b], 4)
        self.assertEqual(ids, survivor, "the restarted LB's replicas differ from the survivor's")
        self.assertEqual(self.route(again, KEYS), routes, "the restarted LB moved keys")
        self.assert_unique_ring_ids()

    def test_concurrent_adds_on_two_lbs_never_give_a_ring_id_twice(self):
        a, b = self.two_lbs()
        self.wait_same([a, b], 3)
        answers = {}
        barrier = threading.Barrier(2)

        def add(lb, body, key):
            barrier.wait(timeout=10)
            with harness.Connection(lb.port, timeout=60) as conn:
                answers[key] = conn.request("POST", "/add", body=body)
        threads = [threading.Thread(target=add, args=(lb, {"n": 3}, k)) for k, lb in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        self.assertEqual([answers[k].status for k in ("a", "b")], [200, 200],
                         (answers, a.log()[-3000:], b.log()[-3000:]))
        lost = sum(lb.log().count("lost ring id") for lb in (a, b))
        print(f"\nconcurrent /add: {lost} ring id claim(s) lost to the other LB and retried",
              file=sys.stderr)
        ids, _ = self.wait_same([a, b], 9)
        self.assertEqual(sorted(ids.values()), list(range(1, 10)), ids)
        running = self.assert_unique_ring_ids()
        self.assertEqual(len(running), 9)
        self.assert_route_alike([a, b])

        # The same name on both at once: the engine's unique name decides, the other LB hears 409.
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=add, args=(lb, {"n": 1, "hostnames": ["S5"]}, k))
                   for k, lb in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        self.assertEqual(sorted(answers[k].status for k in ("a", "b")), [200, 409],
                         (answers, a.log()[-3000:], b.log()[-3000:]))
        loser = answers["a"] if answers["a"].status == 409 else answers["b"]
        self.assertIn("S5", loser.body.decode())
        ids, _ = self.wait_same([a, b], 10)
        self.assertIn("S5", ids)
        self.assertEqual(len(self.assert_unique_ring_ids()), 10)
        self.assert_route_alike([a, b])

    def assert_own_ports(self, n):
        """n replicas run, each on a port of its own, and each answers /home on it as itself."""
        running = self.assert_unique_ring_ids()
        self.assertEqual(len(running), n, [c["Names"] for c in running])
        ports = [int(c["Labels"]["ringlb.port"]) for c in running]
        self.assertEqual(len(ports), len(set(ports)), f"a port twice: {sorted(ports)}")
        for c in running:
            resp = harness.request(int(c["Labels"]["ringlb.port"]), "GET", "/home")
            self.assertEqual(served_by(resp), self.plain(c["Names"][0]), c["Labels"])

    def test_concurrent_adds_on_one_port_range_give_every_replica_its_own_port(self):
        a = self.start_lb(*LB_ARGS, port_range=PORT_RANGE, replicas=3)
        b = self.start_lb(*LB_ARGS, port_range=PORT_RANGE, replicas=3)
        self.wait_same([a, b], 3)
        # An /add and /rm of three replicas on A moves A's next pick of a port three past B's, so
        # that at the /adds at once below each LB picks ports the other picks for other ring ids
        # (on the same picks, the ring id claim alone would keep them apart).
        resp = admin_request(a.port, "POST", "/add", body={"n": 3, "hostnames": ["x1", "x2", "x3"]})
        self.assertEqual(resp.status, 200, resp)
        self.wait_same([a, b], 6)
        resp = admin_request(a.port, "DELETE", "/rm", body={"n": 3, "hostnames": ["x1", "x2", "x3"]})
        self.assertEqual(resp.status, 200, resp)
        ids, _ = self.wait_same([a, b], 3)
        self.wait_containers(list(ids), timeout=30)

        n = 3
        for _ in range(3):
            answers = engine_testlib.adds_at_once({"a": a, "b": b}, {"n": 3})
            self.assertEqual([answers[k].status for k in ("a", "b")], [200, 200],
                             (answers, a.log()[-4000:], b.log()[-4000:]))
            n += 6
            self.wait_same([a, b], n, timeout=30)
            self.assert_own_ports(n)
        self.assert_route_alike([a, b])
        lost = sum(lb.log().count("lost port") for lb in (a, b))
        print(f"\nconcurrent /add on one port range: {lost} port claim(s) lost to the other LB and "
              f"retried", file=sys.stderr)

    def test_killed_container_is_replaced_by_exactly_one_lb(self):
        a, b = self.two_lbs()
        self.wait_same([a, b], 3)
        before = self.assert_route_alike([a, b])
        victim = self.running_by_name()["server2"]
        victim_ring_id = victim["Labels"]["ringlb.ring-id"]
        since = time.time()
        status, body = engine("POST", f"/containers/{victim['Id']}/kill?signal=SIGKILL")
        self.assertEqual(status, 204, body)

        def healed():
            ids = [self.ring_ids(lb) for lb in (a, b)]
            return ids[0] if ids[0] == ids[1] and len(ids[0]) == 3 and "server2" not in ids[0] else None
        ids = harness.wait_until(healed, 20.0, "both LBs to route to one replacement", 0.1)
        ids, _ = self.wait_same([a, b], 3)
        replacement = [n for n in ids if n not in ("server1", "server3")]
        self.assertEqual(len(replacement), 1, ids)
        replacement = replacement[0]
        self.assertEqual(str(ids[replacement]), victim_ring_id)
        self.wait_containers(list(ids), timeout=30)
        self.assertIsNone(inspect(victim["Id"]), "the killed container was not removed")
        time.sleep(1.0)  # let a second replacement, if any LB made one, show in the engine's log
        self.assertEqual(self.pool_starts(since), [replacement],
                         "more than one LB started a replacement:\n" + a.log()[-3000:] + b.log()[-3000:])
        self.assertEqual(len(self.assert_unique_ring_ids()), 3)
        now = self.assert_route_alike([a, b])
        expected = {k: (replacement if n == "server2" else n) for k, n in before.items()}
        self.assertEqual(now, expected, "keys moved other than the dead replica's")


if __name__ == "__main__":
    ok, why = lb_docker_test.engine_answers()
    if not ok:
        print(f"multi_lb_docker_test: no Docker engine answers ({why})", file=sys.stderr)
        sys.exit(1 if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1" else 77)
    lb_docker_test.build_image()
    signal.signal(signal.SIGTERM, lb_docker_test._on_sigterm)
    try:
        unittest.main()
    finally:
        lb_docker_test._sweep()
