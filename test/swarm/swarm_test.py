"""ringlb with the swarm provisioner (--provisioner swarm, issue 13) on a real one-node Docker swarm,
as a client and as the engine see it: every claim about services and tasks is checked through the
Engine API itself (http.client over the unix socket), not only through /rep.

- the replicas at start and an /add are labelled one-task services whose tasks run; keys are routed
  to them;
- a task's container killed under a bounded request loop: no failed request, its keys go to other
  replicas (no other key moves) while it is down, the engine (not the LB) restarts it, and its keys
  come back to the same service under the same ring id; no service is replaced;
- /rm drains, then removes the service;
- an LB SIGKILLed and started again adopts the pool's services: same services, same ring ids, no
  key moved;
- two LBs on one pool route 2,000 keys alike, and an /add on one is listed and routed alike by the
  other within a second (several LBs on one pool).

The swarm: a one-node swarm on this engine, made with POST /swarm/init (127.0.0.1) when the engine
is not in one, and left in place (.ci/run does the same before the suites). Replicas use host
networking on 127.0.0.1; each test has its own pool (and name prefix, so runs in two worktrees do
not collide) and every service of that pool is removed in the test's cleanup, whether it passed or
not (also when meson's timeout sends SIGTERM). Every loop is bounded in count and time.

Exit 77 (skip) when no engine answers, unless RINGLB_REQUIRE_DOCKER=1, then exit 1. What this test
shares with the docker suite's lb_docker_test (the pool per test, the sweep, waiting and routing,
main) is test/docker/engine_testlib.py's.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docker"))
import engine_testlib  # noqa: E402
import harness  # noqa: E402
from engine_testlib import IMAGE, RINGLB, EngineLbTestCase, served_by  # noqa: E402
from harness import Connection, HOST  # noqa: E402
from harness import docker_engine as engine  # noqa: E402
from lb_test import LbTestCase, rep_body  # noqa: E402

RUN = f"swarm13-{os.getpid()}-{int(time.time()) % 100000}"
PORT_RANGE = "27000-27999"  # the docker suite uses 24000-24999 and 26000-26999
# SharedPortRange's 16 ports: within PORT_RANGE, where the other tests' replicas (a port per ring
# id from 27000 on) do not reach.
PORT_BASE_SMALL = 27960
_HELP = subprocess.run([RINGLB, "--help"], capture_output=True, text=True).stdout
HAS_PREFIX = "--name-prefix" in _HELP


def services(label):
    return engine_testlib.listed("/services", {"label": [label]})


def tasks(service_id):
    return engine_testlib.listed("/tasks", {"service": [service_id]})


def running_task(service_id):
    """The service's running task, or None."""
    for t in tasks(service_id):
        if t["Status"]["State"] == "running" and t["DesiredState"] == "running":
            return t
    return None


def remove_pool(pool):
    for s in services(f"ringlb.pool={pool}"):
        engine("DELETE", f"/services/{s['ID']}")


def swarm_ready():
    """Makes this engine a one-node swarm manager when it is in no swarm (left in place)."""
    status, info = engine("GET", "/info")
    assert status == 200, info
    if info["Swarm"]["LocalNodeState"] == "active" and info["Swarm"]["ControlAvailable"]:
        return
    status, body = engine("POST", "/swarm/init", {"ListenAddr": "127.0.0.1:2377",
                                                  "AdvertiseAddr": "127.0.0.1"})
    assert status == 200, f"swarm init: HTTP {status} {body}"


_sweep = engine_testlib.Sweep(remove_pool)


class SwarmTestCase(EngineLbTestCase):
    run_id = RUN
    sweep = _sweep
    ready_timeout = 60.0
    stop_within = 15.0
    objects = "services"

    def leftovers(self):
        return sorted(self.pool_services())

    def start_lb(self, *args, replicas=3, wait_ready=True):
        argv = [RINGLB, "--provisioner", "swarm", "--docker-network", "host",
                "--pool", self.pool, "--replica-image", IMAGE, "--replica-port-range", PORT_RANGE,
                "--listen", f"{HOST}:{{port}}", "--replicas", str(replicas), "--log-level", "info",
                "--hb-interval", "100", "--hb-timeout", "300", *args]
        if HAS_PREFIX:
            argv += ["--name-prefix", f"{self.pool}-"]
        return self.launch(argv, replicas, wait_ready, ready_timeout=15.0)

    def service_name(self, name):
        return f"{self.pool}-{name}" if HAS_PREFIX else name

    def pool_services(self):
        """{replica name: service} of the pool."""
        return {s["Spec"]["Labels"]["ringlb.name"]: s for s in services(f"ringlb.pool={self.pool}")}

    def assert_services_match(self, lb):
        """The pool's services are exactly the replicas /rep lists, each one task running on the
        host network, labelled with the ring id and port /rep?verbose reports."""
        by_name = self.pool_services()
        details = {d["name"]: d for d in self.details(lb) if d["counts"]}
        self.assertEqual(sorted(by_name), sorted(self.names(lb)))
        self.assertEqual(sorted(by_name), sorted(details))
        for name, s in by_name.items():
            d = details[name]
            labels = s["Spec"]["Labels"]
            self.assertEqual(s["Spec"]["Name"], self.service_name(name))
            self.assertEqual(s["Spec"]["Mode"], {"Replicated": {"Replicas": 1}})
            self.assertEqual(labels.get("ringlb.ring-id"), str(d["ring_id"]), (s, d))
            self.assertEqual(d["address"], f"{HOST}:{labels.get('ringlb.port')}", (s, d))
            self.assertEqual(d["id"], s["ID"], (s, d))
            self.assertEqual(s["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"], "any")
            self.assertIsNotNone(running_task(s["ID"]), f"no running task for {name}")
        return by_name

    def wait_services(self, names, timeout=15.0):
        want = sorted(names)

        def match():
            got = self.pool_services()
            return (got,) if sorted(got) == want else None
        return harness.wait_until(match, timeout, f"the pool's services to be {want}", 0.1)[0]

class Services(SwarmTestCase):
    def test_replicas_and_add_are_labelled_one_task_services(self):
        lb = self.start_lb("--swarm-constraint", "node.role==manager", "--swarm-spread", "node.labels.zone",
                           replicas=2)
        self.assertEqual(self.rep(lb).body, rep_body(["server1", "server2"]))
        before = self.assert_services_match(lb)
        status, info = engine("GET", "/info")
        for s in before.values():
            placement = s["Spec"]["TaskTemplate"]["Placement"]
            # Host networking: the tasks stay on the LB's node, where 127.0.0.1 reaches them.
            self.assertEqual(placement["Constraints"],
                             ["node.role==manager", f"node.id=={info['Swarm']['NodeID']}"])
            self.assertEqual(placement["Preferences"], [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}])
            self.assertEqual(s["Spec"]["TaskTemplate"]["RestartPolicy"]["Delay"], 100000000)
        resp = harness.request(lb.port, "POST", "/add", body={"n": 2, "hostnames": ["S5", "S4"]})
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body, rep_body(["server1", "server2", "S5", "S4"]))
        # /add answers once the tasks run and answered a heartbeat.
        by_name = self.assert_services_match(lb)
        for name in before:
            self.assertEqual(by_name[name]["ID"], before[name]["ID"], f"{name} was recreated")
        self.assertEqual(len({s["Spec"]["Labels"]["ringlb.ring-id"] for s in by_name.values()}), 4)
        for name in ("S5", "S4"):
            port = int(by_name[name]["Spec"]["Labels"]["ringlb.port"])
            self.assertEqual(served_by(harness.request(port, "GET", "/home")), name)
        seen = set(self.route(lb, range(100000, 100200)).values())
        self.assertEqual(seen, set(by_name), "200 keys should reach every replica")

        resp = harness.request(lb.port, "DELETE", "/rm", body={"n": 1, "hostnames": ["S5"]})
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body, rep_body(["server1", "server2", "S4"]))
        self.wait_services(["server1", "server2", "S4"])
        status, _ = engine("GET", f"/services/{by_name['S5']['ID']}")
        self.assertEqual(status, 404, "the removed replica's service still exists")
        self.assert_services_match(lb)
        self.assertNotIn("S5", set(self.route(lb, range(100000, 100200)).values()))
        self.assert_clean_stop(lb)


class Failures(SwarmTestCase):
    def test_missing_image_is_5xx_quoting_docker_and_leaves_no_service(self):
        image = f"ringlb-test-no-such-image:{os.getpid()}"
        lb = self.start_lb("--replica-image", image, replicas=0)
        resp = harness.request(lb.port, "POST", "/add", body={"n": 2, "hostnames": ["m1"]})
        self.assertGreaterEqual(resp.status, 500, resp)
        self.assertLess(resp.status, 600, resp)
        self.assertIn(f"No such image: {image}", resp.json()["message"])
        self.assertEqual(self.rep(lb).body, rep_body([]))
        self.wait_services([])
        self.assert_clean_stop(lb)


class Healing(SwarmTestCase):
    def test_killed_task_is_routed_around_and_its_keys_come_back_under_the_same_ring_id(self):
        lb = self.start_lb()
        before = self.assert_services_match(lb)
        rng = random.Random(9)
        rids = [rng.randrange(100000, 1000000) for _ in range(300)]
        routes = self.route(lb, rids)
        victim = "server2"
        self.assertIn(victim, routes.values())
        service = before[victim]
        old_task = running_task(service["ID"])
        container = old_task["Status"]["ContainerStatus"]["ContainerID"]

        killed = {}

        def kill():
            killed["reply"] = engine("POST", f"/containers/{container}/kill?signal=SIGKILL")

        killer = threading.Thread(target=kill)
        failures = []
        during = {}  # the victim's keys while it was dead: rid -> who answered
        done = 0
        deadline = time.monotonic() + 30
        conn = Connection(lb.port)
        self.addCleanup(lambda: conn.close())
        dead_seen = False
        for i in range(4000):
            if time.monotonic() > deadline:
                break
            if i == 200:
                killer.start()
            rid = rids[i % len(rids)]
            try:
                resp = conn.request("GET", "/home", {"X-Request-Id": str(rid)})
                if resp.status != 200:
                    failures.append((i, resp.status, resp.body))
                elif i > 200 and routes[rid] == victim and served_by(resp) != victim:
                    during[rid] = served_by(resp)
            except (OSError, AssertionError) as e:
                failures.append((i, "error", str(e)))
                conn.close()
                conn = Connection(lb.port)
            done += 1
            if i > 200 and i % 50 == 0 and not dead_seen:
                dead_seen = any(d["name"] == victim and d["state"] == "dead" for d in self.details(lb))
            if dead_seen and i % 50 == 0:
                task = running_task(service["ID"])
                if task is not None and task["ID"] != old_task["ID"]:
                    break
        conn.close()
        killer.join(30)
        self.assertEqual(killed["reply"][0], 204, killed)
        self.assertEqual(failures, [], f"log:\n{lb.log()}")
        self.assertTrue(dead_seen, "the LB never marked the killed replica dead")
        self.assertTrue(during, "no key of the victim was served by another replica while it was down")
        self.assertNotIn(victim, during.values())

        # The engine restarts the task (a new task of the same service); the LB replaces nothing.
        new_task = harness.wait_until(
            lambda: (lambda t: t if t and t["ID"] != old_task["ID"] else None)(running_task(service["ID"])),
            30.0, "the engine to restart the task", 0.1)
        self.assertEqual(new_task["ServiceID"], service["ID"])
        self.wait_ready(lb, 3)
        self.assertEqual(self.names(lb), ["server1", "server2", "server3"])
        after = self.assert_services_match(lb)
        self.assertEqual({n: s["ID"] for n, s in after.items()}, {n: s["ID"] for n, s in before.items()},
                         "a service was replaced")
        self.assertNotIn("replaced by", lb.log())
        self.assertEqual(self.route(lb, rids), routes, "keys did not come back")
        self.assert_clean_stop(lb)


class Restart(SwarmTestCase):
    def test_sigkilled_lb_restarts_and_adopts_the_services_with_no_key_moved(self):
        lb = self.start_lb()
        resp = harness.request(lb.port, "POST", "/add", body={"n": 1, "hostnames": ["big"], "weight": 3})
        self.assertEqual(resp.status, 200, resp)
        before = self.assert_services_match(lb)
        rng = random.Random(5)
        rids = [rng.randrange(100000, 1000000) for _ in range(300)]
        routes = self.route(lb, rids)
        lb.kill()
        self.assertEqual(lb.proc.returncode, -signal.SIGKILL)

        again = self.start_lb(wait_ready=False)
        self.wait_ready(again, 4)
        after = self.assert_services_match(again)
        self.assertEqual({n: s["ID"] for n, s in after.items()}, {n: s["ID"] for n, s in before.items()},
                         "services were replaced")
        self.assertEqual({d["name"]: (d["ring_id"], d["weight"]) for d in self.details(again)},
                         {"server1": (1, 1), "server2": (2, 1), "server3": (3, 1), "big": (4, 3)})
        self.assertIn("adopted", again.log())
        self.assertEqual(self.route(again, rids), routes, "keys moved")
        self.assert_clean_stop(again)


class TwoLbs(SwarmTestCase):
    def assert_clean_stop(self, lb, within=15.0):
        # --on-exit keep: the services stay for the other LB; the pool is removed in the cleanup.
        LbTestCase.assert_clean_stop(self, lb, within)

    def test_two_lbs_on_one_pool_route_alike_and_see_each_others_add(self):
        one = self.start_lb("--on-exit", "keep")
        two = self.start_lb("--on-exit", "keep")  # adopts the three: starts none
        self.assertEqual(sorted(self.pool_services()), ["server1", "server2", "server3"])
        rng = random.Random(13)
        rids = [rng.randrange(100000, 1000000) for _ in range(2000)]
        self.assertEqual(self.route(one, rids), self.route(two, rids))

        resp = harness.request(one.port, "POST", "/add", body={"n": 2, "hostnames": ["a1", "a2"]})
        self.assertEqual(resp.status, 200, resp)
        t0 = time.monotonic()

        def listed():
            names = self.names(two)
            return "a1" in names and "a2" in names
        harness.wait_until(listed, 5.0, "the other LB to list the new replicas", 0.02)
        seen_after = time.monotonic() - t0
        # No timed assertion (a shared machine's timing is noise): the time is printed.
        print(f"\nthe other LB listed the 2 new replicas {seen_after * 1000:.0f} ms after /add answered",
              file=sys.stderr)
        self.wait_ready(two, 5, timeout=10)
        self.assertEqual(self.route(one, rids), self.route(two, rids))
        self.assertEqual({d["name"]: d["ring_id"] for d in self.details(one)},
                         {d["name"]: d["ring_id"] for d in self.details(two)})

        resp = harness.request(two.port, "DELETE", "/rm", body={"n": 1, "hostnames": ["a1"]})
        self.assertEqual(resp.status, 200, resp)
        harness.wait_until(lambda: "a1" not in self.names(one), 5.0, "the other LB to drop a1", 0.02)
        self.wait_services(["server1", "server2", "server3", "a2"])
        self.assertEqual(self.route(one, rids), self.route(two, rids))

        # Both LBs /add at once: the ring ids are claimed through the engine, so no two services
        # share one, and both LBs end up with the same members and routes.
        answers = {}

        def add(lb, names):
            answers[lb.port] = harness.request(lb.port, "POST", "/add", body={"n": 2, "hostnames": names})
        adders = [threading.Thread(target=add, args=(one, ["b1", "b2"])),
                  threading.Thread(target=add, args=(two, ["c1", "c2"]))]
        for t in adders:
            t.start()
        for t in adders:
            t.join(60)
        for port, resp in answers.items():
            self.assertEqual(resp.status, 200, resp)
        everyone = ["server1", "server2", "server3", "a2", "b1", "b2", "c1", "c2"]
        by_name = self.wait_services(everyone)
        ring_ids = [s["Spec"]["Labels"]["ringlb.ring-id"] for s in by_name.values()]
        self.assertEqual(len(set(ring_ids)), len(ring_ids), ring_ids)
        self.wait_ready(one, 8, timeout=10)
        self.wait_ready(two, 8, timeout=10)
        self.assertEqual({d["name"]: d["ring_id"] for d in self.details(one)},
                         {d["name"]: d["ring_id"] for d in self.details(two)})
        routes = self.route(one, rids)
        self.assertEqual(self.route(two, rids), routes)

        # One LB SIGKILLed: the other goes on serving, and its /add and /rm work.
        one.kill()
        self.assertEqual(self.route(two, rids), routes)
        resp = harness.request(two.port, "POST", "/add", body={"n": 1, "hostnames": ["d1"]})
        self.assertEqual(resp.status, 200, resp)
        resp = harness.request(two.port, "DELETE", "/rm", body={"n": 1, "hostnames": ["d1"]})
        self.assertEqual(resp.status, 200, resp)
        self.wait_services(everyone)
        # Its restart adopts the pool: no key moved.
        again = self.start_lb("--on-exit", "keep", wait_ready=False)
        self.wait_ready(again, 8)
        self.assertEqual(self.route(again, rids), routes, "keys moved")
        for lb in (two, again):
            code, _ = lb.stop(signal.SIGTERM, timeout=20)
            self.assertEqual(code, 0, lb.log())


class SharedPortRange(SwarmTestCase):
    def assert_clean_stop(self, lb, within=15.0):
        LbTestCase.assert_clean_stop(self, lb, within)

    def test_concurrent_adds_on_a_small_shared_port_range_give_every_replica_its_own_port(self):
        # 16 ports: ring id k takes port_min + (k-1) % 2 of the first free of 8 generations, so an
        # LB whose claim of a ring id was lost takes the next id on a port the other LB may have
        # just given to another id: only the port claim keeps two services off one port.
        small = f"{PORT_BASE_SMALL}-{PORT_BASE_SMALL + 15}"
        one = self.start_lb("--on-exit", "keep", "--replica-port-range", small)
        two = self.start_lb("--on-exit", "keep", "--replica-port-range", small)
        n = 3
        for _ in range(2):
            answers = engine_testlib.adds_at_once({"one": one, "two": two}, {"n": 2})
            self.assertEqual([answers[k].status for k in ("one", "two")], [200, 200],
                             (answers, one.log()[-4000:], two.log()[-4000:]))
            n += 4
            self.wait_ready(one, n, timeout=30)
            self.wait_ready(two, n, timeout=30)
            by_name = self.pool_services()
            self.assertEqual(len(by_name), n, sorted(by_name))
            ports = [int(s["Spec"]["Labels"]["ringlb.port"]) for s in by_name.values()]
            self.assertEqual(len(ports), len(set(ports)), f"a port twice: {sorted(ports)}")
            for name, s in by_name.items():
                port = int(s["Spec"]["Labels"]["ringlb.port"])
                self.assertEqual(served_by(harness.request(port, "GET", "/home")), name)
        lost = sum(lb.log().count("lost port") for lb in (one, two))
        print(f"\nconcurrent /add on 16 shared ports: {lost} port claim(s) lost and retried",
              file=sys.stderr)
        for lb in (one, two):
            code, _ = lb.stop(signal.SIGTERM, timeout=20)
            self.assertEqual(code, 0, lb.log())


class NotAManager(unittest.TestCase):
    """ringlb --provisioner swarm against an engine that is in no swarm, or is a worker: one clear
    line and exit 2 (a stand-in engine on a unix socket answers /_ping and /info as 20.10 does)."""

    def serve(self, swarm):
        import http.server
        import socketserver
        import tempfile
        path = os.path.join(tempfile.mkdtemp(prefix="ringlb-swarm-"), "docker.sock")
        info = json.dumps({"Swarm": swarm}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"OK" if self.path.endswith("/_ping") else info
                self.send_response(200)
                self.send_header("Api-Version", "1.41")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def get_request(self):
                conn, _ = self.socket.accept()
                return conn, ("local", 0)

        server = Server(path, Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return path

    def run_lb(self, sock):
        return subprocess.run([RINGLB, "--provisioner", "swarm", "--docker-socket", sock,
                               "--listen", f"{HOST}:0", "--replicas", "0"],
                              capture_output=True, text=True, timeout=30)

    def test_an_engine_in_no_swarm_is_one_line_and_exit_2(self):
        out = self.run_lb(self.serve({"LocalNodeState": "inactive", "ControlAvailable": False, "NodeID": ""}))
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("is not part of a swarm", out.stderr)
        self.assertIn("docker swarm init", out.stderr)

    def test_a_worker_is_one_line_and_exit_2(self):
        out = self.run_lb(self.serve({"LocalNodeState": "active", "ControlAvailable": False, "NodeID": "w1"}))
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("is a swarm worker", out.stderr)


class StackFile(unittest.TestCase):
    def test_the_stack_file_parses_and_runs_the_lbs_on_managers_and_replicas_on_workers(self):
        stack = harness.source_path("deploy", "ringlb-stack.yml")
        try:
            has = subprocess.run(["docker", "stack", "config", "--help"], capture_output=True,
                                 text=True, timeout=30)
        except FileNotFoundError:
            self.skipTest("no docker CLI")
        if has.returncode != 0 or "--compose-file" not in has.stdout:
            self.skipTest("this docker CLI has no `docker stack config`")
        out = subprocess.run(["docker", "stack", "config", "-c", stack], capture_output=True,
                             text=True, timeout=30, env=dict(os.environ, ADMIN_TOKEN="t"))
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout
        for want in ("mode: global", "node.role == manager", "RINGLB_PROVISIONER: swarm",
                     "RINGLB_SWARM_CONSTRAINT: node.role==worker", "driver: overlay",
                     "target: /var/run/docker.sock", "RINGLB_DOCKER_NETWORK: ringlb-net"):
            self.assertIn(want, text)
        # Every RINGLB_ variable the stack sets is an option this ringlb knows.
        for name in re.findall(r"RINGLB_([A-Z_]+):", text):
            self.assertTrue(f"[RINGLB_{name}]" in _HELP, f"RINGLB_{name} is not an option of this ringlb")


if __name__ == "__main__":
    engine_testlib.main("swarm_test", _sweep, prepare=swarm_ready)
