"""Shared helpers for ringlb's experiment scripts (bench/a*_*.py; standard library only).

It reuses the integration tests' process harness (test/integration/harness.py) rather than keeping a
second one: Procs is the cleanup registry harness.start expects from a test, and kills everything it
started when the experiment ends, whatever happens.

- Procs: `with Procs() as procs:` ... `procs.start_lb("--ring", "slots")` starts build/lb/ringlb on a
  free 127.0.0.1 port and waits, bounded, until /rep lists the replicas, /home answers and every
  replica is healthy (wait_all_healthy).
- loadgen(port, ...): runs build/bench/loadgen/ringlb-loadgen against 127.0.0.1 and returns its JSON.
- admin(port, method, path, body): one admin request, the parsed JSON answer.
- gnuplot(script, png): renders a chart with gnuplot's pngcairo terminal.
- results_path(name), write_json(name, data), machine(), machine_busy(): where results go, how they
  are labelled, whether the machine was quiet.
- For the analysis experiments (A-1, A-2, A-4): experiment_args (--smoke, --out, --build),
  replica_counts (loadgen's per-replica counts, checked to add up), key_owners (which replica
  answers each of a fixed set of keys, through the LB), moved_fraction, rep_details, command_line,
  os_name, and update_results_section (a section of bench/RESULTS.md, or of RESULTS.md in --out).

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
import textwrap
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "test", "integration"))
import harness  # noqa: E402  (the path above makes it importable)
from harness import HOST  # noqa: E402,F401

RESULTS = os.path.join(BENCH, "results")


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
        harness.wait_lb_ready(lb, replicas, ready_timeout)
        wait_all_healthy(lb.port, replicas, ready_timeout)
        return lb


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


# Helpers of the analysis experiments (bench/a1_balance.py, a2_scale.py, a4_hashes.py): where their
# outputs go, the requests they send and how bench/RESULTS.md gets their sections.

DEFAULT_RESULTS = RESULTS


def set_results_dir(path):
    """Sends later results_path/write_json output to path instead of bench/results/ (smoke runs)."""
    global RESULTS
    RESULTS = os.path.abspath(path)


def set_build_dir(path):
    """Takes ringlb, the replica and the load generator from the build folder path."""
    harness.BUILD = os.path.abspath(path)


def experiment_args(description, argv=None, **extra):
    """Parses the options every analysis experiment takes and applies --out and --build:
      --smoke      a fast run (few requests, N up to 3) for the test suite;
      --out DIR    write the JSON, the PNG and the RESULTS.md section into DIR instead of
                   bench/results/ and bench/RESULTS.md;
      --build DIR  the build folder (default: RINGLB_BUILD, else build/).
    extra maps further option names to argparse keyword dicts. Returns the parsed namespace."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a fast run for the test suite")
    parser.add_argument("--out", metavar="DIR", help="results folder (default bench/results)")
    parser.add_argument("--build", metavar="DIR",
                        help="build folder (default RINGLB_BUILD or build/)")
    for name, kwargs in extra.items():
        parser.add_argument(name, **kwargs)
    args = parser.parse_args(argv)
    # SIGTERM (a timeout, an impatient caller) ends the run through the with-blocks' cleanup, so
    # the LBs and replicas it started are stopped too.
    import signal
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        set_results_dir(args.out)
    if args.build:
        set_build_dir(args.build)
    return args


def command_line():
    """The command that is running, as a person would type it from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(BENCH))
    return " ".join(["python3", script, *sys.argv[1:]])


def replica_counts(port, requests, seed, connections=64, time_limit=120):
    """Sends requests GET /home through 127.0.0.1:port with loadgen (keep-alive, a random 6-digit
    X-Request-Id from seed on each) and returns loadgen's report. Raises unless every request was
    answered 200 by a replica that named itself, so the per-replica counts sum to requests."""
    report = loadgen(port, "-n", requests, "-c", connections, "--rid", "--seed", seed,
                     "-T", time_limit, timeout=time_limit + 30)
    counts = report["replicas"]
    if (report["totals"]["ok"] != requests or report["unattributed"]
            or sum(counts.values()) != requests):
        raise RuntimeError(f"loadgen: {report['totals']}, {report['unattributed']} unattributed, "
                           f"per replica {counts}: not every request was answered by a replica")
    return report


def rep_details(port):
    """The LB's replicas from GET /rep?verbose=1: a list of {name, ring_id, state, ...}."""
    status, body = admin(port, "GET", "/rep?verbose=1")
    if status != 200:
        raise RuntimeError(f"/rep?verbose=1 answered {status}: {body}")
    return body["message"]["details"]


def wait_all_healthy(port, n, timeout=30.0):
    """Waits, bounded, until /rep?verbose=1 lists exactly n replicas and every one is healthy.
    wait_lb_ready alone is not enough before a measurement: /rep lists a replica and /home answers
    as soon as one replica passed a heartbeat, and until the others have, their keys go to the next
    healthy replica clockwise (as they should), so a key map or a count taken then differs from one
    taken a moment later (the a4_smoke flake: shares of fresh LBs that did not add up to 1)."""
    def ready():
        details = rep_details(port)
        return len(details) == n and all(d["state"] == "healthy" for d in details)
    harness.wait_until(ready, timeout, f"all {n} replicas to be healthy", 0.01)


def key_owners(port, keys, connections=4, depth=50, timeout=10.0):
    """Which replica answers each key: GET /home with X-Request-Id: key through 127.0.0.1:port,
    reading the replica's name from "Hello from Server: NAME". Requests go over `connections`
    keep-alive connections in pipelined batches of `depth`; every read gives up after timeout s.
    Returns a dict key -> replica name; raises if any answer is not a replica's 200."""
    import threading
    keys = [str(k) for k in keys]
    owners, errors = {}, []
    prefix = "Hello from Server: "

    def work(part):
        try:
            with harness.Connection(port, timeout=timeout) as conn:
                for b in range(0, len(part), depth):
                    batch = part[b:b + depth]
                    conn.send(b"".join(
                        f"GET /home HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Request-Id: {k}\r\n\r\n"
                        .encode() for k in batch))
                    for k in batch:
                        resp = conn.read_response()
                        message = resp.json()["message"] if resp.status == 200 else ""
                        if not message.startswith(prefix):
                            raise RuntimeError(f"key {k}: {resp.status} {resp.body[:200]!r}")
                        owners[k] = message[len(prefix):]
        except Exception as e:  # reported by the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(keys[c::connections],))
               for c in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"key_owners: {errors[0]}")
    return owners


def moved_fraction(before, after):
    """The fraction of the keys of before (key -> replica) whose replica differs in after."""
    return sum(1 for k, r in before.items() if after[k] != r) / len(before)


def results_md_path():
    """bench/RESULTS.md, or RESULTS.md in the --out folder when results go elsewhere."""
    if os.path.abspath(RESULTS) == os.path.abspath(DEFAULT_RESULTS):
        return os.path.join(BENCH, "RESULTS.md")
    return os.path.join(RESULTS, "RESULTS.md")


def update_results_section(heading, text):
    """Replaces the section of results_md_path() whose heading line starts with "## " + heading (up
    to the next "## " heading) by text, which must start with that heading; appends it when there
    is none. Returns the path."""
    assert text.startswith("## " + heading), "the section text must start with its heading"
    path = results_md_path()
    lines = []
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        lines = f.read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## " + heading)), None)
    new = text.rstrip("\n").splitlines()
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ([""] if lines else []) + new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        lines[start:end] = new + ([""] if end < len(lines) else [])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def os_name():
    """The distribution's name from /etc/os-release ("Debian GNU/Linux 12 (bookworm)")."""
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def fill(text, width=105):
    """text wrapped for bench/RESULTS.md."""
    return textwrap.fill(text, width=width, break_on_hyphens=False)


def section_head(heading, data, depends_on):
    """The first lines of an experiment's RESULTS.md section: heading, date and machine (with the
    load average at the start, and what the figures depend on instead of timing), and the command
    that produced data."""
    m = data["machine"]
    return [
        f"## {heading}",
        "",
        fill(f"Date: {m['date']}. Machine: {os_name()}, {m['cpus']} vCPU, \"{m['cpu_model']}\", "
             f"kernel {m['kernel']}; load average {data['loadavg'][0]:.1f} at the start (other "
             f"sessions were building and testing; {depends_on})."),
        "",
        "Command, from the repository root, release build:",
        "",
        "```",
        data["command"],
        "```",
        "",
    ]
