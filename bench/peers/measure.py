#!/usr/bin/env python3
"""Runs one command (a wrk run) and reports the CPU time that named groups of processes used while it
ran, from /proc/PID/stat (utime + stime, all threads), with the command's own CPU (from wait4) and
the CPU that the whole machine was busy (/proc/stat). Part of bench/peers/peers.sh.

Before the command it can wait, bounded, for the machine to be quiet: it samples /proc/stat for one
second at a time until the busy share is at most --quiet-max percent of one CPU or --quiet-wait
seconds have passed, and records what it saw (the processes measured here are idle at that point,
so what is busy is someone else).

"Others' CPU" is what the machine was busy with beyond the groups, the command and the interrupt
time (irq + softirq in /proc/stat), in percent of one CPU over the command's run. The groups must not
overlap. Interrupt time is left out of it and reported on its own ("irq_cpu_pct"): the kernel charges
softirq time to no process (loopback TCP's receive path runs there: 20-45% of a CPU under wrk here),
so counting it as "others" made every window look noisy; it is mostly the measured traffic's own.

--per-thread also records each thread's CPU over the run (/proc/PID/task/TID/stat of every process of
every group, by "pid/tid comm"): how a multi-threaded LB spread its work over its threads; and each
group's context switches (voluntary: a thread went to sleep, e.g. in epoll_wait with nothing ready;
nonvoluntary: preempted), summed over its threads from /proc/PID/task/TID/status: divided by the
requests, how often the LB woke up per request, i.e. how well it batched.

usage: measure.py --out FILE.json --stdout FILE [--group NAME=PID,PID]... [--quiet-max PCT]
                  [--quiet-wait S] [--attempt N] [--per-thread] -- COMMAND...
"""
import argparse
import json
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    """utime + stime of process pid (all its threads) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def threads_cpu_s(pids):
    """{"pid/tid comm": utime + stime in seconds} of every thread of the processes pids."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    text = f.read()
            except OSError:
                continue  # the thread ended
            comm = text[text.index("(") + 1:text.rindex(")")]
            rest = text.rsplit(")", 1)[1].split()
            out[f"{pid}/{tid} {comm}"] = (int(rest[11]) + int(rest[12])) / TICK
    return out


def switches(pids):
    """(voluntary, nonvoluntary) context switches summed over every thread of the processes pids."""
    vol = nonvol = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            nonvol += int(line.split()[1])
            except OSError:
                continue
    return vol, nonvol


def machine():
    """(busy, total, irq) jiffies over all CPUs, as bench/replica_vs_nginx.sh counts them: user,
    nice, system, irq and softirq are busy; idle, iowait and steal are not; irq is irq + softirq."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6], sum(v), v[5] + v[6]


def busy_pct(seconds):
    """Busy share of all CPUs over seconds, in percent of one CPU."""
    b0, t0, _ = machine()
    time.sleep(seconds)
    b1, t1, _ = machine()
    return 100.0 * (b1 - b0) / max(t1 - t0, 1) * os.cpu_count()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--stdout", required=True)
    ap.add_argument("--group", action="append", default=[])
    ap.add_argument("--quiet-max", type=float, default=None)
    ap.add_argument("--quiet-wait", type=float, default=0)
    ap.add_argument("--attempt", type=int, default=0)
    ap.add_argument("--per-thread", action="store_true")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    groups = {}
    for g in a.group:
        name, pids = g.split("=", 1)
        groups[name] = [int(p) for p in pids.split(",") if p]

    quiet, waited = None, 0.0
    if a.quiet_max is not None:
        start = time.monotonic()
        while True:
            quiet = busy_pct(1.0)
            waited = time.monotonic() - start
            if quiet <= a.quiet_max or waited >= a.quiet_wait:
                break

    threads0 = {n: threads_cpu_s(pids) for n, pids in groups.items()} if a.per_thread else None
    switches0 = {n: switches(pids) for n, pids in groups.items()} if a.per_thread else None
    before = {n: sum(proc_cpu_s(p) for p in pids) for n, pids in groups.items()}
    m0 = machine()
    t0 = time.monotonic()
    with open(a.stdout, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    m1 = machine()
    after = {n: sum(proc_cpu_s(p) for p in pids) for n, pids in groups.items()}
    threads1 = {n: threads_cpu_s(pids) for n, pids in groups.items()} if a.per_thread else None
    switches1 = {n: switches(pids) for n, pids in groups.items()} if a.per_thread else None
    code = os.waitstatus_to_exitcode(status)
    command_cpu = usage.ru_utime + usage.ru_stime
    busy = (m1[0] - m0[0]) / TICK
    irq = (m1[2] - m0[2]) / TICK
    others = max(busy - irq - command_cpu - sum(after[n] - before[n] for n in groups), 0.0)
    doc = {
        "attempt": a.attempt,
        "exit_code": code,
        "wall_s": round(wall, 4),
        "command_cpu_s": round(command_cpu, 4),
        "groups_cpu_s": {n: round(after[n] - before[n], 4) for n in groups},
        "machine_busy_s": round(busy, 4),
        "others_cpu_pct": round(100 * others / wall, 1),
        "irq_cpu_pct": round(100 * irq / wall, 1),
        "quiet_before_pct": None if quiet is None else round(quiet, 1),
        "quiet_waited_s": round(waited, 1),
    }
    if a.per_thread:
        doc["threads_cpu_s"] = {n: {t: round(v - threads0[n].get(t, 0.0), 4)
                                    for t, v in sorted(threads1[n].items())} for n in groups}
        doc["switches"] = {n: {"voluntary": switches1[n][0] - switches0[n][0],
                               "nonvoluntary": switches1[n][1] - switches0[n][1]} for n in groups}
    with open(a.out, "w") as f:
        json.dump(doc, f)
    if code != 0:
        sys.exit(f"measure: {command[0]} exited with {code}")


if __name__ == "__main__":
    main()
