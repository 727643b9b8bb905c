"""ringlb attacked after the hostile-inputs work landed: what the framing, resources and control
tests did not try, through the real path (a real ringlb, the recording backend or a scripted raw
backend, raw client sockets).

- A replica flooding interim (1xx) responses to a client that does not read them: the LB stops
  reading the replica at the high-water mark, as for a body (it grew by 200 MB a second).
- A client reading a large response slowly (but reading) is not cut by --body-timeout; one that
  stops reading still is.
- Framing headers on bodyless responses: a 1xx or 204 carrying Content-Length or
  Transfer-Encoding reaches the client without them (the LB framed them as bodyless; a client or
  proxy in front that believed the header would read the next response as the body).
- A response status below 100 ("HTTP/1.1 000"), or a 101 to a request the LB sent without Upgrade,
  is a malformed response (502), not passed on.
- The final response to a HEAD after an interim 100 Continue has no body either: the LB waited for
  one, cut the response after --body-timeout and struck the replica (three concurrent HEADs with
  Expect: 100-continue killed a healthy replica).
- Requests whose framing a replica could read otherwise than the LB: Transfer-Encoding in an
  HTTP/1.0 request (RFC 9112 §6.1; nginx answers 400), Content-Length over 2^63-1 (nginx 400;
  the LB kept it as "no length" internally), and "Transfer_Encoding" / "Content_Length", which
  CGI-style servers (WSGI, PHP) read as the real headers. Each gets 400; the backend gets nothing.
- A replica that starts its response before it has read the whole upload gets the rest of the
  upload (the LB dropped it: the replica stalled, and was struck for the stall).

RINGLB_LB_UNDER_TEST=PATH runs the same tests against another build (one from before the fixes).
Every wait is bounded.
"""
import os
import signal
import socket
import threading
import time
import unittest

import framing_test
import harness
from framing_test import FramingTestCase
from harness import Connection, HOST
from recorder import ok

RINGLB = os.environ.get("RINGLB_LB_UNDER_TEST") or harness.build_path("lb", "ringlb")
framing_test.RINGLB = RINGLB  # FramingTestCase.setUp starts this build

MEMORY_BOUND_KIB = 8 * 1024  # issue 10: RSS growth under 8 MiB over a bounded run
HEARTBEAT_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class InterimFloodBackend:
    """A backend that answers heartbeats, and answers any other request with an endless stream of
    102 Processing responses (8 KiB of header each) until the LB stops reading or closes, or the
    test ends (bounded: 30 s). sent holds the bytes it managed to write."""

    def __init__(self, test):
        self.sent = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()
        test.addCleanup(self.close)

    def close(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(5)
        self.listener.close()

    def _accept(self):
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            t = threading.Thread(target=self._serve, args=(sock, deadline), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock, deadline):
        interim = b"HTTP/1.1 102 Processing\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
        with sock:
            sock.settimeout(0.1)
            head = b""
            while b"\r\n\r\n" not in head and not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return
                head += data
            if head.startswith(b"GET /heartbeat "):
                sock.sendall(HEARTBEAT_OK)
                return
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    sock.sendall(interim * 8)
                    self.sent += len(interim) * 8
                except socket.timeout:
                    continue  # the LB stopped reading: the socket buffers are full
                except OSError:
                    return


class InterimFlood(unittest.TestCase):
    def test_interim_flood_to_a_client_that_does_not_read_is_bounded(self):
        backend = InterimFloodBackend(self)
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info",
                                  "--provisioner", "static", "--backend", backend.address],
                           ready_timeout=10.0)
        harness.wait_routable(lb)
        baseline = harness.rss_kib(lb.pid)
        peak = baseline
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads
        client.connect((HOST, lb.port))
        try:
            client.sendall(b"GET /wait HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n")
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                peak = max(peak, harness.rss_kib(lb.pid))
                time.sleep(0.01)
        finally:
            client.close()
        self.assertLess(peak - baseline, MEMORY_BOUND_KIB,
                        f"RSS grew from {baseline} to {peak} KiB; the backend sent {backend.sent} "
                        f"bytes of 102 responses")
        self.assertLess(backend.sent, 64 * 1024 * 1024, "the LB kept reading the flood")
        code, _ = lb.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(code, 0, lb.log())


class SlowReader(unittest.TestCase):
    def test_a_slow_reader_of_a_large_response_is_not_cut(self):
        # --body-timeout cuts a client that stops reading, not one that reads slowly: this one
        # reads 4 KiB every 50 ms (80 KiB/s). Before the fix only a full drain of the LB's 256 KiB
        # queue restarted the clock (and the kernel says writable only once a third of its send
        # buffer is free): the client was reset after --body-timeout while reading.
        replica = harness.start(self, [harness.build_path("replica", "ringlb-replica"), "--address",
                                       HOST, "--port", "{port}", "--id", "r1", "--debug-routes"])
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info",
                                  "--provisioner", "static", "--backend", f"{HOST}:{replica.port}",
                                  "--body-timeout", "1500"], ready_timeout=10.0)
        harness.wait_routable(lb)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        client.connect((HOST, lb.port))
        client.settimeout(2.0)
        got, cut = 0, None
        try:
            client.sendall(b"GET /bytes?n=50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
            end = time.monotonic() + 5.0
            while time.monotonic() < end:
                try:
                    data = client.recv(4096)
                except (ConnectionResetError, socket.timeout) as e:
                    cut = repr(e)
                    break
                if not data:
                    cut = "EOF"
                    break
                got += len(data)
                time.sleep(0.05)
        finally:
            client.close()
        self.assertIsNone(cut, f"the slow reader was cut after {got} bytes")
        self.assertGreater(got, 100 * 1024)
        self.assertEqual(harness.request(lb.port, "GET", "/home").status, 200)
        code, _ = lb.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(code, 0, lb.log())

    def test_a_client_that_stops_reading_is_still_cut(self):
        replica = harness.start(self, [harness.build_path("replica", "ringlb-replica"), "--address",
                                       HOST, "--port", "{port}", "--id", "r1", "--debug-routes"])
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info",
                                  "--provisioner", "static", "--backend", f"{HOST}:{replica.port}",
                                  "--body-timeout", "1000"], ready_timeout=10.0)
        harness.wait_routable(lb)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        client.connect((HOST, lb.port))
        try:
            client.sendall(b"GET /bytes?n=50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
            inode = harness.peer_socket_inode(client)
            # It never reads: within 10 body timeouts the LB closes its end.
            harness.wait_until(lambda: not harness.holds_socket(lb.pid, inode), 10.0,
                               "the LB to cut the client that stopped reading", 0.1)
        finally:
            client.close()
        code, _ = lb.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(code, 0, lb.log())


class BodylessFraming(FramingTestCase):
    """A 1xx or 204 has no body, so its Content-Length or Transfer-Encoding is not passed on."""

    def test_interim_response_loses_its_framing_headers(self):
        self.rec.responder = lambda req: (b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"
                                          b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n"
                                          b"Link: </s>\r\n\r\n" + ok(b"final"))
        with Connection(self.lb.port) as conn:
            conn.send(b"POST /up HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 2\r\n\r\nhi")
            got = [conn.read_response("POST") for _ in range(3)]
        self.assertEqual([r.raw for r in got],
                         [b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\n",
                          b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n",
                          b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"])

    def test_204_loses_its_framing_headers_and_the_connection_stays_in_step(self):
        answers = [b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n",
                   b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
                   ok(b"third")]
        self.rec.responder = lambda req: answers[len(self.rec.requests) - 1]
        with Connection(self.lb.port) as conn:
            conn.send(b"GET /a HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n" * 3)
            # Read as raw bytes: a reader that honoured a forwarded Content-Length: 5 would take
            # the start of the next response as this one's body.
            expected = (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
                        b"HTTP/1.1 204 No Content\r\n\r\n"
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthird")
            deadline = time.monotonic() + 5
            while len(conn.buf) < len(expected) and time.monotonic() < deadline:
                conn._fill(deadline)
            self.assertEqual(conn.buf, expected)


class BadStatus(FramingTestCase):
    def test_status_below_100_is_a_malformed_response(self):
        for answer in [b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
                       b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
                       # A 101 to a request the LB forwarded without Upgrade (found by fuzz_response:
                       # passed on, it left the client on a connection switched to nothing).
                       b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 5\r\n\r\nhello"]:
            with self.subTest(answer=answer):
                self.rec.responder = lambda req, answer=answer: answer
                with Connection(self.lb.port) as conn:
                    resp = conn.request("GET", "/s", {"X-Request-Id": "1"})
                    self.assertIn(resp.status, (502, 503), resp)  # 503: the retry found no other
                    self.rec.responder = lambda req: ok(b"fine")
                    resp = conn.request("GET", "/again", {"X-Request-Id": "1"})
                    self.assertEqual((resp.status, resp.body), (200, b"fine"))


class HeadAfterInterim(FramingTestCase):
    """The final response to a HEAD has no body when an interim response came first, too."""

    def test_head_with_interim_then_a_pipelined_get(self):
        def answer(req):
            if req.method == "HEAD":
                return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
            return ok(b"next")
        self.rec.responder = answer
        with Connection(self.lb.port) as conn:
            conn.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 2\r\n\r\nhi"
                      b"GET /n HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n\r\n")
            got = [conn.read_response("HEAD"), conn.read_response("HEAD"), conn.read_response()]
        self.assertEqual([r.status for r in got], [100, 200, 200])
        self.assertEqual(got[1].raw, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(got[2].body, b"next")

    def test_concurrent_heads_with_100_continue_kill_no_replica(self):
        # The real replica answers Expect: 100-continue at once. Before the fix the LB waited for
        # a HEAD body after the 100, cut each response after --body-timeout and struck the
        # replica: three at once marked it dead and it was replaced.
        replica_bin = harness.build_path("replica", "ringlb-replica")
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "info",
                                  "--replicas", "1", "--replica-bin", replica_bin,
                                  "--body-timeout", "1000"], ready_timeout=10.0)
        harness.wait_lb_ready(lb, 1)
        before = harness.request(lb.port, "GET", "/rep?verbose=1").json()["message"]["details"]
        results = []

        def head():
            with Connection(lb.port) as conn:
                conn.send(b"HEAD /home HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                          b"Content-Length: 5\r\n\r\nhello")
                got = [conn.read_response("HEAD").status, conn.read_response("HEAD").status]
                got.append(conn.request("GET", "/home").status)  # the connection stays usable
                results.append(got)

        threads = [threading.Thread(target=head) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        self.assertEqual(results, [[100, 200, 200]] * 3)
        time.sleep(1.5)  # past --body-timeout: a cut would have struck the replica by now
        after = harness.request(lb.port, "GET", "/rep?verbose=1").json()["message"]["details"]
        self.assertEqual([(r["name"], r["id"], r["state"], r["last_cause"]) for r in after],
                         [(r["name"], r["id"], "healthy", "") for r in before], lb.log())
        code, _ = lb.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(code, 0, lb.log())


class AmbiguousFraming(FramingTestCase):
    """Requests a replica could frame otherwise than the LB: 400, nothing reaches the backend."""

    CASES = [
        ("HTTP/1.0 with Transfer-Encoding, kept alive",
         b"POST /a HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.0\r\n\r\n"),
        ("Transfer_Encoding beside Content-Length",
         b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
         b"0\r\n\r\n"),
        ("transfer_encoding, lower case",
         b"POST /a HTTP/1.1\r\nHost: a\r\ntransfer_encoding: chunked\r\nContent-Length: 5\r\n\r\n"
         b"0\r\n\r\n"),
        ("Content_Length beside chunked",
         b"POST /a HTTP/1.1\r\nHost: a\r\nContent_Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"0\r\n\r\n"),
        ("Content-Length 2^63", b"POST /a HTTP/1.1\r\nHost: a\r\n"
                                b"Content-Length: 9223372036854775808\r\n\r\nabc"),
        ("Content-Length 2^64-1", b"POST /a HTTP/1.1\r\nHost: a\r\n"
                                  b"Content-Length: 18446744073709551615\r\n\r\nabc"),
        # RFC 9110 §4.2.4: userinfo from an untrusted source is an error (it became "Host: user@evil").
        ("absolute-form with userinfo", b"GET http://user@evil/p HTTP/1.1\r\nHost: a\r\n\r\n"),
    ]

    def test_chunk_size_over_2_63_is_refused(self):
        # llhttp takes chunk sizes up to 2^64-1; a replica reading them as signed 64-bit numbers
        # would frame the body otherwise. The head went upstream already: the client gets its 400,
        # and the backend never completes a request.
        for size in (b"8000000000000000", b"ffffffffffffffff"):
            with self.subTest(size=size):
                self.reset_recorder()
                with Connection(self.lb.port) as conn:
                    conn.send(b"POST /a HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabc")
                    resp = conn.read_response("POST")
                    self.assertEqual(resp.status, 400, resp)
                    conn.read_until_closed()
                self.assertEqual(self.rec.requests, [])

    def test_rejected(self):
        for what, data in self.CASES:
            with self.subTest(what):
                self.reset_recorder()
                resp, rest = self.rejected(data)
                self.assertEqual(resp.status, 400, f"{what}: {resp}")
                self.assertEqual(resp.header("Connection"), "close", what)
                self.assertEqual(rest, b"", what)
                self.assert_backend_got_nothing(what)

    def test_still_accepted(self):
        # The neighbours of the refused: a name with '_' that is no framing header, HTTP/1.0 with
        # a Content-Length body.
        cases = [
            (b"GET /u HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nX_Transfer_Encoding: chunked\r\n\r\n",
             b""),
            (b"POST /old HTTP/1.0\r\nX-Request-Id: 1\r\nContent-Length: 3\r\n\r\nabc", b"abc"),
        ]
        for i, (data, body) in enumerate(cases):
            with self.subTest(data=data):
                resp = self.exchange(data, data.split(b" ")[0].decode())
                self.assertEqual(resp.status, 200, resp)
                reqs = self.rec.wait_requests(i + 1)
                self.assertEqual(reqs[i].body, body)
                self.assertEqual(self.rec.errors, [])


class EarlyAnswerBackend:
    """A backend that answers heartbeats, and answers a request with a body early: it sends its
    response head and a first chunk as soon as it has the head, then reads the whole body
    (Content-Length), then ends the response with a chunk naming how many body bytes it got.
    Bounded: 20 s."""

    def __init__(self, test):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.address = f"{HOST}:{self.listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        test.addCleanup(self.close)

    def close(self):
        self._stop.set()
        self._thread.join(25)
        self.listener.close()

    def _accept(self):
        deadline = time.monotonic() + 20
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._serve, args=(sock, deadline), daemon=True).start()

    def _serve(self, sock, deadline):
        sock.settimeout(0.1)
        buf = b""
        with sock:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                if b"\r\n\r\n" not in buf:
                    continue
                head, body = buf.split(b"\r\n\r\n", 1)
                if head.startswith(b"GET /heartbeat "):
                    sock.sendall(HEARTBEAT_OK)
                    return
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")][0])
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nearly\r\n")
                while len(body) < length and time.monotonic() < deadline:
                    try:
                        data = sock.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        return
                    body += data
                tail = b"got %d" % len(body)
                sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
                buf = b""


class EarlyAnswer(unittest.TestCase):
    """A replica that starts its response before it has read the whole upload gets the rest of
    the upload (the LB dropped it once the response had started: the replica stalled waiting for
    it, the client was cut after --body-timeout, and the replica was struck for the stall)."""

    def test_the_rest_of_the_body_reaches_a_replica_that_answered_early(self):
        backend = EarlyAnswerBackend(self)
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--provisioner", "static",
                                  "--backend", backend.address, "--body-timeout", "2000",
                                  "--strikes", "1", "--hb-interval", "100"], ready_timeout=10.0)
        harness.wait_until(lambda: harness.request(lb.port, "GET", "/readyz").status == 200, 15,
                           "the backend to be healthy", 0.05)
        with Connection(lb.port, timeout=10) as conn:
            conn.send(b"POST /up HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nContent-Length: 10\r\n\r\n12345")
            deadline = time.monotonic() + 5
            while b"early" not in conn.buf and time.monotonic() < deadline:
                conn._fill(deadline)  # the early part of the response arrived
            conn.send(b"67890")
            resp = conn.read_response("POST")
        self.assertEqual((resp.status, resp.body), (200, b"earlygot 10"))
        details = harness.request(lb.port, "GET", "/rep?verbose=1").json()["message"]["details"]
        self.assertEqual([d["state"] for d in details], ["healthy"], details)
        code, _ = lb.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(code, 0, lb.log())


if __name__ == "__main__":
    unittest.main()
