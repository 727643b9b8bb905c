"""Shared helpers for ringlb's integration tests (standard library only).

- build_path / source_path: files of the build and source trees (RINGLB_BUILD and RINGLB_SOURCE, set
  by meson test; without them the tree around this file and its build/ folder).
- start: runs a server process (replica, ringlb) on a free 127.0.0.1 port and waits, bounded, until
  it listens there. The process is killed in the test's cleanup whatever happens; Server.stop sends
  SIGTERM and returns the exit code and the seconds it took. wait_lb_ready: until a ringlb lists its
  replicas and serves. /proc helpers: rss_kib, listening, listening_sockets, peer_socket_inode,
  holds_socket.
  log_events parses ringlb's log lines.
- Connection: a raw-socket HTTP/1.1 client that sends exact bytes and reads exact responses
  (Content-Length, chunked and close-delimited bodies), with request() for keep-alive exchanges.

Every wait is bounded: a test fails with a clear message instead of hanging.
"""
import datetime
import fcntl
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"
_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("RINGLB_SOURCE") or os.path.dirname(os.path.dirname(_HERE))
BUILD = os.environ.get("RINGLB_BUILD") or os.path.join(SOURCE, "build")


def build_path(*parts):
    return os.path.join(BUILD, *parts)


def source_path(*parts):
    return os.path.join(SOURCE, *parts)


_tls_built = None


def tls_built():
    """True when this build's ringlb can terminate TLS: built with OpenSSL (-Dtls=disabled, or no
    libssl-dev, makes `ringlb --version` say "openssl none"). Tests that need TLS skip without it."""
    global _tls_built
    if _tls_built is None:
        out = subprocess.run([build_path("lb", "ringlb"), "--version"], capture_output=True, text=True,
                             timeout=30)
        _tls_built = out.returncode == 0 and "\nopenssl none\n" not in "\n" + out.stdout
    return _tls_built


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(n, exclude=()):
    """n distinct TCP ports on 127.0.0.1 that were free a moment ago, none in exclude. Chosen by the
    kernel (port 0) up to 256 sockets held open at a time, so it never hands out one twice within a
    batch, and de-duplicated across batches; bounded in tries."""
    chosen, seen = [], set(exclude)
    for _ in range(4 * n // 256 + 8):
        socks = [socket.socket() for _ in range(min(256, n - len(chosen)))]
        try:
            for s in socks:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
                if port not in seen:
                    seen.add(port)
                    chosen.append(port)
        finally:
            for s in socks:
                s.close()
        if len(chosen) == n:
            return chosen
    raise AssertionError(f"could not find {n} distinct free ports")


def rss_kib(pid):
    """The resident set size of process pid in KiB (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def peer_socket_inode(sock):
    """The inode of the socket at the other end of our loopback TCP connection sock (from /proc)."""
    ours, theirs = sock.getsockname()[1], sock.getpeername()[1]
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            if (local, remote) == (theirs, ours):
                return fields[9]
    raise AssertionError(f"no socket for the other end of {ours} -> {theirs}")


def holds_socket(pid, inode):
    """True while process pid has the socket inode open."""
    target = f"socket:[{inode}]"
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except FileNotFoundError:
            pass
    return False


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (\w+) (.*)$")


def log_events(text):
    """ringlb's own log lines in text as (unix time in s, level, message), in order. Other lines
    (the replicas' output shares ringlb's stderr) are skipped."""
    out = []
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if m:
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
            t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
            out.append((t, m.group(2), m.group(3)))
    return out


def wait_until(predicate, timeout, what, interval=0.01):
    """Polls predicate until it returns a true value, and returns that; fails after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Server:
    """A process started by start(). port is the one put in its argv for "{port}"."""

    def __init__(self, proc, port, log):
        self.proc, self.port, self.pid, self._log = proc, port, proc.pid, log
        self.signalled_at = None

    def log(self):
        """Everything the process wrote to stdout and stderr so far."""
        self._log.flush()
        with open(self._log.name, errors="replace") as f:
            return f.read()

    def running(self):
        return self.proc.poll() is None

    def send_signal(self, sig=signal.SIGTERM):
        """Sends sig now; a later stop() waits for the exit without sending another."""
        self.signalled_at = time.monotonic()
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Sends sig unless send_signal() already did, and waits for the exit: (exit code, seconds
        since the signal). A process still running after timeout is killed and the test fails."""
        if self.signalled_at is None and self.proc.poll() is None:
            self.send_signal(sig)
        start = self.signalled_at or time.monotonic()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"pid {self.pid} still running {timeout} s after signal {sig}")
        return code, time.monotonic() - start

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _listening_inodes(port):
    """The inodes of every TCP socket listening on port (any address), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def listening(pid, port):
    """True when process pid itself holds a TCP socket listening on port (any address), from /proc.
    Unlike a connect, this cannot be fooled by another process that happens to listen there."""
    return any(holds_socket(pid, inode) for inode in _listening_inodes(port))


def listening_sockets(pid, port):
    """How many TCP sockets listening on port (any address) process pid holds, from /proc: one per
    SO_REUSEPORT listener, so ringlb --workers N holds N on its --listen port."""
    return sum(1 for inode in _listening_inodes(port) if holds_socket(pid, inode))


def start(test, argv, port=None, env=None, fds=None, wait=True, ready_timeout=5.0):
    """Starts argv (each "{port}" in it replaced by the port) and returns a Server once the process
    listens on port. port=None picks a free one, and a process that exits before it listens is
    started again on another port (up to three times: a free port can be taken in between).
    wait=False returns at once (a process handed a listening socket, or expected to fail). env adds
    to os.environ. fds maps a child fd number to a socket or fd of ours (LISTEN_FDS: {3: sock}).
    test.addCleanup kills the process if the test left it running."""
    for _ in range(3 if port is None and wait else 1):
        server = _spawn(test, argv, port or free_port(), env, fds)
        if not wait:
            return server
        deadline = time.monotonic() + ready_timeout
        while server.running():
            if listening(server.pid, server.port):
                return server
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv[0]} did not listen on port {server.port} within "
                                     f"{ready_timeout} s: {server.log()}")
            time.sleep(0.005)
    raise AssertionError(f"{argv[0]} exited with {server.proc.returncode}: {server.log()}")


def _spawn(test, argv, port, env, fds):
    argv = [a.replace("{port}", str(port)) for a in argv]
    log = tempfile.NamedTemporaryFile(prefix="ringlb-test-", suffix=".log")
    test.addCleanup(log.close)
    kwargs = {}
    if fds:
        sources = {n: s if isinstance(s, int) else s.fileno() for n, s in fds.items()}

        def dup_fds():  # runs in the child between fork and exec
            # Through high numbers first, so that a source may already sit on another's target.
            staged = {n: fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for n, fd in sources.items()}
            for n, fd in staged.items():
                os.dup2(fd, n, inheritable=True)
                os.close(fd)

        kwargs = dict(preexec_fn=dup_fds, close_fds=False)
    proc = subprocess.Popen(argv, env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, **kwargs)
    server = Server(proc, port, log)
    test.addCleanup(server.kill)
    return server


def wait_routable(lb, timeout=15.0):
    """Waits until ringlb lb answers /readyz with 200: a replica is healthy and every worker routes
    by that already (a "healthy" log line comes first: a request sent on it may still meet a worker
    whose routing has no replica yet, and get 503)."""
    def ready():
        if not lb.running():
            raise AssertionError(f"ringlb exited with {lb.proc.returncode}: {lb.log()}")
        try:
            return request(lb.port, "GET", "/readyz").status == 200
        except OSError:
            return False
    wait_until(ready, timeout, "ringlb to route to a healthy replica", 0.05)


def wait_lb_ready(lb, n, timeout=15.0):
    """Waits until ringlb lb lists n replicas in /rep, every one of them healthy, and answers GET
    /home with 200; fails at once if lb exits, and after timeout s. All healthy, not just one: until
    then a starting replica's keys go to the next one clockwise, and a test that checks where keys
    go would see that. (/rep answers once every worker routes by what it says.)"""
    def ready():
        if not lb.running():
            raise AssertionError(f"ringlb exited with {lb.proc.returncode}: {lb.log()}")
        try:
            rep = request(lb.port, "GET", "/rep?verbose=1")
            if rep.status != 200 or rep.json()["message"]["N"] != n:
                return False
            if any(d["state"] != "healthy" for d in rep.json()["message"]["details"] if d["counts"]):
                return False
            return request(lb.port, "GET", "/home").status == 200
        except (OSError, AssertionError, ValueError):
            return False
    wait_until(ready, timeout, f"ringlb to list {n} replicas and serve /home", 0.05)


class Response:
    """One parsed HTTP response. raw holds its exact bytes (head and body as on the wire)."""

    def __init__(self, version, status, reason, headers, body, raw):
        self.version, self.status, self.reason = version, status, reason
        self.headers, self.body, self.raw = headers, body, raw

    def header(self, name, default=None):
        """The first header called name (case-insensitive)."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def json(self):
        return json.loads(self.body.decode())

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


class Connection:
    """One client TCP connection to 127.0.0.1:port, from the local address source when given (any
    127.0.0.0/8 address is the loopback). Every read gives up after timeout seconds."""

    def __init__(self, port, timeout=5.0, source=None):
        self.port, self.timeout = port, timeout
        self.sock = socket.create_connection((HOST, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        if self.eof:
            raise AssertionError(f"connection closed by the server; unparsed: {self.buf[:200]!r}")
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no response within {self.timeout} s; got {self.buf[:200]!r}")
        if not data:
            self.eof = True
        self.buf += data
        return len(data)

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, method="GET"):
        """Reads one response; method tells whether it may have a body (HEAD does not)."""
        deadline = time.monotonic() + self.timeout
        status_line = self._line(deadline)
        raw = [status_line + b"\r\n"]
        version, status, reason = (status_line.decode("latin-1").split(" ", 2) + [""])[:3]
        headers = []
        while True:
            line = self._line(deadline)
            raw.append(line + b"\r\n")
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        resp = Response(version, int(status), reason, headers, b"", b"")
        te = (resp.header("Transfer-Encoding") or "").lower()
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            body = b""
        elif te.endswith("chunked"):
            body = self._read_chunked(deadline, raw)
        elif resp.header("Content-Length") is not None:
            body = self._take(int(resp.header("Content-Length")), deadline)
        else:  # close-delimited
            while not self.eof:
                self._fill(deadline)
            body, self.buf = self.buf, b""
        if not te.endswith("chunked"):
            raw.append(body)
        resp.body, resp.raw = body, b"".join(raw)
        return resp

    def _read_chunked(self, deadline, raw):
        body = []
        while True:
            size_line = self._line(deadline)
            raw.append(size_line + b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            data = self._take(size + 2, deadline)
            raw.append(data)
            body.append(data[:-2])
        while True:  # trailers up to the empty line
            line = self._line(deadline)
            raw.append(line + b"\r\n")
            if not line:
                return b"".join(body)

    def request(self, method, path, headers=None, body=None, version="HTTP/1.1"):
        """Sends one request (Host added; Content-Length when body is given; a dict or list body is
        sent as JSON) and reads its response."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = dict(headers or {}, **{"Content-Type": "application/json"})
        head = [f"{method} {path} {version}", f"Host: {HOST}:{self.port}"]
        head += [f"{n}: {v}" for n, v in (headers or {}).items()]
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        return self.read_response(method)

    def read_until_closed(self):
        """Reads until the server closes; returns the bytes not yet parsed. A reset is a close."""
        deadline = time.monotonic() + self.timeout
        try:
            while not self.eof:
                self._fill(deadline)
        except ConnectionResetError:
            self.eof = True
        data, self.buf = self.buf, b""
        return data


def request(port, method, path, headers=None, body=None):
    """One request on a fresh connection, closed afterwards."""
    with Connection(port) as conn:
        return conn.request(method, path, headers, body)


# --- the Docker Engine API, for the docker suite and bench/docker_add.py ---------------------------

DOCKER_API = "/v1.41"


def docker_socket():
    """The engine's unix socket: DOCKER_HOST=unix://PATH, else /var/run/docker.sock."""
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def docker_engine(method, path, body=None, timeout=30.0):
    """One Engine API call (path without the version prefix): (HTTP status, parsed JSON, or the
    text when the answer is not one JSON value, or None when empty)."""
    conn = _UnixConnection(docker_socket(), timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, DOCKER_API + path, json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data) if data else None
    except ValueError:
        return resp.status, data.decode(errors="replace")
