#!/usr/bin/env python3
"""Who waited for a CPU, from a `perf sched record` file: one Markdown row per process name (the LB,
ringlb-replica, wrk, and <idle> for the CPUs' idle time), from `perf sched timehist`. Part of
bench/peers/one_thread.sh (SCHED=1).

Per name, over the recorded span: how often it was switched in, its CPU time, its run-queue delay
(runnable but not running: in total, and how many waits were over 0.5 ms), and its median run
length (time on a CPU per switch-in). A process whose requests wait in run queues shows it here; the
idle row says how much of the CPUs nobody wanted.

usage: sched_summary.py PERF_DATA TARGET"""
import collections
import statistics
import subprocess
import sys



def main():
    path, target = sys.argv[1], sys.argv[2]
    names = (target.split("-")[0], "ringlb-replica", "wrk", "<idle>")  # the LB's own name first
    out = subprocess.run(["perf", "sched", "timehist", "-i", path], capture_output=True,
                         text=True, check=True).stdout
    rows = collections.defaultdict(lambda: {"runs": [], "delays": []})
    for line in out.splitlines():
        f = line.split()
        # time cpu task[tid/pid] wait delay run: data rows start with a timestamp
        if len(f) < 6 or not f[0][0].isdigit():
            continue
        try:
            delay, run = float(f[4]), float(f[5])
        except ValueError:
            continue
        name = f[2].split("[")[0]
        if name in names:
            rows[name]["runs"].append(run)
            rows[name]["delays"].append(delay)
    for name in names:
        r = rows.get(name)
        if not r:
            continue
        d = r["delays"]
        print(f"| {target} | {name} | {len(r['runs']):,} | {sum(r['runs']):.0f} ms "
              f"| {sum(d):.0f} ms | {sum(1 for x in d if x > 0.5)} "
              f"| {1000 * statistics.median(r['runs']):.0f} µs |")


if __name__ == "__main__":
    main()
