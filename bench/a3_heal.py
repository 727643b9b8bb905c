#!/usr/bin/env python3
"""A-3: a replica dies under load (issues #5 and #6).

ringlb runs three replicas (local processes, or Docker containers on the host network) under steady
load from ringlb-loadgen: 1000 requests/s on 10 keep-alive connections, a random X-Request-Id per
request, a timeline per 100 ms with the answers of each replica. Every few seconds one replica is
killed: SIGKILL of the pid that /rep?verbose=1 lists (process), or `docker kill` of its container
(docker). The victim is the replica that has been healthy longest, so it is a settled one (a replica
that dies within 5 s of becoming healthy is backed off on purpose, see lb/control/registry.h).

For each kill it measures, from the moment of the kill (the SIGKILL, or the start of the
`docker kill` call, which returns once the engine has killed the container: kill_call_ms):
- detection: the load balancer's "VICTIM: healthy -> dead (cause)" log line;
- replacement healthy: the replacement's "starting -> healthy" log line;
- first served: the end of the first 100 ms timeline interval in which the replacement answered a
  request (an upper bound: it answered within that interval);
- failed requests in the kill's slot of the timeline (and in the whole run), and the slowest request
  started within 0.5 s of the kill;
- keys moved: 300 fixed keys are mapped to replicas right before the kill and once the replacement
  is healthy. The victim's keys should all go to the replacement, every other key stay.

Outputs: bench/results/a3-process.json, a3-docker.json (median and max of every figure, each kill,
the load generator's full report), a3.png (ok and failed requests per 100 ms around one
representative kill of each provisioner, with the kill, detection, replacement healthy and first
served marked) and the section "A-3" of bench/RESULTS.md. The chart and the section use whichever
of the two JSON files exist.

  python3 bench/a3_heal.py [--provisioner process|docker|both] [--kills K]
  python3 bench/a3_heal.py --smoke --provisioner process --out /tmp/a3   # one kill, 4 s of load

--provisioner both (the default) leaves docker out, saying so, when no engine answers; --out DIR
writes everything into DIR instead (bench/results and bench/RESULTS.md stay as they are);
--build DIR takes the binaries from another build folder. Traffic goes only to 127.0.0.1; every
wait is bounded; docker containers carry a pool label unique to the run and are removed by it,
whatever happens.
"""
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import benchlib
from benchlib import harness

RATE = 1000
CONNECTIONS = 10
INTERVAL_MS = 100
KEYS = 300
LOG_STAMP_S = 0.001  # the resolution of ringlb's log stamps (lb/log.cc)
IMAGE = "ringlb-replica:latest"
TARGET_SERVING_S = {"process": 1.0, "docker": 1.5}

TRANSITION = re.compile(r"^replica (\S+): (\w+) -> (\w+) \((.*)\) after (\d+) ms$")
REPLACED = re.compile(r"^replica (\S+): replaced by (\S+) \(ring id (\d+)\)$")


def details(port):
    """/rep?verbose=1's details: {name: detail}."""
    return {d["name"]: d for d in benchlib.rep_details(port)}


def transitions(events):
    out = []
    for t, _, msg in events:
        m = TRANSITION.match(msg)
        if m:
            out.append((t, m.group(1), m.group(2), m.group(3), m.group(4)))
    return out


def healthy_since(events, names):
    """For each name, when it last became healthy (from the log)."""
    since = {}
    for t, name, _, new, _ in transitions(events):
        if new == "healthy":
            since[name] = t
    return {n: since.get(n, float("inf")) for n in names}


def docker_version():
    """The engine's version, or None when the docker CLI or the engine does not answer."""
    try:
        run = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() if run.returncode == 0 and run.stdout.strip() else None


def ensure_image():
    inspect = ["docker", "image", "inspect", IMAGE]
    if subprocess.run(inspect, capture_output=True, timeout=30).returncode == 0:
        return
    print(f"a3: {IMAGE} is missing, building it with lb/image.sh", file=sys.stderr)
    script = os.path.join(os.path.dirname(benchlib.BENCH), "lb", "image.sh")
    subprocess.run([script, benchlib.build_dir(), "replica"], check=True, timeout=300,
                   env=dict(os.environ, RINGLB_REPLICA_TAG=IMAGE))


def remove_pool(pool):
    """Removes every container labelled with our pool (ours alone: the label is unique to the
    run)."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=ringlb.pool={pool}"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60)


def kill(kind, detail):
    if kind == "process":
        os.kill(int(detail["id"]), signal.SIGKILL)
    else:
        subprocess.run(["docker", "kill", detail["id"]], check=True, capture_output=True,
                       timeout=30)


def wait_healthy(port, n, timeout):
    def ready():
        d = details(port)
        return len(d) == n and all(r["state"] == "healthy" for r in d.values()) and d
    return harness.wait_until(ready, timeout, f"{n} healthy replicas", 0.02)


def measure(kind, kills, smoke):
    """Runs the experiment for one provisioner; returns the result document."""
    spacing = 2.5 if smoke else 4.0  # seconds between kills
    warmup, tail = (1.0, 0.5) if smoke else (2.0, 2.0)
    duration = warmup + kills * spacing + tail
    lb_args = ["--log-level", "info"]
    pool = None
    if kind == "docker":
        ensure_image()
        pool = f"a3-{os.getpid()}-{random.randrange(1 << 32):08x}"
        # Container names are global on the engine: the three replicas get names unique to the
        # run through /add (ring ids 1..3) instead of the default server1..3.
        lb_args += ["--provisioner", "docker", "--docker-network", "host", "--pool", pool,
                    "--replica-image", IMAGE, "--replicas", "0",
                    "--replica-port-range", "24000-24999"]
    busy = benchlib.machine_busy()
    rng = random.Random(2026)
    keys = [str(k) for k in rng.sample(range(100000, 1000000), KEYS)]
    records = []
    with benchlib.Procs() as procs:
        if pool:
            procs.callback(remove_pool, pool)
        if pool:
            lb = procs.start([benchlib.binary("lb", "ringlb"), "--listen",
                              f"{benchlib.HOST}:{{port}}", *lb_args], ready_timeout=30.0)
            status, doc = benchlib.admin(lb.port, "POST", "/add",
                                         {"n": 3, "hostnames": [f"{pool}-{i}" for i in (1, 2, 3)]})
            if status != 200:
                raise RuntimeError(f"/add of the docker replicas failed: {status} {doc}")
        else:
            lb = procs.start_lb(*lb_args, ready_timeout=60.0)
        wait_healthy(lb.port, 3, 30.0)
        result = {}

        def load():
            try:
                result["report"] = benchlib.loadgen(
                    lb.port, "--rid", "--seed", "3", "-r", RATE, "-c", CONNECTIONS, "-d", duration,
                    "-i", INTERVAL_MS, "-t", 5000, timeout=duration + 60)
            except Exception as e:  # reported after the join
                result["error"] = e
        thread = threading.Thread(target=load, daemon=True)
        started = time.time()
        thread.start()
        time.sleep(warmup)
        for k in range(kills):
            det = wait_healthy(lb.port, 3, 30.0)
            since = healthy_since(harness.log_events(lb.log()), det)
            victim = min(det, key=lambda n: since[n])
            before = benchlib.key_owners(lb.port, keys)
            t_kill = time.time()
            kill(kind, det[victim])
            t_killed = time.time()  # docker kill returns once the engine has killed the container

            def replaced():
                d = details(lb.port)
                new = [n for n, r in d.items() if n not in det and r["state"] == "healthy"]
                return len(d) == 3 and victim not in d and new and new[0]
            new = harness.wait_until(replaced, 30.0, f"a healthy replacement for {victim}", 0.02)
            after = benchlib.key_owners(lb.port, keys)
            records.append({"victim": victim, "victim_ring_id": det[victim]["ring_id"],
                            "victim_healthy_for_s": round(t_kill - since[victim], 3),
                            "t_kill": t_kill, "kill_call_ms": round((t_killed - t_kill) * 1000),
                            "replacement_seen": new, "before": before, "after": after})
            time.sleep(max(0.0, started + warmup + (k + 1) * spacing - time.time()))
        thread.join(duration + 90)
        if "error" in result or "report" not in result:
            raise RuntimeError(f"loadgen failed: {result.get('error', 'no report')}")
        report = result["report"]
        log = lb.log()
        final = details(lb.port)
    events = harness.log_events(log)
    return summarize(kind, kills, smoke, spacing, duration, busy, lb_args, records, report, events,
                     final)


def first_served(report, name, after_t):
    """(start, end) in unix time of the first timeline interval from after_t on in which name
    answered, or None."""
    t0 = report["start_unix_ms"] / 1000
    step = report["timeline"]["interval_ms"] / 1000
    for iv in report["timeline"]["intervals"]:
        lo = t0 + iv["t_s"]
        if lo + step > after_t and iv["replicas"].get(name, 0) > 0:
            return lo, lo + step
    return None


def summarize(kind, kills, smoke, spacing, duration, busy, lb_args, records, report, events, final):
    trans = transitions(events)
    replaced = {}
    for t, _, msg in events:
        m = REPLACED.match(msg)
        if m:
            replaced[m.group(1)] = (t, m.group(2), int(m.group(3)))
    t0 = report["start_unix_ms"] / 1000
    step = report["timeline"]["interval_ms"] / 1000
    out = []
    for i, rec in enumerate(records):
        victim, t_kill = rec["victim"], rec["t_kill"]
        dead = next((t for t in trans
                     if t[1] == victim and t[3] == "dead" and t[0] >= t_kill - 0.01), None)
        _, new, ring_id = replaced[victim]
        healthy = next(t for t in trans if t[1] == new and t[3] == "healthy")
        # ringlb's log stamps are truncated to the millisecond: an event stamped t happened in
        # [t, t + 1 ms), so its midpoint is taken (a detection within the kill's millisecond would
        # otherwise read as -1 ms).
        dead_t = dead[0] + LOG_STAMP_S / 2 if dead else None
        healthy_t = healthy[0] + LOG_STAMP_S / 2
        served = first_served(report, new, t_kill)
        slot = [iv for iv in report["timeline"]["intervals"]
                if t_kill - step <= t0 + iv["t_s"] < t_kill - step + spacing]
        around = [iv["latency_max_us"] / 1000 for iv in report["timeline"]["intervals"]
                  if -step <= t0 + iv["t_s"] - t_kill < 0.5]
        before, after = rec["before"], rec["after"]
        victim_keys = [k for k in before if before[k] == victim]
        moved = [k for k in before if after[k] != before[k]]
        out.append({
            "kill": i + 1,
            "victim": victim,
            "victim_ring_id": rec["victim_ring_id"],
            "victim_healthy_for_s": rec["victim_healthy_for_s"],
            "replacement": new,
            "replacement_ring_id": ring_id,
            "kill_unix_s": round(t_kill, 3),
            "kill_call_ms": rec["kill_call_ms"],
            "detection_ms": round((dead_t - t_kill) * 1000) if dead else None,
            "detection_cause": dead[4] if dead else None,
            "healthy_ms": round((healthy_t - t_kill) * 1000),
            "first_served_ms": round((served[1] - t_kill) * 1000) if served else None,
            "first_served_interval_ms": [round((max(served[0], healthy_t) - t_kill) * 1000),
                                         round((served[1] - t_kill) * 1000)] if served else None,
            "slot_s": [round(t0 + slot[0]["t_s"] - t_kill, 3),
                       round(t0 + slot[-1]["t_s"] + step - t_kill, 3)],
            "latency_max_ms": round(max(around, default=0), 1),
            "ok": sum(iv["ok"] for iv in slot),
            "failed": sum(iv["failed"] for iv in slot),
            "keys": {
                "checked": len(before),
                "victim_keys": len(victim_keys),
                "moved": len(moved),
                "victim_keys_to_replacement": sum(1 for k in victim_keys if after[k] == new),
                "moved_elsewhere": sum(1 for k in moved
                                       if not (before[k] == victim and after[k] == new)),
            },
        })
        if new != rec["replacement_seen"]:
            raise RuntimeError(f"log says {victim} was replaced by {new}, "
                               f"/rep showed {rec['replacement_seen']}")

    def stats(field):
        values = [k[field] for k in out if k[field] is not None]
        if not values:
            return None
        return {"median": statistics.median(values), "max": max(values), "min": min(values)}
    # Whether a kill shows in the latency: the slowest request started within 0.5 s of each kill
    # (from the interval holding the kill on: latency_max_ms per kill), against all other intervals.
    elsewhere = [iv["latency_max_us"] / 1000 for iv in report["timeline"]["intervals"]
                 if not any(-step <= t0 + iv["t_s"] - k["kill_unix_s"] < 0.5 for k in out)]
    served = stats("first_served_ms")
    target_ms = TARGET_SERVING_S[kind] * 1000
    summary = {
        "kills": len(out),
        "kill_call_ms": stats("kill_call_ms"),
        "detection_ms": stats("detection_ms"),
        "healthy_ms": stats("healthy_ms"),
        "first_served_ms": served,
        "failed_in_kill_slots": sum(k["failed"] for k in out),
        "failed_in_run": report["totals"]["failed"],
        "keys_moved_elsewhere": sum(k["keys"]["moved_elsewhere"] for k in out),
        "latency_max_ms_after_kill": stats("latency_max_ms"),
        "latency_max_ms_elsewhere": round(max(elsewhere, default=0), 1),
        "victim_keys_not_on_replacement": sum(
            k["keys"]["victim_keys"] - k["keys"]["victim_keys_to_replacement"] for k in out),
    }
    ordered = sorted((k for k in out if k["first_served_ms"] is not None),
                     key=lambda k: k["first_served_ms"])
    representative = ordered[(len(ordered) - 1) // 2]["kill"] if ordered else 1
    return {
        "experiment": "A-3: a replica dies under load",
        "provisioner": kind,
        "command": benchlib.command_line(),
        "commit": git_commit(),
        "machine": dict(benchlib.machine(), os=benchlib.os_name(), busy_before=busy,
                        docker_engine=docker_version() if kind == "docker" else None),
        "setup": {"replicas": 3, "rate_per_s": RATE, "connections": CONNECTIONS, "keys": KEYS,
                  "interval_ms": INTERVAL_MS, "seconds_between_kills": spacing,
                  "load_seconds": duration,
                  "smoke": smoke, "lb_args": lb_args,
                  "lb_defaults": "--hb-interval 500 --hb-timeout 1000 --fall 2 --rise 1 "
                                 "--strikes 3"},
        "targets": {"failed_requests": 0, "first_served_ms_max": target_ms,
                    "met": summary["failed_in_run"] == 0 and served is not None
                    and served["max"] <= target_ms and summary["keys_moved_elsewhere"] == 0},
        "summary": summary,
        "representative_kill": representative,
        "kills": out,
        "final_replicas": {n: {"state": d["state"], "ring_id": d["ring_id"]}
                           for n, d in final.items()},
        "loadgen": report,
    }


def git_commit():
    """The source tree's commit, "-dirty" when it has changes, or None outside a git checkout."""
    root = os.path.dirname(benchlib.BENCH)
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        # Results of an earlier provisioner of the same run do not make the source dirty.
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":!bench/results", ":!bench/RESULTS.md"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def load_docs():
    """The a3-process.json and a3-docker.json that exist in the results folder, in that order."""
    docs = []
    for kind in ("process", "docker"):
        path = benchlib.results_path(f"a3-{kind}.json")
        if os.path.exists(path):
            with open(path) as f:
                docs.append(json.load(f))
    return docs


def chart(docs, png):
    """a3.png: one panel per provisioner around its representative kill."""
    tmp = tempfile.TemporaryDirectory(prefix="ringlb-a3-")
    script = [f"set multiplot layout {len(docs)},1 title 'A-3: a replica killed under 1000 "
              "requests/s (3 replicas, random X-Request-Id)' font ',13'"]
    for n, doc in enumerate(docs):
        k = doc["kills"][doc["representative_kill"] - 1]
        rep = doc["loadgen"]
        t0 = rep["start_unix_ms"] / 1000
        data = os.path.join(tmp.name, f"{n}.dat")
        with open(data, "w") as f:
            f.write("# interval start relative to the kill (s), ok, failed, ok by the victim, "
                    "ok by the replacement\n")
            for iv in rep["timeline"]["intervals"]:
                rel = t0 + iv["t_s"] - k["kill_unix_s"]
                if -1.1 <= rel <= 3.1:
                    by = iv["replicas"]
                    f.write(f"{rel:.3f} {iv['ok']} {iv['failed']} {by.get(k['victim'], 0)} "
                            f"{by.get(k['replacement'], 0)}\n")
        marks = [("kill", 0, "#000000"), ("detected", k["detection_ms"], "#cc0000"),
                 ("replacement healthy", k["healthy_ms"], "#0060c0"),
                 ("first served ≤", k["first_served_ms"], "#008000")]
        script.append("unset arrow; unset label")
        for j, (what, ms, color) in enumerate(marks):
            if ms is None:
                continue
            x = ms / 1000
            script.append(f"set arrow from {x},graph 0 to {x},graph 1 nohead lw 1.5 dt 2 "
                          f"lc rgb '{color}'")
            script.append(f"set label '{what} {ms} ms' at {x},graph {0.95 - 0.07 * j} offset 0.5,0 "
                          f"tc rgb '{color}' font ',9'")
        title = (f"{doc['provisioner']} provisioner: kill {k['kill']} of {len(doc['kills'])} "
                 f"({k['victim']} -> {k['replacement']}), {k['failed']} failed requests")
        script += [
            f"set title \"{title}\"",
            "set xlabel 'time since the kill (s)'",
            "set ylabel 'requests per 100 ms'",
            "set xrange [-1:3]",
            "set yrange [0:*]",
            "set offsets 0, 0, graph 0.45, 0",
            "set key right center opaque box",
            "set grid ytics",
            f"plot '{data}' using 1:2 with steps lw 2 lc rgb '#404040' title 'ok, all replicas', "
            f"'' using 1:3 with steps lw 2 lc rgb '#cc0000' title 'failed', "
            f"'' using 1:4 with steps lw 2 lc rgb '#e08000' title 'ok, by the victim', "
            f"'' using 1:5 with steps lw 2 lc rgb '#008000' title 'ok, by the replacement'",
        ]
    script.append("unset multiplot")
    benchlib.gnuplot("\n".join(script) + "\n", png, width=1000, height=420 * len(docs))
    tmp.cleanup()
    return png


def print_summary(doc):
    s = doc["summary"]
    def fmt(st):
        return "-" if st is None else f"median {st['median']:.0f} ms, max {st['max']:.0f} ms"
    print(f"{doc['provisioner']}: {s['kills']} kills; detection {fmt(s['detection_ms'])}; "
          f"replacement healthy {fmt(s['healthy_ms'])}; "
          f"first served by {fmt(s['first_served_ms'])}; "
          f"failed requests {s['failed_in_run']} in the run; keys moved elsewhere "
          f"{s['keys_moved_elsewhere']}; slowest request within 0.5 s of a kill "
          f"{fmt(s['latency_max_ms_after_kill'])}, {s['latency_max_ms_elsewhere']} ms elsewhere; "
          f"targets {'met' if doc['targets']['met'] else 'MISSED'}")


def fill(text, width=100):
    return textwrap.fill(text, width=width, break_on_hyphens=False)


def results_section(docs):
    """The "A-3" section of RESULTS.md, from the result documents of the provisioners run."""
    def ms(doc, field, which):
        st = doc["summary"][field]
        digits = 1 if field.startswith("latency") else 0
        return "-" if st is None else f"{st[which]:.{digits}f} ms"

    def pct(x):
        return f"{100 * x:.0f}%"
    first = docs[0]
    m = first["machine"]
    busy = ", ".join(f"{pct(d['machine']['busy_before'])} ({d['provisioner']} run)" for d in docs)
    quiet = all(d["machine"]["busy_before"] < 0.1 for d in docs)
    engines = [d["machine"].get("docker_engine") for d in docs if d["provisioner"] == "docker"]
    kinds = " and ".join(d["provisioner"] for d in docs)
    n_kills = "/".join(str(d["summary"]["kills"]) for d in docs)
    n_kills += " kill" if n_kills == "1" else " kills"
    lines = [
        "## A-3: a replica dies under load",
        "",
        fill(f"Date: {m['date']}. Machine: {m.get('os', 'Linux')}, {m['cpus']} vCPU, "
             f"\"{m['cpu_model']}\", kernel {m['kernel']}"
             + (f"; Docker Engine {engines[0]}, image `{IMAGE}`" if engines and engines[0] else "")
             + f"; release build at commit {first.get('commit') or 'unknown'}. "
             + (f"The machine was quiet: CPU busy in the second before each run {busy}."
                if quiet else
                f"The machine was not always quiet: CPU busy in the second before each run "
                f"{busy}, other processes' work, which shows in the slowest requests more than in "
                "the healing times.")),
        "",
        "Command, from the repository root:",
        "",
        "```",
        first["command"],
        "```",
        "",
        fill(f"Setup: ringlb with its defaults ({first['setup']['lb_defaults']}, ketama ring) and "
             f"three replicas: local processes, or containers on the host network with a pool "
             f"label unique to the run. ringlb-loadgen sends {first['setup']['rate_per_s']} "
             f"requests/s on {first['setup']['connections']} keep-alive connections with a random "
             f"X-Request-Id each, with a timeline per {first['setup']['interval_ms']} ms that "
             f"counts the answers of each replica. One replica is killed every "
             f"{first['setup']['seconds_between_kills']:g} s: SIGKILL of the pid /rep?verbose=1 "
             "lists, or `docker kill` of the container; the victim is the replica healthy longest. "
             "Times are from the kill (the SIGKILL, or the start of the `docker kill` call): "
             "detection and replacement healthy from ringlb's transition lines, first served from "
             "the timeline (the end of the first interval in which the replacement answered: an "
             "upper bound). Keys: "
             f"{first['setup']['keys']} fixed request ids mapped to replicas right before each "
             "kill and again once the replacement is healthy."),
        "",
        "| per kill (" + n_kills + ") | " +
        " | ".join(f"{d['provisioner']}: median | {d['provisioner']}: max" for d in docs) + " |",
        "|---|" + "---|---|" * len(docs),
    ]
    rows = [("kill → detection", "detection_ms"), ("kill → replacement healthy", "healthy_ms"),
            ("kill → first request served by the replacement (≤)", "first_served_ms"),
            ("slowest request started within 0.5 s of the kill", "latency_max_ms_after_kill")]
    for label, field in rows:
        lines.append(f"| {label} | " + " | ".join(f"{ms(d, field, 'median')} | "
                                                  f"{ms(d, field, 'max')}" for d in docs) + " |")
    def per_kill(d, get):
        values = [get(k) for k in d["kills"]]
        return f"{statistics.median(values):g} | {max(values):g}"
    lines.append("| failed requests in the kill's slot of the timeline | " + " | ".join(
        per_kill(d, lambda k: k["failed"]) for d in docs) + " |")
    lines.append(f"| keys (of {first['setup']['keys']}) moved to a replica other than the "
                 "replacement | " + " | ".join(
                     per_kill(d, lambda k: k["keys"]["moved_elsewhere"]) for d in docs) + " |")
    lines.append("")
    for d in docs:
        causes = {}
        for k in d["kills"]:
            cause = k["detection_cause"] or "none"
            key = ("a Docker die event" if cause.startswith("exited: container") else
                   "the exit callback" if cause.startswith("exited") else
                   "failed proxied requests (strikes)" if "requests failed" in cause else cause)
            causes[key] = causes.get(key, 0) + 1
        how = ", ".join(f"{what} {'once' if n == 1 else f'{n} times'}"
                        for what, n in causes.items())
        calls = d["summary"].get("kill_call_ms")
        extra = ""
        if d["provisioner"] == "docker" and calls:
            extra = (f" The `docker kill` call itself took {calls['min']:.0f}-{calls['max']:.0f} "
                     "ms to return; the container died during it.")
        victims = sum(k["keys"]["victim_keys"] for k in d["kills"])
        back = sum(k["keys"]["victim_keys_to_replacement"] for k in d["kills"])
        total = d["loadgen"]["totals"]
        gaps = [k["healthy_ms"] - k["detection_ms"] for k in d["kills"]
                if k["detection_ms"] is not None]
        start = (f" Each replacement was healthy {min(gaps)}-{max(gaps)} ms after the detection."
                 if gaps else "")
        lines.append(fill(
            f"- {d['provisioner']}: {total['failed']} of {total['started']:,} requests failed in "
            f"the whole run. Detected by {how}.{extra}{start} Of the {victims} keys the victims "
            f"held ({d['setup']['keys']} keys checked at each kill), {back} went to their "
            f"replacements; other keys moved: {d['summary']['keys_moved_elsewhere']}. The slowest "
            "request away from the "
            f"kills took {d['summary']['latency_max_ms_elsewhere']:.0f} ms.",
            width=98).replace("\n", "\n  "))
    lines.append("")
    verdicts = []
    for d in docs:
        served = d["summary"]["first_served_ms"]
        target = d["targets"]["first_served_ms_max"]
        ok = served is not None and served["max"] <= target
        verdicts.append(f"replacement serving ≤ {target / 1000:g} s after the kill "
                        f"({d['provisioner']}), **{'met' if ok else 'missed'}** (at most "
                        f"{ms(d, 'first_served_ms', 'max')})")
    failed = sum(d["summary"]["failed_in_run"] for d in docs)
    lines += [
        fill(f"Targets: zero failed requests, **{'met' if failed == 0 else 'missed'}** ({failed} "
             f"failed in {kinds}); " + "; ".join(verdicts) + ". For comparison, the assignment's "
             "implementations poll every 5 s with a ~2 s timeout: they notice a dead replica 2.5 s "
             "after its death on average and up to 5 s (7 s for one that hangs), and requests "
             "routed to it meanwhile typically fail."),
        "",
        "![A-3](results/a3.png)",
        "",
        fill("`a3.png`: ok and failed requests per 100 ms around the median kill of each "
             "provisioner, with the requests answered by the victim and by its replacement, and "
             "the kill, detection, replacement healthy and first served marked. Data: "
             + ", ".join(f"[a3-{d['provisioner']}.json](results/a3-{d['provisioner']}.json)"
                         for d in docs)
             + " (every kill, and the load generator's full report with its timeline)."),
    ]
    return "\n".join(lines) + "\n"


def main():
    args = benchlib.experiment_args(
        __doc__.splitlines()[0],
        **{"--provisioner": {"choices": ["process", "docker", "both"], "default": "both",
                             "help": "which provisioners to measure (default both)"},
           "--kills": {"type": int, "default": 5, "help": "kills per provisioner (default 5)"}})
    kills = 1 if args.smoke else args.kills
    if not 1 <= kills <= 50:
        sys.exit("a3: --kills must be from 1 to 50")
    kinds = ["process", "docker"] if args.provisioner == "both" else [args.provisioner]
    if args.provisioner == "both" and docker_version() is None:
        print("a3: no Docker engine answers: the docker provisioner is left out", file=sys.stderr)
        kinds = ["process"]
    for kind in kinds:
        doc = measure(kind, kills, args.smoke)
        path = benchlib.write_json(f"a3-{kind}.json", doc)
        print_summary(doc)
        print(f"  {path}")
    docs = load_docs()
    print(f"  {benchlib.update_results_section('A-3', results_section(docs))}")
    if shutil.which("gnuplot") is None:
        print("a3: gnuplot is missing (deps/install.sh bench): no chart", file=sys.stderr)
        return
    print(f"  {chart(docs, benchlib.results_path('a3.png'))}")


if __name__ == "__main__":
    main()
