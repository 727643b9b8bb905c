#!/usr/bin/env python3
"""Turns the raw files of one bench/peers/peers.sh run into its report: a Markdown table on stdout,
RESULTS/peers.json and RESULTS/peers.png (through gnuplot, when installed).

usage: report.py RUN_DIR RESULTS_DIR

RUN_DIR holds meta.json, rounds/ROUND-TARGET.{json,wrk} (measure.py's record and wrk's output),
ab/TARGET.txt and dist/TARGET.json (ringlb-loadgen's JSON). Every figure is a median over the
rounds; ratios are against HAProxy's median, and the same-round ratios show how much they moved.
"""
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

TARGETS = ["ringlb", "haproxy", "nginx", "direct"]  # the run's own list is in meta.json
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(text):
    """requests, seconds, p50 ms, p99 ms, errors (socket errors + non-2xx/3xx) from wrk --latency."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
    if not m:
        raise SystemExit(f"report: cannot read wrk output:\n{text}")
    requests, seconds = int(m.group(1)), float(m.group(2)) * UNIT[m.group(3)] / 1000.0
    lat = {p: float(v) * UNIT[u] for p, v, u in
           re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(m.group(1)) if m else 0
    return requests, seconds, lat.get("50"), lat.get("99"), errors


def parse_ab(text):
    """requests/s, complete, failed (failed requests + non-2xx), or Nones when ab gave up."""
    rate = re.search(r"Requests per second:\s+([\d.]+)", text)
    complete = re.search(r"Complete requests:\s+(\d+)", text)
    failed = re.search(r"Failed requests:\s+(\d+)", text)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", text)
    if not (rate and complete and failed):
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        return {"req_s": None, "complete": None, "failed": None, "error": last}
    return {"req_s": float(rate.group(1)), "complete": int(complete.group(1)),
            "failed": int(failed.group(1)) + (int(non2xx.group(1)) if non2xx else 0)}


def parse_dist(path):
    """Answers per replica over the run's request ids and max/mean over the three replicas."""
    doc = json.load(open(path))
    counts = {f"server{i}": doc["replicas"].get(f"server{i}", 0) for i in (1, 2, 3)}
    total = sum(counts.values())
    return {"counts": counts, "requests": doc["totals"]["started"], "failed": doc["totals"]["failed"],
            "max_over_mean": max(counts.values()) / (total / 3) if total else None}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec, none="–"):
    return none if v is None else format(v, spec)


def main():
    run, results = sys.argv[1], sys.argv[2]
    meta = json.load(open(os.path.join(run, "meta.json")))
    global TARGETS
    TARGETS = meta.get("targets") or TARGETS
    lbs = [t for t in TARGETS if t != "direct"]
    duration = meta["env"]["DURATION"]
    rounds = []
    for path in sorted(glob.glob(os.path.join(run, "rounds", "*.json"))):
        rnd, target = os.path.basename(path)[:-5].split("-", 1)
        m = json.load(open(path))
        requests, seconds, p50, p99, errors = parse_wrk(open(path[:-5] + ".wrk").read())
        lb_cpu, rep_cpu = m["groups_cpu_s"]["lb"], m["groups_cpu_s"]["replicas"]
        rounds.append({
            "round": int(rnd), "target": target, "requests": requests, "seconds": seconds,
            "req_s": requests / seconds, "p50_ms": p50, "p99_ms": p99, "errors": errors,
            "lb_cpu_s": lb_cpu if target != "direct" else None,
            "lb_cpu_s_per_100k": lb_cpu / requests * 1e5 if target != "direct" else None,
            "lb_cpu_pct": 100 * lb_cpu / m["wall_s"] if target != "direct" else None,
            "replicas_cpu_s_per_100k": rep_cpu / requests * 1e5,
            "wrk_cpu_pct": 100 * m["command_cpu_s"] / m["wall_s"],
            "others_cpu_pct": m["others_cpu_pct"], "repeats": m["attempt"],
            "quiet_before_pct": m["quiet_before_pct"], "quiet_waited_s": m["quiet_waited_s"],
        })
    rounds.sort(key=lambda r: (r["round"], TARGETS.index(r["target"])))

    summary = {}
    for t in TARGETS:
        rs = [r for r in rounds if r["target"] == t]
        summary[t] = {k: med(r[k] for r in rs) for k in
                      ("req_s", "p50_ms", "p99_ms", "lb_cpu_s_per_100k", "lb_cpu_pct",
                       "replicas_cpu_s_per_100k", "wrk_cpu_pct", "others_cpu_pct")}
        summary[t]["errors"] = sum(r["errors"] for r in rs)
        summary[t]["peak_rss_kib"] = meta["peak_rss_kib"].get(t)
        summary[t]["ab"] = parse_ab(open(os.path.join(run, "ab", t + ".txt")).read())
        ab_cpu = os.path.join(run, "ab", t + ".json")
        if os.path.exists(ab_cpu) and summary[t]["ab"]["complete"]:
            m = json.load(open(ab_cpu))
            n = summary[t]["ab"]["complete"]
            summary[t]["ab"].update({
                "lb_cpu_s_per_100k": m["groups_cpu_s"]["lb"] / n * 1e5 if t != "direct" else None,
                "replicas_cpu_s_per_100k": m["groups_cpu_s"]["replicas"] / n * 1e5,
                "ab_cpu_pct": 100 * m["command_cpu_s"] / m["wall_s"],
                "others_cpu_pct": m["others_cpu_pct"]})
        dist = os.path.join(run, "dist", t + ".json")
        summary[t]["distribution"] = parse_dist(dist) if os.path.exists(dist) else None
    h = summary["haproxy"]
    for t in TARGETS:
        s = summary[t]
        s["req_s_vs_haproxy"] = s["req_s"] / h["req_s"]
        s["p99_vs_haproxy"] = s["p99_ms"] / h["p99_ms"] if s["p99_ms"] and h["p99_ms"] else None
        s["cpu_vs_haproxy"] = (s["lb_cpu_s_per_100k"] / h["lb_cpu_s_per_100k"]
                               if s["lb_cpu_s_per_100k"] is not None else None)
        pairs = []
        for r in rounds:
            if r["target"] != t:
                continue
            hr = next(x for x in rounds if x["target"] == "haproxy" and x["round"] == r["round"])
            pairs.append(round(r["req_s"] / hr["req_s"], 3))
        s["req_s_vs_haproxy_by_round"] = pairs
    r = summary["ringlb"]
    targets = {
        "req_s >= 1.0x haproxy": r["req_s_vs_haproxy"] >= 1.0,
        "cpu per request <= 1.0x haproxy": r["cpu_vs_haproxy"] <= 1.0,
        "p99 <= 1.2x haproxy": r["p99_vs_haproxy"] is not None and r["p99_vs_haproxy"] <= 1.2,
    }

    doc = {"meta": meta, "rounds": rounds, "summary": summary, "issue_targets_met": targets}
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "peers.json"), "w") as f:
        json.dump(doc, f, indent=1)

    # --- Markdown ---
    print(f"Peers, {meta['date']}: {meta['machine']['cpu']}, {meta['machine']['cpus']} CPUs, kernel "
          f"{meta['machine']['kernel']}; ringlb {meta['versions']['ringlb']}, HAProxy "
          f"{meta['versions']['haproxy']}, nginx {meta['versions']['nginx']}, wrk "
          f"{meta['versions']['wrk']}, ab {meta['versions']['ab']}")
    quiet_max = meta["env"]["QUIET_MAX"]
    print(f"wrk -t1 -c{meta['env']['CONNECTIONS']} -d{duration}s --latency, random X-Request-Id; "
          f"{meta['env']['ROUNDS']} interleaved rounds after {meta['env']['WARMUP']} s warm-ups; "
          f"medians over rounds.")
    print()
    print("| target | req/s | × HAProxy | p50 | p99 | p99 × HAProxy | LB CPU s / 100k req "
          "| CPU × HAProxy | LB CPU | LB peak RSS | errors | ab req/s (failed) | max/mean |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in TARGETS:
        s = summary[t]
        ab = s["ab"]
        ab_txt = (f"{ab['req_s']:,.0f} ({ab['failed']})" if ab["req_s"] is not None
                  else f"failed: {ab['error']}")
        dist = s["distribution"]
        print(f"| {t} | {s['req_s']:,.0f} | {s['req_s_vs_haproxy']:.2f} | {s['p50_ms']:.2f} ms "
              f"| {s['p99_ms']:.2f} ms | {fmt(s['p99_vs_haproxy'], '.2f')} "
              f"| {fmt(s['lb_cpu_s_per_100k'], '.2f')} | {fmt(s['cpu_vs_haproxy'], '.2f')} "
              f"| {fmt(s['lb_cpu_pct'], '.0f')}{'%' if s['lb_cpu_pct'] is not None else ''} "
              f"| {fmt(s['peak_rss_kib'] and s['peak_rss_kib'] / 1024, '.1f')}"
              f"{' MiB' if s['peak_rss_kib'] else ''} | {s['errors']} | {ab_txt} "
              f"| {fmt(dist and dist['max_over_mean'], '.3f')} |")
    print()
    print("| round | target | req/s | p50 | p99 | LB CPU s / 100k | replicas CPU s / 100k | wrk CPU "
          "| others' CPU | repeats | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for x in rounds:
        print(f"| {x['round']} | {x['target']} | {x['req_s']:,.0f} | {x['p50_ms']:.2f} ms "
              f"| {x['p99_ms']:.2f} ms | {fmt(x['lb_cpu_s_per_100k'], '.2f')} "
              f"| {x['replicas_cpu_s_per_100k']:.2f} | {x['wrk_cpu_pct']:.0f}% "
              f"| {x['others_cpu_pct']:.0f}%{' (noisy)' if x['others_cpu_pct'] > quiet_max else ''} "
              f"| {x['repeats']} | {x['errors']} |")
    print()
    print("ab -n 10000 -c 100 (a new connection per request):")
    print()
    print("| target | req/s | × HAProxy | failed | LB CPU s / 100k req | CPU × HAProxy "
          "| replicas CPU s / 100k | ab CPU | others' CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    hab = summary["haproxy"]["ab"]
    for t in TARGETS:
        ab = summary[t]["ab"]
        if ab["req_s"] is None:
            print(f"| {t} | failed: {ab['error']} | | | | | | | |")
            continue
        lbc = ab.get("lb_cpu_s_per_100k")
        ratio = lbc / hab["lb_cpu_s_per_100k"] if lbc and hab.get("lb_cpu_s_per_100k") else None
        print(f"| {t} | {ab['req_s']:,.0f} | "
              f"{fmt(hab['req_s'] and ab['req_s'] / hab['req_s'], '.2f')} | {ab['failed']} "
              f"| {fmt(lbc, '.2f')} | {fmt(ratio, '.2f')} "
              f"| {fmt(ab.get('replicas_cpu_s_per_100k'), '.2f')} "
              f"| {fmt(ab.get('ab_cpu_pct'), '.0f')}% | {fmt(ab.get('others_cpu_pct'), '.0f')}% |")
    print()
    for t in lbs:
        print(f"{t} req/s ÷ HAProxy by round: {', '.join(f'{p:.2f}' for p in summary[t]['req_s_vs_haproxy_by_round'])}")
    for t in lbs:
        d = summary[t]["distribution"]
        print(f"distribution through {t} ({d['requests']} ids, seed {meta['env']['SEED']}, "
              f"{d['failed']} failed): " + ", ".join(f"{k} {v}" for k, v in d["counts"].items())
              + f"; max/mean {d['max_over_mean']:.3f}")
    if "ringlb-before" in summary:
        a, b = summary["ringlb"], summary["ringlb-before"]
        pairs = [x["req_s"] / y["req_s"] for x in rounds for y in rounds
                 if x["target"] == "ringlb" and y["target"] == "ringlb-before"
                 and x["round"] == y["round"]]
        print(f"ringlb ÷ ringlb-before ({meta['baseline']}): req/s {a['req_s'] / b['req_s']:.2f} "
              f"(by round: {', '.join(f'{p:.2f}' for p in pairs)}), LB CPU per request "
              f"{a['lb_cpu_s_per_100k'] / b['lb_cpu_s_per_100k']:.2f}, p99 "
              f"{a['p99_ms'] / b['p99_ms']:.2f}")
    print("issue targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in targets.items()))
    print(f"machine: {meta['quiet_before_pct']}% of one CPU busy in the 2 s before the run, "
          f"{meta['quiet_after_pct']}% in the 2 s after")

    plot(summary, meta, results)


def plot(summary, meta, results):
    """Grouped bars per target: requests/s (left axis) and LB CPU s per 100k requests (right axis)."""
    if shutil.which("gnuplot") is None:
        print("peers.png: gnuplot is not installed, no chart", file=sys.stderr)
        return
    data = os.path.join(results, ".peers.dat")
    with open(data, "w") as f:
        for t in TARGETS:
            s = summary[t]
            cpu = s["lb_cpu_s_per_100k"]
            f.write(f"{t} {s['req_s'] / 1000:.2f} {cpu if cpu is not None else 'NaN'}\n")
    ymax = max(s["req_s"] for s in summary.values()) / 1000 * 1.25
    y2max = max(s["lb_cpu_s_per_100k"] or 0 for s in summary.values()) * 1.25
    script = f"""
set terminal pngcairo size 1000,600 font 'DejaVu Sans,12'
set output '{os.path.join(results, "peers.png")}'
set title "ringlb vs HAProxy {meta['versions']['haproxy']} vs NGINX {meta['versions']['nginx']}: GET /home through 3 replicas\\nwrk -t1 -c{meta['env']['CONNECTIONS']}, medians of {meta['env']['ROUNDS']} interleaved rounds, {meta['date']}, 2 vCPU VM (LB + replicas on CPU 1, wrk on CPU 0)"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right
set ylabel 'throughput (thousand requests/s)'
set y2label 'LB CPU time per 100k requests (s)'
set yrange [0:{ymax:.2f}]
set y2range [0:{y2max:.3f}]
set ytics nomirror
set y2tics
set xlabel 'target (direct = wrk straight to one replica: no LB, no LB CPU)'
set grid ytics
set xrange [-0.6:{len(TARGETS) - 0.4}]
plot '{data}' using 2:xtic(1) title 'requests/s (k, left axis)' linecolor rgb '#4477aa', \\
     '' using 3 axes x1y2 title 'LB CPU s / 100k requests (right axis)' linecolor rgb '#ee6677', \\
     '' using ($0 - 0.17):2:(sprintf('%.1fk', $2)) with labels offset 0,0.7 notitle, \\
     '' using ($0 + 0.17):($3 * {ymax:.2f} / {y2max:.3f}):(sprintf('%.2f s', $3)) with labels offset 0,0.7 notitle
"""
    out = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    os.remove(data)
    if out.returncode != 0:
        print(f"peers.png: gnuplot failed: {out.stderr}", file=sys.stderr)


if __name__ == "__main__":
    main()
