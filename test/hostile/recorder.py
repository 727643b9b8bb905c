"""A recording backend for the hostile suite (standard library only).

Recorder listens on 127.0.0.1 and keeps the exact bytes every connection sent it (raw[i] for the
i-th accepted connection), parses them as HTTP/1.1 requests with a strict little parser of its own
(Content-Length and chunked bodies; anything else ends the connection's parsing with a note in
errors), and answers each request it parsed through a responder:

    responder(req) -> bytes | None

req is a Request (method, target, version, headers as (name, value) pairs, head: the exact head
bytes, body: the decoded body, wire: the exact bytes of the whole request, conn: its connection's
index). The responder returns the exact bytes to send back (any bytes: a malformed response is
fine), or None to stay silent (the connection stays open and unanswered). It runs on the
connection's thread, so it may sleep. The default answers 200 with the body "rec N" (N = the
request's index in requests).

GET /heartbeat is always answered 200 (the LB's health checks of a static backend) and is left out
of requests, so a test asserts exactly the requests a client's bytes produced. The smuggling oracle
of a test is then: len(rec.requests) == the number of requests the LB accepted, with their bodies.

Everything is bounded: accept and recv wait at most 0.1 s at a time, every connection's thread
ends by 120 s, and close() (run in the test's cleanup) stops it all.
"""
import socket
import threading
import time

HOST = "127.0.0.1"

OK_HEARTBEAT = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def ok(body=b"ok", extra=b""):
    """A plain 200 with a Content-Length body; extra is inserted as header lines (each ending CRLF)."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Request:
    def __init__(self, conn, method, target, version, headers, head):
        self.conn, self.method, self.target, self.version = conn, method, target, version
        self.headers, self.head = headers, head
        self.body, self.wire = b"", b""

    def header(self, name, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def __repr__(self):
        return f"<Request #{self.conn} {self.method} {self.target} {self.headers} body={self.body[:80]!r}>"


class _NeedMore(Exception):
    pass


class _Bad(Exception):
    pass


def _parse_one(buf, conn):
    """Parses one request at the start of buf: (Request, bytes used). Raises _NeedMore when buf
    holds only part of one, _Bad when it is not a valid HTTP/1.1 request."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise _Bad("head over 64 KiB")
        raise _NeedMore()
    head = buf[:end + 4]
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _Bad(f"bad request line {lines[0][:100]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            raise _Bad(f"bad header line {line[:100]!r}")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    req = Request(conn, parts[0].decode("latin-1"), parts[1].decode("latin-1"),
                  parts[2].decode("latin-1"), headers, head)
    at = end + 4
    te = [v for n, v in headers if n.lower() == "transfer-encoding"]
    cl = [v for n, v in headers if n.lower() == "content-length"]
    if te and cl:
        raise _Bad("both Transfer-Encoding and Content-Length")
    if te:
        if [t.strip().lower() for t in ",".join(te).split(",")] != ["chunked"]:
            raise _Bad(f"Transfer-Encoding {te!r}")
        body = []
        while True:
            nl = buf.find(b"\r\n", at)
            if nl < 0:
                raise _NeedMore()
            size_text = buf[at:nl].split(b";")[0]
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Bad(f"bad chunk size {size_text[:40]!r}")
            at = nl + 2
            if size == 0:
                while True:  # trailers up to the empty line
                    nl = buf.find(b"\r\n", at)
                    if nl < 0:
                        raise _NeedMore()
                    line, at = buf[at:nl], nl + 2
                    if not line:
                        break
                break
            if len(buf) < at + size + 2:
                raise _NeedMore()
            if buf[at + size:at + size + 2] != b"\r\n":
                raise _Bad("chunk data not followed by CRLF")
            body.append(buf[at:at + size])
            at += size + 2
        req.body = b"".join(body)
    elif cl:
        if len(set(cl)) != 1 or not cl[0].isdigit():
            raise _Bad(f"Content-Length {cl!r}")
        n = int(cl[0])
        if len(buf) < at + n:
            raise _NeedMore()
        req.body = buf[at:at + n]
        at += n
    req.wire = buf[:at]
    return req, at


class Recorder:
    """See the module's text. responder may be changed between requests (rec.responder = ...)."""

    def __init__(self, test, responder=None):
        self.responder = responder or (lambda req: ok(b"rec %d" % len(self.requests)))
        self.raw = []        # bytearray per accepted connection, in accept order
        self.requests = []   # Request, in the order they were parsed (heartbeats left out)
        self.errors = []     # (connection index, why its bytes stopped parsing)
        self.closed = []     # connection indexes the peer closed (EOF or reset)
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(128)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()
        if test is not None:
            test.addCleanup(self.close)

    def close(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(5)
        self.listener.close()

    def connections(self):
        """The number of connections accepted so far (heartbeat connections included)."""
        with self._lock:
            return len(self.raw)

    def wait_requests(self, n, timeout=5.0):
        """Waits until at least n requests were parsed; returns them. Fails after timeout s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.005)
        raise AssertionError(f"the backend parsed {len(self.requests)} requests, not {n}, within "
                             f"{timeout} s: {self.requests} errors={self.errors}")

    def _accept(self):
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                index = len(self.raw)
                self.raw.append(bytearray())
            t = threading.Thread(target=self._serve, args=(sock, index), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock, index):
        sock.settimeout(0.1)
        buf = b""
        broken = False
        deadline = time.monotonic() + 120
        with sock:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    data = b""
                if not data:
                    with self._lock:
                        self.closed.append(index)
                    return
                with self._lock:
                    self.raw[index] += data
                if broken:
                    continue
                buf += data
                while buf:
                    try:
                        req, used = _parse_one(buf, index)
                    except _NeedMore:
                        break
                    except _Bad as e:
                        with self._lock:
                            self.errors.append((index, str(e)))
                        broken = True
                        break
                    buf = buf[used:]
                    if req.method == "GET" and req.target == "/heartbeat":
                        answer = OK_HEARTBEAT
                    else:
                        with self._lock:
                            self.requests.append(req)
                        answer = self.responder(req)
                    if answer is None:
                        continue
                    try:
                        sock.sendall(answer)
                    except OSError:
                        return
                    if answer is OK_HEARTBEAT:
                        return
