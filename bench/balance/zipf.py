"""Balance under hot keys (issue 16): the same Zipf(S) key sequence through ringlb (bounded load off
and --balance-factor 1.25), HAProxy (hash-type consistent, without and with hash-balance-factor 125)
and nginx (hash $http_x_request_id consistent, which has no bounded load), in one run, over the
same three replicas.

Every contender gets ringlb-loadgen --zipf S --keys K --seed SEED -n N -c C on GET /sleep?ms=D (the
replica answers after D ms, so requests pile up in flight where the keys are hot), with --log: one
line per request (start, end, key, replica). From those lines, per contender:
- each replica's share of the requests;
- its in-flight load, sampled every millisecond of the run from the requests' [start, end)
  intervals as the client saw them (the same measure for every LB, none of them asked): the mean per
  replica, busiest / mean, and the share of samples in which the busiest replica held more than
  ceil(1.25 x (total + 1) / 3), the bound at factor 1.25;
- for a bounded run, the fraction of requests that went to a non-home replica, home being the
  replica the same LB gave the key in its unbounded run (same keys: same seed and count).
Rounds are interleaved (A B C ... A B C). Writes bench/results/zipf.json, zipf.png and the section
"Balance: hot keys" of bench/RESULTS.md. Traffic only to 127.0.0.1; every run bounded.
"""
import bisect
import collections
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402
import harness  # noqa: E402
from benchlib import HOST  # noqa: E402

HEADING = "Balance: hot keys"
BOUND = 1.25
NAMES = ["server1", "server2", "server3"]


def haproxy_conf(port, replica_ports, factor):
    servers = "\n".join(f"  server {n} {HOST}:{p}" for n, p in zip(NAMES, replica_ports))
    bal = f"  hash-balance-factor {factor}\n" if factor else ""
    return f"""global
  nbthread 2

defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
  http-reuse always

frontend fe
  bind {HOST}:{port}
  default_backend replicas

backend replicas
  balance hdr(X-Request-Id)
  hash-type consistent
{bal}{servers}
"""


def nginx_conf(folder, port, replica_ports):
    servers = "\n".join(f"    server {HOST}:{p};" for p in replica_ports)
    return f"""worker_processes 2;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  upstream replicas {{
    hash $http_x_request_id consistent;
{servers}
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen {HOST}:{port};
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def wait_serving(port, timeout=15.0):
    """Until GET /home with a key answers 200 from one of the replicas."""
    def ok():
        try:
            r = harness.request(port, "GET", "/home", {"X-Request-Id": "123456"})
            return r.status == 200 and b"Hello from Server" in r.body
        except OSError:
            return False
    harness.wait_until(ok, timeout, f"the load balancer on port {port} to serve", 0.05)


def run_one(port, args, log_path):
    """One loadgen run with --log log_path; returns its JSON report."""
    argv = [benchlib.binary("bench", "loadgen", "ringlb-loadgen"), "-q", "--zipf", str(args.zipf),
            "--keys", str(args.keys), "--seed", str(args.seed), "-n", str(args.requests),
            "-c", str(args.connections), "-t", "10000", "-T", "300", "--log", log_path,
            "-j", log_path + ".json", f"http://{HOST}:{port}/sleep?ms={args.sleep_ms}"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=330)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {run.stderr}")
    with open(log_path + ".json") as f:
        return json.load(f)


def read_log(path):
    """[(start_us, end_us, key, status, replica)] of a loadgen --log file."""
    out = []
    with open(path) as f:
        for line in f:
            s, e, key, status, rep = line.split()
            out.append((int(s), int(e), key, int(status), rep))
    return out


def analyse(rows, home=None):
    """Shares, sampled in-flight load and (given home: key -> replica) the non-home fraction."""
    ok = [r for r in rows if r[3] == 200 and r[4] in NAMES]
    counts = collections.Counter(r[4] for r in ok)
    total = len(ok)
    starts = {n: sorted(r[0] for r in ok if r[4] == n) for n in NAMES}
    ends = {n: sorted(r[1] for r in ok if r[4] == n) for n in NAMES}
    # Samples every ms over the middle 90% of the sending time (not the start-up or the tail).
    t0 = min(r[0] for r in ok)
    t1 = max(r[0] for r in ok)
    lo, hi = t0 + (t1 - t0) // 20, t1 - (t1 - t0) // 20
    sums = dict.fromkeys(NAMES, 0)
    over = samples = 0
    for t in range(lo, hi, 1000):
        cur = {n: bisect.bisect_right(starts[n], t) - bisect.bisect_right(ends[n], t) for n in NAMES}
        tot = sum(cur.values())
        for n in NAMES:
            sums[n] += cur[n]
        bound = math.ceil(BOUND * (tot + 1) / len(NAMES))
        over += max(cur.values()) > bound
        samples += 1
    mean_inflight = {n: sums[n] / max(1, samples) for n in NAMES}
    avg = sum(mean_inflight.values()) / len(NAMES)
    out = {
        "requests": total,
        "failed": len(rows) - total,
        "share": {n: round(counts[n] / max(1, total), 4) for n in NAMES},
        "max_share_over_mean": round(max(counts.values()) / (total / len(NAMES)), 3),
        "inflight_mean": {n: round(mean_inflight[n], 2) for n in NAMES},
        "inflight_busiest_over_mean": round(max(mean_inflight.values()) / avg, 3) if avg else None,
        "samples": samples,
        "samples_over_bound": round(over / max(1, samples), 4),
    }
    if home is not None:
        known = [r for r in ok if r[2] in home]
        out["non_home"] = round(sum(r[4] != home[r[2]] for r in known) / max(1, len(known)), 4)
        out["home_unknown"] = total - len(known)
    return out


def home_of(rows):
    """key -> the replica that served it most in an unbounded run (the ring's choice)."""
    by = collections.defaultdict(collections.Counter)
    for r in rows:
        if r[3] == 200:
            by[r[2]][r[4]] += 1
    return {k: c.most_common(1)[0][0] for k, c in by.items()}


def chart(data, png):
    names = [c["name"] for c in data["contenders"]]
    med = data["median"]
    lines = ["set multiplot layout 1,2",
             "set style data histograms", "set style histogram clustered gap 1",
             "set style fill solid 0.8 border -1", "set key outside top center horizontal", "set grid ytics",
             "set xtics rotate by -20"]
    blocks = []
    for metric, title, ylabel in (("share", "Share of requests per replica", "share"),
                                  ("inflight_mean", "Mean in-flight requests per replica",
                                   "requests in flight")):
        rows = [f'"{n}" ' + " ".join(str(med[n][metric][r]) for r in NAMES) for n in names]
        blocks.append((title, ylabel, "\n".join(rows) + "\ne"))
    for title, ylabel, block in blocks:
        lines += [f"set title '{title} (Zipf({data['params']['zipf']}), "
                  f"{data['params']['keys']} keys)'", f"set ylabel '{ylabel}'", "set yrange [0:*]",
                  "plot " + ", ".join(f"'-' using {i + 2}:xtic(1) title '{r}'"
                                      for i, r in enumerate(NAMES))]
        lines += [block] * len(NAMES)
    lines.append("unset multiplot")
    benchlib.gnuplot("\n".join(lines) + "\n", png, width=1400, height=560)


def section(data):
    p = data["params"]
    rows = ["| contender | share server1 / 2 / 3 | max share / mean | in flight server1 / 2 / 3 "
            "(mean) | busiest / mean in flight | samples over the 1.25 bound | non-home |",
            "|---|---|---|---|---|---|---|"]
    for c in data["contenders"]:
        m = data["median"][c["name"]]
        rows.append(
            f"| {c['name']} | " + " / ".join(f"{100 * m['share'][r]:.1f}%" for r in NAMES) +
            f" | {m['max_share_over_mean']:.2f} | " +
            " / ".join(f"{m['inflight_mean'][r]:.1f}" for r in NAMES) +
            f" | {m['inflight_busiest_over_mean']:.2f} | {100 * m['samples_over_bound']:.1f}% | " +
            (f"{100 * m['non_home']:.1f}%" if "non_home" in m else "–") + " |")
    text = benchlib.section_head(HEADING, data, "the shares depend on the keys and the ring, the "
                                 "in-flight figures on timing")
    text += [benchlib.fill(
        f"{p['requests']} requests per run, GET /sleep?ms={p['sleep_ms']} over {p['connections']} "
        f"keep-alive connections, X-Request-Id drawn from Zipf({p['zipf']}) over {p['keys']} fixed "
        f"6-digit ids with seed {p['seed']} (the same sequence for every contender), three "
        f"replicas, {p['rounds']} interleaved rounds, medians. ringlb: --workers 2, static "
        "backends, its default ring; HAProxy 2 threads, `balance hdr(X-Request-Id)` + `hash-type "
        "consistent` (+ `hash-balance-factor 125`); nginx 2 workers, `hash $http_x_request_id "
        "consistent` (no bounded load; its ring hashes the backends' addresses, whose ports are "
        "picked at run time, so its shares change from run to run, while HAProxy's and ringlb's "
        "rings hash server names and ids). In flight: sampled every ms from the client's request "
        "intervals; 'over the bound' counts samples whose busiest replica held more than ceil(1.25 "
        "x (total + 1) / 3); non-home: requests of a bounded run served elsewhere than the same "
        "LB's unbounded run served the key."),
        ""]
    variants = [c["name"] for c in data["contenders"] if c.get("variant")]
    if variants:
        text += [benchlib.fill(
            "Rows " + ", ".join(f"'{v}'" for v in variants) + " are other ringlb builds at 1.25 "
            "(--variant NAME=BINARY), run in the same rounds; their non-home fraction is against "
            "this build's unbounded run (the ring is the same). A build of an earlier commit: "
            "`git worktree add /tmp/before COMMIT && cd /tmp/before && meson setup build "
            "--buildtype=release && ninja -C build lb/ringlb`."), ""]
    text += [*rows, ""]
    m = data["median"]
    if "ringlb" in m and "ringlb 1.25" in m and "haproxy 125" in m:
        off, on, hb = m["ringlb"], m["ringlb 1.25"], m["haproxy 125"]
        text += [benchlib.fill(
            f"Reading: without the bound ringlb's busiest replica holds "
            f"{off['inflight_busiest_over_mean']:.2f}x the mean in flight (the hot keys' replica); "
            f"at 1.25 it holds {on['inflight_busiest_over_mean']:.2f}x, within the 1.25 target, "
            f"and the busiest replica is over the bound in {100 * on['samples_over_bound']:.1f}% "
            f"of the samples (HAProxy at 125: {hb['inflight_busiest_over_mean']:.2f}x, "
            f"{100 * hb['samples_over_bound']:.1f}%). {100 * on['non_home']:.1f}% of ringlb's "
            f"requests leave their home (HAProxy {100 * hb['non_home']:.1f}%, from a more even "
            f"unbounded start: max share / mean {m['haproxy']['max_share_over_mean']:.2f} against "
            f"ringlb's {off['max_share_over_mean']:.2f} on these keys). Each ringlb worker bounds "
            "its own exact count as well as every worker's estimate (the other workers' counts "
            "are up to ~25 ms old, longer than a 10 ms request): that holds the bound, and costs "
            "some moves that exact shared counts (HAProxy's threads) avoid."), ""]
    text += ["![hot keys](results/zipf.png)", ""]
    return "\n".join(text)


def main():
    args = benchlib.experiment_args(
        __doc__.split("\n")[0],
        **{"--requests": dict(type=int, default=20000), "--connections": dict(type=int, default=48),
           "--sleep-ms": dict(type=int, default=10), "--zipf": dict(type=float, default=1.1),
           "--keys": dict(type=int, default=10000), "--seed": dict(type=int, default=16),
           "--rounds": dict(type=int, default=3),
           "--render": dict(metavar="JSON", help="only rewrite the RESULTS.md section from JSON"),
           "--variant": dict(action="append", metavar="NAME=RINGLB",
                             help="also run this ringlb binary at 1.25 under NAME")})
    if args.render:
        with open(args.render) as f:
            data = json.load(f)
        benchlib.update_results_section(HEADING, section(data))
        return
    if args.smoke:
        args.requests, args.rounds = 2000, 1
    for tool in ("haproxy", "nginx", "gnuplot"):
        if shutil.which(tool) is None:
            sys.exit(f"zipf: {tool} is missing (deps/install.sh bench)")
    data = {"machine": benchlib.machine(), "loadavg": os.getloadavg(),
            "command": " ".join(["python3", "bench/balance/zipf.py",
                                 *map(shlex.quote, sys.argv[1:])]),
            "params": {k: getattr(args, k) for k in ("requests", "connections", "sleep_ms", "zipf",
                                                      "keys", "seed", "rounds")},
            "busy_before": benchlib.machine_busy()}
    replica = benchlib.binary("replica", "ringlb-replica")
    with benchlib.Procs() as procs, tempfile.TemporaryDirectory(prefix="ringlb-zipf-") as tmp:
        reps = [procs.start([replica, "--address", HOST, "--port", "{port}", "--id", n,
                             "--debug-routes"]) for n in NAMES]
        ports = [r.port for r in reps]
        backends = [a for p in ports for a in ("--backend", f"{HOST}:{p}")]
        contenders = []

        def ringlb(name, *extra, binary=None):
            lb = procs.start([binary or benchlib.binary("lb", "ringlb"), "--listen", f"{HOST}:{{port}}",
                              "--log-level", "warn", "--workers", "2", "--provisioner", "static",
                              *backends, *extra], ready_timeout=10.0)
            benchlib.wait_all_healthy(lb.port, 3)
            contenders.append({"name": name, "port": lb.port, "argv": " ".join(extra)})

        def haproxy(name, factor):
            port = harness.free_port()
            cfg = os.path.join(tmp, f"{name}.cfg")
            with open(cfg, "w") as f:
                f.write(haproxy_conf(port, ports, factor))
            procs.start(["haproxy", "-db", "-f", cfg], port=port)
            contenders.append({"name": name, "port": port,
                               "argv": f"hash-balance-factor {factor}" if factor else ""})

        ringlb("ringlb")
        ringlb("ringlb 1.25", "--balance-factor", str(BOUND))
        unbounded = {"ringlb 1.25": "ringlb", "haproxy 125": "haproxy"}
        for spec in args.variant or []:
            # Another ringlb build at 1.25 (e.g. the code before a change), named NAME.
            name, _, path = spec.partition("=")
            ringlb(name, "--balance-factor", str(BOUND), binary=os.path.abspath(path))
            contenders[-1]["variant"] = True
            unbounded[name] = "ringlb"
        haproxy("haproxy", 0)
        haproxy("haproxy 125", 125)
        nport = harness.free_port()
        nfolder = os.path.join(tmp, "nginx")
        os.makedirs(nfolder)
        with open(os.path.join(nfolder, "nginx.conf"), "w") as f:
            f.write(nginx_conf(nfolder, nport, ports))
        procs.start(["nginx", "-p", nfolder, "-c", os.path.join(nfolder, "nginx.conf"),
                     "-e", os.path.join(nfolder, "error.log"), "-g", "daemon off;"], port=nport)
        contenders.append({"name": "nginx", "port": nport, "argv": ""})
        for c in contenders:
            wait_serving(c["port"])
        results = {c["name"]: [] for c in contenders}
        for rnd in range(args.rounds):
            logs = {}
            for c in contenders:
                path = os.path.join(tmp, f"{c['name'].replace(' ', '_')}.{rnd}.log")
                report = run_one(c["port"], args, path)
                logs[c["name"]] = read_log(path)
                print(f"zipf: round {rnd + 1} {c['name']}: {report['totals']['ok']} ok, "
                      f"{report['totals']['failed'] + report['totals']['errors']} failed",
                      file=sys.stderr)
            homes = {n: home_of(rows) for n, rows in logs.items() if n not in unbounded}
            for c in contenders:
                base = unbounded.get(c["name"])
                results[c["name"]].append(analyse(logs[c["name"]], homes[base] if base else None))
    data["contenders"] = [{"name": c["name"], "options": c["argv"],
                           "variant": c.get("variant", False)} for c in contenders]
    data["rounds"] = results
    data["median"] = {}
    for name, runs in results.items():
        med = {}
        for key in runs[0]:
            if isinstance(runs[0][key], dict):
                med[key] = {r: statistics.median(x[key][r] for x in runs) for r in runs[0][key]}
            elif runs[0][key] is not None:
                med[key] = statistics.median(x[key] for x in runs)
        data["median"][name] = med
    path = benchlib.write_json("zipf.json", data)
    png = benchlib.results_path("zipf.png")
    chart(data, png)
    text = section(data)
    benchlib.update_results_section(HEADING, text)
    print(text)
    print(f"zipf: wrote {path} and {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
