"""The A-3 experiment's smoke variant (bench/a3_heal.py --smoke --provisioner process): it runs, and
what it writes is complete and consistent: the JSON parses, the load generator's timeline adds up to
its totals, each kill's figures are ordered and its key counts add up, and the chart is a PNG.

The results go to a temporary folder (--out), never over bench/results or bench/RESULTS.md. Traffic
only to 127.0.0.1; the run is bounded by a timeout.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness

SCRIPT = harness.source_path("bench", "a3_heal.py")


class A3Smoke(unittest.TestCase):
    def test_smoke_run_writes_consistent_results(self):
        out = tempfile.TemporaryDirectory(prefix="ringlb-a3-")
        self.addCleanup(out.cleanup)
        run = subprocess.run([sys.executable, SCRIPT, "--smoke", "--provisioner", "process",
                              "--out", out.name, "--build", harness.BUILD],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("process: 1 kills", run.stdout)
        with open(os.path.join(out.name, "a3-process.json")) as f:
            doc = json.load(f)

        self.assertEqual(doc["provisioner"], "process")
        self.assertTrue(doc["setup"]["smoke"])
        for key in ("date", "cpus", "cpu_model", "busy_before"):
            self.assertIn(key, doc["machine"])

        # The load generator's timeline adds up to its totals, per replica too.
        rep = doc["loadgen"]
        totals, intervals = rep["totals"], rep["timeline"]["intervals"]
        self.assertEqual(rep["timeline"]["interval_ms"], 100)
        for field in ("started", "ok", "failed", "responses"):
            self.assertEqual(sum(iv[field] for iv in intervals), totals[field], field)
        per_replica = {}
        for iv in intervals:
            for name, n in iv["replicas"].items():
                per_replica[name] = per_replica.get(name, 0) + n
        self.assertEqual(per_replica, rep["replicas"])
        self.assertEqual(sum(rep["replicas"].values()) + rep["unattributed"], totals["responses"])
        self.assertEqual(totals["ok"] + totals["failed"], totals["responses"] + totals["errors"])
        self.assertGreater(totals["ok"], 2000)

        # One kill, its figures in order, its key counts adding up.
        self.assertEqual(len(doc["kills"]), 1)
        k = doc["kills"][0]
        self.assertEqual(k["replacement_ring_id"], k["victim_ring_id"])
        self.assertNotEqual(k["replacement"], k["victim"])
        self.assertIn(k["replacement"], rep["replicas"])
        self.assertLessEqual(0, k["detection_ms"])
        self.assertLessEqual(k["detection_ms"], k["healthy_ms"])
        lo, hi = k["first_served_interval_ms"]
        self.assertLessEqual(k["healthy_ms"], lo)
        self.assertEqual(hi, k["first_served_ms"])
        self.assertLessEqual(hi - lo, 100)
        keys = k["keys"]
        self.assertEqual(keys["checked"], doc["setup"]["keys"])
        self.assertEqual(keys["moved"],
                         keys["victim_keys_to_replacement"] + keys["moved_elsewhere"])
        self.assertLessEqual(keys["victim_keys_to_replacement"], keys["victim_keys"])
        t0 = rep["start_unix_ms"] / 1000
        first, last = k["slot_s"][0] - 1e-3, k["slot_s"][1] - 1e-3
        slot = [iv for iv in intervals if first <= t0 + iv["t_s"] - k["kill_unix_s"] < last]
        self.assertEqual(sum(iv["ok"] for iv in slot), k["ok"])
        self.assertEqual(sum(iv["failed"] for iv in slot), k["failed"])

        # The summary is the kills' figures; healing itself worked.
        s = doc["summary"]
        self.assertEqual(s["kills"], 1)
        for field in ("kill_call_ms", "detection_ms", "healthy_ms", "first_served_ms"):
            self.assertEqual(s[field], {"median": k[field], "max": k[field], "min": k[field]})
        v = k["latency_max_ms"]
        self.assertEqual(s["latency_max_ms_after_kill"], {"median": v, "max": v, "min": v})
        self.assertLessEqual(v, rep["latency_us"]["max"] / 1000 + 0.1)
        self.assertLessEqual(s["latency_max_ms_elsewhere"], rep["latency_us"]["max"] / 1000 + 0.1)
        self.assertEqual(s["failed_in_run"], totals["failed"])
        self.assertEqual(s["failed_in_run"], 0)
        self.assertEqual(s["keys_moved_elsewhere"], 0)
        self.assertEqual(s["victim_keys_not_on_replacement"], 0)
        states = sorted(r["state"] for r in doc["final_replicas"].values())
        self.assertEqual(states, ["healthy"] * 3)

        # The RESULTS.md section, with this run's figures; the chart.
        with open(os.path.join(out.name, "RESULTS.md")) as f:
            section = f.read()
        self.assertTrue(section.startswith("## A-3: a replica dies under load\n"), section[:200])
        self.assertIn(doc["command"], section)
        healthy = f"{k['healthy_ms']} ms"
        self.assertIn(f"| kill → replacement healthy | {healthy} | {healthy} |", section)
        self.assertIn("Targets: zero failed requests, **met**", section)
        if shutil.which("gnuplot"):
            with open(os.path.join(out.name, "a3.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
    unittest.main()
