"""engine_testlib: what the Python tests of the docker and swarm suites share (lb_docker_test,
swarm_test, and through lb_docker_test the other docker tests): ringlb started on a pool of a real
Docker engine, and everything a test leaves in the engine removed whatever happens.

- EngineLbTestCase: each test gets a pool name of its own (run id + a sequence number) and its
  provisioner's remove_pool(pool) as a cleanup; start an LB with launch(argv), wait until its
  replicas are healthy (wait_ready), read /rep?verbose (details), route keys (route), and stop it
  with assert_clean_stop (exit 0 on SIGTERM, nothing of the pool left in the engine).
- Sweep: the LBs still running and the pools used by this process; called at exit and on SIGTERM
  (meson's timeout), it kills the LBs and removes the pools.
- main(): exit 77 (skip) when no engine answers, unless RINGLB_REQUIRE_DOCKER=1 (then 1); builds
  ringlb-replica:test from this build's replica; runs unittest with the sweep armed.

Every wait is bounded; nothing here asserts on time.
"""
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import unittest
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import Connection, docker_socket  # noqa: E402
from harness import docker_engine as engine  # noqa: E402
from lb_test import LbTestCase  # noqa: E402

RINGLB = harness.build_path("lb", "ringlb")
# The replica image: RINGLB_TEST_IMAGE when set, else ringlb-replica:test built by build_image().
IMAGE = os.environ.get("RINGLB_TEST_IMAGE") or "ringlb-replica:test"


def served_by(resp):
    """The replica name in a /home answer."""
    prefix = "Hello from Server: "
    msg = resp.json()["message"]
    assert msg.startswith(prefix), resp
    return msg[len(prefix):]


def listed(path, filters):
    """The engine's list at path ("/containers/json?all=1", "/services", "/tasks") filtered by
    filters ({"label": ["k=v"]}); asserts that it answered 200."""
    query = urllib.parse.quote(json.dumps(filters))
    sep = "&" if "?" in path else "?"
    status, body = engine("GET", f"{path}{sep}filters={query}")
    assert status == 200, (status, body)
    return body


def at_once(calls, timeout=120.0):
    """Runs every callable of calls (a dict key -> callable) in a thread of its own, all released
    at the same moment by a barrier; returns {key: result}. A call that raises or does not return
    within timeout leaves its key out."""
    barrier = threading.Barrier(len(calls))
    results = {}

    def run(key, call):
        barrier.wait(timeout=10)
        results[key] = call()
    threads = [threading.Thread(target=run, args=kv) for kv in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def adds_at_once(lbs, body, timeout=90.0):
    """POST /add with body on every LB of lbs (a dict key -> LB) at the same moment; returns
    {key: response} (each client waits up to timeout for its answer)."""
    def add(lb):
        with Connection(lb.port, timeout=timeout) as conn:
            return conn.request("POST", "/add", None, body)
    return at_once({k: (lambda lb=lb: add(lb)) for k, lb in lbs.items()}, timeout + 30)


def engine_answers():
    """(True, "") when the engine answers /_ping, else (False, why)."""
    try:
        status, body = engine("GET", "/_ping", timeout=3.0)
        return status == 200, f"HTTP {status} {body}"
    except OSError as e:
        return False, f"{docker_socket()}: {e}"


def build_image(who="engine_testlib"):
    """ringlb-replica:test from this build's replica by lb/image.sh (a no-op when
    RINGLB_TEST_IMAGE is set; Docker's cache makes a second build a no-op), so no test depends on
    another having run first."""
    if os.environ.get("RINGLB_TEST_IMAGE"):
        return
    out = subprocess.run([harness.source_path("lb", "image.sh"), harness.BUILD, "replica"],
                         env=dict(os.environ, RINGLB_REPLICA_TAG=IMAGE), capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        sys.exit(f"{who}: building {IMAGE} failed:\n{out.stdout}{out.stderr}")


class Sweep:
    """The LBs this process started and the pools its tests used. Calling it kills the LBs still
    running and removes every pool with remove_pool(pool) (OSError ignored: the engine may be
    gone); on_sigterm does that and exits 1."""

    def __init__(self, remove_pool):
        self.remove_pool = remove_pool
        self.lbs = []
        self.pools = []

    def __call__(self):
        for lb in self.lbs:
            if lb.running():
                lb.proc.kill()
        for pool in self.pools:
            try:
                self.remove_pool(pool)
            except OSError:
                pass

    def on_sigterm(self, signum, frame):
        self()
        os._exit(1)


_seq = itertools.count(1)  # pool numbers, unique in this process


class EngineLbTestCase(LbTestCase):
    """A test on a pool of its own: self.pool is "<run>-<n>", removed by sweep.remove_pool in the
    cleanup (after the LBs the test started are stopped: it is registered first). Subclasses set
    run_id, sweep, and leftovers() (what of the pool is still in the engine, for
    assert_clean_stop)."""
    run_id = "ringlb-test"
    sweep = None
    ready_timeout = 20.0  # wait_ready's default
    stop_within = 10.0    # assert_clean_stop's default
    objects = "objects"   # what leftovers() lists, for messages

    def setUp(self):
        self.pool = f"{self.run_id}-{next(_seq)}"
        self.sweep.pools.append(self.pool)
        self.addCleanup(self.sweep.remove_pool, self.pool)
        super().setUp()

    def leftovers(self):
        raise NotImplementedError

    def launch(self, argv, replicas, wait_ready, ready_timeout):
        """Starts ringlb with argv (harness.start: "{port}" in argv is its listen port), counts it
        for the cleanup and the sweep, and with wait_ready waits until it has `replicas` healthy
        replicas."""
        lb = harness.start(self, argv, ready_timeout=ready_timeout)
        self.lbs.append(lb)
        self.sweep.lbs.append(lb)
        if wait_ready:
            self.wait_ready(lb, replicas)
        return lb

    def wait_ready(self, lb, n, timeout=None):
        """Until /rep lists n replicas, all of them healthy."""
        def ready():
            if not lb.running():
                raise AssertionError(f"ringlb exited with {lb.proc.returncode}: {lb.log()}")
            try:
                details = self.details(lb)
            except (OSError, AssertionError, ValueError):
                return False
            counted = [d for d in details if d["counts"]]
            return len(counted) == n and all(d["state"] == "healthy" for d in counted)
        harness.wait_until(ready, timeout or self.ready_timeout,
                           f"ringlb to have {n} healthy replicas", 0.05)

    def details(self, lb):
        resp = harness.request(lb.port, "GET", "/rep?verbose=1")
        self.assertEqual(resp.status, 200, resp)
        return resp.json()["message"]["details"]

    def route(self, lb, rids):
        """{rid: replica name} for GET /home with each X-Request-Id."""
        out = {}
        with Connection(lb.port) as conn:
            for rid in rids:
                resp = conn.request("GET", "/home", {"X-Request-Id": str(rid)})
                self.assertEqual(resp.status, 200, resp)
                out[rid] = served_by(resp)
        return out

    def assert_clean_stop(self, lb, within=None):
        """SIGTERM: exit 0 in time, and nothing of the pool is left in the engine."""
        super().assert_clean_stop(lb, within or self.stop_within)
        left = self.leftovers()
        self.assertEqual(left, [], f"{self.objects} left after SIGTERM; log:\n{lb.log()}")


def main(who, sweep, prepare=None):
    """Runs this module's tests: skip (77) without an engine unless RINGLB_REQUIRE_DOCKER=1 (then
    exit 1); prepare() (e.g. make the engine a swarm), build the image, then unittest.main with the
    sweep on SIGTERM and at the end."""
    ok, why = engine_answers()
    if not ok:
        print(f"{who}: no Docker engine answers ({why})", file=sys.stderr)
        if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1":
            print(f"{who}: RINGLB_REQUIRE_DOCKER=1, so a missing engine is a failure",
                  file=sys.stderr)
            sys.exit(1)
        sys.exit(77)
    if prepare:
        prepare()
    build_image(who)
    signal.signal(signal.SIGTERM, sweep.on_sigterm)
    try:
        unittest.main()
    finally:
        sweep()
