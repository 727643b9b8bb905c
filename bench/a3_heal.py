#!/usr/bin/env python3
"""A-3: a replica dies under load (issues #5 and #6).

ringlb runs three replicas (local processes, or Docker containers on the host network) under steady
load from ringlb-loadgen: 1000 requests/s on 10 keep-alive connections, a random X-Request-Id per
request, a timeline per 100 ms with the answers of each replica. Every few seconds one replica is
killed: SIGKILL of the pid that /rep?verbose=1 lists (process), or `docker kill` of its container
(docker). The victim is the replica that has been healthy longest, so it is a settled one (a replica
that dies within 5 s of becoming healthy is backed off on purpose, see lb/registry.h).

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
the load generator's full report) and a3.png (ok and failed requests per 100 ms around one
representative kill of each provisioner, with the kill, detection, replacement healthy and first
served marked). The chart uses whichever of the two JSON files exist.

usage: bench/a3_heal.py [--provisioner process|docker|both] [--kills K] [--smoke]
--smoke: one kill and 4 s of load, for the test suite (with RINGLB_RESULTS pointing elsewhere).
Traffic goes only to 127.0.0.1; every wait is bounded; docker containers carry a pool label unique
to the run and are removed by it, whatever happens.
"""
import argparse
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
import threading
import time

import benchlib
from benchlib import harness

RATE = 1000
CONNECTIONS = 10
INTERVAL_MS = 100
KEYS = 300
IMAGE = "ringlb-replica:latest"
TARGET_SERVING_S = {"process": 1.0, "docker": 1.5}

TRANSITION = re.compile(r"^replica (\S+): (\w+) -> (\w+) \((.*)\) after (\d+) ms$")
REPLACED = re.compile(r"^replica (\S+): replaced by (\S+) \(ring id (\d+)\)$")


def details(port):
    """/rep?verbose=1's details: {name: detail}."""
    _, doc = benchlib.admin(port, "GET", "/rep?verbose=1")
    return {d["name"]: d for d in doc["message"]["details"]}


def owners(port, keys):
    """{key: the replica whose /home answers GET /home with X-Request-Id key}."""
    out = {}
    with harness.Connection(port) as conn:
        for key in keys:
            resp = conn.request("GET", "/home", {"X-Request-Id": key})
            out[key] = resp.json()["message"].removeprefix("Hello from Server: ") \
                if resp.status == 200 else f"status {resp.status}"
    return out


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
            before = owners(lb.port, keys)
            t_kill = time.time()
            kill(kind, det[victim])
            t_killed = time.time()  # docker kill returns once the engine has killed the container

            def replaced():
                d = details(lb.port)
                new = [n for n, r in d.items() if n not in det and r["state"] == "healthy"]
                return len(d) == 3 and victim not in d and new and new[0]
            new = harness.wait_until(replaced, 30.0, f"a healthy replacement for {victim}", 0.02)
            after = owners(lb.port, keys)
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
            "detection_ms": round((dead[0] - t_kill) * 1000) if dead else None,
            "detection_cause": dead[4] if dead else None,
            "healthy_ms": round((healthy[0] - t_kill) * 1000),
            "first_served_ms": round((served[1] - t_kill) * 1000) if served else None,
            "first_served_interval_ms": [round((max(served[0], healthy[0]) - t_kill) * 1000),
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
        "command": "bench/a3_heal.py " + " ".join(sys.argv[1:]),
        "machine": dict(benchlib.machine(), busy_before=busy),
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


def chart(png):
    """a3.png from the a3-*.json files that exist: one panel per provisioner around its
    representative kill."""
    docs = []
    for kind in ("process", "docker"):
        path = benchlib.results_path(f"a3-{kind}.json")
        if os.path.exists(path):
            with open(path) as f:
                docs.append(json.load(f))
    if not docs:
        return None
    tmp = tempfile.TemporaryDirectory(prefix="ringlb-a3-")
    script = [f"set multiplot layout {len(docs)},1 title 'A-3: a replica killed under 1000 "
              "requests/s (3 replicas, random X-Request-Id)' font ',13'"]
    for n, doc in enumerate(docs):
        k = doc["kills"][doc["representative_kill"] - 1]
        rep = doc["loadgen"]
        t0, step = rep["start_unix_ms"] / 1000, rep["timeline"]["interval_ms"] / 1000
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provisioner", choices=["process", "docker", "both"], default="both")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="one kill and a short load (tests)")
    args = ap.parse_args()
    kills = 1 if args.smoke else args.kills
    if not 1 <= kills <= 50:
        sys.exit("a3: --kills must be from 1 to 50")
    kinds = ["process", "docker"] if args.provisioner == "both" else [args.provisioner]
    for kind in kinds:
        doc = measure(kind, kills, args.smoke)
        path = benchlib.write_json(f"a3-{kind}.json", doc)
        print_summary(doc)
        print(f"  {path}")
    if shutil.which("gnuplot") is None:
        print("a3: gnuplot is missing (deps/install.sh bench): no chart", file=sys.stderr)
        return
    png = chart(benchlib.results_path("a3.png"))
    if png:
        print(f"  {png}")


if __name__ == "__main__":
    main()
