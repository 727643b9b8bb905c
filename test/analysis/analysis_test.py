"""Smoke runs of the analysis experiments (bench/a1_balance.py, a2_scale.py, a4_hashes.py).

Each test runs one experiment with --smoke (500 requests, N up to 3, 1,000 keys for A-4) and --out
into a temporary folder, so the committed bench/results/ and bench/RESULTS.md stay as they are, and
checks what it wrote: the JSON parses and adds up (per-replica counts sum to the requests sent,
balance figures agree with the counts, moved fractions lie in [0, 1] and split into their parts),
the PNG is a non-empty PNG, and the RESULTS.md section is there. The request ids and keys come from
fixed seeds and the rings are deterministic, so the counts are the same on every run.

Exit 77 (skip) when gnuplot is missing: the experiments need it for their charts
(deps/install.sh test installs it).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.environ.get("RINGLB_SOURCE") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(SOURCE, "bench")
sys.path.insert(0, BENCH)
import rings  # noqa: E402  (the model of the assignment's ring, to check A-1 against)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Smoke(unittest.TestCase):
    name = None  # the experiment's script and file name, e.g. "a1_balance"
    heading = None  # its section heading in RESULTS.md

    def run_experiment(self):
        """Runs bench/<name>.py --smoke --out TMP (bounded) and returns its parsed JSON. The bound
        is a hang guard, not a speed check: A-4's smoke run takes about 15 s on a quiet machine and
        took over 60 s (the old bound) on a loaded 2-core one."""
        out = tempfile.mkdtemp(prefix=f"ringlb-{self.name}-")
        self.addCleanup(shutil.rmtree, out, True)
        run = subprocess.run([sys.executable, os.path.join(BENCH, self.name + ".py"), "--smoke",
                              "--out", out], capture_output=True, text=True, timeout=240)
        self.assertEqual(run.returncode, 0, f"{self.name} failed:\n{run.stdout}\n{run.stderr}")
        self.assertEqual(sorted(os.listdir(out)),
                         sorted(["RESULTS.md", self.name + ".json", self.name + ".png"]))
        with open(os.path.join(out, self.name + ".png"), "rb") as f:
            png = f.read()
        self.assertTrue(png.startswith(PNG_MAGIC) and len(png) > 10000,
                        f"{self.name}.png is not a chart ({len(png)} bytes)")
        with open(os.path.join(out, "RESULTS.md")) as f:
            self.assertTrue(f.read().startswith("## " + self.heading))
        with open(os.path.join(out, self.name + ".json")) as f:
            return json.load(f)

    def check_counts(self, step, requests, n):
        """step has per-replica counts over server1..serverN that add up, and balance figures
        that agree with them."""
        counts = step["counts"]
        self.assertEqual(list(counts), [f"server{i}" for i in range(1, n + 1)])
        self.assertEqual(sum(counts.values()), requests)
        self.assertEqual(step["total"], requests)
        self.assertEqual(step["max"], max(counts.values()))
        self.assertEqual(step["min"], min(counts.values()))
        self.assertAlmostEqual(step["mean"], requests / n)
        self.assertAlmostEqual(step["max_over_mean"], max(counts.values()) * n / requests)
        self.assertGreaterEqual(step["max_over_mean"], 1.0)

    def check_assignment_skew(self, counts, n):
        """The assignment's ring sends server1 about the share computed from its formulas."""
        expected = rings.assignment_facts(n)["per_n"][n]["expected_share"]["server1"]
        share = counts["server1"] / sum(counts.values())
        self.assertEqual(max(counts, key=counts.get), "server1")
        self.assertAlmostEqual(share, expected, delta=0.05)


class A1Smoke(Smoke):
    name, heading = "a1_balance", "A-1"

    def test_counts_per_replica_for_both_rings(self):
        data = self.run_experiment()
        self.assertEqual((data["experiment"], data["n"], data["requests"]), ("A-1", 3, 500))
        self.assertEqual([r["key"] for r in data["rings"]], ["assignment", "ketama"])
        for r in data["rings"]:
            with self.subTest(ring=r["key"]):
                self.check_counts(r, 500, 3)
                self.assertEqual(r["ring_ids"], {"server1": 1, "server2": 2, "server3": 3})
                self.assertEqual(r["loadgen"]["failed"], 0)
        self.check_assignment_skew(data["rings"][0]["counts"], 3)
        self.assertLess(data["rings"][1]["max_over_mean"], 1.5)


class A2Smoke(Smoke):
    name, heading = "a2_scale", "A-2"

    def test_counts_at_every_n(self):
        data = self.run_experiment()
        self.assertEqual((data["experiment"], data["n_min"], data["n_max"]), ("A-2", 2, 3))
        for r in data["rings"]:
            self.assertEqual([s["n"] for s in r["steps"]], [2, 3])
            for s in r["steps"]:
                with self.subTest(ring=r["key"], n=s["n"]):
                    self.check_counts(s, 500, s["n"])
        for s in data["rings"][0]["steps"]:
            self.check_assignment_skew(s["counts"], s["n"])


class A4Smoke(Smoke):
    name, heading = "a4_hashes", "A-4"

    def test_every_ring_balance_and_keys_moved(self):
        data = self.run_experiment()
        self.assertEqual(data["experiment"], "A-4")
        self.assertEqual([r["key"] for r in data["rings"]], list(rings.RINGS))
        self.assertEqual(data["keys"]["count"], 1000)
        for r in data["rings"]:
            with self.subTest(ring=r["key"]):
                self.assertEqual([s["n"] for s in r["steps"]], [2, 3])
                for s in r["steps"]:
                    self.check_counts(s, 500, s["n"])
                add = r["steps"][1]["add"]
                self.assertEqual((add["from_n"], add["to_n"]), (2, 3))
                for x in ("moved", "to_new", "between_old"):
                    self.assertTrue(0 <= add[x] <= 1, f"{x} = {add[x]}")
                self.assertAlmostEqual(add["moved"], add["to_new"] + add["between_old"])
                self.assertGreater(add["to_new"], 0)
                if r["key"] != "maglev":  # consistent hashing: only keys that go to the new one
                    self.assertEqual(add["between_old"], 0)
                self.assertEqual([x["victim"] for x in r["remove"]],
                                 ["server1", "server2", "server3"])
                for x in r["remove"]:
                    self.assertTrue(0 <= x["moved"] <= 1 and 0 <= x["victim_share"] <= 1)
                    self.assertAlmostEqual(x["moved"], x["victim_share"] + x["between_survivors"])
                    self.assertGreaterEqual(x["between_survivors"], 0)
                # Each key was on exactly one of the three, so the removed shares add up to 1.
                self.assertAlmostEqual(sum(x["victim_share"] for x in r["remove"]), 1.0)
        model = data["assignment_model"]
        self.assertEqual(model["key_slots_reachable"], 87)
        self.assertTrue(model["key_slots_are_square_plus_16"])


class StartLbReady(unittest.TestCase):
    """benchlib's Procs.start_lb, which every experiment uses to start its LB, returns only once every
    replica is healthy: a key mapped before that goes to the next healthy replica while its own is
    still starting, so two fresh LBs would map it differently (the a4_smoke flake). server3 starts
    1.5 s late here (a busy machine, made certain), so a wait for /home alone returns too early."""

    def test_every_replica_is_healthy_and_keys_are_where_they_stay(self):
        import stat
        import benchlib
        import harness
        folder = tempfile.mkdtemp(prefix="ringlb-ready-")
        self.addCleanup(shutil.rmtree, folder, True)
        wrapper = os.path.join(folder, "replica.sh")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\ncase "$2" in server3) sleep 1.5 ;; esac\nexec \'%s\' "$@"\n'
                    % harness.build_path("replica", "ringlb-replica"))
        os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR)
        keys = [str(k) for k in range(100000, 100300)]
        with benchlib.Procs() as procs:
            lb = procs.start_lb("--replica-bin", wrapper, "--hb-interval", "100", replicas=3)
            states = {d["name"]: d["state"] for d in benchlib.rep_details(lb.port)}
            first = benchlib.key_owners(lb.port, keys)
            self.assertEqual(states, {"server1": "healthy", "server2": "healthy",
                                      "server3": "healthy"})
            again = benchlib.key_owners(lb.port, keys)
        self.assertEqual(first, again)
        self.assertEqual(set(first.values()), {"server1", "server2", "server3"})


if __name__ == "__main__":
    if shutil.which("gnuplot") is None:
        print("gnuplot is not installed: skipped (deps/install.sh test)")
        sys.exit(77)
    unittest.main()
