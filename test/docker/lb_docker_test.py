"""ringlb with the docker provisioner against a real Docker engine (issue #4), as a client and as the
engine see it: every claim about containers is checked through the Engine API itself (http.client
over the unix socket), not only through /rep.

- three labelled containers at start; /add and /rm create and remove containers, including the
  worked examples of ASSIGNMENT.md §2.2-2.3;
- a missing image makes /add answer 5xx quoting Docker and leaves no container behind;
- a name taken by a foreign container makes /add answer 4xx naming it, and that container is left
  alone;
- an LB killed with SIGKILL and started again on the same pool adopts its containers (same ring ids,
  no new container) and routes the same keys to the same replicas;
- a replica container killed with `docker kill` is replaced under the same ring id while a bounded
  request loop runs through the kill without a single failed request.

Every ringlb started here must exit 0 on SIGTERM and leave no container of its pool. Replicas use
host networking on 127.0.0.1; each test has its own pool label (unique per run), and every container
of that pool or carrying this run's foreign label is force-removed in the test's cleanup, whether
the test passed or not (also when meson's timeout sends SIGTERM). Every loop is bounded in count and
time.

Container names are global to the engine and these tests use the assignment's names (server1..3,
S4, S5, S10, S11): each test runs its LBs with --name-prefix "<its pool>." (issue 13), so the
engine's names are unique to the test while /rep shows the plain names, and two runs on one machine
(two worktrees) run at once without a lock. Each run takes its replica ports from a 100-port slice
of 26000-26999 of its own (port_slice: the first slice whose abstract unix socket name it can bind,
held until the process exits), since a port another run's replica is about to bind looks free to
the LB (it skips only ports something listens on already).

Exit 77 (skip) when no engine answers, unless RINGLB_REQUIRE_DOCKER=1, then exit 1. The replica
image: RINGLB_TEST_IMAGE when set, else ringlb-replica:test built from this build's replica by
lb/image.sh (as test_prov_docker does; Docker's cache makes the second build a no-op), so the order
in which the two docker tests run does not matter. What this test shares with swarm_test (the
pool per test, the sweep, waiting and routing, main) is engine_testlib's.
"""
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import engine_testlib  # noqa: E402
import harness  # noqa: E402
from engine_testlib import (IMAGE, RINGLB, EngineLbTestCase, build_image,  # noqa: E402,F401
                            engine_answers, served_by)
from harness import Connection, HOST  # noqa: E402
from harness import docker_engine as engine  # noqa: E402
from lb_test import rep_body  # noqa: E402

RUN = f"ringlb-lbt-{os.getpid()}-{int(time.time())}"
FOREIGN_LABEL = "ringlb-test.foreign"


def port_slice(base, slices=10, width=100):
    """The first of `slices` port ranges [base + i*width, +width) that no other process running
    now has taken: each is claimed by binding the abstract unix socket name
    "ringlb-test-ports-<base>-<i>" (no file, no TCP port), released by the kernel when the process
    exits. Runs side by side get disjoint replica ports; nothing waits."""
    for i in range(slices):
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            claim.bind(f"\0ringlb-test-ports-{base}-{i}")
        except OSError:
            claim.close()
            continue
        _port_claims.append(claim)
        return base + i * width
    sys.exit(f"no free port slice of {base}-{base + slices * width - 1}: {slices} runs at once?")


_port_claims = []
# Replica ports on 127.0.0.1 (test_prov_docker uses 24000-24999): a slice of 26000-26999 per run.
PORT_BASE = port_slice(26000)
PORT_RANGE = f"{PORT_BASE}-{PORT_BASE + 99}"


def containers(label):
    """Every container (all states) carrying label "key=value", as the engine lists them."""
    return engine_testlib.listed("/containers/json?all=1", {"label": [label]})


def remove_labelled(label):
    for c in containers(label):
        engine("DELETE", f"/containers/{c['Id']}?force=1&v=1")


def inspect(ident):
    status, body = engine("GET", f"/containers/{ident}/json")
    return body if status == 200 else None


def admin_request(port, method, path, body=None):
    """An /add or /rm: it answers once its containers are created and started (or stopped), which
    takes seconds on a loaded machine (two runs of the suite at once), so the client waits up to
    60 s instead of harness.request's 5 s."""
    with Connection(port, timeout=60) as conn:
        return conn.request(method, path, None, body)


def remove_pool(pool):
    """Every container of the pool, and the foreign ones its test made."""
    remove_labelled(f"ringlb.pool={pool}")
    remove_labelled(f"{FOREIGN_LABEL}={pool}")


# The LBs still running and the pools used, for the SIGTERM handler and the end (other docker
# tests append to _pools and call _sweep too).
_sweep = engine_testlib.Sweep(remove_pool)
_live_lbs = _sweep.lbs
_pools = _sweep.pools
_on_sigterm = _sweep.on_sigterm


class DockerLbTestCase(EngineLbTestCase):
    # The pool's removal is registered first, so it runs last: after the LBs are killed (they
    # could heal otherwise).
    run_id = RUN
    sweep = _sweep
    objects = "containers"

    def leftovers(self):
        return [(c["Names"], c["State"]) for c in self.pool_containers()]

    @property
    def prefix(self):
        """The test's --name-prefix: the engine's name of replica NAME is prefix + NAME."""
        return f"{self.pool}."

    def ename(self, name):
        return self.prefix + name

    def plain(self, engine_name):
        """The replica name of a container (its engine name without the test's prefix)."""
        engine_name = engine_name.lstrip("/")
        self.assertTrue(engine_name.startswith(self.prefix), engine_name)
        return engine_name[len(self.prefix):]

    def start_lb(self, *args, replicas=3, image=IMAGE, wait_ready=True, port_range=PORT_RANGE):
        argv = [RINGLB, "--provisioner", "docker", "--docker-network", "host",
                "--pool", self.pool, "--name-prefix", self.prefix,
                "--replica-image", image, "--replica-port-range", port_range,
                "--listen", f"{HOST}:{{port}}", "--replicas", str(replicas), "--log-level", "info",
                *args]
        return self.launch(argv, replicas, wait_ready, ready_timeout=10.0)

    def pool_containers(self):
        return containers(f"ringlb.pool={self.pool}")

    def running_by_name(self):
        """{container name: container} of the pool's containers, all of which must be running."""
        out = {}
        for c in self.pool_containers():
            self.assertEqual(c["State"], "running", c)
            out[self.plain(c["Names"][0])] = c
        return out

    def assert_containers_match(self, lb):
        """The pool's containers are exactly the replicas /rep lists, running, labelled with the
        ring id and port that /rep?verbose reports."""
        by_name = self.running_by_name()
        details = {d["name"]: d for d in self.details(lb) if d["counts"]}
        self.assertEqual(sorted(by_name), sorted(self.names(lb)))
        self.assertEqual(sorted(by_name), sorted(details))
        for name, c in by_name.items():
            d = details[name]
            labels = c["Labels"]
            self.assertEqual(labels.get("ringlb.pool"), self.pool, c)
            self.assertEqual(labels.get("ringlb.ring-id"), str(d["ring_id"]), (c, d))
            self.assertEqual(d["address"], f"{HOST}:{labels.get('ringlb.port')}", (c, d))
            self.assertEqual(d["id"], c["Id"], (c, d))
            self.assertEqual(c["HostConfig"]["NetworkMode"], "host", c)
        return by_name

    def wait_containers(self, names, timeout=15.0):
        """Until the pool's containers are exactly names (removal drains first, so it takes a
        moment); returns them by name."""
        want = sorted(names)

        def match():
            got = {self.plain(c["Names"][0]): c for c in self.pool_containers()}
            return got if sorted(got) == want else None
        return harness.wait_until(match, timeout, f"the pool's containers to be {want}", 0.1)

    def pool_events(self, since):
        """(action, container name) of the pool's create and destroy events from since (a
        time.time() value) until now, in order, from the engine's event log."""
        query = urllib.parse.quote(json.dumps({"type": ["container"], "event": ["create", "destroy"],
                                               "label": [f"ringlb.pool={self.pool}"]}))
        status, body = engine("GET", f"/events?since={since:.9f}&until={time.time():.9f}"
                                     f"&filters={query}")
        self.assertEqual(status, 200, body)
        if isinstance(body, dict):  # exactly one event parses as one JSON document
            body = json.dumps(body)
        lines = (body or "").splitlines() if isinstance(body, str) else []
        def replica(e):
            # A container the LB stopped on purpose is renamed NAME.draining-<its short id> first
            # (so other LBs of the pool drain it rather than heal it): its destroy names that.
            name = self.plain(e["Actor"]["Attributes"]["name"])
            mark = ".draining-" + e["Actor"]["ID"][:12]
            return name[:-len(mark)] if name.endswith(mark) else name
        return [(e["Action"], replica(e)) for e in map(json.loads, lines)]

    def wait_rolled_back(self, since, creates, timeout=10.0):
        """Until the engine has created and destroyed `creates` containers of the pool since
        `since`: the replicas of a failed /add that were still being created when it answered."""
        def settled():
            events = self.pool_events(since)
            made = [n for a, n in events if a == "create"]
            gone = [n for a, n in events if a == "destroy"]
            self.assertLessEqual(len(made), creates, events)
            return (events,) if len(made) == creates and sorted(gone) == sorted(made) else None
        return harness.wait_until(settled, timeout, f"{creates} containers created and removed",
                                  0.05)[0]

class Containers(DockerLbTestCase):
    def test_three_labelled_containers_at_start(self):
        lb = self.start_lb()
        self.assertEqual(self.rep(lb).body, rep_body(["server1", "server2", "server3"]))
        by_name = self.assert_containers_match(lb)
        self.assertEqual(sorted(by_name), ["server1", "server2", "server3"])
        self.assertEqual({n: c["Labels"]["ringlb.ring-id"] for n, c in by_name.items()},
                         {"server1": "1", "server2": "2", "server3": "3"})
        ports = {c["Labels"]["ringlb.port"] for c in by_name.values()}
        self.assertEqual(len(ports), 3, by_name)
        for name, c in by_name.items():
            self.assertEqual(c["Image"], IMAGE)
            env = inspect(c["Id"])["Config"]["Env"]
            self.assertIn(f"SERVER_ID={name}", env)
            self.assertIn(f"PORT={c['Labels']['ringlb.port']}", env)
        seen = set(self.route(lb, range(100000, 100060)).values())
        self.assertTrue(seen <= set(by_name), seen)
        self.assertGreaterEqual(len(seen), 2, "60 keys should reach more than one replica")
        self.assert_clean_stop(lb)

    def test_add_and_rm_worked_examples(self):
        lb = self.start_lb()
        before = self.assert_containers_match(lb)

        resp = admin_request(lb.port, "POST", "/add",
                               body={"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]})
        self.assertEqual(resp.status, 200, resp)
        after_add = ["server1", "server2", "server3", "S5", "S4", "S10", "S11"]
        self.assertEqual(resp.body, rep_body(after_add))
        # /add answers once the new replicas passed a heartbeat: their containers run now.
        by_name = self.assert_containers_match(lb)
        self.assertEqual(sorted(by_name), sorted(after_add))
        for name in before:
            self.assertEqual(by_name[name]["Id"], before[name]["Id"], f"{name} was recreated")
        ring_ids = [by_name[n]["Labels"]["ringlb.ring-id"] for n in after_add]
        self.assertEqual(len(set(ring_ids)), 7, ring_ids)
        for name in ("S5", "S4", "S10", "S11"):
            resp = harness.request(int(by_name[name]["Labels"]["ringlb.port"]), "GET", "/home")
            self.assertEqual(served_by(resp), name)

        resp = admin_request(lb.port, "DELETE", "/rm", body={"n": 3, "hostnames": ["S5", "S4"]})
        self.assertEqual(resp.status, 200, resp)
        left = resp.json()["message"]["replicas"]
        self.assertEqual(resp.json()["message"]["N"], 4)
        self.assertNotIn("S5", left)
        self.assertNotIn("S4", left)
        others = [n for n in after_add if n not in ("S5", "S4")]
        removed = [n for n in others if n not in left]
        self.assertEqual(len(removed), 1, left)  # the one picked at random
        self.assertEqual(left, [n for n in others if n not in removed])
        self.wait_containers(left)
        kept = self.assert_containers_match(lb)
        for name in left:
            self.assertEqual(kept[name]["Id"], by_name[name]["Id"], f"{name} was recreated")
        for name in ["S5", "S4"] + removed:
            self.assertIsNone(inspect(by_name[name]["Id"]), f"container {name} still exists")

        # A generated name: the container carries it, and /rm of it removes that container.
        resp = admin_request(lb.port, "POST", "/add", body={"n": 1})
        self.assertEqual(resp.status, 200, resp)
        new = [n for n in resp.json()["message"]["replicas"] if n not in left]
        self.assertEqual(len(new), 1, resp)
        self.assertIn(new[0], self.assert_containers_match(lb))
        resp = admin_request(lb.port, "DELETE", "/rm", body={"n": 1, "hostnames": new})
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body, rep_body(left))
        self.wait_containers(left)
        self.assert_clean_stop(lb)

    def test_sigterm_while_replicas_start_leaves_no_container(self):
        # A name held by a foreign container fails its /add at once (409) while the other four
        # replicas of that /add are still being created and started; SIGTERM comes right after.
        taken = f"{self.pool}-held"
        status, created = engine("POST", f"/containers/create?name={self.ename(taken)}",
                                 {"Image": IMAGE, "Labels": {FOREIGN_LABEL: self.pool},
                                  "HostConfig": {"NetworkMode": "host"}})
        self.assertEqual(status, 201, created)
        lb = self.start_lb(replicas=1)
        resp = admin_request(lb.port, "POST", "/add", body={"n": 5, "hostnames": [taken]})
        self.assertEqual(resp.status, 409, resp)
        self.assert_clean_stop(lb)
        self.assertEqual(inspect(self.ename(taken))["Id"], created["Id"])


class Failures(DockerLbTestCase):
    def test_missing_image_is_5xx_quoting_docker_and_leaves_nothing(self):
        image = f"ringlb-test-no-such-image:{os.getpid()}"
        lb = self.start_lb(image=image, replicas=0, wait_ready=False)
        self.wait_ready(lb, 0)
        resp = admin_request(lb.port, "POST", "/add", body={"n": 2, "hostnames": ["m1"]})
        self.assertGreaterEqual(resp.status, 500, resp)
        self.assertLess(resp.status, 600, resp)
        doc = resp.json()
        self.assertEqual(doc["status"], "failure")
        self.assertIn(f"No such image: {image}", doc["message"])
        self.assertEqual(self.rep(lb).body, rep_body([]))
        self.assertEqual(self.pool_containers(), [])
        # Nothing of it appears later either (a start still in flight is undone).
        time.sleep(1.0)
        self.assertEqual(self.pool_containers(), [])
        self.assertEqual(self.rep(lb).body, rep_body([]))
        self.assert_clean_stop(lb)

    def test_name_taken_by_a_foreign_container_is_4xx_and_left_alone(self):
        taken = f"{self.pool}-taken"
        status, created = engine("POST", f"/containers/create?name={self.ename(taken)}",
                                 {"Image": IMAGE, "Labels": {FOREIGN_LABEL: self.pool},
                                  "HostConfig": {"NetworkMode": "host"}})
        self.assertEqual(status, 201, created)
        foreign_id = created["Id"]
        lb = self.start_lb()
        before = self.assert_containers_match(lb)
        initial = self.rep(lb).body

        # n = 1: nothing to create. n = 3: ok1 and a generated name are being created when the
        # answer comes (ringlb answers at the first failure), and are removed afterwards.
        for body, creates in (({"n": 1, "hostnames": [taken]}, 0),
                              ({"n": 3, "hostnames": ["ok1", taken]}, 2)):
            with self.subTest(body=body):
                since = time.time()
                resp = admin_request(lb.port, "POST", "/add", body=body)
                self.assertGreaterEqual(resp.status, 400, resp)
                self.assertLess(resp.status, 500, resp)
                doc = resp.json()
                self.assertEqual(doc["status"], "failure")
                self.assertIn(taken, doc["message"])
                self.assertIn(foreign_id[:12], doc["message"])
                self.assertEqual(self.rep(lb).body, initial)
                # All or nothing: what this /add started is removed again.
                events = self.wait_rolled_back(since, creates)
                self.assertNotIn(taken, [n for _, n in events])
                self.assertEqual(sorted(self.running_by_name()), sorted(before))
                c = inspect(self.ename(taken))
                self.assertIsNotNone(c, "the foreign container was removed")
                self.assertEqual(c["Id"], foreign_id)
                self.assertEqual(c["State"]["Status"], "created")
                self.assertEqual(c["Config"]["Labels"], {FOREIGN_LABEL: self.pool})
        self.assertEqual(self.assert_containers_match(lb).keys(), before.keys())
        self.assert_clean_stop(lb)
        self.assertEqual(inspect(self.ename(taken))["Id"], foreign_id, "ringlb's stop removed the foreign one")


class Restart(DockerLbTestCase):
    def test_sigkilled_lb_restarts_and_adopts_its_containers(self):
        lb = self.start_lb()
        # A weighted replica: its weight is a label, so the next LB gives it the same share.
        resp = admin_request(lb.port, "POST", "/add",
                               body={"n": 1, "hostnames": ["big"], "weight": 3})
        self.assertEqual(resp.status, 200, resp)
        before = self.assert_containers_match(lb)
        self.assertEqual(before["big"]["Labels"].get("ringlb.weight"), "3", before["big"])
        rng = random.Random(5)
        rids = [rng.randrange(100000, 1000000) for _ in range(200)]
        routes = self.route(lb, rids)
        self.assertGreaterEqual(len(set(routes.values())), 2, routes)

        lb.kill()  # SIGKILL: no chance to stop anything
        self.assertEqual(lb.proc.returncode, -signal.SIGKILL)
        still = self.running_by_name()
        self.assertEqual({n: c["Id"] for n, c in still.items()},
                         {n: c["Id"] for n, c in before.items()})

        again = self.start_lb(wait_ready=False)
        self.wait_ready(again, 4)  # the three it starts with, and big
        after = self.assert_containers_match(again)
        self.assertEqual({n: c["Id"] for n, c in after.items()},
                         {n: c["Id"] for n, c in before.items()}, "containers were replaced")
        self.assertEqual({d["name"]: (d["ring_id"], d["weight"]) for d in self.details(again)},
                         {"server1": (1, 1), "server2": (2, 1), "server3": (3, 1), "big": (4, 3)})
        self.assertIn("adopted", again.log())
        self.assertEqual(self.route(again, rids), routes)
        self.assert_clean_stop(again)


class Healing(DockerLbTestCase):
    def test_docker_kill_is_replaced_under_the_same_ring_id_without_failed_requests(self):
        lb = self.start_lb("--hb-interval", "100", "--hb-timeout", "200")
        before = self.assert_containers_match(lb)
        rng = random.Random(9)
        rids = [rng.randrange(100000, 1000000) for _ in range(200)]
        routes = self.route(lb, rids)
        victim = "server2"
        self.assertIn(victim, routes.values(), "the sample should reach the victim")
        victim_id = before[victim]["Id"]
        victim_ring_id = before[victim]["Labels"]["ringlb.ring-id"]

        killed = {}

        def kill():
            killed["reply"] = engine("POST", f"/containers/{victim_id}/kill?signal=SIGKILL")

        killer = threading.Thread(target=kill)
        failures = []
        done = 0
        deadline = time.monotonic() + 20
        conn = Connection(lb.port)
        self.addCleanup(lambda: conn.close())
        for i in range(3000):
            if time.monotonic() > deadline:
                break
            if i == 300:
                killer.start()
            try:
                resp = conn.request("GET", "/home", {"X-Request-Id": str(rng.randrange(100000, 1000000))})
                if resp.status != 200:
                    failures.append((i, resp.status, resp.body))
            except (OSError, AssertionError) as e:
                failures.append((i, "error", str(e)))
                conn.close()
                conn = Connection(lb.port)
            done += 1
        conn.close()
        killer.join(30)
        self.assertEqual(killed["reply"][0], 204, killed)
        self.assertEqual(failures, [], f"log:\n{lb.log()}")
        self.assertGreaterEqual(done, 1000, "the loop should get well past the kill within 20 s")

        def healed():
            names = self.names(lb)
            return names if len(names) == 3 and victim not in names else None
        names = harness.wait_until(healed, 15.0, f"a replacement for {victim}", 0.1)
        self.wait_ready(lb, 3)
        self.assertEqual(self.rep(lb).json()["message"]["N"], 3)
        new = [n for n in names if n not in before]
        self.assertEqual(len(new), 1, names)
        replacement = new[0]
        by_name = self.wait_containers(names)
        by_name = self.assert_containers_match(lb)
        self.assertEqual(by_name[replacement]["Labels"]["ringlb.ring-id"], victim_ring_id)
        self.assertIsNone(inspect(victim_id), "the killed container was not removed")
        for name in ("server1", "server3"):
            self.assertEqual(by_name[name]["Id"], before[name]["Id"])

        now = self.route(lb, rids)
        expected = {rid: (replacement if name == victim else name) for rid, name in routes.items()}
        self.assertEqual(now, expected, "keys moved other than the dead replica's")
        self.assert_clean_stop(lb)


if __name__ == "__main__":
    engine_testlib.main("lb_docker_test", _sweep)
