"""The control plane with the docker provisioner against a real engine (issue 11 items 3 and 6):

- /rm then /add of the same name answers 200 at once: the draining container is renamed
  (NAME.draining-ID) so the new one can take the name, and the old one is then removed;
- an LB stopped with --on-exit keep leaves its containers running; a new LB of the pool adopts the
  same containers under the same ring ids and routes every key as before; an LB stopped with the
  default (remove) leaves nothing.

Built on lb_docker_test's DockerLbTestCase: host networking on 127.0.0.1, a pool label unique to
each test, every container of it force-removed in the cleanup, a --name-prefix unique to the test
(so no lock: runs side by side do not collide on server1..3) and the replica image ringlb-replica:test built from this build.
Exit 77 (skip) when no engine answers, unless RINGLB_REQUIRE_DOCKER=1, then exit 1. Every loop is
bounded in count and time.
"""
import os
import random
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import Connection  # noqa: E402
import lb_docker_test  # noqa: E402
from lb_docker_test import DockerLbTestCase, inspect  # noqa: E402


class NameReuse(DockerLbTestCase):
    def test_rm_then_add_of_the_same_name_answers_200(self):
        lb = self.start_lb("--hb-interval", "100")
        old = self.assert_containers_match(lb)["server1"]["Id"]
        with Connection(lb.port, timeout=30) as conn:
            resp = conn.request("DELETE", "/rm", body={"n": 1, "hostnames": ["server1"]})
            self.assertEqual(resp.status, 200, resp)
            resp = conn.request("POST", "/add", body={"n": 1, "hostnames": ["server1"]})
            self.assertEqual(resp.status, 200, resp)
        self.wait_ready(lb, 3)
        by_name = self.wait_containers(["server1", "server2", "server3"], timeout=30)
        self.assertNotEqual(by_name["server1"]["Id"], old)
        self.assertIsNone(inspect(old), "the removed container is still there")
        self.assert_containers_match(lb)
        self.assertIn("server1", set(self.route(lb, range(100000, 100100)).values()))
        self.assert_clean_stop(lb)


class OnExit(DockerLbTestCase):
    def test_keep_leaves_the_replicas_for_the_next_lb_to_adopt(self):
        lb = self.start_lb("--on-exit", "keep")
        before = self.assert_containers_match(lb)
        ids = {d["name"]: d["ring_id"] for d in self.details(lb)}
        rng = random.Random(11)
        rids = [rng.randrange(100000, 1000000) for _ in range(200)]
        routes = self.route(lb, rids)

        code, _ = lb.stop(signal.SIGTERM, timeout=20)
        self.assertEqual(code, 0, lb.log())
        self.assertIn("left running for the next load balancer", lb.log())
        still = self.running_by_name()
        self.assertEqual({n: c["Id"] for n, c in still.items()}, {n: c["Id"] for n, c in before.items()})

        again = self.start_lb()  # default --on-exit remove
        after = self.assert_containers_match(again)
        self.assertEqual({n: c["Id"] for n, c in after.items()}, {n: c["Id"] for n, c in before.items()},
                         "containers were replaced")
        self.assertEqual({d["name"]: d["ring_id"] for d in self.details(again)}, ids)
        self.assertEqual(self.route(again, rids), routes, "keys moved")
        self.assert_clean_stop(again)  # remove: nothing of the pool is left

    def test_keep_adopts_a_replica_whose_name_contains_the_draining_mark(self):
        # "s1.draining-x" is a valid name. Only the LB's own rename of a draining container
        # (NAME.draining-<that container's short id>) marks a leftover of a drain, so the next LB
        # adopts this replica instead of removing it.
        name = "s1.draining-x"
        lb = self.start_lb("--on-exit", "keep", "--hb-interval", "100")
        with Connection(lb.port, timeout=30) as conn:
            resp = conn.request("POST", "/add", body={"n": 1, "hostnames": [name]})
            self.assertEqual(resp.status, 200, resp)
        before = self.assert_containers_match(lb)
        self.assertIn(name, before)
        code, _ = lb.stop(signal.SIGTERM, timeout=20)
        self.assertEqual(code, 0, lb.log())

        again = self.start_lb(replicas=4)  # the four it left
        after = self.assert_containers_match(again)
        self.assertIn(name, sorted(after), "the replica was removed instead of adopted:\n" + again.log())
        self.assertEqual(after[name]["Id"], before[name]["Id"])
        self.assert_clean_stop(again)


if __name__ == "__main__":
    ok, why = lb_docker_test.engine_answers()
    if not ok:
        print(f"control_docker_test: no Docker engine answers ({why})", file=sys.stderr)
        if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1":
            print("control_docker_test: RINGLB_REQUIRE_DOCKER=1, so a missing engine is a failure",
                  file=sys.stderr)
            sys.exit(1)
        sys.exit(77)
    lb_docker_test.build_image()
    signal.signal(signal.SIGTERM, lb_docker_test._on_sigterm)
    try:
        unittest.main()
    finally:
        lb_docker_test._sweep()
