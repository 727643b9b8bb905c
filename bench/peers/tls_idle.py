#!/usr/bin/env python3
"""Memory per idle keep-alive TLS connection of one LB process (bench/peers/tls.sh, IDLE=1;
bench/RESULTS.md, "TLS termination").

Opens WARM TLS connections to the LB, each serving one request (the LB's buffers, OpenSSL's state,
the worker's spare clients reach their steady size), reads the LB's VmRSS, then opens COUNT more,
each serving one keep-alive request and then left idle, waits SETTLE seconds and reads VmRSS again:
(after - before) / COUNT is the memory one idle TLS connection costs. Then every idle connection
serves one more request (the figure is of connections that still work). TLS 1.3, ALPN http/1.1,
no certificate check (the pair is made at run time).

Usage: tls_idle.py --port PORT --pid PID [--warm 20] [--count 400] [--settle 2] [--path /home] [--row NAME]
Prints one JSON object: rss_before_kib, rss_after_kib, per_conn_kib, count, served_after; with
--row, a Markdown table row "| NAME | before | after | per connection | served |" instead.
"""
import argparse
import json
import resource
import socket
import ssl
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def request(sock, path, timeout=10.0):
    """One keep-alive GET; returns the status. Bounded by timeout."""
    sock.settimeout(timeout)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: idle-{id(sock)}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed mid-body")
        rest += chunk
    return int(head.split(b" ", 2)[1])


def open_conns(port, n, path, ctx):
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(s, server_hostname="localhost")
        status = request(s, path)
        if status != 200:
            raise RuntimeError(f"status {status}")
        conns.append(s)
    return conns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--path", default="/home")
    ap.add_argument("--row")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.warm + a.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    warm = open_conns(a.port, a.warm, a.path, ctx)
    time.sleep(a.settle)
    before = rss_kib(a.pid)
    idle = open_conns(a.port, a.count, a.path, ctx)
    time.sleep(a.settle)
    after = rss_kib(a.pid)
    served = sum(1 for s in idle if request(s, a.path) == 200)
    for s in warm + idle:
        s.close()
    per_conn = (after - before) / a.count
    if a.row:
        print(f"| {a.row} | {before:,} | {after:,} | {per_conn:.1f} | {served} of {a.count} |")
        return
    json.dump({"rss_before_kib": before, "rss_after_kib": after, "per_conn_kib": round(per_conn, 1),
               "count": a.count, "served_after": served}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
