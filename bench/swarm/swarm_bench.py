#!/usr/bin/env python3
"""Swarm provisioner beside the docker provisioner (issue 13): growing the pool, and a replica killed
under load.

Two ringlb daemons run side by side on one engine (a one-node swarm, made with POST /swarm/init on
127.0.0.1 when the engine is in none, and left in place), each on its own pool label, host
networking, replica ports in separate ranges:
  docker  --provisioner docker (containers; the LB heals: a replacement under the same ring id)
  swarm   --provisioner swarm  (one-task services; the engine heals: the same service's task restarts)

1. /add of n = 1, 5, 20 (interleaved: for each round, for each n, docker then swarm): from sending
   POST /add {"n": n} to its answer, which comes once every new replica runs and answered a
   heartbeat; then /rm of them and a bounded wait until the engine lists none of the pool.
2. A replica killed under 1000 requests/s (ringlb-loadgen -r 1000 -c 10 --rid, bounded in time):
   every few seconds the task container (swarm) or the container (docker) of one replica gets
   SIGKILL through the Engine API. Per kill:
   - route around: from the kill to the LB's "VICTIM: healthy -> dead" line (from then on no new
     request goes to it; before it, a failed connect is retried on the next replica clockwise);
   - engine restart (swarm): from the kill to the engine's container start event of the service's
     new task;
   - keys back: swarm: from that start event to the LB's "VICTIM: dead -> healthy" line (the target:
     <= 2 s); docker: from the kill to the replacement's "starting -> healthy" line;
   - keys moved: 300 fixed keys routed before the kill and once the keys are back: how many do not
     go to the same replica (docker: the replacement counts as the same);
   - failed requests: loadgen's failed + errors over the whole run.

Prints one line per measurement, writes bench/results/swarm.json and prints the RESULTS.md table.
Every wait is bounded; traffic only to 127.0.0.1; whatever happens, both LBs are stopped and every
container and service of the two pools is removed by its label.

usage: python3 bench/swarm/swarm_bench.py [--rounds 2] [--sizes 1,5,20] [--kills 3] [--build build]
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import benchlib  # noqa: E402
from benchlib import harness  # noqa: E402
from harness import HOST, docker_engine as engine  # noqa: E402

IMAGE = "ringlb-replica:test"
RUN = f"rlb-bench-swarm-{os.getpid()}"
PORTS = {"docker": "27000-27499", "swarm": "27500-27999"}
TRANSITION = re.compile(r"^replica (\S+): (\w+) -> (\w+) \((.*)\) after (\d+) ms$")
REPLACED = re.compile(r"^replica (\S+): replaced by (\S+) \(ring id (\d+)\)$")


def q(obj):
    return urllib.parse.quote(json.dumps(obj))


def pool_objects(kind, pool):
    if kind == "swarm":
        status, body = engine("GET", f"/services?filters={q({'label': [f'ringlb.pool={pool}']})}")
    else:
        status, body = engine("GET", f"/containers/json?all=1&filters={q({'label': [f'ringlb.pool={pool}']})}")
    if status != 200:
        raise RuntimeError(f"listing the pool: HTTP {status} {body}")
    return body


def remove_pool(kind, pool):
    for o in pool_objects(kind, pool):
        if kind == "swarm":
            engine("DELETE", f"/services/{o['ID']}")
        else:
            engine("DELETE", f"/containers/{o['Id']}?force=1&v=1")


def swarm_ready():
    status, info = engine("GET", "/info")
    if status != 200:
        sys.exit(f"no Docker engine: {info}")
    if info["Swarm"]["LocalNodeState"] != "active":
        status, body = engine("POST", "/swarm/init", {"ListenAddr": "127.0.0.1:2377", "AdvertiseAddr": "127.0.0.1"})
        if status != 200:
            sys.exit(f"swarm init: HTTP {status} {body}")


def running_task_container(service_id):
    status, body = engine("GET", f"/tasks?filters={q({'service': [service_id]})}")
    for t in body if status == 200 else []:
        if t["Status"]["State"] == "running" and t["DesiredState"] == "running":
            return t["ID"], t["Status"]["ContainerStatus"]["ContainerID"]
    return None, None


def admin(port, method, path, body=None, timeout=300):
    """One admin request with room for a large /add (benchlib's waits 5 s): (status, JSON)."""
    with harness.Connection(port, timeout=timeout) as conn:
        resp = conn.request(method, path, body=body)
    return resp.status, resp.json()


def details(port):
    return {d["name"]: d for d in benchlib.rep_details(port)}


def route(port, rids):
    out = {}
    with harness.Connection(port, timeout=10) as conn:
        for rid in rids:
            resp = conn.request("GET", "/home", {"X-Request-Id": str(rid)})
            out[rid] = resp.json()["message"].rsplit(" ", 1)[-1] if resp.status == 200 else None
    return out


def transitions(lb, since):
    out = []
    for t, _, msg in harness.log_events(lb.log()):
        m = TRANSITION.match(msg)
        if m and t >= since - 0.01:
            out.append((t, m.group(1), m.group(2), m.group(3)))
    return out


def start_event(service_id, since):
    """Unix time of the first container start event of the service's tasks after since."""
    f = q({"type": ["container"], "event": ["start"], "label": [f"com.docker.swarm.service.id={service_id}"]})
    status, body = engine("GET", f"/events?since={since:.9f}&until={time.time():.9f}&filters={f}")
    if isinstance(body, dict):
        body = json.dumps(body)
    for line in (body or "").splitlines() if isinstance(body, str) else []:
        e = json.loads(line)
        return e["timeNano"] / 1e9
    return None


def start_lb(procs, kind, pool, replicas):
    argv = [benchlib.binary("lb", "ringlb"), "--provisioner", kind, "--docker-network", "host",
            "--pool", pool, "--replica-image", IMAGE, "--replica-port-range", PORTS[kind],
            "--listen", f"{HOST}:{{port}}", "--replicas", str(replicas), "--log-level", "info",
            "--start-timeout", "120000"]  # 20 services at once take longer than the default 10 s
    lb = procs.start(argv, ready_timeout=15.0)
    procs.callback(remove_pool, kind, pool)
    procs.callback(lambda: lb.running() and lb.stop(signal.SIGTERM, timeout=30))
    harness.wait_until(lambda: len([d for d in details(lb.port).values() if d["state"] == "healthy"]) == replicas,
                       90, f"{kind}: {replicas} healthy replicas", 0.1)
    return lb


def measure_adds(lbs, rounds, sizes):
    out = {k: {n: [] for n in sizes} for k in lbs}
    for r in range(rounds):
        for n in sizes:
            for kind, (lb, pool) in lbs.items():
                t0 = time.monotonic()
                status, body = admin(lb.port, "POST", "/add", {"n": n})
                add_s = time.monotonic() - t0
                if status != 200:
                    raise RuntimeError(f"{kind} /add {n}: {status} {body}")
                names = [d for d in details(lb.port)]
                out[kind][n].append(add_s)
                print(f"round {r + 1} {kind:6} /add {n:2}: {add_s * 1000:7.0f} ms", flush=True)
                status, body = admin(lb.port, "DELETE", "/rm", {"n": n, "hostnames": names})
                if status != 200:
                    raise RuntimeError(f"{kind} /rm: {status} {body}")
                harness.wait_until(lambda: not pool_objects(kind, pool), 120, f"{kind}: the pool emptied", 0.2)
                time.sleep(1.0)  # the engine finishes removing (swarm: task containers)
    return out


def measure_kills(procs, kind, pool, kills, period):
    lb = start_lb(procs, kind, pool, 3)
    rids = list(range(400000, 400300))
    duration = kills * period + 3
    loadgen = subprocess.Popen(
        [benchlib.binary("bench", "loadgen", "ringlb-loadgen"), "-q", "-r", "1000", "-c", "10", "--rid",
         "-d", str(duration), "-T", str(duration + 15), "-i", "100", "-j", f"/tmp/{RUN}-{kind}.json",
         f"http://{HOST}:{lb.port}/home"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    procs.callback(lambda: loadgen.poll() is None and loadgen.kill())
    results = []
    t_start = time.monotonic()
    for k in range(kills):
        time.sleep(max(0, t_start + 1.5 + k * period - time.monotonic()))
        d = details(lb.port)
        names = sorted(n for n, x in d.items() if x["state"] == "healthy")
        victim = names[k % len(names)]
        before = route(lb.port, rids)
        service_id = d[victim]["id"]
        if kind == "swarm":
            _, container = running_task_container(service_id)
        else:
            container = service_id
        kill_at = time.time()
        status, body = engine("POST", f"/containers/{container}/kill?signal=SIGKILL")
        if status != 204:
            raise RuntimeError(f"kill: {status} {body}")
        row = {"victim": victim}

        def back():
            tr = transitions(lb, kill_at)
            dead = [t for t, n, a, b in tr if n == victim and b == "dead"]
            if kind == "swarm":
                up = [t for t, n, a, b in tr if n == victim and a == "dead" and b == "healthy"]
                return (dead[0], up[0]) if dead and up else None
            repl = [m.group(2) for _, _, msg in harness.log_events(lb.log())
                    for m in [REPLACED.match(msg)] if m and m.group(1) == victim]
            up = [t for t, n, a, b in tr if repl and n == repl[-1] and b == "healthy"]
            return (dead[0], up[0], repl[-1]) if dead and up else None
        got = harness.wait_until(back, 30, f"{kind}: {victim} back", 0.05)
        row["route_around_ms"] = round((got[0] - kill_at) * 1000)
        if kind == "swarm":
            started = harness.wait_until(lambda: start_event(service_id, kill_at), 10, "the task's start event", 0.1)
            row["engine_restart_ms"] = round((started - kill_at) * 1000)
            row["keys_back_after_restart_ms"] = round((got[1] - started) * 1000)
            same = victim
        else:
            same = got[2]
        row["keys_back_after_kill_ms"] = round((got[1] - kill_at) * 1000)
        after = route(lb.port, rids)
        row["keys_moved"] = sum(1 for r in rids if after[r] != (same if before[r] == victim else before[r]))
        row["victim_keys"] = sum(1 for r in rids if before[r] == victim)
        print(f"{kind:6} kill {k + 1}: {json.dumps(row)}", flush=True)
        results.append(row)
    _, err = loadgen.communicate(timeout=duration + 30)
    with open(f"/tmp/{RUN}-{kind}.json") as f:
        report = json.load(f)
    os.unlink(f"/tmp/{RUN}-{kind}.json")
    totals = report["totals"]
    print(f"{kind:6} load: {totals}", flush=True)
    lb.stop(signal.SIGTERM, timeout=30)
    return {"kills": results, "totals": totals}


def med(xs):
    return statistics.median(xs) if xs else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="1,5,20")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--build", help="build folder (default RINGLB_BUILD or build/)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    if args.build:
        benchlib.set_build_dir(args.build)
    sizes = [int(x) for x in args.sizes.split(",")]
    swarm_ready()
    busy = benchlib.machine_busy(1.0)
    print(f"machine busy {busy * 100:.0f}% in the second before the run (other helpers share it)", flush=True)
    with benchlib.Procs() as procs:
        lbs = {}
        for kind in ("docker", "swarm"):
            pool = f"{RUN}-{kind}-add"
            lbs[kind] = (start_lb(procs, kind, pool, 0), pool)
        adds = measure_adds(lbs, args.rounds, sizes)
        for kind, (lb, _) in lbs.items():
            lb.stop(signal.SIGTERM, timeout=60)
        kills = {kind: measure_kills(procs, kind, f"{RUN}-{kind}-kill", args.kills, 6 if kind == "swarm" else 4)
                 for kind in ("docker", "swarm")}
    doc = {"machine": benchlib.machine(), "busy_before": busy, "command": benchlib.command_line(),
           "adds_s": {k: {str(n): v for n, v in d.items()} for k, d in adds.items()}, "kills": kills}
    path = benchlib.write_json("swarm.json", doc)
    print(f"\nwrote {path}\n")
    print("| /add until healthy (median of rounds, max) | docker | swarm |\n|---|---|---|")
    for n in sizes:
        cell = {k: f"{med(adds[k][n]):.2f} s ({max(adds[k][n]):.2f})" for k in adds}
        print(f"| n = {n} | {cell['docker']} | {cell['swarm']} |")
    print("\n| a replica killed under 1000 req/s (median, max) | docker | swarm |\n|---|---|---|")

    def cell(kind, key):
        xs = [r[key] for r in kills[kind]["kills"] if key in r]
        return f"{med(xs):.0f} ms ({max(xs):.0f})" if xs else "-"
    for key, label in (("route_around_ms", "kill → routed around (LB marks it dead)"),
                       ("engine_restart_ms", "kill → the engine restarted the task"),
                       ("keys_back_after_restart_ms", "task restarted → its keys back"),
                       ("keys_back_after_kill_ms", "kill → its keys back (docker: replacement healthy)")):
        print(f"| {label} | {cell('docker', key)} | {cell('swarm', key)} |")
    for kind in ("docker", "swarm"):
        t = kills[kind]["totals"]
        moved = sum(r["keys_moved"] for r in kills[kind]["kills"])
        print(f"{kind}: {t['failed'] + t['errors']} failed of {t['started']} requests; keys moved {moved}")


if __name__ == "__main__":
    main()
