"""Shared helpers for ringlb's experiment scripts (bench/a*_*.py; standard library only).

It reuses the integration tests' process harness (test/integration/harness.py) rather than keeping a
second one: Procs is the cleanup registry harness.start expects from a test, and kills everything it
started when the experiment ends, whatever happens.

- Procs: `with Procs() as procs:` ... `procs.start_lb("--ring", "slots")` starts build/lb/ringlb on a
  free 127.0.0.1 port and waits, bounded, until /rep lists the replicas and /home answers.
- loadgen(port, ...): runs build/bench/loadgen/ringlb-loadgen against 127.0.0.1 and returns its JSON.
- admin(port, method, path, body): one admin request, the parsed JSON answer.
- gnuplot(script, png): renders a chart with gnuplot's pngcairo terminal.
- results_path(name), write_json(name, data), machine(), machine_busy(): where results go
  (bench/results, or $RINGLB_RESULTS), how they are labelled, whether the machine was quiet.

Every wait is bounded; traffic goes only to 127.0.0.1.
"""
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "test", "integration"))
import harness  # noqa: E402  (the path above makes it importable)
from harness import HOST  # noqa: E402,F401

# Where results go: bench/results, or RINGLB_RESULTS (smoke runs in tests write to the build tree).
RESULTS = os.environ.get("RINGLB_RESULTS") or os.path.join(BENCH, "results")


def build_dir():
    """The build folder: RINGLB_BUILD, else build/ next to bench/."""
    return harness.BUILD


def binary(*parts):
    path = harness.build_path(*parts)
    if not os.access(path, os.X_OK):
        sys.exit(f"{path} is missing: build first (make build)")
    return path


class Procs(contextlib.ExitStack):
    """Processes started for one experiment; all are killed when the with-block ends."""

    def addCleanup(self, fn, *args, **kwargs):  # the interface harness.start uses
        self.callback(fn, *args, **kwargs)

    def start(self, argv, **kwargs):
        return harness.start(self, argv, **kwargs)

    def start_lb(self, *args, replicas=3, ready_timeout=30.0):
        """ringlb with the process provisioner (unless args name another) on a free port."""
        argv = [binary("lb", "ringlb"), "--listen", f"{HOST}:{{port}}", "--log-level", "warn", *args]
        if "--provisioner" not in args and "--replicas" not in args:
            argv += ["--replicas", str(replicas)]
        lb = harness.start(self, argv, ready_timeout=10.0)
        wait_ready(lb, replicas, ready_timeout)
        return lb


def wait_ready(lb, n, timeout=30.0):
    """Waits until lb's /rep lists n replicas and /home answers 200."""
    def ready():
        if not lb.running():
            raise AssertionError(f"ringlb exited with {lb.proc.returncode}: {lb.log()}")
        try:
            rep = harness.request(lb.port, "GET", "/rep")
            if rep.status != 200 or rep.json()["message"]["N"] != n:
                return False
            return harness.request(lb.port, "GET", "/home").status == 200
        except (OSError, AssertionError, ValueError):
            return False
    harness.wait_until(ready, timeout, f"ringlb to list {n} replicas and serve /home", 0.05)


def admin(port, method, path, body=None):
    """One admin request to 127.0.0.1:port; returns (status, parsed JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else None
    resp = harness.request(port, method, path, headers=headers, body=data)
    return resp.status, resp.json()


def loadgen(port, *args, path="/home", timeout=300):
    """Runs ringlb-loadgen against 127.0.0.1:port with args (e.g. "-n", "10000", "--rid") and
    returns its JSON report. A run that cannot send at all raises with loadgen's stderr."""
    with tempfile.NamedTemporaryFile(prefix="ringlb-loadgen-", suffix=".json") as out:
        argv = [binary("bench", "loadgen", "ringlb-loadgen"), "-q", *map(str, args), "-j", out.name,
                f"http://{HOST}:{port}{path}"]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited with {run.returncode}: {run.stderr}")
        with open(out.name) as f:
            return json.load(f)


def results_path(name):
    os.makedirs(RESULTS, exist_ok=True)
    return os.path.join(RESULTS, name)


def write_json(name, data):
    """Writes data as bench/results/<name> (indented, keys in insertion order); returns the path."""
    path = results_path(name)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    return path


def gnuplot(script, png, width=900, height=520):
    """Renders script (gnuplot commands, without terminal/output) to png with pngcairo."""
    head = (f"set terminal pngcairo size {width},{height} enhanced font 'DejaVu Sans,11'\n"
            f"set output '{png}'\n")
    run = subprocess.run(["gnuplot"], input=head + script, capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise RuntimeError(f"gnuplot failed for {png}: {run.stderr}")
    return png


def machine_busy(seconds=1.0):
    """The fraction of all CPUs' time spent busy (not idle or iowait) over the next seconds, from
    /proc/stat: whether the machine is quiet before a measurement (BENCHMARKING.md)."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return round(1 - (idle1 - idle0) / max(1, total1 - total0), 3)


def machine():
    """Date and machine facts that label every result."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
    }
