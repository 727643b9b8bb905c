"""/metrics of a real ringlb with real replicas after real traffic (issue 14):

- the request duration histograms (LB-wide and per ring id) count exactly the proxied requests sent
  (admin requests are not counted), their buckets are cumulative and end at +Inf = _count, and
  `promtool check metrics` (Debian's prometheus; skipped without it) accepts the whole text;
- per ring id: responses by status class add up to what the clients got, and a backend that was
  killed behind a static ring shows its failures and the retries away from it;
- per-replica series keep their ring id across a heal (the new name in ringlb_replica_info, the
  counter not reset), the state is a value; /add counts a ring change and the keys that moved;
- process and build metrics are there.

No timing is asserted; every wait and request loop is bounded.
"""
import os
import re
import shutil
import signal
import subprocess
import unittest

import harness
from harness import Connection, HOST
from heal_test import HealTestCase
from lb_test import REPLICA


def scrape(port):
    """GET /metrics: ({sample with labels: value}, text)."""
    resp = harness.request(port, "GET", "/metrics")
    assert resp.status == 200, resp
    text = resp.body.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples, text


def matching(samples, prefix):
    return {k: v for k, v in samples.items() if k.startswith(prefix)}


def ring_id_of(name):
    return re.search(r'ring_id="(\d+)"', name).group(1)


class Metrics(HealTestCase):
    def test_histogram_counts_the_requests_sent_and_promtool_accepts_it(self):
        lb = self.start_lb()
        m0, _ = scrape(lb.port)
        with Connection(lb.port) as conn:
            for i in range(40):
                self.assertEqual(conn.request("GET", "/home", {"X-Request-Id": str(300000 + i)}).status, 200)
            for i in range(5):
                self.assertEqual(conn.request("GET", f"/missing/{i}").status, 400)  # a replica's 404
            for _ in range(3):
                self.assertEqual(conn.request("GET", "/rep").status, 200)  # admin: not observed
        m1, text = scrape(lb.port)
        delta = {k: m1[k] - m0.get(k, 0) for k in m1}
        self.assertEqual(delta["ringlb_request_duration_seconds_count"], 45, text)
        self.assertEqual(delta['ringlb_request_duration_seconds_bucket{le="+Inf"}'], 45)
        self.assertGreater(delta["ringlb_request_duration_seconds_sum"], 0)
        # Cumulative buckets, in order of le.
        buckets = [(float(re.search(r'le="([^"]+)"', k).group(1)), v)
                   for k, v in m1.items() if k.startswith("ringlb_request_duration_seconds_bucket{")]
        buckets.sort()
        self.assertEqual(buckets[0][0], 0.0005)
        self.assertEqual(buckets[-2][0], 10)
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        self.assertEqual(buckets[-1][1], m1["ringlb_request_duration_seconds_count"])
        # Per ring id: the 45 answers are split over the replicas, each replica's count is its
        # +Inf bucket, and its responses by class add up to what the clients got (the 404s count
        # as the replica's 4xx).
        per_count = matching(delta, "ringlb_replica_request_duration_seconds_count{")
        self.assertEqual(sum(per_count.values()), 45, per_count)
        self.assertEqual({ring_id_of(k) for k in per_count}, {"1", "2", "3"})
        for k, v in per_count.items():
            rid = ring_id_of(k)
            self.assertEqual(m1[f'ringlb_replica_request_duration_seconds_bucket{{ring_id="{rid}",le="+Inf"}}'],
                             m1[k])
        self.assertEqual(sum(matching(delta, "ringlb_replica_responses_total{").values()), 45)
        self.assertEqual(sum(v for k, v in delta.items()
                             if k.startswith("ringlb_replica_responses_total{") and 'class="4xx"' in k), 5)
        self.assertEqual(sum(matching(delta, "ringlb_replica_requests_total{").values()), 40)
        # Names in the info metric, states as values.
        for rid, name in (("1", "server1"), ("2", "server2"), ("3", "server3")):
            self.assertEqual(m1[f'ringlb_replica_info{{ring_id="{rid}",name="{name}"}}'], 1)
            self.assertEqual(m1[f'ringlb_replica_state{{ring_id="{rid}"}}'], 1)
        self.assertFalse([k for k in m1 if 'replica="' in k or 'state="' in k])
        # Process and build figures.
        self.assertGreater(m1["process_resident_memory_bytes"], 1 << 20)
        self.assertGreater(m1["process_open_fds"], 3)
        self.assertGreaterEqual(m1["process_max_fds"], m1["process_open_fds"])
        self.assertGreater(m1["process_cpu_seconds_total"], 0)
        self.assertGreater(m1["process_start_time_seconds"], 1.6e9)
        self.assertEqual(len(matching(m1, "ringlb_build_info{version=")), 1)
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool is not installed (deps/install.sh test: Debian's prometheus)")
        check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_series_keep_their_ring_id_across_a_heal_and_add_counts_a_ring_change(self):
        lb = self.start_lb("--hb-interval", "100")
        for i in range(30):
            harness.request(lb.port, "GET", "/home", {"X-Request-Id": str(400000 + i)})
        m0, _ = scrape(lb.port)
        victim = self.details(lb)["server2"]
        os.kill(int(victim["id"]), signal.SIGKILL)

        def healed():
            d = [r for r in self.details(lb).values()
                 if r["ring_id"] == victim["ring_id"] and r["name"] != "server2"]
            return d[0] if d and d[0]["state"] == "healthy" else None
        new = harness.wait_until(healed, 15.0, "server2 to be replaced", 0.05)
        m1, _ = scrape(lb.port)
        rid = str(victim["ring_id"])
        self.assertEqual(m1[f'ringlb_replica_info{{ring_id="{rid}",name="{new["name"]}"}}'], 1)
        self.assertNotIn(f'ringlb_replica_info{{ring_id="{rid}",name="server2"}}', m1)
        self.assertEqual(m1[f'ringlb_replica_state{{ring_id="{rid}"}}'], 1)
        key = f'ringlb_replica_requests_total{{ring_id="{rid}"}}'
        self.assertGreater(m0[key], 0)
        self.assertGreaterEqual(m1[key], m0[key])  # the counter goes on: no reset, no new series
        self.assertEqual(m1["ringlb_ring_changes_total"], m0["ringlb_ring_changes_total"])  # a heal
        # /add of a fourth replica: one ring change, about a quarter of the keys move (ketama).
        self.assertEqual(harness.request(lb.port, "POST", "/add", body={"n": 1}).status, 200)
        m2, _ = scrape(lb.port)
        self.assertEqual(m2["ringlb_ring_changes_total"], m1["ringlb_ring_changes_total"] + 1)
        self.assertGreater(m2["ringlb_ring_keys_moved_ratio"], 0.1)
        self.assertLess(m2["ringlb_ring_keys_moved_ratio"], 0.45)
        self.assertEqual(m2["ringlb_ring_members"], 4)

    def test_failures_and_retries_of_a_dead_static_backend(self):
        a = harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}", "--id", "a"])
        b = harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}", "--id", "b"])
        # One heartbeat at start, the next in 10 minutes: the killed backend stays in the ring.
        lb = self.start_lb("--provisioner", "static", "--backend", f"{HOST}:{a.port}",
                           "--backend", f"{HOST}:{b.port}", "--hb-interval", "600000",
                           "--strikes", "1000", replicas=2)
        by_address = {d["address"]: d["ring_id"] for d in self.details(lb).values()}
        dead_rid = str(by_address[f"{HOST}:{b.port}"])
        m0, _ = scrape(lb.port)
        b.kill()
        with Connection(lb.port) as conn:
            for i in range(30):
                resp = conn.request("GET", "/home", {"X-Request-Id": str(500000 + i)})
                self.assertEqual(resp.status, 200, resp)
        m1, _ = scrape(lb.port)
        delta = {k: m1[k] - m0.get(k, 0) for k in m1}
        retries = delta[f'ringlb_replica_retries_total{{ring_id="{dead_rid}"}}']
        self.assertGreater(retries, 0, "no key of 30 went to the dead backend")
        self.assertEqual(delta[f'ringlb_replica_failures_total{{ring_id="{dead_rid}"}}'], retries)
        self.assertEqual(delta["ringlb_retries_total"], retries)
        self.assertEqual(sum(v for k, v in delta.items() if k.startswith("ringlb_replica_responses_total{")
                             and ring_id_of(k) == dead_rid), 0)
        self.assertEqual(delta["ringlb_request_duration_seconds_count"], 30)


if __name__ == "__main__":
    unittest.main()
