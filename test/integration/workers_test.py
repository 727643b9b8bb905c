"""ringlb's multi-worker data plane (issue 12) as clients see it, at --workers 4 on a 2-core machine
(more workers than cores), through real ringlb and ringlb-replica processes on 127.0.0.1.

Traffic: 2,000 distinct X-Request-Id keys over 64 concurrent keep-alive connections, each key on 2
different connections. The kernel spreads the connections over the workers' SO_REUSEPORT listeners,
so every worker sees many keys and most keys reach two workers. The replica that answered is named
in /home's body ("Hello from Server: NAME").

- Every key is answered by exactly one replica, and each replica's share is sane.
- A replica SIGKILLed under that load (GET, so retries are allowed) costs no request, no key of
  another replica moves meanwhile or after, and its replacement takes all of its keys.
- /add and /rm reach every worker before their answer: 64 connections (new, spread over the
  workers) send their first requests the moment the answer is read. After /add each key is
  answered by one replica only (a worker still on the old routing would send a moved key to its
  old owner) and every key that moved went to a new replica; after /rm no request reaches a
  removed replica and every key is back where it was before the /add. This catches a worker that
  installs the new routing tens of ms late (an /add answered before its sync with publication
  delayed 20 ms failed 3 runs of 3); a lag of microseconds is beyond any client's reach.
- SIGTERM with 64 requests in flight: every one of them is answered 200, ringlb exits 0, it does
  not log "handles left open" (uv_loop_close failed on a loop), and its replicas are gone.
- The worker count: --workers, RINGLB_WORKERS (the flag wins) and auto (the CPUs this process may
  run on), seen as that many listening sockets on the --listen port.

Every test ends by checking that its ringlb held 4 listening sockets (one per worker): against a
daemon that still runs one loop, the routing checks pass trivially, so this is what fails.

Nothing here times anything; every loop is bounded in count and time.
"""
import os
import random
import signal
import threading
import time
import unittest

import harness
from harness import Connection
from heal_test import write_wrapper
from lb_test import LbTestCase, pid_gone, RINGLB

WORKERS = 4
CONNS = 64
KEYS = 2000
COPIES = 2  # connections each key is sent on
HOME_PREFIX = "Hello from Server: "


def make_keys(seed):
    """KEYS distinct 6-digit X-Request-Id values."""
    return [str(k) for k in random.Random(seed).sample(range(100000, 1000000), KEYS)]


def spread(keys, seed, copies=COPIES):
    """Per connection, the keys it sends: key i goes to connections (i + j * CONNS / copies) % CONNS
    for j < copies (distinct connections), each connection's list shuffled."""
    plan = [[] for _ in range(CONNS)]
    for i, key in enumerate(keys):
        for j in range(copies):
            plan[(i + j * CONNS // copies) % CONNS].append(key)
    rng = random.Random(seed)
    for keys_of_conn in plan:
        rng.shuffle(keys_of_conn)
    return plan


class Traffic:
    """A client thread per list of plan, each with its own keep-alive connection: thread c connects,
    waits until every thread has connected (armed is then set), waits for gate when one is given
    (so that all send within a moment of gate.set()), then sends GET path with X-Request-Id for
    every key of plan[c], rounds times over. Each answer is recorded as (connection, key, status,
    replica name or error text); a failed exchange is recorded and the thread goes on over a new
    connection. triggered is set once `trigger` answers are in. Bounded: join() fails after limit s."""

    def __init__(self, port, plan, rounds=1, trigger=None, limit=120.0, path="/home", timeout=15.0,
                 gate=None):
        self.port, self.plan, self.rounds, self.path, self.timeout = port, plan, rounds, path, timeout
        self.results = [[] for _ in plan]
        self.done = 0
        self.triggered = threading.Event()
        self.armed = threading.Event()
        self._trigger, self._gate = trigger, gate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._barrier = threading.Barrier(len(plan), action=self.armed.set)
        self._deadline = time.monotonic() + limit
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                         for c in range(len(plan))]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def _count(self):
        with self._lock:
            self.done += 1
            if self._trigger is not None and self.done >= self._trigger:
                self.triggered.set()

    def _run(self, c):
        out = self.results[c]
        conn = None
        try:
            conn = Connection(self.port, timeout=self.timeout)
        except OSError as e:
            out.append((c, None, 0, f"connect: {e!r}"))
        try:
            self._barrier.wait(30)
        except threading.BrokenBarrierError:
            out.append((c, None, 0, "the threads did not all connect"))
        if self._gate is not None and not self._gate.wait(60):
            out.append((c, None, 0, "the gate never opened"))
        if len(out):
            if conn is not None:
                conn.close()
            return
        try:
            for _ in range(self.rounds):
                for key in self.plan[c]:
                    if self._stop.is_set() or time.monotonic() > self._deadline:
                        out.append((c, key, 0, "stopped: out of time"))
                        return
                    try:
                        if conn is None:
                            conn = Connection(self.port, timeout=self.timeout)
                        resp = conn.request("GET", self.path, {"X-Request-Id": key})
                        if resp.status == 200:
                            name = resp.json()["message"].removeprefix(HOME_PREFIX)
                        else:
                            name = resp.body[:200].decode(errors="replace")
                        out.append((c, key, resp.status, name))
                        if resp.header("Connection", "").lower() == "close":
                            conn.close()
                            conn = None
                    except (AssertionError, OSError, ValueError) as e:
                        out.append((c, key, 0, repr(e)))
                        if conn is not None:
                            conn.close()
                        conn = None
                    self._count()
        finally:
            if conn is not None:
                conn.close()

    def join(self):
        """Waits for every thread (bounded) and returns all the answers."""
        for t in self._threads:
            t.join(max(self._deadline - time.monotonic(), 0) + 5 + self.timeout)
        self._stop.set()
        alive = sum(t.is_alive() for t in self._threads)
        if alive:
            raise AssertionError(f"{alive} client threads still running after the time limit")
        return [r for rs in self.results for r in rs]


def send(port, plan, **kwargs):
    return Traffic(port, plan, **kwargs).start().join()


class WorkersTestCase(LbTestCase):
    def start_lb(self, *args, replicas=3, env=None, wait_ready=True):
        """ringlb with args (and env added to the environment), once it serves with every replica
        healthy."""
        argv = [RINGLB, "--listen", f"{harness.HOST}:{{port}}", "--log-level", "info", *args]
        if "--provisioner" not in args:
            argv += ["--replicas", str(replicas)]
        lb = harness.start(self, argv, env=env, ready_timeout=10.0)
        self.lbs.append(lb)
        if wait_ready:
            self.wait_ready(lb, replicas)
            harness.wait_until(lambda: all(d["state"] == "healthy" for d in self.details(lb)),
                               15.0, "every replica to be healthy", 0.02)
        return lb

    def start_workers_lb(self, *args):
        """ringlb --workers 4 with three replicas. The listening sockets are counted now, while it
        surely runs; assert_ran_workers checks them at the end of the test."""
        lb = self.start_lb("--workers", str(WORKERS), *args)
        self.listeners = harness.listening_sockets(lb.pid, lb.port)
        return lb

    def assert_ran_workers(self, lb):
        self.assertEqual(
            self.listeners, WORKERS,
            f"ringlb --workers {WORKERS} held {self.listeners} listening socket(s) on its port, not "
            f"one per worker: it does not run {WORKERS} data-plane workers, so the checks above "
            f"held for a single loop only")

    def details(self, lb):
        return self.rep(lb, verbose=True).json()["message"]["details"]

    def owner_map(self, results, keys, copies=COPIES):
        """{key: replica} from results: every request answered 200, each key exactly copies times,
        and by one replica."""
        failed = [r for r in results if r[2] != 200]
        self.assertEqual(len(failed), 0, f"{len(failed)} of {len(results)} requests failed, e.g. "
                                         f"{failed[:5]}")
        seen = {}
        for _, key, _, name in results:
            seen.setdefault(key, []).append(name)
        self.assertEqual(set(seen), set(keys))
        wrong = {k: v for k, v in seen.items() if len(v) != copies}
        self.assertEqual(wrong, {}, "keys not answered exactly once per connection")
        split = {k: sorted(set(v)) for k, v in seen.items() if len(set(v)) != 1}
        self.assertEqual(len(split), 0, f"{len(split)} keys answered by more than one replica, "
                                        f"e.g. {list(split.items())[:5]}")
        return {k: v[0] for k, v in seen.items()}


class Routing(WorkersTestCase):
    def test_every_key_is_answered_by_one_replica_from_every_worker(self):
        lb = self.start_workers_lb()
        names = self.names(lb)
        keys = make_keys(1)
        owners = self.owner_map(send(lb.port, spread(keys, 1)), keys)
        share = {n: sum(1 for o in owners.values() if o == n) for n in names}
        self.assertEqual(set(owners.values()), set(names), share)
        # Sane: every replica within half and one and a half of the even share (ketama with 160
        # points per replica gives each of three replicas 25-40% of random keys).
        for name, count in share.items():
            self.assertGreater(count, KEYS / len(names) / 2, share)
            self.assertLess(count, KEYS / len(names) * 1.5, share)
        self.assert_ran_workers(lb)


class KillUnderLoad(WorkersTestCase):
    def test_sigkilled_replica_costs_no_request_and_moves_no_other_key(self):
        lb = self.start_workers_lb("--hb-interval", "200", "--hb-timeout", "500")
        keys = make_keys(2)
        plan = spread(keys, 2)
        before = self.owner_map(send(lb.port, plan), keys)
        victim = "server2"
        victim_pid = self.pids(lb)[victim]
        victim_keys = {k for k, n in before.items() if n == victim}
        self.assertGreater(len(victim_keys), 0)

        # Three rounds of the plan (12,000 GETs); the kill comes once a quarter is answered.
        total = 3 * KEYS * COPIES
        traffic = Traffic(lb.port, plan, rounds=3, trigger=total // 4, limit=150.0).start()
        self.assertTrue(traffic.triggered.wait(60), "the load did not get going")
        os.kill(victim_pid, signal.SIGKILL)
        done_at_kill = traffic.done
        results = traffic.join()

        self.assertEqual(len(results), total)
        failed = [r for r in results if r[2] != 200]
        self.assertEqual(len(failed), 0, f"{len(failed)} of {total} requests failed under the kill, "
                                         f"e.g. {failed[:5]}\nlog:\n{lb.log()[-4000:]}")
        self.assertGreater(total - done_at_kill, total // 2, "the kill did not land under load")
        moved = [r for r in results if r[1] not in victim_keys and r[3] != before[r[1]]]
        self.assertEqual(len(moved), 0, f"{len(moved)} answers for keys of other replicas came from "
                                        f"elsewhere, e.g. {[(r[1], before[r[1]], r[3]) for r in moved[:5]]}")

        # Healed: a replacement holds the victim's ring id, so it has exactly the victim's keys.
        harness.wait_until(lambda: len(self.details(lb)) == 3 and
                           all(d["state"] == "healthy" for d in self.details(lb)),
                           20.0, "a healthy replacement", 0.05)
        after = self.owner_map(send(lb.port, spread(keys, 3)), keys)
        for key in keys:
            if key not in victim_keys:
                self.assertEqual(after[key], before[key], key)
        replacements = {after[k] for k in victim_keys}
        self.assertEqual(len(replacements), 1, replacements)
        self.assertNotIn(replacements.pop(), set(before.values()))
        self.assert_ran_workers(lb)


class AddRm(WorkersTestCase):
    def admin_then_traffic(self, lb, method, path, body, plan):
        """Connects a client thread per list of plan, sends the admin request, and lets every thread
        send the moment its answer is read: (admin response, the threads' answers)."""
        go = threading.Event()
        traffic = Traffic(lb.port, plan, gate=go).start()
        try:
            self.assertTrue(traffic.armed.wait(30), "the client threads did not all connect")
            with Connection(lb.port, timeout=30) as conn:
                resp = conn.request(method, path, body=body)
        finally:
            go.set()
        return resp, traffic.join()

    def test_add_and_rm_reach_every_worker_before_their_answer(self):
        lb = self.start_workers_lb()
        old = self.names(lb)
        keys = make_keys(4)
        before = self.owner_map(send(lb.port, spread(keys, 4)), keys)

        # 64 new connections, spread over the workers, send their first requests the moment the
        # /add answer is read: one replica per key, and the keys that moved went to new replicas.
        resp, results = self.admin_then_traffic(lb, "POST", "/add", {"n": 2}, spread(keys, 5))
        self.assertEqual(resp.status, 200, resp)
        added = [n for n in resp.json()["message"]["replicas"] if n not in old]
        self.assertEqual(len(added), 2, resp)
        after_add = self.owner_map(results, keys)
        moved = {k: after_add[k] for k in keys if after_add[k] != before[k]}
        wrong = {k: (before[k], n) for k, n in moved.items() if n not in added}
        self.assertEqual(wrong, {}, "keys moved between old replicas")
        self.assertEqual(set(moved.values()), set(added), "a new replica got no key")

        # The same at the /rm answer: no request reaches a removed replica (they still run while
        # they drain), and the ring is the one from before the /add again.
        resp, results = self.admin_then_traffic(lb, "DELETE", "/rm", {"n": 2, "hostnames": added},
                                                spread(keys, 6))
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.json()["message"]["replicas"], old)
        reached = [r for r in results if r[3] in added]
        self.assertEqual(len(reached), 0, f"{len(reached)} requests reached a removed replica after "
                                          f"/rm answered, e.g. {reached[:5]}")
        self.assertEqual(self.owner_map(results, keys), before)
        self.assert_ran_workers(lb)


class Spread(WorkersTestCase):
    """The kernel spreads clients over the workers' SO_REUSEPORT sockets by a hash of their
    addresses: 64 connections over 4 workers land 10-22 per worker by chance (a worker that holds
    more of them answers its clients later). ringlb moves a client to the least loaded worker at its
    first idle moment (after its first response) whenever its worker holds 2 or more more, so each
    holds 16 +- 2; a client that sends one request and closes is never moved. Two rounds: the
    counts of connections on their way between workers must come back to zero when the clients
    leave, or the second round would be skewed."""

    def metrics(self, lb):
        # Connection: close, so this client is not one that could move.
        return harness.request(lb.port, "GET", "/metrics", {"Connection": "close"}).body.decode()

    def worker_conns(self, lb):
        counts = {}
        for line in self.metrics(lb).splitlines():
            if line.startswith("ringlb_worker_client_connections{"):
                worker = line.split('"')[1]
                counts[worker] = int(line.rsplit(" ", 1)[1])
        return counts

    def handoffs(self, lb):
        for line in self.metrics(lb).splitlines():
            if line.startswith("ringlb_client_handoffs_total "):
                return int(line.split()[1])
        self.fail("no ringlb_client_handoffs_total in /metrics")

    def test_clients_are_spread_evenly_over_the_workers(self):
        lb = self.start_workers_lb()
        for round_ in range(2):
            conns = [Connection(lb.port) for _ in range(CONNS)]
            try:
                for i, c in enumerate(conns):  # each one accepted and served
                    r = c.request("GET", "/home", {"X-Request-Id": str(100000 + i)})
                    self.assertEqual(r.status, 200)
                # The /metrics connection is one more; reports come within 20 ms.
                harness.wait_until(lambda: sum(self.worker_conns(lb).values()) == CONNS + 1, 10.0,
                                   "every worker to report its clients", 0.05)
                counts = self.worker_conns(lb)
                self.assertEqual(len(counts), WORKERS, counts)
                self.assertLessEqual(max(counts.values()) - min(counts.values()), 3,
                                     f"round {round_}: clients per worker {counts}")
                for i, c in enumerate(conns):  # moved or not, each one serves its next request
                    r = c.request("GET", "/home", {"X-Request-Id": str(200000 + i)})
                    self.assertEqual(r.status, 200)
            finally:
                for c in conns:
                    c.close()
            harness.wait_until(lambda: sum(self.worker_conns(lb).values()) == 1, 10.0,
                               "every client to be gone", 0.05)
        self.assert_ran_workers(lb)

    def test_one_request_clients_are_never_moved(self):
        lb = self.start_workers_lb()
        # 64 clients that have sent nothing yet: they stay where the kernel put them, uneven.
        idle = [Connection(lb.port) for _ in range(CONNS)]
        try:
            harness.wait_until(lambda: sum(self.worker_conns(lb).values()) == CONNS + 1, 5.0,
                               "every worker to report its clients", 0.05)
            before = self.worker_conns(lb)
            # 200 clients of one request each (HTTP/1.0, as ab sends): never moved, however uneven
            # the workers are.
            for i in range(200):
                with Connection(lb.port) as c:
                    r = c.request("GET", "/home", {"X-Request-Id": str(300000 + i)},
                                  version="HTTP/1.0")
                    self.assertEqual(r.status, 200)
            time.sleep(0.2)  # a move would be reported within 20 ms
            self.assertEqual(self.handoffs(lb), 0,
                             f"one-request clients were moved (workers held {before})")
            # Now the 64 send a request each: those of the busier workers move after it.
            for i, c in enumerate(idle):
                r = c.request("GET", "/home", {"X-Request-Id": str(400000 + i)})
                self.assertEqual(r.status, 200)
            harness.wait_until(lambda: self.handoffs(lb) > 0, 5.0,
                               f"a client to move; workers held {before}", 0.05)
            harness.wait_until(lambda: sum(self.worker_conns(lb).values()) == CONNS + 1, 10.0,
                               "every worker to report its clients", 0.05)
            counts = self.worker_conns(lb)
            self.assertLessEqual(max(counts.values()) - min(counts.values()), 3,
                                 f"clients per worker {counts} (before the requests: {before})")
        finally:
            for c in idle:
                c.close()
        self.assert_ran_workers(lb)

    def test_a_moved_client_keeps_its_idle_timeout(self):
        # A header timeout far shorter than the idle timeout: a moved client treated as a new one
        # at its new worker would be cut while it idles between its requests.
        lb = self.start_workers_lb("--header-timeout", "1000", "--idle-timeout", "60000")
        conns = [Connection(lb.port) for _ in range(CONNS)]
        try:
            for i, c in enumerate(conns):
                r = c.request("GET", "/home", {"X-Request-Id": str(100000 + i)})
                self.assertEqual(r.status, 200)
            harness.wait_until(lambda: self.handoffs(lb) > 0, 5.0, "a client to move", 0.05)
            moved = self.handoffs(lb)
            time.sleep(2.5)  # past the header timeout, well within the idle timeout
            for i, c in enumerate(conns):
                r = c.request("GET", "/home", {"X-Request-Id": str(200000 + i)})
                self.assertEqual(r.status, 200, f"client {i} after idling ({moved} moved)")
        finally:
            for c in conns:
                c.close()
        self.assert_ran_workers(lb)


class Stop(WorkersTestCase):
    def test_sigterm_with_requests_in_flight_exits_0_with_every_loop_closed(self):
        wrapper = write_wrapper(self, 'exec "$REPLICA" "$@" --debug-routes')
        lb = self.start_workers_lb("--replica-bin", wrapper)
        pids = self.pids(lb)
        keys = make_keys(7)[:CONNS]
        traffic = Traffic(lb.port, [[k] for k in keys], path="/sleep?ms=1500", limit=60.0).start()

        def inflight():
            return sum(d["inflight"] for d in self.details(lb))
        harness.wait_until(lambda: inflight() == CONNS, 20.0, f"{CONNS} requests in flight", 0.02)
        lb.send_signal(signal.SIGTERM)
        results = traffic.join()
        code, _ = lb.stop(timeout=20)

        log = lb.log()
        self.assertEqual(code, 0, log[-4000:])
        self.assertNotIn("handles left open", log)
        failed = [r for r in results if r[2] != 200 or r[3] not in pids]
        self.assertEqual(len(failed), 0, f"{len(failed)} of {CONNS} requests in flight at the "
                                         f"SIGTERM were not answered, e.g. {failed[:5]}")
        for name, pid in pids.items():
            self.assertTrue(pid_gone(pid), f"replica {name} (pid {pid}) still runs")
        self.assert_ran_workers(lb)


class WorkerCount(WorkersTestCase):
    def test_the_flag_then_RINGLB_WORKERS_then_the_cpus_decide(self):
        cpus = len(os.sched_getaffinity(0))
        cases = [
            (["--workers", "4"], {}, 4),
            ([], {"RINGLB_WORKERS": "3"}, 3),
            (["--workers", "2"], {"RINGLB_WORKERS": "1"}, 2),
            ([], {"RINGLB_WORKERS": "auto"}, cpus),
            (["--workers", "auto"], {"RINGLB_WORKERS": "1"}, cpus),
            (["--workers", "1"], {"RINGLB_WORKERS": "4"}, 1),
        ]
        for args, env, expected in cases:
            with self.subTest(args=args, env=env):
                lb = self.start_lb(*args, replicas=1, env=env)
                count = harness.listening_sockets(lb.pid, lb.port)
                self.assert_clean_stop(lb, within=10.0)
                self.assertEqual(count, expected, f"listening sockets of ringlb {args} {env}")


if __name__ == "__main__":
    unittest.main()
