#!/usr/bin/env python3
"""The report of bench/hostile.sh: reads the run folder (meta.json, runs/*.json written by attack.py),
writes RESULTS/hostile.json and prints the "Hostile clients" section of bench/RESULTS.md on stdout;
with --write also puts it into bench/RESULTS.md (benchlib.update_results_section).

Usage: report.py RUN_DIR RESULTS_DIR [--write]
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402

HEADING = "Hostile clients: ringlb vs HAProxy vs NGINX"
ORDER = {"ringlb": 0, "ringlb-before": 1, "haproxy": 2, "nginx": 3}


def mib(kib):
    return f"{kib / 1024:.1f}"


def probe(p):
    if not p:
        return "–"
    if p.get("ok"):
        return f"yes ({p['seconds'] * 1000:.0f} ms)"
    return f"no ({p.get('error') or 'status %s' % p.get('status')})"


def back(r, limit):
    s = r.get("served_after_s")
    return f"{s:.2f} s" if s is not None else f"not within {limit:g} s ({r.get('last_error')})"


def marked_down(d):
    if d["lb"].startswith("ringlb"):
        bad = d.get("replicas_not_healthy", {})
        gone = d.get("replicas_gone", [])
        if not bad and not gone:
            return "none (all healthy)"
        parts = [f"{k}: {'/'.join(v)}" for k, v in sorted(bad.items())]
        parts += [f"{k}: removed" for k in gone if k not in bad]
        return "; ".join(parts)
    if d["lb"] == "haproxy":
        servers = d.get("haproxy_servers")
        if not isinstance(servers, list):
            return f"n/a ({servers})"
        downs = [s for s in servers if s["status"] != "UP" or s["chkdown"] not in ("", "0")]
        if not downs:
            return "none (all UP, chkdown 0)"
        return "; ".join(f"{s['server']}: {s['status']}, chkdown {s['chkdown']}" for s in downs)
    return "n/a (no server state to read)"


def lb_label(d, rounds):
    """The LB's name, with its round when there were several."""
    return d["lb"] if rounds == 1 else f"{d['lb']} (round {d['round']})"


def section(meta, runs):
    data = {"machine": benchlib.machine(), "loadavg": meta["loadavg"], "command": meta["command"]}
    env = meta["env"]
    rounds = env.get("ROUNDS", 1)
    lines = benchlib.section_head(HEADING, data, "memory figures do not depend on timing; the times "
                                  "after the attack do, within tens of milliseconds")
    lines += [benchlib.fill(
        f"ringlb {meta['versions']['ringlb']}, HAProxy {meta['versions']['haproxy']}, NGINX "
        f"{meta['versions']['nginx']}, each in front of the same three ringlb-replica processes on "
        f"127.0.0.1 (configuration and method in the header of bench/hostile.sh). Each LB is started "
        f"fresh for each run. The peers answer /metrics themselves with a body of ringlb's /metrics "
        f"size ({meta['metrics_body_bytes']} bytes)."), ""]
    pipe = sorted((d for d in runs if d["attack"] == "pipeline"),
                  key=lambda d: (d["round"], d["path"], ORDER.get(d["lb"], 9)))
    lines += [benchlib.fill(
        f"Non-reading pipeliner: one connection pipelines GET PATH for {env['SECONDS_PIPE']} s as fast "
        f"as the socket accepts and never reads. RSS of the LB process (NGINX: its worker) from "
        f"/proc; the run stops early past {mib(env['RSS_CAP_KIB'])} MiB (\"> cap\")."), "",
              "| LB | path | RSS before MiB | peak MiB | growth MiB | requests the socket took in "
              "(LB and kernel buffers) | "
              "last byte taken at s | fresh client halfway | right after (attacker still connected) "
              "| served again after close |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for d in pipe:
        peak = mib(d["rss_peak_kib"]) + (" (> cap, stopped)" if d["capped"] else "") + \
            (" (LB died)" if d["died"] else "")
        growth = ("> " if d["capped"] else "") + mib(d["rss_growth_kib"])
        lines.append(
            f"| {lb_label(d, rounds)} | {d['path']} | {mib(d['rss_before_kib'])} | {peak} | {growth} | "
            f"{d['requests_accepted']:,} | {d['last_accept_s']:.1f} of {d['attack_s']:.1f} | "
            f"{probe(d['served_during'])} | {probe(d['served_after_stop'])} | "
            f"{back(d['after_close'], 10)} |")
    fd = sorted((d for d in runs if d["attack"] == "fd"), key=lambda d: (d["round"], ORDER.get(d["lb"], 9)))
    lines += ["", benchlib.fill(
        f"File descriptors: each LB started with RLIMIT_NOFILE {fd[0]['nofile_soft'] if fd else 256} "
        f"(soft and hard); {env['CONNS']} idle connections held {env['HOLD']} s, then closed. "
        f"Fresh GET /home every 0.5 s during the hold; after the close, a fresh client every 10 ms "
        f"until one is served (at most {env['RECOVER_LIMIT']} s). Replica states: ringlb's "
        f"/rep?verbose=1 during the hold and 2 s after (read on a connection opened before), "
        f"HAProxy's server status and chkdown (health checks inter 500 fall 2) after."), "",
              "| LB | connected | closed by the LB during the hold | /home served during the hold "
              "| served again after close | replicas marked down |",
              "|---|---|---|---|---|---|"]
    for d in fd:
        sd = d["served_during"]
        during = f"{sd['served']} of {sd['probes']}"
        if sd["errors"]:
            during += f" ({', '.join(sd['errors'])})"
        lines.append(f"| {lb_label(d, rounds)} | {d['connected']} | {d['closed_by_lb_during_hold']} | {during} | "
                     f"{back(d['after_close'], env['RECOVER_LIMIT'])} | {marked_down(d)} |")
    lines += ["", "Targets (issue 10): " + "; ".join(targets(pipe, fd)) + "."]
    return "\n".join(lines) + "\n"


def targets(pipe, fd):
    """Each target of issue 10 for ringlb, met or not, from the first round."""
    out = []
    for path in sorted({d["path"] for d in pipe}):
        by = {d["lb"]: d for d in pipe if d["path"] == path and d["round"] == 1}
        if "ringlb" in by and "haproxy" in by:
            r, h = by["ringlb"], by["haproxy"]
            ok = not r["capped"] and not r["died"] and r["rss_growth_kib"] <= h["rss_growth_kib"]
            out.append(f"RSS growth on {path} <= HAProxy's ({'' if not r['capped'] else '> '}"
                       f"{mib(r['rss_growth_kib'])} vs {mib(h['rss_growth_kib'])} MiB): "
                       f"{'met' if ok else 'NOT met'}")
    r = next((d for d in fd if d["lb"] == "ringlb" and d["round"] == 1), None)
    if r:
        s = r["after_close"]["served_after_s"]
        out.append(f"served again <= 1 s after the fd attack ({'never' if s is None else f'{s:.2f} s'}): "
                   f"{'met' if s is not None and s <= 1.0 else 'NOT met'}")
        bad = r.get("replicas_not_healthy") or r.get("replicas_gone")
        out.append(f"no replica marked dead: {'NOT met' if bad else 'met'}")
    return out


def main():
    run_dir, results = sys.argv[1], sys.argv[2]
    meta = json.load(open(os.path.join(run_dir, "meta.json")))
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(run_dir, "runs", "*.json")))]
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "hostile.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=1)
        f.write("\n")
    text = section(meta, runs)
    print(text)
    if "--write" in sys.argv[3:]:
        benchlib.set_results_dir(results)
        print(f"hostile: wrote {benchlib.update_results_section(HEADING, text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
