"""HTTP framing and parsing strictness of ringlb under hostile bytes (issue 10, items 1, 2, 7, 8).

Each test starts one ringlb in front of one recording backend (recorder.py) and sends exact bytes
through a raw socket. It asserts what the client got, the exact bytes the backend received, and
the smuggling oracle: the number of requests the backend parsed equals the number the LB accepted,
each with the body the client framed.

- The framing the LB sends on is the framing it parsed: Content-Length, Transfer-Encoding and Host
  survive a Connection header that names them, in requests and in responses.
- What the LB rejects (the same bytes HAProxy 2.6 and nginx 1.22 reject) gets its status code and
  a closed connection, and the backend receives nothing of it.
- What the LB accepts but normalises (obs-fold, absolute-form, bare LF, several X-Forwarded-For)
  reaches the backend in one canonical form.
- Interim 100 Continue responses reach HTTP/1.1 clients, never HTTP/1.0 ones.

Every wait is bounded; ringlb must exit 0 on SIGTERM at the end of each test (no leaked handles).
"""
import signal
import socket
import threading
import time
import unittest

import harness
from harness import Connection, HOST
from recorder import Recorder, ok

RINGLB = harness.build_path("lb", "ringlb")
HEARTBEAT = b"GET /heartbeat "
# The lines the LB appends to every head it forwards for a client whose request carries
# X-Request-Id (so that no random id is generated).
XFF = b"X-Forwarded-For: 127.0.0.1\r\n"


class FramingTestCase(unittest.TestCase):
    def setUp(self):
        self.rec = Recorder(self)
        self.lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info",
                                       "--provisioner", "static", "--backend", self.rec.address],
                                ready_timeout=10.0)
        harness.wait_until(self._serves, 15.0, "ringlb to serve /home through the recorder", 0.05)
        self.reset_recorder()

    def _serves(self):
        if not self.lb.running():
            raise AssertionError(f"ringlb exited: {self.lb.log()}")
        try:
            return harness.request(self.lb.port, "GET", "/home").status == 200
        except (OSError, AssertionError):
            return False

    def tearDown(self):
        code, _ = self.lb.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(code, 0, f"ringlb did not stop cleanly; log:\n{self.lb.log()}")

    def reset_recorder(self):
        """Forgets what the readiness probes left in the recorder (connections stay open)."""
        with self.rec._lock:
            self.rec.requests.clear()
            self.rec.errors.clear()
            for raw in self.rec.raw:
                del raw[:]

    def proxied_bytes(self):
        """Everything the backend received on connections other than heartbeats, in order."""
        with self.rec._lock:
            return b"".join(bytes(r) for r in self.rec.raw if not r.startswith(HEARTBEAT))

    def assert_backend_got_nothing(self, what):
        time.sleep(0.2)  # a forwarded request would have arrived by now (loopback)
        self.assertEqual(self.proxied_bytes(), b"", what)
        self.assertEqual(self.rec.requests, [], what)

    def exchange(self, data, method="GET"):
        """Sends data on a fresh connection and reads one response."""
        with Connection(self.lb.port) as conn:
            conn.send(data)
            return conn.read_response(method)

    def rejected(self, data):
        """Sends data on a fresh connection; returns (the response, the bytes after it until the
        LB closed the connection)."""
        with Connection(self.lb.port) as conn:
            conn.send(data)
            resp = conn.read_response()
            return resp, conn.read_until_closed()


class SmugglingTest(FramingTestCase):
    """Item 1 and 2: a Connection header never removes the framing or Host."""

    SMUGGLED = b"GET /sleep?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n"

    def assert_one_request(self, method, path, body):
        reqs = self.rec.wait_requests(1)
        time.sleep(0.2)  # a smuggled second request would be parsed by now
        self.assertEqual(len(self.rec.requests), 1, f"the backend parsed {self.rec.requests}")
        self.assertEqual(self.rec.errors, [])
        self.assertEqual((reqs[0].method, reqs[0].target, reqs[0].body), (method, path, body))
        return reqs[0]

    def test_connection_content_length_keeps_content_length(self):
        body = self.SMUGGLED
        self.assertEqual(len(body), 39)
        resp = self.exchange(b"POST /sink HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
                             b"Connection: content-length\r\nContent-Length: 39\r\n\r\n" + body)
        self.assertEqual((resp.status, resp.body), (200, b"rec 1"))
        req = self.assert_one_request("POST", "/sink", body)
        self.assertEqual(req.wire, b"POST /sink HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
                                   b"Content-Length: 39\r\n" + XFF + b"\r\n" + body)
        # The pooled upstream connection carries the next client's request, and its answer.
        resp = self.exchange(b"GET /next HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n")
        self.assertEqual((resp.status, resp.body), (200, b"rec 2"))
        self.assertEqual([r.target for r in self.rec.wait_requests(2)], ["/sink", "/next"])

    def test_connection_transfer_encoding_keeps_chunked(self):
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(self.SMUGGLED), self.SMUGGLED)
        resp = self.exchange(b"POST /sink HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
                             b"Connection: keep-alive, Transfer-Encoding\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        self.assertEqual((resp.status, resp.body), (200, b"rec 1"))
        req = self.assert_one_request("POST", "/sink", self.SMUGGLED)
        self.assertEqual(req.wire, b"POST /sink HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
                                   b"Transfer-Encoding: chunked\r\n" + XFF + b"\r\n" + chunked)

    def test_connection_host_keeps_host(self):
        resp = self.exchange(b"GET /h HTTP/1.1\r\nHost: a.example\r\nConnection: host, x-drop\r\n"
                             b"X-Drop: 1\r\nX-Request-Id: 1\r\n\r\n")
        self.assertEqual(resp.status, 200)
        req = self.assert_one_request("GET", "/h", b"")
        self.assertEqual(req.wire, b"GET /h HTTP/1.1\r\nHost: a.example\r\nX-Request-Id: 1\r\n"
                                   + XFF + b"\r\n")

    def test_response_connection_names_framing(self):
        cases = [
            (b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            (b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding, x-a\r\nX-A: 1\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ]
        for answer, expected in cases:
            with self.subTest(answer=answer):
                self.rec.responder = lambda req, answer=answer: answer
                with Connection(self.lb.port) as conn:
                    for _ in range(2):  # the client connection stays usable: framing kept
                        conn.send(b"GET /r HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n")
                        resp = conn.read_response()
                        self.assertEqual(resp.raw, expected)
                        self.assertEqual(resp.body, b"hello")


    def test_response_with_ambiguous_framing_is_not_passed_on(self):
        # A response framed two ways (or by two lengths) is the replica's fault: the client gets an
        # error from the LB, none of the replica's bytes, and its connection stays usable.
        answers = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ]
        for answer in answers:
            with self.subTest(answer=answer):
                self.rec.responder = lambda req, answer=answer: answer
                with Connection(self.lb.port) as conn:
                    conn.send(b"GET /r HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n")
                    resp = conn.read_response()
                    # 502, or 503 once the retry found no other replica (the retry policy's call).
                    self.assertIn(resp.status, (502, 503), resp)
                    self.assertNotIn(b"hello", resp.raw)
                    self.rec.responder = lambda req: ok(b"fine")
                    resp = conn.request("GET", "/again", {"X-Request-Id": "1"})
                    self.assertEqual((resp.status, resp.body), (200, b"fine"))


class TrailerTest(FramingTestCase):
    """A chunked body's trailer section is passed on without the fields a trailer must not carry
    (RFC 9110 §6.5.1): llhttp, like other parsers, reads "Connection: close" or a Transfer-Encoding
    in the trailers as it would in the head, so a next hop that got them would frame the connection
    otherwise than the LB does (the fuzz target fuzz_response found a client left waiting on a
    keep-alive connection whose response trailers said close)."""

    FORBIDDEN = (b"Connection: close\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n"
                 b"Host: evil.example\r\nTrailer: X-Sum\r\nKeep-Alive: timeout=1\r\nTE: trailers\r\n"
                 b"Upgrade: h2c\r\nProxy-Connection: close\r\n")
    KEPT = b"X-Sum: 1\r\nX-Ok: two words\r\n"

    def test_request_trailers_reach_the_replica_without_the_forbidden_ones(self):
        head = (b"POST /sink HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n")
        trailers = (b"X-Sum: 1\r\n" + self.FORBIDDEN.replace(b"Transfer-Encoding: gzip\r\n", b"")
                    + b"X-Ok: two words\r\n\r\n")  # (a request's is refused: llhttp's 501)
        # In one read, and with the trailer section in a later read than the last chunk.
        for split in (False, True):
            with self.subTest(split=split):
                self.reset_recorder()
                with Connection(self.lb.port) as conn:
                    if split:
                        conn.send(head)
                        time.sleep(0.2)
                        conn.send(trailers)
                    else:
                        conn.send(head + trailers)
                    resp = conn.read_response()
                    self.assertEqual(resp.status, 200, resp)
                # The upstream connection is still in step: the next request is the next one
                # parsed. (On the client's own connection llhttp took the "Connection: close"
                # trailer as said: a request after it there gets a 400.)
                with Connection(self.lb.port) as conn:
                    resp = conn.request("GET", "/next", {"X-Request-Id": "1"})
                    self.assertEqual(resp.status, 200, resp)
                reqs = self.rec.wait_requests(2)
                self.assertEqual(self.rec.errors, [])
                self.assertEqual([(r.method, r.target) for r in reqs],
                                 [("POST", "/sink"), ("GET", "/next")])
                self.assertEqual(reqs[0].body, b"hello")
                self.assertEqual(reqs[0].wire, b"POST /sink HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
                                               b"Transfer-Encoding: chunked\r\n" + XFF + b"\r\n"
                                               b"5\r\nhello\r\n0\r\n" + self.KEPT + b"\r\n")

    def test_response_trailers_reach_the_client_without_the_forbidden_ones(self):
        answers = {
            "forbidden among kept": b"X-Sum: 1\r\n" + self.FORBIDDEN + b"X-Ok: two words\r\n",
            "only kept": self.KEPT,
            "only forbidden": self.FORBIDDEN,
            "none": b"",
        }
        for name, trailers in answers.items():
            with self.subTest(trailers=name):
                answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n")
                self.rec.responder = lambda req, answer=answer: answer
                expected_trailers = b"" if trailers in (b"", self.FORBIDDEN) else self.KEPT
                with Connection(self.lb.port) as conn:
                    for _ in range(2):  # a "Connection: close" trailer does not end the connection
                        conn.send(b"GET /r HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n")
                        resp = conn.read_response()
                        self.assertEqual(resp.raw, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                                   b"\r\n5\r\nhello\r\n0\r\n" + expected_trailers
                                                   + b"\r\n")
                    self.rec.responder = lambda req: ok(b"fine")
                    resp = conn.request("GET", "/again", {"X-Request-Id": "1"})
                    self.assertEqual((resp.status, resp.body), (200, b"fine"))


class RejectTest(FramingTestCase):
    """Item 7: requests the peers reject get their status before the close; the backend sees none."""

    CASES = [
        # (what, request bytes, status)
        ("empty header name", b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400),
        ("whitespace before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("whitespace before colon, 2", b"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: 1\r\n\r\n", 400),
        ("space inside a name", b"GET / HTTP/1.1\r\nHost: a\r\nX-A b: 1\r\n\r\n", 400),
        ("two Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("two Host, same value", b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
        ("HTTP/0.9", b"GET /\r\n\r\n", 400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        ("TE gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 501),
        ("TE gzip, chunked",
         b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("TE chunked, chunked",
         b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501),
        ("two TE headers", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        ("CONNECT, a request after it",
         b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nGET /inside HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        ("Content-Length: 1, 2", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nab", 400),
        ("two Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                               b"Content-Length: 2\r\n\r\nab", 400),
        ("Content-Length and chunked", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 400),
        ("chunked and Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                       b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400),
        ("Content-Length +1", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", 400),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400),
        ("CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400),
        ("LF in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\nX-B: b\r\n\r\n", 400),
        ("bare LF ends the head", b"GET / HTTP/1.1\r\nHost: a\nX-A: b\n\n", 400),
        ("target without /", b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("target *, not OPTIONS", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ]

    def test_rejections(self):
        for what, data, status in self.CASES:
            with self.subTest(what):
                self.reset_recorder()
                resp, rest = self.rejected(data)
                self.assertEqual(resp.status, status, f"{what}: {resp}")
                self.assertEqual(resp.header("Connection"), "close", what)
                self.assertEqual(rest, b"", what)
                if status == 405:
                    self.assertIn("GET", resp.header("Allow", ""), what)
                self.assert_backend_got_nothing(what)

    def test_malformed_after_a_good_request_gets_its_400(self):
        with Connection(self.lb.port) as conn:
            conn.send(b"GET /good HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n"
                      b"GET /bad HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n")
            good = conn.read_response()
            bad = conn.read_response()
            self.assertEqual(conn.read_until_closed(), b"")
        self.assertEqual((good.status, good.body), (200, b"rec 1"))
        self.assertEqual(bad.status, 400)
        self.assertEqual([r.target for r in self.rec.requests], ["/good"])

    def test_parse_error_after_a_good_request_gets_its_400(self):
        with Connection(self.lb.port) as conn:  # a parse error llhttp finds, not a validation one
            conn.send(b"GET /good HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n"
                      b"GET /bad HTTP/1.1\r\nHost: a\r\nX-A: \x00\r\n\r\n")
            good = conn.read_response()
            bad = conn.read_response()
            self.assertEqual(conn.read_until_closed(), b"")
        self.assertEqual((good.status, bad.status), (200, 400))
        self.assertEqual([r.target for r in self.rec.requests], ["/good"])

    def test_bad_chunk_size_after_the_head_gets_400(self):
        self.rec.responder = lambda req: None  # never answers: the 400 comes from the LB
        with Connection(self.lb.port) as conn:
            conn.send(b"POST /up HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            harness.wait_until(lambda: b"POST /up" in self.proxied_bytes(), 5.0, "the head upstream")
            conn.send(b"zz\r\nhello\r\n0\r\n\r\n")
            resp = conn.read_response()
            self.assertEqual(conn.read_until_closed(), b"")
        self.assertEqual(resp.status, 400)
        self.assertEqual(resp.header("Connection"), "close")
        # The upstream connection that got half a request is closed, not pooled.
        with self.rec._lock:
            upstream = [i for i, r in enumerate(self.rec.raw) if r.startswith(b"POST /up")]
        self.assertEqual(len(upstream), 1)
        harness.wait_until(lambda: upstream[0] in self.rec.closed, 5.0, "the upstream closed")


class NormaliseTest(FramingTestCase):
    """Accepted requests whose bytes are made canonical before they go upstream."""

    CASES = [
        # (what, request bytes, the exact head the backend receives)
        ("obs-fold becomes a space",
         b"GET /f HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\nX-Request-Id: 1\r\n\r\n",
         b"GET /f HTTP/1.1\r\nHost: a\r\nX-A: one two\r\nX-Request-Id: 1\r\n" + XFF + b"\r\n"),
        ("bare LF after the request line",
         b"GET /lf HTTP/1.1\nHost: a\r\nX-Request-Id: 1\r\n\r\n",
         b"GET /lf HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n" + XFF + b"\r\n"),
        ("absolute-form: origin-form and Host from the target",
         b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\nX-Request-Id: 1\r\n\r\n",
         b"GET /p?q=1 HTTP/1.1\r\nX-Request-Id: 1\r\nHost: example.com:8080\r\n" + XFF + b"\r\n"),
        ("absolute-form without a path",
         b"GET HTTP://Example.com HTTP/1.1\r\nHost: example.com\r\nX-Request-Id: 1\r\n\r\n",
         b"GET / HTTP/1.1\r\nX-Request-Id: 1\r\nHost: Example.com\r\n" + XFF + b"\r\n"),
        ("OPTIONS *",
         b"OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n",
         b"OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n" + XFF + b"\r\n"),
        ("HTTP/1.0 without Host",
         b"GET /old HTTP/1.0\r\nX-Request-Id: 1\r\n\r\n",
         b"GET /old HTTP/1.1\r\nX-Request-Id: 1\r\nHost: ringlb\r\n" + XFF + b"\r\n"),
        ("several X-Forwarded-For are joined",
         b"GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Request-Id: 1\r\n"
         b"X-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n\r\n",
         b"GET /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
         b"X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1\r\n\r\n"),
        ("Transfer-Encoding: Chunked (case-insensitive)",
         b"POST /c HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nTransfer-Encoding: Chunked\r\n\r\n"
         b"2\r\nhi\r\n0\r\n\r\n",
         b"POST /c HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nTransfer-Encoding: Chunked\r\n" + XFF +
         b"\r\n"),
    ]

    def test_normalised(self):
        for i, (what, data, head) in enumerate(self.CASES):
            with self.subTest(what):
                method = data.split(b" ")[0].decode()
                resp = self.exchange(data, method)
                self.assertEqual(resp.status, 200, f"{what}: {resp}")
                reqs = self.rec.wait_requests(i + 1)
                self.assertEqual(len(reqs), i + 1, what)
                self.assertEqual(reqs[i].head, head, what)
                self.assertEqual(self.rec.errors, [], what)


class ContinueBackend:
    """A backend that answers 100 Continue as soon as it has a request head, then 200 once the
    body (Content-Length) arrived. One connection at a time, heartbeats answered; bounded."""

    def __init__(self, test):
        self.heads = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        test.addCleanup(self.close)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    def _run(self):
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            with sock:
                sock.settimeout(0.1)
                self._serve(sock, deadline)

    def _serve(self, sock, deadline):
        buf = b""
        while not self._stop.is_set() and time.monotonic() < deadline:
            while b"\r\n\r\n" not in buf:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    if self._stop.is_set() or time.monotonic() > deadline:
                        return
                    continue
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            if head.startswith(b"GET /heartbeat "):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            self.heads.append(head)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if b"expect: 100-continue" in head.lower():
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            while len(buf) < length:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    if self._stop.is_set() or time.monotonic() > deadline:
                        return
                    continue
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            sock.sendall(ok(b"got %d" % len(body)))


class ContinueTest(FramingTestCase):
    """Item 8: the replica's interim 100 Continue reaches HTTP/1.1 clients, not HTTP/1.0 ones."""

    def test_100_continue_reaches_the_client_before_the_body_is_sent(self):
        backend = ContinueBackend(self)
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info",
                                  "--provisioner", "static", "--backend", backend.address],
                           ready_timeout=10.0)
        self.addCleanup(lambda: lb.stop(signal.SIGTERM, timeout=10))
        harness.wait_routable(lb)
        body = b"x" * 2048
        with Connection(lb.port) as conn:
            # The head alone: the client waits for 100 Continue before it sends the body, as curl.
            conn.send(b"PUT /up HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 2048\r\n\r\n")
            interim = conn.read_response("PUT")
            self.assertEqual(interim.raw, b"HTTP/1.1 100 Continue\r\n\r\n")
            conn.send(body)
            final = conn.read_response("PUT")
            self.assertEqual((final.status, final.body), (200, b"got 2048"))

    def test_100_continue_from_the_replica_through_the_lb(self):
        replica = harness.start(self, [harness.build_path("replica", "ringlb-replica"), "--address",
                                       HOST, "--port", "{port}", "--id", "r1", "--debug-routes"])
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info",
                                  "--provisioner", "static", "--backend", f"{HOST}:{replica.port}"],
                           ready_timeout=10.0)
        self.addCleanup(lambda: lb.stop(signal.SIGTERM, timeout=10))
        harness.wait_until(lambda: self._serves_on(lb.port), 15.0, "ringlb to serve /home")
        with Connection(lb.port) as conn:
            conn.send(b"POST /sink HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 4096\r\n\r\n")
            self.assertEqual(conn.read_response("POST").status, 100)
            conn.send(b"x" * 4096)
            final = conn.read_response("POST")
            self.assertEqual((final.status, final.body), (200, b'{"bytes": 4096}'))

    def _serves_on(self, port):
        try:
            return harness.request(port, "GET", "/home").status == 200
        except (OSError, AssertionError):
            return False

    def test_interim_responses_per_client_version(self):
        self.rec.responder = lambda req: (b"HTTP/1.1 100 Continue\r\n\r\n"
                                          b"HTTP/1.1 102 Processing\r\nX-Step: 1\r\n\r\n" + ok(b"done"))
        for version, expected in [(b"HTTP/1.1", [100, 102, 200]), (b"HTTP/1.0", [200])]:
            with self.subTest(version=version), Connection(self.lb.port) as conn:
                conn.send(b"POST /up " + version + b"\r\nHost: a\r\nX-Request-Id: 1\r\n"
                          b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
                got = [conn.read_response("POST") for _ in expected]
                self.assertEqual([r.status for r in got], expected)
                self.assertEqual(got[-1].body, b"done")
                if version == b"HTTP/1.1":
                    self.assertEqual(got[1].raw, b"HTTP/1.1 102 Processing\r\nX-Step: 1\r\n\r\n")
                else:
                    self.assertEqual(conn.read_until_closed(), b"")  # nothing after the 200


if __name__ == "__main__":
    unittest.main()
