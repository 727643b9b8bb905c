"""WebSocket tunnels through ringlb (issue 15, WebSocket and Upgrade), with real ringlb and
ringlb-replica processes on 127.0.0.1 and Debian's python3-websocket as the client. The replica's
/ws endpoint echoes messages and names itself in its 101 (X-Server-Id); with --debug-routes,
/ws?send=N first sends N bytes of binary messages.

- An echo round trip (text, binary, ping/pong, the close handshake), counted in /metrics while
  open, and logged when it ends: status 101 and the bytes both ways.
- 1 MiB messages both ways, several in a row.
- The same key always reaches the same replica: every tunnel of a key (X-Request-Id) lands where
  its plain requests go.
- A client that stops reading while the replica sends 256 MiB: ringlb's resident memory stays
  within a bound (backpressure), and the tunnel still works when the client reads again.
- The replica killed mid-tunnel: the client sees the connection close (nothing hangs); a replica
  stopped (SIGSTOP, its sockets silent) closes its tunnels once the health checks mark it dead.
- The idle timeout (--tunnel-timeout, short here) closes a silent tunnel; a busy one stays.
- /rm of the replica with a tunnel open: the tunnel keeps working, then closes once
  --drain-timeout has passed; new tunnels of its key go to another replica.
- SIGTERM with a tunnel open: ringlb exits 0 after --drain-timeout, having closed it.
- WebSocket over TLS (wss://, --tls-cert/--tls-key, a certificate made at test time): ringlb
  terminates TLS and tunnels the plain WebSocket to the replica's /ws: a small echo, a 1 MiB
  round trip, the close handshake, counted in /metrics (read over TLS).

Every wait is bounded; nothing is timed.
"""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import websocket

import harness
from heal_test import write_wrapper
from lb_test import LbTestCase

MIB = 1 << 20


def metric(lb, name):
    text = harness.request(lb.port, "GET", "/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def home_server(lb, key):
    body = harness.request(lb.port, "GET", "/home", headers={"X-Request-Id": key}).json()
    return body["message"].split(": ", 1)[1]


def closed_within(ws, timeout):
    """Reads ws until the connection closes (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    ws.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            op, _ = ws.recv_data(control_frame=True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                return True
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return True
    return False


class TunnelTestCase(LbTestCase):
    def setUp(self):
        super().setUp()
        self.sockets = []

    def tearDown(self):
        # The client side closes first: an open tunnel holds a stopping ringlb up to its
        # --drain-timeout (that case has its own test).
        for ws in self.sockets:
            ws.close()
        super().tearDown()

    def start_tunnel_lb(self, *args, replicas=3, wait_ready=True):
        wrapper = write_wrapper(self, 'exec "$REPLICA" "$@" --debug-routes')
        return self.start_lb("--replica-bin", wrapper, *args, replicas=replicas,
                             wait_ready=wait_ready)

    def open_ws(self, lb, key="123456", path="/ws", timeout=10):
        ws = websocket.create_connection(f"ws://{harness.HOST}:{lb.port}{path}", timeout=timeout,
                                         header=[f"X-Request-Id: {key}"])
        self.sockets.append(ws)
        return ws

    def server_of(self, ws):
        return ws.getheaders()["x-server-id"]


class Echo(TunnelTestCase):
    def test_echo_round_trip_metrics_and_access_log(self):
        log = tempfile.NamedTemporaryFile(prefix="ringlb-tunnel-", suffix=".log")
        self.addCleanup(log.close)
        lb = self.start_tunnel_lb("--access-log", "json", "--access-log-file", log.name)
        ws = self.open_ws(lb)
        self.assertEqual(ws.getstatus(), 101)
        ws.send("hello, tunnel")
        self.assertEqual(ws.recv(), "hello, tunnel")
        ws.send_binary(b"\x00\x01\xff")
        self.assertEqual(ws.recv(), b"\x00\x01\xff")
        ws.ping(b"are you there")
        op, frame = ws.recv_data_frame(control_frame=True)
        self.assertEqual(op, websocket.ABNF.OPCODE_PONG)
        self.assertEqual(frame.data, b"are you there")
        harness.wait_until(lambda: metric(lb, "ringlb_tunnels_open") == 1, 5.0, "one open tunnel")
        ws.close()
        harness.wait_until(lambda: metric(lb, "ringlb_tunnels_open") == 0, 5.0, "no open tunnel")
        self.assertEqual(metric(lb, "ringlb_tunnels_total"), 1)

        def tunnel_line():
            with open(log.name) as f:
                lines = [json.loads(l) for l in f if l.strip()]
            return next((l for l in lines if l["path"] == "/ws"), None)
        harness.wait_until(lambda: tunnel_line() is not None, 5.0, "the tunnel's access log line")
        line = tunnel_line()
        self.assertEqual(line["status"], 101)
        # Beyond the heads: the frames both ways (13 + 3 + 13 bytes of payload and the closes).
        self.assertGreater(line["bytes_in"], 200 + 29)
        self.assertGreater(line["bytes_out"], 100 + 29)

    def test_one_mib_messages_both_ways(self):
        lb = self.start_tunnel_lb()
        ws = self.open_ws(lb)
        for i in range(4):
            message = os.urandom(MIB)
            ws.send_binary(message)
            self.assertEqual(ws.recv(), message, f"message {i}")
        text = "é" * (MIB // 2)
        ws.send(text)
        self.assertEqual(ws.recv(), text)

    def test_a_key_always_reaches_the_same_replica(self):
        lb = self.start_tunnel_lb()
        seen = set()
        for key in ("100001", "234567", "345678", "456789", "567890", "678901"):
            expected = home_server(lb, key)
            seen.add(expected)
            for _ in range(3):
                ws = self.open_ws(lb, key)
                self.assertEqual(self.server_of(ws), expected, key)
                ws.send(key)
                self.assertEqual(ws.recv(), key)
                ws.close()
        self.assertGreater(len(seen), 1, "every key on one replica: the check proves nothing")


class Bounds(TunnelTestCase):
    def test_a_client_that_stops_reading_keeps_memory_bounded(self):
        lb = self.start_tunnel_lb(replicas=1)
        base = harness.rss_kib(lb.pid)
        # A small receive buffer: what the kernel holds for the client is small, so the replica's
        # bytes pile up in whoever does not apply backpressure.
        ws = websocket.create_connection(f"ws://{harness.HOST}:{lb.port}/ws?send={256 * MIB}",
                                         timeout=10, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                               65536)])
        self.sockets.append(ws)
        peak = base
        for _ in range(30):  # 3 s of the replica trying to send while nobody reads
            time.sleep(0.1)
            peak = max(peak, harness.rss_kib(lb.pid))
        print(f"ringlb RSS growth with a client not reading: {peak - base} KiB")
        self.assertLess(peak - base, 32 * 1024,
                        f"ringlb grew by {peak - base} KiB while its client did not read")
        # The tunnel still flows once the client reads: 4 MiB arrive.
        got = 0
        while got < 4 * MIB:
            got += len(ws.recv())
        self.assertGreaterEqual(got, 4 * MIB)


class Failures(TunnelTestCase):
    def test_the_replica_killed_mid_tunnel_closes_the_client(self):
        lb = self.start_tunnel_lb()
        ws = self.open_ws(lb)
        ws.send("before")
        self.assertEqual(ws.recv(), "before")
        pid = self.pids(lb)[self.server_of(ws)]
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(closed_within(ws, 10.0), "the client's tunnel stayed open")
        harness.wait_until(lambda: metric(lb, "ringlb_tunnels_open") == 0, 10.0, "no open tunnel")

    def test_a_replica_marked_dead_closes_its_tunnels(self):
        # SIGSTOP: the replica's sockets stay open and silent, so only the health checks can tell;
        # --heal off keeps the stopped process from being replaced (which would close them).
        lb = self.start_tunnel_lb("--heal", "off")
        ws = self.open_ws(lb)
        ws.send("before")
        self.assertEqual(ws.recv(), "before")
        name = self.server_of(ws)
        pid = self.pids(lb)[name]
        os.kill(pid, signal.SIGSTOP)
        try:
            self.assertTrue(closed_within(ws, 15.0), "the tunnel to a dead replica stayed open")
            harness.wait_until(lambda: metric(lb, "ringlb_tunnels_open") == 0, 10.0, "no tunnel")
        finally:
            os.kill(pid, signal.SIGCONT)

    def test_idle_timeout_closes_a_silent_tunnel(self):
        lb = self.start_tunnel_lb("--tunnel-timeout", "1500", replicas=1)
        busy = self.open_ws(lb, "111111")
        silent = self.open_ws(lb, "222222")
        # The busy one talks every 0.3 s for 3 s (twice the timeout): it stays open.
        for i in range(10):
            busy.send(str(i))
            self.assertEqual(busy.recv(), str(i))
            time.sleep(0.3)
        self.assertTrue(closed_within(silent, 5.0), "the silent tunnel was not closed")
        busy.send("still here")
        self.assertEqual(busy.recv(), "still here")

    def test_rm_lets_an_open_tunnel_finish_up_to_the_drain_timeout(self):
        lb = self.start_tunnel_lb("--drain-timeout", "3000")
        ws = self.open_ws(lb, "123456")
        name = self.server_of(ws)
        resp = harness.request(lb.port, "DELETE", "/rm", body={"n": 1, "hostnames": [name]})
        self.assertEqual(resp.status, 200, resp)
        # Routing moved at once: a new tunnel of the key goes to another replica...
        other = self.open_ws(lb, "123456")
        self.assertNotEqual(self.server_of(other), name)
        # ...while the open one still works (the drain lasts 3 s),
        ws.send("draining")
        self.assertEqual(ws.recv(), "draining")
        # and is closed once the drain timeout passed.
        self.assertTrue(closed_within(ws, 15.0), "the drained tunnel was never closed")
        other.send("fine")
        self.assertEqual(other.recv(), "fine")

    def test_sigterm_closes_open_tunnels_at_the_drain_deadline(self):
        lb = self.start_tunnel_lb("--drain-timeout", "1000")
        ws = self.open_ws(lb)
        ws.send("x")
        self.assertEqual(ws.recv(), "x")
        code, _ = lb.stop(signal.SIGTERM, timeout=20)
        self.assertEqual(code, 0, lb.log())
        self.assertTrue(closed_within(ws, 5.0), "the tunnel outlived ringlb")


class Wss(TunnelTestCase):
    """wss://: TLS from the client to ringlb, the WebSocket tunnel inside it, plain to the replica."""

    def make_cert(self):
        d = tempfile.TemporaryDirectory(prefix="ringlb-wss-")
        self.addCleanup(d.cleanup)
        cert, key = os.path.join(d.name, "wss.crt"), os.path.join(d.name, "wss.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=ringlb-wss",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=30)
        return cert, key

    def https_get(self, lb, ctx, path):
        """(status, body) of GET path over TLS; (0, b"") when the LB does not answer yet."""
        try:
            conn = http.client.HTTPSConnection(harness.HOST, lb.port, context=ctx, timeout=5)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return 0, b""

    def tls_metric(self, lb, ctx, name):
        status, body = self.https_get(lb, ctx, "/metrics")
        self.assertEqual(status, 200)
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no {name} in /metrics")

    def test_wss_echo_one_mib_round_trip_and_close(self):
        cert, key = self.make_cert()
        lb = self.start_tunnel_lb("--tls-cert", cert, "--tls-key", key, wait_ready=False)
        ctx = ssl.create_default_context(cafile=cert)

        def ready():
            status, body = self.https_get(lb, ctx, "/rep?verbose=1")
            if status != 200:
                return False
            rep = json.loads(body)["message"]
            return rep["N"] == 3 and all(d["state"] == "healthy" for d in rep["details"])
        harness.wait_until(ready, 15.0, "ringlb over TLS with three healthy replicas")

        ws = websocket.create_connection(f"wss://{harness.HOST}:{lb.port}/ws", timeout=10,
                                         sslopt={"ca_certs": cert},
                                         header=["X-Request-Id: 123456"])
        self.sockets.append(ws)
        self.assertEqual(ws.getstatus(), 101)
        self.assertTrue(self.server_of(ws))  # the replica's own 101 came through
        self.assertEqual(ws.sock.version(), "TLSv1.3")  # the client's side is TLS
        ws.send("hello over TLS")
        self.assertEqual(ws.recv(), "hello over TLS")
        message = os.urandom(MIB)
        ws.send_binary(message)
        self.assertEqual(ws.recv(), message)
        harness.wait_until(lambda: self.tls_metric(lb, ctx, "ringlb_tunnels_open") == 1, 5.0,
                           "one open tunnel")
        # The close handshake: our close frame goes through, the replica's answer comes back and
        # the replica closes its side, which the LB passes on (the TLS connection ends); then the
        # client closes its own and the tunnel is over.
        ws.send_close(websocket.STATUS_NORMAL, b"bye")
        op, frame = ws.recv_data_frame(control_frame=True)
        self.assertEqual(op, websocket.ABNF.OPCODE_CLOSE)
        self.assertEqual(int.from_bytes(frame.data[:2], "big"), websocket.STATUS_NORMAL)
        self.assertTrue(closed_within(ws, 10), "the replica's close reaches the client")
        ws.shutdown()
        harness.wait_until(lambda: self.tls_metric(lb, ctx, "ringlb_tunnels_open") == 0, 5.0,
                           "no open tunnel")
        self.assertEqual(self.tls_metric(lb, ctx, "ringlb_tunnels_total"), 1)


if __name__ == "__main__":
    unittest.main()
