#!/usr/bin/env python3
"""How long ringlb's docker provisioner takes to grow and shrink the pool (issue #4).

Starts ringlb with --provisioner docker, host networking and no replica (--replicas 0), on a pool
label unique to this run, then for each round and each size n (interleaved: 1 5 20 1 5 20 ...):

  add   POST /add {"n": n}: from sending the request to reading the answer. ringlb answers once
        every new replica's container runs and passed its first heartbeat, so this is "all healthy";
        the script then checks through the Engine API that exactly n containers of the pool run and
        that /rep?verbose lists n healthy replicas (outside the timed window).
  rm    DELETE /rm {"n": n}: the answer (ringlb answers at once, then drains and stops), and "gone":
        from sending the request until the Engine API lists no container of the pool (polled every
        20 ms over the unix socket).

Prints one line per measurement (with the share of the machine's CPU that was busy during it, ours
and the engine's included, and the median create and start call of that /add from ringlb's log, which
include the time a call waits for its turn) and a table of median and max per size, and per container
(median / n). Traffic only to 127.0.0.1; every wait is bounded; whatever happens, ringlb is stopped
with SIGTERM (SIGKILL after 15 s) and every container of the pool is force-removed by its label.

usage: bench/docker_add.py [--build build] [--rounds 5] [--sizes 1,5,20] [--image IMAGE]
       [--port-range 27000-27999] [--threadpool N] [-- extra ringlb flags]
The image defaults to ringlb-replica:test, built from the build's replica with lb/image.sh.
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from harness import HOST, docker_socket, docker_engine as engine  # noqa: E402  (Engine API helpers)


def pool_containers(pool):
    query = urllib.parse.quote(json.dumps({"label": [f"ringlb.pool={pool}"]}))
    status, body = engine("GET", f"/containers/json?all=1&filters={query}")
    if status != 200:
        raise RuntimeError(f"listing containers: HTTP {status} {body}")
    return body


def remove_pool(pool):
    for c in pool_containers(pool):
        engine("DELETE", f"/containers/{c['Id']}?force=1&v=1")


def lb_request(port, method, path, body=None, timeout=60.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_snap():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait


def cpu_busy_since(snap):
    """Share of all CPUs' time that was busy since snap (from /proc/stat)."""
    t1, i1 = cpu_snap()
    return 1.0 - (i1 - snap[1]) / max(t1 - snap[0], 1)


def cpu_busy_fraction(seconds):
    """Share of all CPUs' time that was busy over the next `seconds`."""
    snap = cpu_snap()
    time.sleep(seconds)
    return cpu_busy_since(snap)


UP_LINE = re.compile(r"up as container .* in \d+ ms \(create (\d+), start (\d+), listen (\d+)\)")


def log_phases(log_path, offset):
    """Median create and start times (ms) of the replicas ringlb logged past offset."""
    with open(log_path, errors="replace") as f:
        f.seek(offset)
        found = UP_LINE.findall(f.read())
    if not found:
        return 0, 0
    return (statistics.median(int(c) for c, _, _ in found),
            statistics.median(int(s) for _, s, _ in found))


def wait_until(pred, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def start_lb(args, pool, port, log):
    argv = [os.path.join(args.build, "lb", "ringlb"), "--provisioner", "docker",
            "--docker-network", "host", "--pool", pool, "--replica-image", args.image,
            "--replica-port-range", args.port_range, "--listen", f"{HOST}:{port}",
            "--replicas", "0", "--log-level", "info", *args.extra]
    env = dict(os.environ)
    if args.threadpool:
        env["UV_THREADPOOL_SIZE"] = str(args.threadpool)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    print("$ " + " ".join(argv), flush=True)

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"ringlb exited with {proc.returncode}")
        try:
            return lb_request(port, "GET", "/rep", timeout=2)[0] == 200
        except OSError:
            return False
    wait_until(up, 10, "ringlb to answer /rep")
    return proc


def stop_lb(proc):
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return "killed"


def measure_round(port, pool, n, results, log_path):
    snap = cpu_snap()
    offset = os.path.getsize(log_path)
    t0 = time.monotonic()
    status, body = lb_request(port, "POST", "/add", {"n": n})
    add = time.monotonic() - t0
    if status != 200 or body["message"]["N"] != n:
        raise RuntimeError(f"/add n={n}: HTTP {status} {body}")
    running = [c for c in pool_containers(pool) if c["State"] == "running"]
    _, rep = lb_request(port, "GET", "/rep?verbose=1")
    healthy = [d for d in rep["message"]["details"] if d["state"] == "healthy" and d["counts"]]
    if len(running) != n or len(healthy) != n:
        raise RuntimeError(f"/add n={n}: {len(running)} containers run, {len(healthy)} healthy")

    t0 = time.monotonic()
    status, body = lb_request(port, "DELETE", "/rm", {"n": n})
    rm_answer = time.monotonic() - t0
    if status != 200 or body["message"]["N"] != 0:
        raise RuntimeError(f"/rm n={n}: HTTP {status} {body}")
    wait_until(lambda: not pool_containers(pool), 60, f"the {n} containers to be removed")
    rm_gone = time.monotonic() - t0
    busy = cpu_busy_since(snap)
    create, start = log_phases(log_path, offset)
    results.setdefault(n, []).append((add, rm_answer, rm_gone))
    print(f"n={n:2d}  add {add * 1000:7.0f} ms (create {create:4.0f}, start {start:4.0f})  "
          f"rm answer {rm_answer * 1000:5.1f} ms  rm gone {rm_gone * 1000:7.0f} ms  "
          f"CPU busy {busy * 100:3.0f}%", flush=True)


def report(results):
    def ms(v):
        return f"{v * 1000:.0f} ms"
    print()
    print("| n | rounds | /add median | /add max | /add per container | /rm answer median "
          "| /rm gone median | /rm gone max | /rm gone per container |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sorted(results):
        add = [r[0] for r in results[n]]
        ans = [r[1] for r in results[n]]
        gone = [r[2] for r in results[n]]
        print(f"| {n} | {len(add)} | {ms(statistics.median(add))} | {ms(max(add))} | "
              f"{ms(statistics.median(add) / n)} | {statistics.median(ans) * 1000:.1f} ms | "
              f"{ms(statistics.median(gone))} | {ms(max(gone))} | "
              f"{ms(statistics.median(gone) / n)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default="1,5,20")
    ap.add_argument("--image", default="")
    ap.add_argument("--port-range", default="27000-27999")
    ap.add_argument("--threadpool", type=int, default=0,
                    help="UV_THREADPOOL_SIZE for ringlb (default: ringlb's own)")
    ap.add_argument("extra", nargs="*", help="more ringlb flags (after --)")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    sizes = [int(s) for s in args.sizes.split(",")]

    status, _ = engine("GET", "/_ping", timeout=3)
    if status != 200:
        sys.exit(f"docker_add: the engine at {docker_socket()} answered /_ping with {status}")
    if not args.image:
        args.image = "ringlb-replica:test"
        subprocess.run([os.path.join(ROOT, "lb", "image.sh"), args.build, "replica"], check=True,
                       env=dict(os.environ, RINGLB_REPLICA_TAG=args.image), timeout=120,
                       stdout=subprocess.DEVNULL)
    _, version = engine("GET", "/version")
    print(f"docker {version.get('Version')} (API {version.get('ApiVersion')}), "
          f"{os.cpu_count()} CPUs, image {args.image}")
    print(f"CPU busy before the run (2 s): {cpu_busy_fraction(2) * 100:.0f}%", flush=True)

    pool = f"ringlb-bench-{os.getpid()}-{int(time.time())}"
    port = free_port()
    results = {}
    proc = None
    log_path = f"/tmp/{pool}.log"
    with open(log_path, "w") as log:
        try:
            proc = start_lb(args, pool, port, log)
            for _ in range(args.rounds):
                for n in sizes:
                    log.flush()
                    measure_round(port, pool, n, results, log_path)
        finally:
            code = stop_lb(proc) if proc else None
            left = pool_containers(pool)
            remove_pool(pool)
            print(f"ringlb stopped with {code}; {len(left)} containers of the pool were left "
                  f"(removed); log: {log_path}")
    print(f"CPU busy after the run (2 s): {cpu_busy_fraction(2) * 100:.0f}%")
    report(results)


if __name__ == "__main__":
    main()
