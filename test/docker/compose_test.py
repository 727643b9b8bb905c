"""A smoke test of docker-compose.yml: the LB image started by docker-compose with the Docker socket
mounted creates its replicas, serves the assignment's API and removes its replicas when compose
stops it.

The file itself publishes port 5000 on every address and puts the LB on the bridge network net1;
a test must send traffic only to 127.0.0.1 and must not take a port others may use. So the test
loads docker-compose.yml, keeps its lb service as it is (image, privileged, the socket volume, every
RINGLB_* variable) and changes only what that rule needs: host networking instead of ports and
networks, RINGLB_LISTEN on 127.0.0.1 and a free port, host-network replicas on 127.0.0.1, a pool,
container name and compose project unique to the run, and the images built from this build
(ringlb:test and ringlb-replica:test, by lb/image.sh). Everything of the run (the pool's label, the
compose project's label) is force-removed at the end, whether the test passed or not. Its replicas
are server1..3 behind RINGLB_NAME_PREFIX "<run>." (issue 13), so runs side by side need no lock;
the file itself sets no prefix (`docker stop server2` keeps working there).

It also checks what the file promises operators (issue 14): no version key, restart and stop grace
period, the admin routes on their own port published on 127.0.0.1 only and needing the token of the
env file, the healthcheck (`ringlb --check URL` on /readyz) bringing the container to healthy (its
interval shortened to 1 s here), and the assignment's override file (its ring and API).

Skips (exit 77) when docker-compose or PyYAML is missing (the compose deployment is optional), and
when no engine answers unless RINGLB_REQUIRE_DOCKER=1, then fails.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import HOST  # noqa: E402
from lb_docker_test import (containers, engine, engine_answers, port_slice,  # noqa: E402
                            remove_labelled)

try:
    import yaml
except ImportError:
    yaml = None

COMPOSE = shutil.which("docker-compose")
LB_IMAGE = "ringlb:test"
REPLICA_IMAGE = "ringlb-replica:test"
RUN = f"ringlb-cmp-{os.getpid()}-{int(time.time())}"
PORT_BASE = port_slice(28000)  # a slice of 28000-28999 of this run's own
PORT_RANGE = f"{PORT_BASE}-{PORT_BASE + 99}"
PREFIX = f"{RUN}."


def compose(project, path, *args, timeout=120):
    out = subprocess.run([COMPOSE, "-p", project, "-f", path, *args],
                         capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return out.returncode, out.stdout + out.stderr


def sweep(project):
    """Force-removes the LB first (it would replace replicas removed under it), then the pool."""
    remove_labelled(f"com.docker.compose.project={project}")
    remove_labelled(f"ringlb.pool={RUN}")


class Compose(unittest.TestCase):
    def setUp(self):
        self.project = RUN.replace("-", "")
        self.port = harness.free_port()
        self.dir = tempfile.mkdtemp(prefix="ringlb-compose-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.addCleanup(sweep, self.project)
        with open(harness.source_path("docker-compose.yml")) as f:
            self.original = yaml.safe_load(f)
        self.path = os.path.join(self.dir, "docker-compose.yml")
        with open(self.path, "w") as f:
            json.dump(self.for_localhost(self.original), f, indent=2)  # JSON is YAML
        self.addCleanup(compose, self.project, self.path, "down", "--timeout", "10")

    def for_localhost(self, doc):
        # What the file says for operators (issue 14): no obsolete version key, restarted unless
        # stopped, time to drain, the admin routes on their own port published on 127.0.0.1 only
        # with the token from an env file, the healthcheck through the binary's --check, and the
        # daemon's default ring (the assignment's is the override file's).
        self.assertNotIn("version", doc)
        lb = dict(doc["services"]["lb"])
        env = dict(lb["environment"])
        self.assertEqual(env.get("RINGLB_PROVISIONER"), "docker", env)
        self.assertNotIn("RINGLB_RING", env)
        self.assertIn("/var/run/docker.sock:/var/run/docker.sock", lb["volumes"])
        self.assertEqual(lb["restart"], "unless-stopped")
        self.assertIn("stop_grace_period", lb)
        admin_port = env["RINGLB_ADMIN_LISTEN"].rsplit(":", 1)[1]
        self.assertIn(f"127.0.0.1:{admin_port}:{admin_port}", lb["ports"])
        self.assertEqual([p for p in lb["ports"] if f":{admin_port}" in p and not p.startswith("127.0.0.1:")], [])
        self.assertEqual(lb["env_file"], ["admin.env"])
        check = lb["healthcheck"]["test"]
        self.assertEqual(check, ["CMD", "/ringlb", "--check", f"http://127.0.0.1:{admin_port}/readyz"])
        for key in ("ports", "networks"):
            lb.pop(key, None)
        lb["network_mode"] = "host"
        lb["image"] = LB_IMAGE
        lb["container_name"] = f"{RUN}-lb"
        # The test's own admin port and token (host networking: a free port on 127.0.0.1).
        self.admin_port = harness.free_port()
        self.token = f"tok-{os.getpid()}-{time.time_ns()}"
        token_file = os.path.join(self.dir, "admin.env")
        with open(token_file, "w") as f:
            f.write(f"RINGLB_ADMIN_TOKEN={self.token}\n")
        lb["env_file"] = [token_file]
        lb["healthcheck"] = dict(lb["healthcheck"], interval="1s",
                                 test=check[:-1] + [f"http://127.0.0.1:{self.admin_port}/readyz"])
        env.update({"RINGLB_LISTEN": f"{HOST}:{self.port}", "RINGLB_DOCKER_NETWORK": "host",
                    "RINGLB_ADMIN_LISTEN": f"{HOST}:{self.admin_port}",
                    "RINGLB_REPLICA_IMAGE": REPLICA_IMAGE, "RINGLB_POOL": RUN,
                    "RINGLB_REPLICA_PORT_RANGE": PORT_RANGE, "RINGLB_NAME_PREFIX": PREFIX})
        lb["environment"] = env
        self.env = env
        return {"services": {"lb": lb}}

    def admin(self, method, path, body=None, token=True):
        headers = {"Authorization": f"Bearer {self.token}"} if token else None
        return harness.request(self.admin_port, method, path, headers, body)

    def test_assignment_override_sets_its_ring_and_api(self):
        with open(harness.source_path("docker-compose.assignment.yml")) as f:
            text = f.read()
        self.assertIn("A-1", text)
        env = yaml.safe_load(text)["services"]["lb"]["environment"]
        self.assertEqual(env["RINGLB_RING"], "slots")
        self.assertEqual((env["RINGLB_ADMIN_LISTEN"], env["RINGLB_ADMIN_TOKEN"]), ("", ""))
        # No prefix in the assignment's files: the engine names are server1..N (`docker stop server2`).
        self.assertNotIn("RINGLB_NAME_PREFIX", env)
        with open(harness.source_path("docker-compose.yml")) as f:
            self.assertNotIn("RINGLB_NAME_PREFIX", f.read())

    def test_compose_up_serves_the_api_and_down_removes_the_replicas(self):
        code, out = compose(self.project, self.path, "up", "-d")
        self.assertEqual(code, 0, out)
        replicas = int(self.env.get("RINGLB_REPLICAS", "3"))
        names = [f"server{i}" for i in range(1, replicas + 1)]

        def ready():
            try:
                rep = self.admin("GET", "/rep?verbose=1").json()["message"]
                return (rep["replicas"] == names and
                        all(d["state"] == "healthy" for d in rep["details"]))
            except (OSError, AssertionError, ValueError, KeyError):
                return False
        try:
            harness.wait_until(ready, 30.0, f"the compose LB to have {names} healthy", 0.1)
        except AssertionError:
            raise AssertionError(compose(self.project, self.path, "logs", "--no-color")[1])
        pool = containers(f"ringlb.pool={RUN}")
        self.assertEqual(sorted(c["Names"][0].lstrip("/") for c in pool), [PREFIX + n for n in names])
        self.assertTrue(all(c["State"] == "running" for c in pool), pool)
        lb = containers(f"com.docker.compose.project={self.project}")
        self.assertEqual([c["Names"][0] for c in lb], [f"/{RUN}-lb"])

        resp = harness.request(self.port, "GET", "/home")
        self.assertEqual(resp.status, 200, resp)
        # The healthcheck (ringlb --check on /readyz of the admin port) makes the container healthy.
        def healthy():
            status, state = engine("GET", f"/containers/{RUN}-lb/json")
            return status == 200 and state["State"].get("Health", {}).get("Status") == "healthy"
        harness.wait_until(healthy, 60.0, "the compose LB's healthcheck to say healthy", 0.5)
        # Admin routes: on the admin port only, and only with the token.
        self.assertEqual(self.admin("GET", "/rep", token=False).status, 401)
        self.assertEqual(self.admin("GET", "/metrics", token=False).status, 401)
        self.assertEqual(self.admin("GET", "/rep").status, 200)
        proxied = harness.request(self.port, "GET", "/rep")  # proxied: a replica's 404, as 400
        self.assertEqual(proxied.status, 400, proxied)
        self.assertIn(resp.json()["message"], [f"Hello from Server: {n}" for n in names])
        ring = self.env.get("RINGLB_RING")
        if ring:
            self.assertIn(f"{ring} ring", compose(self.project, self.path, "logs", "--no-color")[1])
        resp = self.admin("POST", "/add", body={"n": 1, "hostnames": [f"{RUN}-x"]})
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(len(containers(f"ringlb.pool={RUN}")), replicas + 1)

        code, out = compose(self.project, self.path, "stop", "--timeout", "10")
        self.assertEqual(code, 0, out)
        status, state = engine("GET", f"/containers/{RUN}-lb/json")
        self.assertEqual(status, 200, state)
        self.assertEqual(state["State"]["ExitCode"], 0, compose(self.project, self.path, "logs")[1])
        self.assertEqual(containers(f"ringlb.pool={RUN}"), [], "replicas left after compose stop")
        code, out = compose(self.project, self.path, "down", "--timeout", "10")
        self.assertEqual(code, 0, out)
        self.assertEqual(containers(f"com.docker.compose.project={self.project}"), [])


def build_images():
    for which, env in (("replica", {"RINGLB_REPLICA_TAG": REPLICA_IMAGE}),
                       ("lb", {"RINGLB_LB_TAG": LB_IMAGE})):
        out = subprocess.run([harness.source_path("lb", "image.sh"), harness.BUILD, which],
                             env=dict(os.environ, **env), capture_output=True, text=True,
                             timeout=180)
        if out.returncode != 0:
            sys.exit(f"compose_test: building the {which} image failed:\n{out.stdout}{out.stderr}")


if __name__ == "__main__":
    if COMPOSE is None or yaml is None:
        print(f"compose_test: skipped ({'docker-compose' if COMPOSE is None else 'PyYAML'} is "
              f"not installed; deps/install.sh docker installs it)", file=sys.stderr)
        sys.exit(77)
    ok, why = engine_answers()
    if not ok:
        print(f"compose_test: no Docker engine answers ({why})", file=sys.stderr)
        sys.exit(1 if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1" else 77)
    build_images()
    signal.signal(signal.SIGTERM, lambda *_: (sweep(RUN.replace("-", "")), os._exit(1)))
    unittest.main()
