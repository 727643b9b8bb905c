"""Upgrade requests and their tunnels byte for byte (issue 15, WebSocket and Upgrade), through ringlb
in front of the recording backend (recorder.py) or a scripted raw backend.

- An upgrade request goes upstream with its Upgrade header and "Connection: Upgrade"; the backend's
  101 reaches the client with its headers, and bytes the client sent right after its request head
  (before the 101) reach the backend in order, after the head, never parsed as HTTP; the
  backend's bytes after its 101 reach the client.
- Any other answer ends the attempt as an ordinary response, with Connection: close: the client's
  bytes after the upgrade request (a pipelined request here) are never read as HTTP.
- The hostile variants get the decision forward_upgrade_wanted documents: an Upgrade on HTTP/1.0,
  on a request with a body (Content-Length or chunked) is dropped like any hop-by-hop header, and a
  101 to such a request (or a 101 without an Upgrade header) is a malformed answer (502).
- Half-close passes through the tunnel both ways: the client's shutdown(SHUT_WR) reaches the
  backend as EOF while the backend can still send, and the backend's close reaches the client.

Every wait is bounded; nothing is timed.
"""
import signal
import socket
import threading
import time
import unittest

import harness
from harness import HOST
from recorder import Recorder

RINGLB = harness.build_path("lb", "ringlb")
XFF = b"X-Forwarded-For: 127.0.0.1\r\n"

SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: abc\r\n\r\n")


def recv_until(sock, marker, timeout=5.0):
    """Reads from sock until marker is in what was read, or EOF; returns all of it."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
    return data


def recv_to_eof(sock, timeout=5.0):
    """Reads until EOF (returns (data, True)) or timeout (returns (data, False))."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


class UpgradeTestCase(unittest.TestCase):
    def start_lb(self, backend):
        self.lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info",
                                       "--provisioner", "static", "--backend", backend,
                                       "--strikes", "1000"],
                                ready_timeout=10.0)
        harness.wait_routable(self.lb)

    def tearDown(self):
        code, _ = self.lb.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(code, 0, f"ringlb did not stop cleanly; log:\n{self.lb.log()}")

    def connect(self):
        return socket.create_connection((HOST, self.lb.port), timeout=5)


class RecorderUpgrade(UpgradeTestCase):
    def setUp(self):
        self.rec = Recorder(self)
        self.start_lb(self.rec.address)
        with self.rec._lock:
            self.rec.requests.clear()

    def backend_raw(self, index):
        with self.rec._lock:
            return bytes(self.rec.raw[index])

    def test_101_and_the_bytes_both_ways(self):
        self.rec.responder = lambda req: SWITCH + b"SERVER-HELLO"
        with self.connect() as c:
            c.sendall(b"GET /chat?x=1 HTTP/1.1\r\nHost: h\r\nX-Request-Id: 424242\r\n"
                      b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Key: k\r\n\r\nEARLY-BYTES GET / HTTP/1.1\r\n\r\n")
            got = recv_until(c, b"SERVER-HELLO")
            self.assertTrue(got.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), got)
            head, _, rest = got.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")[1:]
            self.assertIn(b"Upgrade: websocket", lines)
            self.assertIn(b"Connection: Upgrade", lines)
            self.assertIn(b"Sec-WebSocket-Accept: abc", lines)
            self.assertEqual(rest, b"SERVER-HELLO")
            c.sendall(b"MORE")
            req = self.rec.wait_requests(1)[0]
            expected = (b"GET /chat?x=1 HTTP/1.1\r\nHost: h\r\nX-Request-Id: 424242\r\n"
                        b"Sec-WebSocket-Key: k\r\n" + XFF +
                        b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            self.assertEqual(req.head, expected)
            index = req.conn
            harness.wait_until(lambda: self.backend_raw(index).endswith(b"MORE"), 5.0,
                               "the tunnel bytes to reach the backend")
            self.assertEqual(self.backend_raw(index),
                             expected + b"EARLY-BYTES GET / HTTP/1.1\r\n\r\nMORE")
        # The pipelined-looking bytes were tunnel bytes: no second request reached the backend
        # through the LB's parser.
        self.assertEqual(len(self.rec.requests), 1, self.rec.requests)

    def test_non_101_answer_is_a_normal_response_and_closes(self):
        self.rec.responder = lambda req: (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n"
                                          b"Connection: keep-alive\r\n\r\nnope")
        with self.connect() as c:
            c.sendall(b"GET /chat HTTP/1.1\r\nHost: h\r\nX-Request-Id: 424242\r\n"
                      b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                      b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n")
            got, eof = recv_to_eof(c)
        self.assertTrue(eof, got)
        self.assertTrue(got.startswith(b"HTTP/1.1 403 Forbidden\r\n"), got)
        self.assertIn(b"\r\nConnection: close\r\n", got)
        self.assertTrue(got.endswith(b"\r\n\r\nnope"), got)
        self.assertEqual(got.count(b"HTTP/1.1"), 1, got)
        time.sleep(0.2)
        self.assertEqual([r.target for r in self.rec.requests], ["/chat"])

    def test_upgrade_on_http10_or_with_a_body_is_dropped(self):
        cases = [
            (b"GET /a HTTP/1.0\r\nHost: h\r\nX-Request-Id: 424242\r\nConnection: Upgrade\r\n"
             b"Upgrade: websocket\r\n\r\n", b""),
            (b"POST /b HTTP/1.1\r\nHost: h\r\nX-Request-Id: 424242\r\nConnection: Upgrade\r\n"
             b"Upgrade: websocket\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
            (b"POST /c HTTP/1.1\r\nHost: h\r\nX-Request-Id: 424242\r\nConnection: Upgrade\r\n"
             b"Upgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"hello"),
        ]
        for n, (data, body) in enumerate(cases):
            with self.subTest(n=n):
                with self.rec._lock:
                    self.rec.requests.clear()
                self.rec.responder = lambda req: SWITCH
                with self.connect() as c:
                    c.sendall(data)
                    got = recv_until(c, b"}")
                # The backend's 101 answers a request that offered nothing: malformed, 502.
                self.assertTrue(got.startswith(b"HTTP/1.1 502 ") or got.startswith(b"HTTP/1.0 502 "),
                                got)
                req = self.rec.wait_requests(1)[0]
                self.assertNotIn(b"upgrade", req.head.lower(), req.head)
                self.assertEqual(req.body, body)

    def test_101_without_upgrade_header_is_malformed(self):
        self.rec.responder = lambda req: b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\nX"
        with self.connect() as c:
            c.sendall(b"GET /chat HTTP/1.1\r\nHost: h\r\nX-Request-Id: 424242\r\n"
                      b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            got, _ = recv_to_eof(c)
        self.assertTrue(got.startswith(b"HTTP/1.1 502 "), got)


class HalfCloseBackend:
    """A backend that answers one upgrade request 101, then records what comes until EOF; after
    the EOF it still sends "AFTER-EOF", then closes."""

    def __init__(self, test):
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        self.tunnel_bytes = b""
        self.saw_eof = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        test.addCleanup(self.close)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.listener.close()

    def run(self):
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.serve, args=(sock,), daemon=True).start()

    def serve(self, sock):
        with sock:
            head = recv_until(sock, b"\r\n\r\n")
            if b"upgrade" not in head.lower():  # a heartbeat
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            sock.sendall(SWITCH)
            rest, eof = recv_to_eof(sock, 10.0)
            self.tunnel_bytes = head.partition(b"\r\n\r\n")[2] + rest
            if eof:
                self.saw_eof.set()
                sock.sendall(b"AFTER-EOF")


class HalfClose(UpgradeTestCase):
    def test_half_close_passes_both_ways(self):
        backend = HalfCloseBackend(self)
        self.start_lb(backend.address)
        with self.connect() as c:
            c.sendall(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
            got = recv_until(c, b"\r\n\r\n")
            self.assertTrue(got.startswith(b"HTTP/1.1 101 "), got)
            c.sendall(b"LAST-WORDS")
            c.shutdown(socket.SHUT_WR)
            self.assertTrue(backend.saw_eof.wait(5), "the backend never saw the client's EOF")
            self.assertEqual(backend.tunnel_bytes, b"LAST-WORDS")
            rest, eof = recv_to_eof(c)
            self.assertTrue(eof, rest)
            self.assertEqual(rest, b"AFTER-EOF")


if __name__ == "__main__":
    unittest.main()
