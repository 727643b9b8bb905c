"""What ringlb, HAProxy and nginx do with the hostile framing test's bytes (test/hostile/framing_test.py,
RejectTest and NormaliseTest cases): each runs on 127.0.0.1 in front of its own recording backend;
prints a Markdown table of the status each answered, "(fwd)" when its backend received bytes.

Usage: python3 bench/peers/framing_peers.py [BUILD_DIR]   (haproxy and nginx on PATH; about 30 s)
"""
import os, shutil, socket, subprocess, sys, tempfile, time
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
sys.path.insert(0, os.path.join(ROOT, "test", "hostile"))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
import harness
from recorder import Recorder
import framing_test as ft

tmp = tempfile.mkdtemp(prefix="ringlb-framing-peers.")
procs = []
def start_peer(kind, rec):
    port = harness.free_port()
    if kind == "ringlb":
        argv = [os.path.join(BUILD, "lb", "ringlb"), "--listen", f"127.0.0.1:{port}", "--provisioner", "static",
                "--backend", rec.address, "--log-level", "error"]
    elif kind == "haproxy":
        cfg = f"{tmp}/haproxy.cfg"
        open(cfg, "w").write(f"""global
  log stdout format raw local0 err
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server r {rec.address}
""")
        argv = ["haproxy", "-f", cfg, "-db"]
    else:
        os.makedirs(f"{tmp}/nginx", exist_ok=True)
        cfg = f"{tmp}/nginx.conf"
        open(cfg, "w").write(f"""daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{}}
http {{ access_log off; client_body_temp_path {tmp}/nginx; proxy_temp_path {tmp}/nginx;
  upstream b {{ server {rec.address}; keepalive 4; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
        argv = ["nginx", "-c", cfg, "-e", f"{tmp}/nginx.err"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.5)
    return port

def status(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(data)
    got = b""
    try:
        while b"\r\n" not in got:
            d = s.recv(4096)
            if not d: break
            got += d
    except OSError as e:
        return f"({type(e).__name__})"
    finally:
        s.close()
    line = got.split(b"\r\n")[0]
    return line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else repr(line[:20]) if got else "(closed)"

cases = [(w, d, s) for w, d, s in ft.RejectTest.CASES] + [(w, d, 200) for w, d, _ in ft.NormaliseTest.CASES]
results = {}
for kind in ["ringlb", "haproxy", "nginx"]:
    rec = Recorder(None)
    port = start_peer(kind, rec)
    for what, data, _ in cases:
        with rec._lock:
            for r in rec.raw: del r[:]
        code = status(port, data)
        time.sleep(0.15)
        with rec._lock:
            fwd = b"".join(bytes(r) for r in rec.raw if not r.startswith(b"GET /heartbeat"))
        results.setdefault(what, {})[kind] = (code, fwd.split(b"\r\n")[0][:40] if fwd else b"")
    rec.close()
for p in procs:
    p.terminate()
    p.wait(5)
shutil.rmtree(tmp, ignore_errors=True)
print(f"| case | ringlb | HAProxy 2.6 | nginx 1.22 |")
print("|---|---|---|---|")
for what, _, _ in cases:
    r = results[what]
    print(f"| {what} | " + " | ".join(f"{r[k][0]}" + (" (fwd)" if r[k][1] else "") for k in ["ringlb", "haproxy", "nginx"]) + " |")
