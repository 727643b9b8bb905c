"""The replica spec of the docker provisioner (issue 14) on a real Docker engine: ringlb started with
--replica-env (flags and RINGLB_REPLICA_ENV), --replica-cmd, --replica-cpus, --replica-memory and
--health-path creates containers whose inspection shows that environment (after the provisioner's
own SERVER_ID and PORT), that command, HostConfig.NanoCpus and HostConfig.Memory; the command takes
effect (--debug-routes makes the replica serve /sleep through the LB), and the replicas pass their
heartbeats on the health path given.

Host networking, replicas on 127.0.0.1; pools named obs14-spec-PID-N, removed at the end whatever
happens. The replicas are named server1..N, as lb_docker_test's, behind a --name-prefix unique to
the test (issue 13), so runs side by side need no lock. Exit 77 without an engine unless RINGLB_REQUIRE_DOCKER=1.
"""
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from lb_docker_test import (DockerLbTestCase, _pools, build_image, engine_answers, inspect,  # noqa: E402
                            remove_labelled, _sweep)

RUN = f"obs14-spec-{os.getpid()}"


class ReplicaSpec(DockerLbTestCase):
    seq = 0

    def setUp(self):
        super().setUp()
        ReplicaSpec.seq += 1
        self.pool = f"{RUN}-{ReplicaSpec.seq}"  # replaces lb_docker's pool name: ours says obs14
        _pools.append(self.pool)
        self.addCleanup(remove_labelled, f"ringlb.pool={self.pool}")

    def test_env_command_limits_and_health_path_reach_the_containers(self):
        lb = self.start_lb("--replica-env", "GREETING=hello world", "--replica-env", "MODE=a=b",
                           "--replica-cmd", '["--debug-routes"]', "--replica-cpus", "0.5",
                           "--replica-memory", "64m", "--health-path", "/home", replicas=2)
        details = self.details(lb)
        self.assertEqual(len(details), 2, details)
        for d in details:
            c = inspect(self.ename(d["name"]))
            self.assertIsNotNone(c, d)
            self.assertEqual(c["Config"]["Labels"].get("ringlb.pool"), self.pool)
            env = c["Config"]["Env"]
            self.assertIn("GREETING=hello world", env)
            self.assertIn("MODE=a=b", env)
            self.assertIn(f"SERVER_ID={d['name']}", env)
            self.assertLess(env.index(f"SERVER_ID={d['name']}"), env.index("GREETING=hello world"))
            self.assertEqual(c["Config"]["Cmd"], ["--debug-routes"])
            self.assertEqual(c["HostConfig"]["NanoCpus"], 500_000_000)
            self.assertEqual(c["HostConfig"]["Memory"], 64 << 20)
            self.assertEqual(d["state"], "healthy")
        # The command took effect: /sleep is one of the replica's --debug-routes.
        resp = harness.request(lb.port, "GET", "/sleep?ms=1")
        self.assertEqual(resp.status, 200, resp)

    def test_the_variable_is_a_comma_separated_list_and_no_spec_means_none(self):
        os.environ["RINGLB_REPLICA_ENV"] = "A=1,B=2"
        try:
            lb = self.start_lb(replicas=1)
        finally:
            del os.environ["RINGLB_REPLICA_ENV"]
        c = inspect(self.ename(self.details(lb)[0]["name"]))
        self.assertIn("A=1", c["Config"]["Env"])
        self.assertIn("B=2", c["Config"]["Env"])
        self.assertEqual(c["HostConfig"].get("NanoCpus", 0), 0)
        self.assertEqual(c["HostConfig"].get("Memory", 0), 0)
        self.assertEqual(harness.request(lb.port, "GET", "/sleep?ms=1").status, 400)  # image's CMD


if __name__ == "__main__":
    ok, why = engine_answers()
    if not ok:
        print(f"replica_spec_test: no Docker engine answers ({why})", file=sys.stderr)
        sys.exit(1 if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1" else 77)
    build_image()
    signal.signal(signal.SIGTERM, lambda *_: (_sweep(), os._exit(1)))
    try:
        unittest.main()
    finally:
        _sweep()
