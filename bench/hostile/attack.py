#!/usr/bin/env python3
"""The two client attacks of bench/hostile.sh (issue 10, "Benchmark"), against one LB on 127.0.0.1
(standard library only; every loop is bounded in count and time). Each run writes one JSON document.

  attack.py pipeline --port P --pid PID --path /home --out F.json
      The non-reading pipeliner: one client connection that sends `GET PATH` requests back to back
      as fast as the socket accepts them and never reads, for --seconds. The LB's VmRSS is sampled
      every 20 ms: before, peak during (also VmHWM) and growth. The attack stops early when the RSS
      passes --rss-cap KiB (the result then says capped: the figure is a lower bound) or the LB
      process dies. Halfway through, a fresh client asks GET /home (served during?); when the
      sender stops, with the attacker still connected and unread, another (served after?); then
      the attacker closes and a fresh client is polled every 10 ms until served (bounded).
  attack.py fd --port P --out F.json [--admin-port P] [--haproxy-stats SOCK]
      The fd attack: --conns idle client connections (connected, nothing sent) held for --hold
      seconds, then closed. During the hold a fresh GET /home every 0.5 s (served during?); after
      the close a fresh client every 10 ms until one is served: the time from the close to that
      answer (bounded by --recover-limit). For ringlb (--admin-port) /rep?verbose=1 is read through
      a keep-alive connection opened before the attack (it needs no new fd), every 0.5 s during the
      hold and once more at the end: the replicas seen in a state other than healthy. For HAProxy
      (--haproxy-stats) its stats socket's `show stat` after the attack: each server's status and
      chkdown (UP->DOWN transitions of its health check).

A fresh client is served when it gets a 200 with a replica's /home body ("Hello from Server").
"""
import argparse
import json
import os
import resource
import select
import socket
import threading
import time

HOST = "127.0.0.1"
HOME_MARK = b"Hello from Server"


def now():
    return time.monotonic()


def read_status(pid):
    """VmRSS and VmHWM of pid in KiB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def fresh_get(port, path="/home", timeout=1.0):
    """One GET on a new connection; returns {ok, status, seconds, error}. Reads the answer head and
    up to 64 KiB of body, all bounded by timeout."""
    t0 = now()
    result = {"ok": False, "status": None, "seconds": None, "error": None}
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.settimeout(max(0.05, timeout - (now() - t0)))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Request-Id: 123456\r\n"
                      f"Connection: close\r\n\r\n".encode())
            data = b""
            while len(data) < 65536 and now() - t0 < timeout:
                s.settimeout(max(0.05, timeout - (now() - t0)))
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if HOME_MARK in data:
                    break
        line = data.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[1].isdigit():
            result["status"] = int(line[1])
        result["ok"] = result["status"] == 200 and (path != "/home" or HOME_MARK in data)
        if not data:
            result["error"] = "closed without an answer"
    except OSError as e:
        result["error"] = f"{type(e).__name__}: {e}"
    result["seconds"] = round(now() - t0, 4)
    return result


def poll_until_served(port, limit, interval=0.01, attempt_timeout=1.0):
    """A fresh GET /home every interval s until one is served, for at most limit s. Returns
    {served_after_s (None when never), attempts, last_error}: the time from the call to the end of
    the first served answer."""
    t0 = now()
    attempts, last = 0, None
    while now() - t0 < limit:
        attempts += 1
        last = fresh_get(port, timeout=min(attempt_timeout, max(0.05, limit - (now() - t0))))
        if last["ok"]:
            return {"served_after_s": round(now() - t0, 4), "attempts": attempts, "last_error": None}
        time.sleep(interval)
    return {"served_after_s": None, "attempts": attempts,
            "last_error": last and (last["error"] or f"status {last['status']}")}


def pipeline_requests(path, port, count=512):
    """count pipelined GET requests (each with its own X-Request-Id) as one buffer."""
    return b"".join(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                    f"X-Request-Id: {100000 + i * 7919 % 900000}\r\n\r\n".encode()
                    for i in range(count))


def run_pipeline(a):
    buf = pipeline_requests(a.path, a.port)
    per_request = len(buf) // 512
    first = read_status(a.pid)
    if first is None:
        raise SystemExit(f"attack: no process {a.pid}")
    out = {"attack": "pipeline", "path": a.path, "seconds": a.seconds, "rss_cap_kib": a.rss_cap,
           "rss_before_kib": first[0], "hwm_before_kib": first[1]}
    probes = {}

    def probe(name):
        probes[name] = fresh_get(a.port, timeout=2.0)

    s = socket.create_connection((HOST, a.port), timeout=2.0)
    s.setblocking(False)
    sent, off, peak, capped, died = 0, 0, first[0], False, False
    last_accept = t0 = now()
    next_sample = t0
    during = threading.Thread(target=probe, args=("during",))
    samples = []
    while now() - t0 < a.seconds:
        if now() >= next_sample:
            st = read_status(a.pid)
            if st is None:
                died = True
                break
            peak = max(peak, st[0])
            if len(samples) < 2000:
                samples.append([round(now() - t0, 3), st[0]])
            next_sample += 0.02
            if st[0] >= a.rss_cap:
                capped = True
                break
        if not during.is_alive() and during.ident is None and now() - t0 >= a.seconds / 2:
            during.start()
        _, writable, _ = select.select([], [s], [], 0.02)
        if not writable:
            continue
        try:
            n = s.send(buf[off:] if off else buf)
        except BlockingIOError:
            continue
        except OSError as e:
            out["send_error"] = f"{type(e).__name__}: {e}"
            break
        sent += n
        off = (off + n) % len(buf)
        last_accept = now()
    stop = now()
    if during.ident is None:
        during.start()
    during.join(5.0)
    st = read_status(a.pid)
    if st is not None:
        peak = max(peak, st[0], st[1] if st[1] > first[1] else 0)
    else:
        died = True
    after_stop = fresh_get(a.port, timeout=2.0) if not died else {"ok": False, "error": "LB died"}
    s.close()
    rss_close = None
    if not died:
        recovery = poll_until_served(a.port, a.recover_limit)
        time.sleep(1.0)
        st = read_status(a.pid)
        rss_close = st and st[0]
    else:
        recovery = {"served_after_s": None, "attempts": 0, "last_error": "LB died"}
    out.update({
        "attack_s": round(stop - t0, 3), "bytes_accepted": sent,
        "requests_accepted": sent // per_request,
        "last_accept_s": round(last_accept - t0, 3),
        "rss_peak_kib": peak, "rss_growth_kib": peak - first[0], "capped": capped, "died": died,
        "served_during": probes.get("during"), "served_after_stop": after_stop,
        "after_close": recovery, "rss_1s_after_close_kib": rss_close, "rss_samples": samples,
    })
    return out


class RepPoller:
    """GET /rep?verbose=1 on one keep-alive connection opened before the attack (bounded reads)."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=2.0)

    def states(self):
        """{name: state} of the replicas, or {"error": ...}."""
        try:
            self.sock.settimeout(2.0)
            self.sock.sendall(f"GET /rep?verbose=1 HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode())
            data = b""
            t0 = now()
            while b"\r\n\r\n" not in data and now() - t0 < 2.0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("connection closed")
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(body) < length and now() - t0 < 2.0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("connection closed")
                body += chunk
            details = json.loads(body[:length])["message"]["details"]
            return {d["name"]: d["state"] for d in details}
        except (OSError, ValueError, KeyError) as e:
            return {"error": f"{type(e).__name__}: {e}"}

    def close(self):
        self.sock.close()


def rep_states_fresh(port):
    try:
        p = RepPoller(port)
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    try:
        return p.states()
    finally:
        p.close()


def haproxy_stat(path):
    """[{server, status, chkdown}] of the backend servers from HAProxy's stats socket."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2.0)
            s.connect(path)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    lines = data.decode(errors="replace").splitlines()
    cols = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(cols, line.split(","))) for line in lines[1:] if line]
    return [{"server": r["svname"], "status": r["status"], "chkdown": r.get("chkdown", "")}
            for r in rows if r.get("svname") not in ("FRONTEND", "BACKEND")]


def run_fd(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.conns + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.conns + 256), hard))
    out = {"attack": "fd", "conns": a.conns, "hold_s": a.hold,
           "served_before": fresh_get(a.port, timeout=2.0)}
    rep = RepPoller(a.port) if a.admin_port else None
    if rep:
        out["rep_before"] = rep.states()
    conns, pending = [], []
    for _ in range(a.conns):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, a.port))
        pending.append(s)
    t_open = now()
    while pending and now() - t_open < 5.0:
        _, writable, _ = select.select([], pending, [], 0.1)
        for s in writable:
            pending.remove(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                conns.append(s)
            else:
                s.close()
    for s in pending:
        s.close()
    out["connected"] = len(conns)
    t0 = now()
    during, rep_during, not_healthy = [], [], {}
    while now() - t0 < a.hold:
        during.append(fresh_get(a.port, timeout=1.0))
        if rep:
            st = rep.states()
            rep_during.append([round(now() - t0, 2), st])
            for name, state in st.items():
                if name != "error" and state != "healthy":
                    not_healthy.setdefault(name, []).append(state)
        time.sleep(max(0.0, 0.5 - during[-1]["seconds"]))
    # Which of the idle connections the LB has closed by the end of the hold.
    closed_by_lb = 0
    readable, _, _ = select.select(conns, [], [], 0)
    for s in readable:
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                closed_by_lb += 1
        except OSError:
            closed_by_lb += 1
    for s in conns:
        s.close()
    out["closed_by_lb_during_hold"] = closed_by_lb
    out["hold_actual_s"] = round(now() - t0, 3)
    out["after_close"] = poll_until_served(a.port, a.recover_limit)
    out["served_during"] = {"served": sum(1 for p in during if p["ok"]), "probes": len(during),
                            "errors": sorted({p["error"] or f"status {p['status']}" for p in during
                                              if not p["ok"]})}
    time.sleep(a.settle)
    if rep:
        out["rep_during"] = rep_during
        out["rep_end"] = rep.states()
        if "error" in out["rep_end"]:
            out["rep_end"] = rep_states_fresh(a.admin_port)
        for name, state in out["rep_end"].items():
            if name != "error" and state != "healthy":
                not_healthy.setdefault(name, []).append(state)
        before = set(k for k in out["rep_before"] if k != "error")
        out["replicas_not_healthy"] = {k: sorted(set(v)) for k, v in not_healthy.items()}
        out["replicas_gone"] = sorted(before - set(out["rep_end"]))
        rep.close()
    if a.haproxy_stats:
        out["haproxy_servers"] = haproxy_stat(a.haproxy_stats)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the LB process (nginx: the worker)")
    p.add_argument("--path", default="/home")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rss-cap", type=int, default=1 << 20, help="KiB; stop the attack past it")
    p.add_argument("--recover-limit", type=float, default=10.0)
    p.add_argument("--out", required=True)
    f = sub.add_parser("fd")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--conns", type=int, default=400)
    f.add_argument("--hold", type=float, default=8.0)
    f.add_argument("--recover-limit", type=float, default=15.0)
    f.add_argument("--settle", type=float, default=2.0, help="s after service is back, then states")
    f.add_argument("--admin-port", type=int, help="ringlb: read /rep?verbose=1 here")
    f.add_argument("--haproxy-stats", help="HAProxy's stats socket")
    f.add_argument("--out", required=True)
    a = ap.parse_args()
    out = run_pipeline(a) if a.cmd == "pipeline" else run_fd(a)
    out["t_end_unix"] = round(time.time(), 3)
    with open(a.out, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
