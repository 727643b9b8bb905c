"""Replica weights (issue 16), through real ringlb and ringlb-replica processes on 127.0.0.1:

- /add {"n": 1, "hostnames": ["big"], "weight": 2} on the default ring (ketama) and on maglev: keys
  sent through the load balancer are counted by the replica that answered, and big's share follows
  its weight (2 of 4 = 50%, the two others 25% each) within 1 percentage point over 40,000 keys;
- /rep?verbose=1 shows each replica's weight;
- a weight that is not a whole number from 1 to 100, a weight on /rm, and any weight but 1 in slots
  mode (the assignment's ring has none) are answered 400 with the reason and change nothing;
- a heal replacement of big keeps its ring id and its weight, so its keys and share come back.

No timing is asserted; every wait and request loop is bounded.
"""
import os
import random
import signal
import unittest
from collections import Counter

import harness
from harness import Connection, HOST
from lb_test import LbTestCase

KEYS = [str(k) for k in random.Random(16).sample(range(100000, 1000000), 40000)]
PREFIX = "Hello from Server: "


class Weights(LbTestCase):
    def details(self, lb):
        return {d["name"]: d for d in self.rep(lb, verbose=True).json()["message"]["details"]}

    def wait_healthy(self, lb, n, timeout=20.0):
        def ok():
            if not lb.running():
                raise AssertionError(f"ringlb exited: {lb.log()}")
            counted = [d for d in self.details(lb).values() if d["counts"]]
            return len(counted) == n and all(d["state"] == "healthy" for d in counted)
        harness.wait_until(ok, timeout, f"{n} healthy replicas", 0.05)
        harness.wait_routable(lb)

    def route(self, lb, keys, depth=50):
        """{key: replica name} for GET /home with X-Request-Id: key, pipelined in batches of depth
        on one keep-alive connection."""
        out = {}
        with Connection(lb.port, timeout=20) as conn:
            for b in range(0, len(keys), depth):
                batch = keys[b:b + depth]
                conn.send(b"".join(f"GET /home HTTP/1.1\r\nHost: {HOST}\r\nX-Request-Id: {k}\r\n\r\n"
                                   .encode() for k in batch))
                for k in batch:
                    resp = conn.read_response()
                    self.assertEqual(resp.status, 200, resp)
                    message = resp.json()["message"]
                    self.assertTrue(message.startswith(PREFIX), message)
                    out[k] = message[len(PREFIX):]
        return out

    def shares(self, lb):
        counts = Counter(self.route(lb, KEYS).values())
        return {name: c / len(KEYS) for name, c in counts.items()}

    def add(self, lb, body):
        with Connection(lb.port, timeout=30) as conn:
            return conn.request("POST", "/add", body=body)

    def check_weight_two(self, *ring):
        lb = self.start_lb(*ring, replicas=2)
        resp = self.add(lb, {"n": 1, "hostnames": ["big"], "weight": 2})
        self.assertEqual(resp.status, 200, resp)
        # The answer is the assignment's /add answer, unchanged by the weight.
        self.assertEqual(resp.json()["message"], {"N": 3, "replicas": ["server1", "server2", "big"]})
        self.wait_healthy(lb, 3)
        d = self.details(lb)
        self.assertEqual({n: d[n]["weight"] for n in d}, {"server1": 1, "server2": 1, "big": 2})
        shares = self.shares(lb)
        expected = {"big": 0.5, "server1": 0.25, "server2": 0.25}
        for name, want in expected.items():
            self.assertAlmostEqual(shares.get(name, 0.0), want, delta=0.01,
                                   msg=f"{ring or 'default ring'}: shares {shares}")
        return lb, shares

    def test_weight_two_takes_half_the_keys_on_the_default_ring(self):
        self.check_weight_two()

    def test_weight_two_takes_half_the_keys_on_maglev(self):
        self.check_weight_two("--ring", "maglev")

    def test_bad_weights_are_refused_and_change_nothing(self):
        lb = self.start_lb(replicas=2)
        before = self.rep(lb).body
        cases = [0, 101, -1, 2.5, "2", None, True, [2]]
        for w in cases:
            resp = self.add(lb, {"n": 1, "hostnames": ["big"], "weight": w})
            self.assertEqual(resp.status, 400, (w, resp))
            self.assertEqual(resp.json()["message"].removeprefix("<Error> "),
                             "\"weight\" must be a whole number from 1 to 100 (the replica's share of "
                             "keys relative to a replica of weight 1)", w)
        resp = harness.request(lb.port, "DELETE", "/rm", body={"n": 1, "weight": 2})
        self.assertEqual(resp.status, 400, resp)
        self.assertIn("\"weight\" belongs to /add", resp.json()["message"])
        self.assertEqual(self.rep(lb).body, before)
        self.assertEqual(len(self.details(lb)), 2)
        # The assignment's form, and weight 1 given explicitly, still work.
        self.assertEqual(self.add(lb, {"n": 1, "hostnames": ["S3"]}).status, 200)
        self.assertEqual(self.add(lb, {"n": 1, "hostnames": ["S4"], "weight": 1}).status, 200)

    def test_slots_mode_refuses_weights(self):
        lb = self.start_lb("--ring", "slots", replicas=2)
        before = self.rep(lb).body
        resp = self.add(lb, {"n": 1, "hostnames": ["big"], "weight": 2})
        self.assertEqual(resp.status, 400, resp)
        self.assertEqual(resp.json()["message"].removeprefix("<Error> "),
                         "cannot add 1 replicas of weight 2: slots mode (the assignment's ring) has "
                         "no weights: every replica has weight 1; use --ring maglev or ketama for "
                         "weights.")
        self.assertEqual(self.rep(lb).body, before)
        resp = self.add(lb, {"n": 1, "hostnames": ["one"], "weight": 1})
        self.assertEqual(resp.status, 200, resp)

    def test_total_weight_the_ring_cannot_hold_is_refused(self):
        # ketama with 100,000 points per unit of weight holds 10 units (2^20 points).
        lb = self.start_lb("--vnodes", "100000", "--max-replicas", "4", replicas=2)
        before = self.rep(lb).body
        resp = self.add(lb, {"n": 2, "weight": 100})
        self.assertEqual(resp.status, 400, resp)
        self.assertEqual(resp.json()["message"].removeprefix("<Error> "),
                         "cannot add 2 replicas of weight 100: ketama mode cannot hold 4 members of "
                         "total weight 202 x 100000 points = 20200000 points; the limit is 1048576.")
        self.assertEqual(self.rep(lb).body, before)

    def test_heal_replacement_keeps_the_weight_and_the_keys(self):
        lb, _ = self.check_weight_two("--hb-interval", "100")
        before = self.route(lb, KEYS[:5000])
        big = self.details(lb)["big"]
        os.kill(int(big["id"]), signal.SIGKILL)

        def replaced():
            d = self.details(lb)
            new = [x for n, x in d.items() if n not in ("server1", "server2", "big") and x["counts"]]
            return len(new) == 1 and new[0]["state"] == "healthy" and new[0]
        new = harness.wait_until(replaced, 20.0, "a healthy replacement for big", 0.05)
        harness.wait_routable(lb)
        self.assertEqual(new["weight"], 2)
        self.assertEqual(new["ring_id"], big["ring_id"])
        after = self.route(lb, KEYS[:5000])
        self.assertEqual(after, {k: (new["name"] if n == "big" else n) for k, n in before.items()})


if __name__ == "__main__":
    unittest.main()
