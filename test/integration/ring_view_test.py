"""Seeing the ring (issue 14): GET /route?key=K, GET /ring and POST /add?dry_run=1 against a real
ringlb with real replica processes.

- /route names the replica a real request with that key reaches, for 200 keys (plain, numeric,
  non-UTF-8, with spaces and percent signs, long) in every ring mode and with the key taken from
  X-Request-Id, a header or a cookie; after a replica is SIGKILLed its keys go where /route's
  failover said, and /route and real requests still agree.
- Hostile keys get a clear 400 (or the HTTP layer's 431) and change nothing.
- /ring's arcs cover the key space exactly, its shares add up to 1 and agree with /route; the
  answer for 64 members stays small (its size is printed and bounded).
- /add?dry_run=1 changes nothing (/rep, /ring and the processes stay as they were) and predicts
  exactly the share the real /add then gives each new replica.
- /dashboard is served without the token (it holds no data), the data routes need it.

Every loop is bounded in count and time; everything listens on 127.0.0.1.
"""
import json
import os
import random
import re
import signal
import unittest
import urllib.parse

import harness
from harness import Connection, HOST
from lb_test import LbTestCase, REPLICA

HELLO = re.compile(rb'^\{"message": "Hello from Server: ([^"]+)", "status": "successful"\}$')


def pct(key):
    """key (bytes) percent-encoded for a query value: every byte but unreserved ones."""
    return urllib.parse.quote_from_bytes(key, safe="")


def test_keys(n, seed):
    """n distinct keys (bytes) of the kinds a request can carry in a header value."""
    rng = random.Random(seed)
    keys = [b"abc", b"a+b", b"%41", b"with space", b"\xff\xfe\x80", "caf\u00e9".encode(),
            b"x" * 1000, b"123456", b"000001", b"=eq", b"~"]
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!*'()%+/:@,"
    while len(keys) < n:
        kind = rng.randrange(4)
        if kind == 0:
            k = str(rng.randrange(100000, 1000000)).encode()  # the assignment's request ids
        elif kind == 1:
            k = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        elif kind == 2:
            k = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 12)))
        else:
            k = b"k " + str(rng.random()).encode()
        if k not in keys:
            keys.append(k)
    return keys[:n]


class RingViewCase(LbTestCase):
    def lb_with(self, *args, replicas=4, token=None, wait=True):
        extra = ["--replica-bin", REPLICA, *args]
        if token:
            extra += ["--admin-token", token]
        return self.start_lb(*extra, replicas=replicas, wait_ready=wait and token is None)

    def route(self, conn, key):
        resp = conn.request("GET", "/route?key=" + pct(key))
        self.assertEqual(resp.status, 200, (key, resp))
        return resp.json()["message"]

    def real(self, conn, key, hash_key="rid"):
        """The replica that answers GET /home carrying key as the routing key (raw bytes)."""
        if hash_key == "rid":
            line = b"X-Request-Id: " + key
        elif hash_key.startswith("header:"):
            line = hash_key[7:].encode() + b": " + key
        else:  # cookie:NAME
            line = b"Cookie: theme=dark; " + hash_key[7:].encode() + b"=" + key + b"; x=1"
        conn.send(b"GET /home HTTP/1.1\r\nHost: " + f"{HOST}:{conn.port}".encode() + b"\r\n" + line + b"\r\n\r\n")
        resp = conn.read_response()
        self.assertEqual(resp.status, 200, (key, resp))
        m = HELLO.match(resp.body)
        self.assertIsNotNone(m, resp)
        return m.group(1).decode()

    def details(self, lb):
        return {d["name"]: d for d in self.rep(lb, verbose=True).json()["message"]["details"]}


class Route(RingViewCase):
    def check_agreement(self, lb, keys, hash_key="rid"):
        """/route and real requests agree on every key; returns {key: /route's answer}."""
        answers = {}
        with Connection(lb.port) as admin, Connection(lb.port) as client:
            for key in keys:
                ans = self.route(admin, key)
                self.assertIsNotNone(ans["replica"], ans)
                self.assertEqual(ans["replica"]["name"], self.real(client, key, hash_key), key)
                answers[key] = ans
        return answers

    def run_mode(self, ring, hash_key="rid", kill=True):
        lb = self.lb_with("--ring", ring, "--hash-key", hash_key, "--heal", "off")
        keys = test_keys(200, seed=len(ring) + len(hash_key))
        before = self.check_agreement(lb, keys, hash_key)
        names = {a["replica"]["name"] for a in before.values()}
        self.assertEqual(len(names), 4, f"200 keys reach only {names}")
        for key, ans in before.items():
            if "key" in ans:
                self.assertEqual(ans["key"].encode(), key)
            else:
                self.assertEqual(bytes.fromhex(ans["key_hex"]), key)
            self.assertEqual([m["ring_id"] for m in ans["clockwise"]][:1], [ans["replica"]["ring_id"]])
            self.assertEqual(sorted(m["name"] for m in ans["clockwise"]), sorted(names))
            self.assertEqual(len(ans["failover"]), 2)  # --retries 2
            self.assertEqual(ans["failover"], ans["clockwise"][1:3])
        if not kill:
            return
        # Kill the replica that most keys reach: its keys go to the first replica of their failover.
        counts = {}
        for ans in before.values():
            counts[ans["replica"]["name"]] = counts.get(ans["replica"]["name"], 0) + 1
        victim = max(counts, key=counts.get)
        os.kill(int(self.details(lb)[victim]["id"]), signal.SIGKILL)
        harness.wait_until(lambda: self.details(lb)[victim]["state"] == "dead", 10, f"{victim} dead")
        after = self.check_agreement(lb, keys, hash_key)
        moved = 0
        for key, ans in after.items():
            old = before[key]
            self.assertNotEqual(ans["replica"]["name"], victim)
            if old["replica"]["name"] == victim:
                moved += 1
                self.assertEqual(ans["replica"], old["failover"][0], key)
                self.assertEqual(ans["clockwise"][0]["name"], victim)
                self.assertEqual(ans["clockwise"][0]["state"], "dead")
            else:
                self.assertEqual(ans["replica"], old["replica"], key)  # no other key moved
            self.assertNotIn(victim, [m["name"] for m in ans["failover"]])
        self.assertEqual(moved, counts[victim])

    def test_route_agrees_with_real_requests_ketama(self):
        self.run_mode("ketama")

    def test_route_agrees_with_real_requests_maglev(self):
        self.run_mode("maglev")

    def test_route_agrees_with_real_requests_slots(self):
        self.run_mode("slots")

    def test_route_agrees_for_header_and_cookie_keys(self):
        self.run_mode("ketama", "header:X-User", kill=False)
        self.run_mode("maglev", "cookie:sid", kill=False)

    def test_route_agrees_for_path_keys(self):
        lb = self.lb_with("--hash-key", "path")
        with Connection(lb.port) as admin, Connection(lb.port) as client:
            ans = self.route(admin, b"/home")
            resp = client.request("GET", "/home")
            self.assertEqual(ans["replica"]["name"], HELLO.match(resp.body).group(1).decode())
            for bad in (b"home", b"/home?x=1", b"/a b", b"/\xff"):
                resp = admin.request("GET", "/route?key=" + pct(bad))
                self.assertEqual(resp.status, 400, (bad, resp))
                self.assertIn(b"request path", resp.body)

    def test_hostile_keys_get_a_clear_400_and_change_nothing(self):
        lb = self.lb_with()
        rep = self.rep(lb).body
        cases = {
            "/route": b"needs the routing key",
            "/route?key=": b"an empty key",
            "/route?key": b"an empty key",
            "/route?key=%zz": b"invalid percent-encoding at byte 0",
            "/route?key=abc%4": b"invalid percent-encoding at byte 3",
            "/route?key=%00": b"control character",
            "/route?key=a%0D%0AX-Evil:%201": b"control character",
            "/route?key=%20abc": b"whitespace",
            "/route?key=abc%09": b"whitespace",
        }
        with Connection(lb.port) as conn:
            for path, why in cases.items():
                resp = conn.request("GET", path)
                self.assertEqual(resp.status, 400, (path, resp))
                body = resp.json()
                self.assertEqual(body["status"], "failure")
                self.assertIn(why.decode(), body["message"], path)
            resp = conn.request("POST", "/route?key=abc")
            self.assertEqual(resp.status, 405)
            self.assertEqual(resp.header("Allow"), "GET, HEAD")
        # A key larger than a request head may be: the HTTP layer's 431, as for any request.
        with Connection(lb.port) as conn:
            resp = conn.request("GET", "/route?key=" + "k" * 20000)
            self.assertEqual(resp.status, 431, resp)
        # The same key bytes whether spelled with '+', %2B or as a percent sign encoded.
        with Connection(lb.port) as conn, Connection(lb.port) as client:
            self.assertEqual(self.route(conn, b"a+b"), conn.request("GET", "/route?key=a+b").json()["message"])
            self.assertEqual(conn.request("GET", "/route?key=%2541").json()["message"]["key"], "%41")
            self.assertEqual(conn.request("GET", "/route?key=%2541").json()["message"]["replica"]["name"],
                             self.real(client, b"%41"))
        self.assertEqual(self.rep(lb).body, rep)
        harness.wait_lb_ready(lb, 4)


class Ring(RingViewCase):
    def check_ring(self, msg, space):
        self.assertEqual(msg["space"], space)
        arcs = sorted((a[0], a[1], m["name"]) for m in msg["members"] for a in m["arcs"])
        self.assertEqual(len(arcs), msg["arcs"])
        pos = 0
        for first, last, _ in arcs:  # no gap, no overlap
            self.assertEqual(first, pos)
            self.assertLessEqual(first, last)
            pos = last + 1
        self.assertEqual(pos, space)
        self.assertAlmostEqual(sum(m["share"] for m in msg["members"]), 1.0, places=5)
        for m in msg["members"]:
            held = sum(b - a + 1 for a, b in m["arcs"])
            self.assertAlmostEqual(m["share"], held / space, places=5)
        return arcs

    def test_arcs_cover_the_space_and_agree_with_route(self):
        for ring, space, points in (("ketama", 2 ** 32, 160), ("slots", 512, 9), ("maglev", 65537, None)):
            with self.subTest(ring=ring):
                # ketama with nginx's 160 points, given explicitly: the default's 8000 per replica
                # (issue 16) make more arcs than /ring lists.
                vnodes = ("--vnodes", "160") if ring == "ketama" else ()
                lb = self.lb_with("--ring", ring, *vnodes, "--heal", "off", replicas=3)
                resp = harness.request(lb.port, "GET", "/ring")
                self.assertEqual(resp.status, 200, resp)
                msg = resp.json()["message"]
                self.assertEqual(msg["ring"], ring)
                self.assertEqual([m["ring_id"] for m in msg["members"]], [1, 2, 3])
                if ring == "maglev":  # 65537 entries in some 44,000 runs: only the table shares
                    self.assertIn("more than the 20000", msg["arcs_omitted"])
                    self.assertEqual(sum(m["points"] for m in msg["members"]), space)
                    for m in msg["members"]:
                        self.assertNotIn("arcs", m)
                        self.assertAlmostEqual(m["share"], m["points"] / space, places=5)
                    resp = harness.request(lb.port, "GET", "/ring?arcs=0")
                    self.assertEqual(resp.json()["message"]["arcs_omitted"], "arcs=0 was asked")
                    self.assert_clean_stop(lb)
                    continue
                for m in msg["members"]:
                    self.assertEqual(m["points"], points)
                    self.assertEqual(m["state"], "healthy")
                    self.assertEqual(m["share_now"], m["share"])
                    if ring == "slots":
                        self.assertEqual(len(m["slots"]), 9)
                arcs = self.check_ring(msg, space)
                # Every key's position lies in an arc of the replica /route names (all healthy).
                with Connection(lb.port) as conn:
                    for key in test_keys(100, seed=3):
                        ans = self.route(conn, key)
                        owner = [n for a, b, n in arcs if a <= ans["position"] <= b]
                        self.assertEqual(owner, [ans["replica"]["name"]], key)
                # A dead member keeps its arcs (the ring does not change) but serves nothing now;
                # the others share its keys.
                victim = "server2"
                os.kill(int(self.details(lb)[victim]["id"]), signal.SIGKILL)
                harness.wait_until(lambda: self.details(lb)[victim]["state"] == "dead", 10, "dead")
                msg2 = harness.request(lb.port, "GET", "/ring").json()["message"]
                self.assertGreater(msg2["gen"], msg["gen"])
                self.assertEqual(self.check_ring(msg2, space), arcs)
                now = {m["name"]: m for m in msg2["members"]}
                self.assertEqual(now[victim]["state"], "dead")
                self.assertEqual(now[victim]["share_now"], 0)
                self.assertAlmostEqual(sum(m["share_now"] for m in msg2["members"]), 1.0, places=5)
                for name in ("server1", "server3"):
                    self.assertGreater(now[name]["share_now"], now[name]["share"])
                self.assert_clean_stop(lb)

    def test_a_64_member_ring_stays_small(self):
        # 64 static backends on ports nothing listens on: the ring holds them all (none healthy).
        ports = harness.free_ports(64)
        backends = [a for p in ports for a in ("--backend", f"{HOST}:{p}")]
        sizes = {}
        for ring in ("ketama", "maglev", "slots"):
            argv = ["--provisioner", "static", *backends, "--ring", ring]
            if ring == "ketama":  # nginx's 160 points, given explicitly (the default is 8000)
                argv += ["--vnodes", "160"]
            if ring == "slots":  # 64 members x 9 points need more than 512 slots
                argv += ["--slots", "1024", "--vnodes", "10", "--max-replicas", "64"]
            lb = self.start_lb(*argv, wait_ready=False)
            resp = harness.wait_until(
                lambda: (lambda r: r if r.status == 200 and len(r.json()["message"]["members"]) == 64 else None)(
                    harness.request(lb.port, "GET", "/ring")), 10, "64 members in /ring")
            msg = resp.json()["message"]
            sizes[ring] = (len(resp.body), msg["arcs"], "arcs_omitted" in msg)
            if ring == "ketama":
                self.assertEqual(sum(m["points"] for m in msg["members"]), 64 * 160)
                self.check_ring(msg, 2 ** 32)
            self.assert_clean_stop(lb)
        print(f"\n/ring for 64 members (bytes, arcs, arcs omitted): {sizes}")
        self.assertLess(sizes["ketama"][0], 300_000)  # ~10,000 arcs listed
        self.assertFalse(sizes["ketama"][2])
        self.assertLess(sizes["maglev"][0], 20_000)  # table shares only
        self.assertTrue(sizes["maglev"][2])


class DryRun(RingViewCase):
    def test_dry_run_changes_nothing_and_predicts_the_add(self):
        for ring in ("ketama", "maglev"):
            with self.subTest(ring=ring):
                lb = self.lb_with("--ring", ring, replicas=3)
                body = {"n": 2, "hostnames": ["fresh1", "fresh2"]}
                rep, ring_before = self.rep(lb, verbose=True).body, harness.request(lb.port, "GET", "/ring").body
                resp = harness.request(lb.port, "POST", "/add?dry_run=1", body=body)
                self.assertEqual(resp.status, 200, resp)
                dry = resp.json()["message"]
                self.assertTrue(dry["dry_run"])
                self.assertEqual((dry["members_before"], dry["members_after"]), (3, 5))
                self.assertEqual([(n["name"], n["ring_id"]) for n in dry["new"]], [("fresh1", 4), ("fresh2", 5)])
                for n in dry["new"]:
                    self.assertGreater(n["share"], 0.1)
                    self.assertLess(n["share"], 0.3)
                self.assertAlmostEqual(dry["moved"], sum(n["share"] for n in dry["new"]) + dry["moved_between_existing"], places=5)
                if ring == "ketama":
                    self.assertEqual(dry["moved_between_existing"], 0)
                # Nothing changed: the same /rep (in-flight and request counts included), the same
                # ring, no process started.
                self.assertEqual(self.rep(lb, verbose=True).body, rep)
                self.assertEqual(harness.request(lb.port, "GET", "/ring").body, ring_before)
                self.assertNotIn("fresh1", lb.log())
                # The answers /add gives for a bad body, unchanged.
                for bad, status in (({"n": 0}, 400), ({"n": 1, "hostnames": ["server1"]}, 409),
                                    ({"n": 70}, 400), ({"n": 1, "hostnames": ["a b"]}, 400)):
                    resp = harness.request(lb.port, "POST", "/add?dry_run=1", body=bad)
                    self.assertEqual(resp.status, status, (bad, resp))
                    real = harness.request(lb.port, "POST", "/add", body=bad)
                    self.assertEqual((resp.status, resp.body), (real.status, real.body))
                self.assertEqual(self.rep(lb).json()["message"]["N"], 3)
                # Keys before, then the real /add: the shares are exactly the dry run's, and the
                # keys that moved went where the comparison said.
                keys = test_keys(400, seed=11)
                with Connection(lb.port) as conn:
                    owner_before = {k: self.route(conn, k)["replica"]["name"] for k in keys}
                resp = harness.request(lb.port, "POST", "/add", body=body)
                self.assertEqual(resp.status, 200, resp)
                harness.wait_lb_ready(lb, 5)
                after = {m["name"]: m for m in harness.request(lb.port, "GET", "/ring").json()["message"]["members"]}
                for n in dry["new"]:
                    self.assertAlmostEqual(after[n["name"]]["share"], n["share"], places=5)
                    self.assertEqual(after[n["name"]]["ring_id"], n["ring_id"])
                with Connection(lb.port) as conn:
                    owner_after = {k: self.route(conn, k)["replica"]["name"] for k in keys}
                moved = [k for k in keys if owner_after[k] != owner_before[k]]
                if ring == "ketama":  # only to the new replicas
                    self.assertTrue(all(owner_after[k] in ("fresh1", "fresh2") for k in moved))
                # The fraction of 400 keys that moved is the dry run's, within 5 standard deviations.
                p = dry["moved"]
                sd = (p * (1 - p) / len(keys)) ** 0.5
                self.assertLess(abs(len(moved) / len(keys) - p), 5 * sd, (len(moved), p))
                self.assert_clean_stop(lb)

    def test_dry_run_on_a_static_pool_is_refused_like_add(self):
        lb = self.start_lb("--provisioner", "static", "--backend", f"{HOST}:{harness.free_port()}", wait_ready=False)
        resp = harness.request(lb.port, "POST", "/add?dry_run=1", body={"n": 1})
        self.assertEqual(resp.status, 409, resp)


class Dashboard(RingViewCase):
    def test_page_is_public_and_its_data_needs_the_token(self):
        lb = self.lb_with(token="s3cret")
        harness.wait_until(lambda: harness.request(lb.port, "GET", "/readyz").status == 200, 15, "ready")
        resp = harness.request(lb.port, "GET", "/dashboard")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.header("Content-Type"), "text/html; charset=utf-8")
        self.assertIn("default-src 'none'", resp.header("Content-Security-Policy"))
        self.assertIn(b'<svg id="ring"', resp.body)
        self.assertNotIn(b"server1", resp.body)  # no data in the page
        self.assertNotIn(b"s3cret", resp.body)
        self.assertNotIn(b"http://", resp.body.replace(b"http://www.w3.org/2000/svg", b""))  # nothing from elsewhere
        for path in ("/route?key=abc", "/ring", "/rep?verbose=1", "/metrics"):
            self.assertEqual(harness.request(lb.port, "GET", path).status, 401, path)
            ok = harness.request(lb.port, "GET", path, headers={"Authorization": "Bearer s3cret"})
            self.assertEqual(ok.status, 200, path)
        resp = harness.request(lb.port, "POST", "/add?dry_run=1", body={"n": 1})
        self.assertEqual(resp.status, 401)
        self.assertEqual(harness.request(lb.port, "POST", "/dashboard").status, 405)

    def test_on_its_own_admin_listener(self):
        admin_port = harness.free_port()
        lb = self.lb_with("--admin-listen", f"{HOST}:{admin_port}", replicas=2, wait=False)
        harness.wait_until(lambda: harness.listening(lb.pid, admin_port), 10, "the admin listener")
        self.assertEqual(harness.request(admin_port, "GET", "/dashboard").status, 200)
        self.assertEqual(harness.request(admin_port, "GET", "/ring").status, 200)
        # On the main listener these paths are the replicas' (the assignment's 400 for unknown ones).
        for path in ("/dashboard", "/ring", "/route?key=a"):
            resp = harness.request(lb.port, "GET", path)
            self.assertEqual(resp.status, 400, (path, resp))
            self.assertIn(b"does not exist in server replicas", resp.body)


if __name__ == "__main__":
    unittest.main()
