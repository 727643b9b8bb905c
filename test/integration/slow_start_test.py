"""Slow start (--slow-start MS, issue 16), through the real path: ringlb with three replicas under a
steady stream of keys (ringlb-loadgen at 600 requests/s, X-Request-Id uniform over 200 fixed keys,
so every key comes back about every 330 ms), /add of a fourth replica ("fresh") during the stream,
each request logged with the replica that answered (--log).

With --slow-start 2000 the share fresh receives, measured per 100 ms from its first request, rises
over the ramp instead of jumping. It is measured as the fraction of the requests for fresh's keys
(those it serves after the ramp) that fresh serves, which does not depend on how often its keys
come up in a window: under 35% in the first 500 ms, more than that (by 0.1) but under 85% at
800-1300 ms. A key that moved to fresh does not move back during the ramp (requests started 200 ms
or more after one that fresh served). A heal replacement (server1 SIGKILLed; a new name under its
ring id) ramps the same way. Without the option (--slow-start 0) fresh serves more than 85% of its
keys' requests in the first 500 ms already, which is what the first assertion catches.

No timing is asserted: requests are counted per window of the stream with tolerant margins; every
run is bounded in count and time.
"""
import collections
import os
import signal
import subprocess
import tempfile
import time
import unittest

import harness
from harness import HOST
from heal_test import LOADGEN
from lb_test import LbTestCase

RAMP_MS = 2000


def read_log(path):
    rows = []
    with open(path) as f:
        for line in f:
            s, e, key, status, rep = line.split()
            rows.append((int(s), int(e), key, int(status), rep))
    return rows


class SlowStart(LbTestCase):
    def stream_with_add(self, slow_start_ms, action=None):
        """Starts ringlb, a 6 s stream, and 0.8 s in /add of "fresh" (or action(lb)); returns the
        logged rows."""
        lb = self.start_lb("--slow-start", str(slow_start_ms), "--hb-interval", "100")
        tmp = tempfile.TemporaryDirectory(prefix="ringlb-slowstart-")
        self.addCleanup(tmp.cleanup)
        log = os.path.join(tmp.name, "stream.log")
        argv = [LOADGEN, "-q", "--zipf", "0", "--keys", "200", "--seed", "3", "-r", "600",
                "-d", "6", "-c", "16", "-t", "10000", "-T", "60", "--log", log,
                f"http://{HOST}:{lb.port}/home"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        time.sleep(0.8)
        if action is not None:
            action(lb)
        else:
            resp = harness.request(lb.port, "POST", "/add", body={"n": 1, "hostnames": ["fresh"]})
            self.assertEqual(resp.status, 200, resp)
        _, err = proc.communicate(timeout=90)
        self.assertEqual(proc.returncode, 0, err)
        rows = read_log(log)
        bad = [r for r in rows if r[3] != 200]
        self.assertEqual(bad[:5], [], f"failed requests; log:\n{lb.log()}")
        return rows

    def windows(self, rows, new="fresh"):
        """Per 100 ms from fresh's first request: (requests fresh served, requests in the window,
        requests in the window of fresh's keys), fresh's keys being those it serves once the ramp
        is over (2.5 s on). The first two give fresh's share of the traffic; the first and third the
        ramp's progress, the fraction of fresh's keys it serves (independent of how often its keys
        happen to come up in a window)."""
        t0 = min(r[0] for r in rows if r[4] == new)
        mine = {r[2] for r in rows if r[4] == new and r[0] >= t0 + 2500000}
        wins = collections.defaultdict(lambda: [0, 0, 0])
        for r in rows:
            if r[0] >= t0:
                w = wins[(r[0] - t0) // 100000]
                w[0] += r[4] == new
                w[1] += 1
                w[2] += r[2] in mine
        return t0, [tuple(wins[i]) for i in range(max(wins) + 1)]

    def progress(self, wins, first, last):
        """The fraction of the requests for fresh's keys that fresh served in windows [first, last)."""
        fresh = sum(w[0] for w in wins[first:last])
        theirs = sum(w[2] for w in wins[first:last])
        self.assertGreaterEqual(theirs, 30, f"too few requests in windows {first}-{last}: {wins}")
        return fresh / theirs

    def test_a_new_replica_gets_its_share_gradually_and_keys_do_not_come_back(self):
        rows = self.stream_with_add(RAMP_MS)
        t0, wins = self.windows(rows)
        share = [round(f / t, 2) if t else None for f, t, _ in wins]
        progress = [round(f / m, 2) if m else None for f, _, m in wins]
        print("fresh's share of the requests per 100 ms:", share)
        print("fresh's share of its keys' requests per 100 ms:", progress)
        # A key moves when the ramp passes its point, and shows it at its next request (a key
        # comes back every ~330 ms): the measured progress trails the ramp by about that much.
        early = self.progress(wins, 0, 5)           # 0-500 ms: ramp below 25%
        middle = self.progress(wins, 8, 13)         # 800-1300 ms: ramp 40-65%
        final = self.progress(wins, 25, len(wins))  # after the ramp: 1 by definition
        what = f"progress early {early:.3f} middle {middle:.3f} final {final:.3f}; per 100 ms " \
               f"{progress}; share per 100 ms {share}"
        self.assertLess(early, 0.35, what)
        self.assertLess(early + 0.1, middle, what)
        self.assertLess(middle, 0.85, what)
        self.assertGreater(sum(w[0] for w in wins[25:]) / sum(w[1] for w in wins[25:]), 0.12,
                           f"fresh should end with about a fourth of the requests: {share}")
        # A key that fresh served during the ramp stays there.
        by_key = collections.defaultdict(list)
        for r in rows:
            if r[0] >= t0:
                by_key[r[2]].append(r)
        back = []
        for key, reqs in by_key.items():
            reqs.sort()
            first = next((r[0] for r in reqs if r[4] == "fresh"), None)
            if first is None:
                continue
            back += [r for r in reqs if r[0] >= first + 200000 and r[4] != "fresh"]
        self.assertEqual(back[:5], [], "keys moved back from fresh during the ramp")

    def test_without_slow_start_the_new_replica_takes_its_share_at_once(self):
        rows = self.stream_with_add(0)
        _, wins = self.windows(rows)
        early = self.progress(wins, 0, 5)
        self.assertGreater(early, 0.85, f"progress in the first 500 ms {early:.3f}")


    def test_a_heal_replacement_ramps_too(self):
        """server1 is SIGKILLed; its replacement (a new name, the same ring id) takes server1's keys
        back from the replicas that served them meanwhile gradually, as an added replica does."""
        def kill(lb):
            os.kill(self.pids(lb)["server1"], signal.SIGKILL)
        rows = self.stream_with_add(RAMP_MS, kill)
        new = {r[4] for r in rows} - {"server1", "server2", "server3"}
        self.assertEqual(len(new), 1, f"one replacement expected: {new}")
        (new,) = new
        _, wins = self.windows(rows, new)
        progress = [round(f / m, 2) if m else None for f, _, m in wins]
        print(f"{new}'s share of its keys' requests per 100 ms:", progress)
        early = self.progress(wins, 0, 5)
        middle = self.progress(wins, 8, 13)
        what = f"progress early {early:.3f} middle {middle:.3f}; per 100 ms {progress}"
        self.assertLess(early, 0.35, what)
        self.assertLess(early + 0.1, middle, what)
        self.assertLess(middle, 0.85, what)


if __name__ == "__main__":
    unittest.main()
