"""TLS termination (issue 15) through real ringlb processes on 127.0.0.1, in front of a recording
backend (test/hostile/recorder.py) that keeps the exact bytes the LB forwards. The certificates are
made at test time with `openssl req` in a temporary folder.

- curl over https: HTTP/1.1, ALPN (the LB accepts http/1.1 whether or not h2 is offered first).
- Python ssl clients at TLS 1.2 and at TLS 1.3: session resumption by ticket (session_reused),
  pipelined requests answered in order, a 4 MiB upload and an 8 MiB download compared byte for byte.
- X-Forwarded-Proto: https reaches the backend exactly once, a client-sent one replaced.
- Hostile clients: garbage instead of a client hello, a TLS 1.0 client (refused), a client that
  stalls mid-handshake (closed at --header-timeout while another client is served meanwhile); each
  closes that connection only, with a debug line.
- SIGHUP with a new certificate in place of the files: an established TLS connection stays up and
  keeps working, a new connection gets the new certificate; a pair that does not load changes
  nothing.
- --admin-listen with its own certificate; a missing or mismatched file exits 2 with one line.

No timing is asserted; every wait and request loop is bounded.
"""
import http.server
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness
from harness import Connection, HOST

sys.path.insert(0, harness.source_path("test", "hostile"))
from recorder import Recorder, ok  # noqa: E402

RINGLB = harness.build_path("lb", "ringlb")


def make_cert(folder, name, cn):
    """A self-signed EC certificate for localhost and 127.0.0.1: (cert path, key path)."""
    cert, key = os.path.join(folder, name + ".crt"), os.path.join(folder, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def client_context(cafile, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


class TlsConnection(Connection):
    """harness.Connection over TLS (every read still bounded by timeout)."""

    def __init__(self, port, ctx, timeout=10.0, session=None, server_hostname="localhost"):
        super().__init__(port, timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname, session=session)


class TlsTestCase(unittest.TestCase):
    def setUp(self):
        if not harness.tls_built():
            self.skipTest("this ringlb was built without TLS (-Dtls=disabled or no OpenSSL)")
        self.dir = tempfile.TemporaryDirectory(prefix="ringlb-tls-")
        self.addCleanup(self.dir.cleanup)
        self.cert, self.key = make_cert(self.dir.name, "a", "ringlb-test-a")
        self.rec = Recorder(self)

    def start_lb(self, *args, cert=None, key=None, backend=None):
        argv = [RINGLB, "--listen", f"{HOST}:{{port}}", "--log-level", "debug",
                "--provisioner", "static", "--backend", backend or self.rec.address,
                "--tls-cert", cert or self.cert, "--tls-key", key or self.key, *args]
        lb = harness.start(self, argv, ready_timeout=10.0)
        self.lb = lb
        ctx = client_context(cert or self.cert)

        def serves():
            if not lb.running():
                raise AssertionError(f"ringlb exited: {lb.log()}")
            try:
                with TlsConnection(lb.port, ctx) as conn:
                    return conn.request("GET", "/home").status == 200
            except (OSError, AssertionError):
                return False
        harness.wait_until(serves, 15.0, "ringlb to serve /home over TLS", 0.05)
        with self.rec._lock:
            self.rec.requests.clear()
        return lb

    def bulk_backend(self, down):
        """A backend for large bodies (the recorder gives up on a send that waits over 0.1 s, which
        a TLS client slowed by a loaded machine makes the LB do): http.server, keep-alive, blocking
        writes. GET /down answers down; POST /up keeps the body in the returned list and answers
        "got"; anything else (the heartbeat) 200 with an empty body. Returns (address, uploads)."""
        uploads = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, body):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.answer(down if self.path == "/down" else b"")

            def do_POST(self):
                uploads.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.answer(b"got")

        server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return f"{HOST}:{server.server_address[1]}", uploads

    def tearDown(self):
        lb = getattr(self, "lb", None)
        if lb is not None and lb.running():
            try:
                code, _ = lb.stop(signal.SIGTERM, timeout=10)
            except AssertionError as e:
                raise AssertionError(f"{e}; log:\n{lb.log()}")
            self.assertEqual(code, 0, f"ringlb did not stop cleanly; log:\n{lb.log()}")

    def curl(self, *args):
        return subprocess.run(["curl", "-sS", "-v", "--max-time", "10", "--cacert", self.cert, *args],
                              capture_output=True, timeout=30)


class Clients(TlsTestCase):
    def test_curl_https_http11_with_alpn(self):
        lb = self.start_lb()
        url = f"https://127.0.0.1:{lb.port}/home"
        # Offered h2 first (curl's default): the LB picks h2 (HTTP/2 to clients, h2_test.py).
        out = self.curl(url)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(b"ALPN: server accepted h2", out.stderr)
        self.assertRegex(out.stdout, rb"^rec \d+$")
        out = self.curl("--http1.1", "--tlsv1.2", "--tls-max", "1.2", url, url)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(b"ALPN: server accepted http/1.1", out.stderr)
        self.assertIn(b"TLSv1.2", out.stderr)
        self.assertIn(b"Re-using existing connection", out.stderr)  # keep-alive over TLS
        self.assertEqual(len(self.rec.requests), 3)

    def resumption(self, version):
        lb = self.start_lb()
        ctx = client_context(self.cert, version)
        with TlsConnection(lb.port, ctx) as conn:
            self.assertEqual(conn.request("GET", "/home").status, 200)
            self.assertEqual(conn.sock.version(), "TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
            self.assertFalse(conn.sock.session_reused)
            self.assertEqual(conn.sock.selected_alpn_protocol(), None)  # none offered
            session = conn.sock.session
        self.assertIsNotNone(session)
        # Resumed on new connections (the ticket is valid on every worker).
        for _ in range(4):
            with TlsConnection(lb.port, ctx, session=session) as conn:
                self.assertEqual(conn.request("GET", "/home").status, 200)
                self.assertTrue(conn.sock.session_reused)

    def test_tls12_session_resumption(self):
        self.resumption(ssl.TLSVersion.TLSv1_2)

    def test_tls13_session_resumption(self):
        self.resumption(ssl.TLSVersion.TLSv1_3)

    def test_alpn_selects_h2_when_offered_else_http11(self):
        lb = self.start_lb()
        ctx = client_context(self.cert)
        ctx.set_alpn_protocols(["http/1.1", "h2"])  # the server's preference decides (h2_test.py)
        with TlsConnection(lb.port, ctx) as conn:
            self.assertEqual(conn.sock.selected_alpn_protocol(), "h2")
        ctx = client_context(self.cert)
        ctx.set_alpn_protocols(["http/1.1"])
        with TlsConnection(lb.port, ctx) as conn:
            self.assertEqual(conn.sock.selected_alpn_protocol(), "http/1.1")
            self.assertEqual(conn.request("GET", "/home").status, 200)

    def test_pipelined_requests_over_tls(self):
        lb = self.start_lb()
        self.rec.responder = lambda req: ok(req.target.encode())
        with TlsConnection(lb.port, client_context(self.cert)) as conn:
            n = 20
            conn.send(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\nX-Request-Id: %d\r\n\r\n" % (i, i)
                               for i in range(n)))
            bodies = [conn.read_response().body for _ in range(n)]
        self.assertEqual(bodies, [b"/p%d" % i for i in range(n)])
        self.assertEqual([r.target for r in self.rec.requests], ["/p%d" % i for i in range(n)])

    def test_large_upload_and_download_compared(self):
        up = os.urandom(4 << 20)
        down = os.urandom(8 << 20)
        address, uploads = self.bulk_backend(down)
        self.rec.responder = lambda req: ok(b"rec")  # the readiness probe's /home goes elsewhere
        lb = self.start_lb(backend=address)
        with TlsConnection(lb.port, client_context(self.cert), timeout=60.0) as conn:
            resp = conn.request("POST", "/up", {"X-Request-Id": "1"}, up)
            self.assertEqual((resp.status, resp.body), (200, b"got"))
            try:
                resp = conn.request("GET", "/down", {"X-Request-Id": "1"})
            except AssertionError as e:
                raise AssertionError(f"{e}\n{lb.log()[-3000:]}")
            self.assertEqual(resp.status, 200)
            self.assertEqual(len(resp.body), len(down), lb.log()[-3000:])
            self.assertTrue(resp.body == down, "the download differs")
            self.assertEqual(conn.request("GET", "/after").status, 200)  # still in step
        self.assertEqual(len(uploads), 1)
        self.assertTrue(uploads[0] == up, "the upload differs")

    def test_x_forwarded_proto_https_exactly_once(self):
        lb = self.start_lb()
        with TlsConnection(lb.port, client_context(self.cert)) as conn:
            conn.request("GET", "/a", {"X-Request-Id": "1"})
            conn.request("GET", "/b", {"X-Request-Id": "2", "X-Forwarded-Proto": "http"})
            conn.request("GET", "/c", {"X-Request-Id": "3", "x-forwarded-proto": "gopher"})
        self.assertEqual(len(self.rec.requests), 3)
        for req in self.rec.requests:
            self.assertEqual(req.all("X-Forwarded-Proto"), ["https"], req)
            self.assertEqual(req.head.lower().count(b"x-forwarded-proto"), 1, req.head)


class Hostile(TlsTestCase):
    def assert_closed_without_http(self, conn_sock, timeout=15.0):
        """Reads until the LB closes (a reset is a close), bounded; returns the bytes it sent."""
        conn_sock.settimeout(timeout)
        got = b""
        try:
            while True:
                data = conn_sock.recv(4096)
                if not data:
                    break
                got += data
        except ConnectionResetError:
            pass
        except socket.timeout:
            self.fail(f"not closed within {timeout} s; got {got[:100]!r}")
        self.assertFalse(got.startswith(b"HTTP"), got[:100])
        return got

    def test_garbage_client_hello_closes_that_connection_only(self):
        lb = self.start_lb()
        ctx = client_context(self.cert)
        with TlsConnection(lb.port, ctx) as good:
            self.assertEqual(good.request("GET", "/home").status, 200)
            with socket.create_connection((HOST, lb.port), timeout=10) as bad:
                bad.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(300))
                got = self.assert_closed_without_http(bad)
                self.assertTrue(got == b"" or got[0] == 0x15, got[:20])  # nothing, or an alert
            self.assertEqual(good.request("GET", "/home").status, 200)  # still up
        harness.wait_until(lambda: "tls: handshake failed" in lb.log(), 10.0, "the debug line")
        self.assertEqual(len(self.rec.requests), 2)

    def test_tls10_client_refused(self):
        lb = self.start_lb()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
        except (ssl.SSLError, ValueError) as e:
            self.skipTest(f"this Python/OpenSSL cannot offer TLS 1.0: {e}")
        with socket.create_connection((HOST, lb.port), timeout=10) as sock:
            with self.assertRaises((ssl.SSLError, ConnectionResetError)):
                with ctx.wrap_socket(sock, server_hostname="localhost") as s:
                    s.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n")
                    s.recv(100)
        harness.wait_until(lambda: "unsupported protocol" in lb.log(), 10.0,
                           "the LB's debug line naming the refused version")
        self.assertEqual(len(self.rec.requests), 0)
        with TlsConnection(lb.port, client_context(self.cert)) as conn:
            self.assertEqual(conn.request("GET", "/home").status, 200)

    def test_stalled_handshake_closed_at_header_timeout(self):
        lb = self.start_lb("--header-timeout", "1500")
        # The first half of a real client hello, then nothing.
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(incoming, outgoing, server_hostname="localhost")
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = outgoing.read()
        self.assertGreater(len(hello), 40)
        stalled = socket.create_connection((HOST, lb.port), timeout=10)
        self.addCleanup(stalled.close)
        stalled.sendall(hello[:len(hello) // 2])
        started = time.monotonic()
        # Served meanwhile, on other connections.
        ctx = client_context(self.cert)
        served = 0
        while time.monotonic() - started < 1.0 and served < 50:
            with TlsConnection(lb.port, ctx) as conn:
                self.assertEqual(conn.request("GET", "/home").status, 200)
                served += 1
        self.assertGreater(served, 0)
        self.assertEqual(self.assert_closed_without_http(stalled, timeout=20.0), b"")


class IdleMemory(TlsTestCase):
    # Memory one idle keep-alive TLS connection may cost the LB, on average over IDLE_COUNT: its
    # SSL object and OpenSSL's per-connection state (about 14 KiB), its ClientConn and head buffers
    # (about 8 KiB, as over plain HTTP), and slack for the heap. Before idle TLS connections gave
    # their 16 KiB read buffer back, one cost about 34 KiB (bench/RESULTS.md, "TLS termination").
    IDLE_COUNT = 1000
    MAX_KIB_PER_IDLE = 25

    def test_idle_tls_connections_stay_small_and_still_serve(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = self.IDLE_COUNT + 200
        if soft < want:
            if hard < want:
                self.skipTest(f"needs {want} file descriptors, the hard limit is {hard}")
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # ringlb inherits it too
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        lb = self.start_lb()
        ctx = client_context(self.cert)
        ctx.set_alpn_protocols(["http/1.1"])
        conns = []

        def close_all():
            for c in conns:
                c.close()
        self.addCleanup(close_all)

        def open_serving(n):
            for _ in range(n):
                conn = TlsConnection(lb.port, ctx)
                conns.append(conn)
                self.assertEqual(conn.request("GET", "/home").status, 200)
        # Warm-up: the workers' buffers, spare clients and OpenSSL's caches reach their size.
        open_serving(40)
        time.sleep(0.5)
        before = harness.rss_kib(lb.proc.pid)
        open_serving(self.IDLE_COUNT)
        time.sleep(0.5)
        after = harness.rss_kib(lb.proc.pid)
        per_conn = (after - before) / self.IDLE_COUNT
        self.assertLess(per_conn, self.MAX_KIB_PER_IDLE,
                        f"{self.IDLE_COUNT} idle TLS connections grew ringlb by {after - before} KiB "
                        f"({per_conn:.1f} KiB each)")
        # Every one still serves after idling, in the same connection (its buffer taken back).
        for conn in conns:
            self.assertEqual(conn.request("GET", "/home").status, 200)
        self.assertEqual(len(self.rec.requests), 2 * len(conns))


class Reload(TlsTestCase):
    def test_sighup_new_certificate_open_connection_stays(self):
        lb = self.start_lb()
        old = der(self.cert)
        ctx_any = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx_any.check_hostname = False
        ctx_any.verify_mode = ssl.CERT_NONE
        established = TlsConnection(lb.port, ctx_any)
        self.addCleanup(established.close)
        self.assertEqual(established.request("GET", "/before").status, 200)
        self.assertEqual(established.sock.getpeercert(binary_form=True), old)
        # A new pair replaces the files (as a renewal does), then SIGHUP.
        cert2, key2 = make_cert(self.dir.name, "b", "ringlb-test-b")
        new = der(cert2)
        self.assertNotEqual(new, old)
        os.replace(cert2, self.cert)
        os.replace(key2, self.key)
        os.kill(lb.pid, signal.SIGHUP)  # (send_signal would stand for the stop)
        harness.wait_until(lambda: "reload done" in lb.log(), 10.0, "the reload")
        with TlsConnection(lb.port, ctx_any) as conn:
            self.assertEqual(conn.request("GET", "/new").status, 200)
            self.assertEqual(conn.sock.getpeercert(binary_form=True), new)
        with TlsConnection(lb.port, client_context(self.cert)) as conn:  # verifies against the new
            self.assertEqual(conn.request("GET", "/new2").status, 200)
        # The established connection: same TLS session, still served.
        for i in range(3):
            self.assertEqual(established.request("GET", f"/after{i}").status, 200)
        self.assertEqual(established.sock.getpeercert(binary_form=True), old)
        # A pair that does not load (a key of another certificate) is logged and changes nothing.
        _, key3 = make_cert(self.dir.name, "c", "ringlb-test-c")
        os.replace(key3, self.key)
        os.kill(lb.pid, signal.SIGHUP)  # (send_signal would stand for the stop)
        harness.wait_until(lambda: "reload failed" in lb.log(), 10.0, "the failed reload")
        self.assertIn(f"--tls-key {self.key}: ", lb.log())
        with TlsConnection(lb.port, ctx_any) as conn:
            self.assertEqual(conn.request("GET", "/still").status, 200)
            self.assertEqual(conn.sock.getpeercert(binary_form=True), new)
        self.assertEqual(established.request("GET", "/last").status, 200)


class Listeners(TlsTestCase):
    def test_admin_listener_has_its_own_certificate(self):
        admin_cert, admin_key = make_cert(self.dir.name, "admin", "ringlb-test-admin")
        admin_port = harness.free_port()
        lb = self.start_lb("--admin-listen", f"{HOST}:{admin_port}",
                           "--admin-tls-cert", admin_cert, "--admin-tls-key", admin_key)
        harness.wait_until(lambda: harness.listening(lb.pid, admin_port), 10.0, "the admin listener")
        with TlsConnection(admin_port, client_context(admin_cert)) as conn:
            resp = conn.request("GET", "/rep")
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json()["status"], "successful")
            self.assertEqual(conn.sock.getpeercert(binary_form=True), der(admin_cert))
        with TlsConnection(lb.port, client_context(self.cert)) as conn:
            self.assertEqual(conn.request("GET", "/home").status, 200)
            self.assertEqual(conn.sock.getpeercert(binary_form=True), der(self.cert))
        # Plain HTTP on the admin listener is not answered as HTTP.
        with socket.create_connection((HOST, admin_port), timeout=10) as sock:
            sock.sendall(b"GET /rep HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(10)
            got = b""
            try:
                while True:
                    data = sock.recv(4096)
                    if not data:
                        break
                    got += data
            except ConnectionResetError:
                pass
            self.assertFalse(got.startswith(b"HTTP"), got[:100])

    def run_bad(self, *args):
        out = subprocess.run([RINGLB, "--listen", f"{HOST}:0", "--provisioner", "static",
                              "--backend", self.rec.address, *args],
                             capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        return out.returncode, out.stderr.decode()

    def test_bad_files_exit_2_with_one_line(self):
        missing = os.path.join(self.dir.name, "missing.crt")
        code, err = self.run_bad("--tls-cert", missing, "--tls-key", self.key)
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(missing, err)
        _, other_key = make_cert(self.dir.name, "o", "other")
        code, err = self.run_bad("--tls-cert", self.cert, "--tls-key", other_key)
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(other_key, err)
        garbage = os.path.join(self.dir.name, "garbage.key")
        with open(garbage, "w") as f:
            f.write("not a key\n")
        code, err = self.run_bad("--tls-cert", self.cert, "--tls-key", garbage)
        self.assertEqual((code, len(err.strip().splitlines())), (2, 1), err)
        self.assertIn(garbage, err)
        code, err = self.run_bad("--tls-cert", self.cert)
        self.assertEqual(code, 2, err)
        self.assertIn("--tls-key", err)
        code, err = self.run_bad("--admin-tls-cert", self.cert, "--admin-tls-key", self.key)
        self.assertEqual(code, 2, err)
        self.assertIn("--admin-listen", err)



class WithoutTls(unittest.TestCase):
    """A ringlb built without TLS (-Dtls=disabled): --tls-cert is refused at start with one line
    saying so (exit 2), and --version names no OpenSSL. Skipped when the build has TLS."""

    def test_tls_flags_refused_with_one_line(self):
        if harness.tls_built():
            self.skipTest("this ringlb has TLS")
        with tempfile.TemporaryDirectory(prefix="ringlb-notls-") as d:
            cert, key = make_cert(d, "a", "ringlb-test-a")
            for flags in (["--tls-cert", cert, "--tls-key", key],
                          ["--admin-listen", f"{HOST}:0", "--admin-tls-cert", cert, "--admin-tls-key", key]):
                out = subprocess.run([RINGLB, "--listen", f"{HOST}:0", "--provisioner", "static",
                                      "--backend", f"{HOST}:1", *flags],
                                     capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
                self.assertEqual(out.returncode, 2, out.stderr)
                self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)
                self.assertIn("built without TLS", out.stderr)
        out = subprocess.run([RINGLB, "--version"], capture_output=True, text=True, timeout=30)
        self.assertIn("openssl none", out.stdout)

if __name__ == "__main__":
    unittest.main()
