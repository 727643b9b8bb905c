#!/usr/bin/env python3
"""The report of bench/peers/workers.sh: reads the run folder (meta.json, rounds/ROUND-TARGET.{json,wrk}
written by measure.py and wrk), writes RESULTS/workers.json and prints the section "Every core: ringlb
workers vs HAProxy threads vs NGINX workers" of bench/RESULTS.md on stdout; with --write also puts it
into bench/RESULTS.md (benchlib.update_results_section).

Every figure is a median over the rounds. The ratios the issue sets targets on are taken within a round
(ringlb-N and haproxy-N measured a few seconds apart) and then the median of those, so the machine's
drift between rounds cannot fake them.

Usage: workers_report.py RUN_DIR RESULTS_DIR [--write]
"""
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from report import parse_wrk, med, fmt  # noqa: E402  (bench/peers/report.py: the peers.sh report)
import benchlib  # noqa: E402

HEADING = "Every core: ringlb workers vs HAProxy threads vs NGINX workers"
# Targets of issue 12, as (numerator, denominator, figure, bound).
CPU_VS_HAPROXY, P99_VS_HAPROXY, CPU_2_VS_1 = 0.9, 1.0, 1.05


def load_rounds(run, cpus, kind="rounds"):
    """The windows of one phase: kind "rounds" (wrk, closed loop) or "rated" (ringlb-loadgen at an
    equal offered load; these also carry p90, p99.9 and the offered rate)."""
    rounds = []
    for path in sorted(glob.glob(os.path.join(run, kind, "*.json"))):
        rnd, target = os.path.basename(path)[:-5].split("-", 1)
        if not rnd.isdigit() or path.endswith(".lg.json"):
            continue
        m = json.load(open(path))
        extra = {}
        if kind == "rounds":
            requests, seconds, p50, p99, errors = parse_wrk(open(path[:-5] + ".wrk").read())
        else:
            lg = json.load(open(path[:-5] + ".lg.json"))
            lat, tot = lg["latency_us"], lg["totals"]
            requests, seconds, errors = tot["responses"], lg["elapsed_s"], tot["failed"]
            p50, p99 = lat["p50"] / 1000, lat["p99"] / 1000
            extra = {"offered": lg["config"]["rate"], "p90_ms": lat["p90"] / 1000,
                     "p999_ms": lat["p99_9"] / 1000, "started": tot["started"]}
        wall = m["wall_s"]
        lb, rep = m["groups_cpu_s"]["lb"], m["groups_cpu_s"]["replicas"]
        threads = m.get("threads_cpu_s", {}).get("lb", {})
        sw = m.get("switches", {}).get("lb")
        rounds.append({
            "round": int(rnd), "target": target, "requests": requests, "req_s": requests / seconds,
            "p50_ms": p50, "p99_ms": p99, "errors": errors,
            "lb_cpu_s_per_100k": lb / requests * 1e5,
            "lb_cpu_pct": 100 * lb / wall,
            "lb_wakeups_per_request": sw["voluntary"] / requests if sw else None,
            "lb_preempted_per_request": sw["nonvoluntary"] / requests if sw else None,
            "replicas_cpu_s_per_100k": rep / requests * 1e5,
            "replicas_cpu_pct": 100 * rep / wall,
            "wrk_cpu_pct": 100 * m["command_cpu_s"] / wall,
            "wrk_cpu_s_per_100k": m["command_cpu_s"] / requests * 1e5,
            "machine_busy_pct": 100 * m["machine_busy_s"] / wall,
            "machine_idle_pct": 100 * cpus - 100 * m["machine_busy_s"] / wall,
            "others_cpu_pct": m["others_cpu_pct"],
            "irq_cpu_pct": m.get("irq_cpu_pct"),
            "seq": m.get("seq", 0),
            "quiet_before_pct": m["quiet_before_pct"], "quiet_waited_s": m["quiet_waited_s"],
            "quiet_wait_allowed_s": m.get("quiet_wait_allowed_s"),
            "repeats": m["attempt"],
            # Each thread's share of the LB's CPU, largest first, threads that did nothing left out.
            "thread_shares": sorted((v / lb for v in threads.values() if v > 0), reverse=True)
                             if lb > 0 else [],
            "thread_names": sorted({re.sub(r"^\S+ ", "", k) for k, v in threads.items() if v > 0}),
            **extra,
        })
    return rounds


def same_round(rounds, a, b, key):
    """[(round, a's key / b's key)] over the rounds in which both were measured."""
    out = []
    for r in rounds:
        if r["target"] != a:
            continue
        o = next((x for x in rounds if x["target"] == b and x["round"] == r["round"]), None)
        if o and r[key] and o[key]:
            out.append((r["round"], r[key] / o[key]))
    return out


def ratio_table(ratios, n_rounds):
    L = ["| ratio | " + " | ".join(f"round {r}" for r in range(1, n_rounds + 1))
         + " | median | target |", "|---|" + "---|" * (n_rounds + 2)]
    for name, pairs, bound in ratios:
        by = {r: v for r, v in pairs}
        m = med(v for _, v in pairs)
        verdict = "–" if bound is None else (
            f"≤ {bound:.2f}: " + ("**met**" if m is not None and m <= bound else "**not met**"))
        L.append(f"| {name} | " + " | ".join(fmt(by.get(r), ".3f") for r in range(1, n_rounds + 1))
                 + f" | {fmt(m, '.3f')} | {verdict} |")
    return L


def equal_load(meta, rated, rated_summary, rated_ratios):
    """The subsection on the windows at an equal offered load."""
    env = meta["env"]
    rates = ", ".join(f"{int(v):,} requests/s at {n} thread(s)" for n, v in meta["rates"].items())
    L = ["", "### At an equal offered load", "",
         "In the closed loop above, each LB gets as many requests/s as it can turn around, so a "
         "faster LB is measured at a higher load on the cores it shares with wrk and the "
         "replicas, and its p99 there is a p99 at more work. The latency comparison is made at "
         "the same work: after the closed loop, every target gets the same "
         f"offered load, {env['RATE_SHARE']} of the slowest LB's median closed-loop requests/s at "
         f"that thread count ({rates}), from ringlb-loadgen "
         f"(`-c {env['CONNECTIONS']} --rid -r RATE`: requests spread evenly over the second, a random "
         "6-digit `X-Request-Id` each; a request whose time came while every connection was busy "
         "counts its latency from that time, so an LB that falls behind shows it), "
         f"{env['WARMUP']} s warm-up then {env['DURATION']} s measured, the same interleaved order, "
         f"{env['ROUNDS']} rounds; medians over rounds:", "",
         "| target | offered req/s | served req/s | p50 | p90 | p99 | p99.9 | LB CPU s / 100k req "
         "| LB CPU | machine busy | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in meta["targets"]:
        s = rated_summary.get(t)
        if not s or s["req_s"] is None:
            continue
        L.append(f"| {t} | {s['offered']:,.0f} | {s['req_s']:,.0f} | {s['p50_ms']:.2f} ms "
                 f"| {s['p90_ms']:.2f} ms | {s['p99_ms']:.2f} ms | {s['p999_ms']:.2f} ms "
                 f"| {s['lb_cpu_s_per_100k']:.2f} | {s['lb_cpu_pct']:.0f}% "
                 f"| {s['machine_busy_pct']:.0f}% | {s['errors']} |")
    L += ["", "Ratios within each round, then their median:", ""]
    L += ratio_table(rated_ratios, env["ROUNDS"])
    L += ["", "Every window at the equal load, in the order measured:", "",
          "| round | target | served req/s | p50 | p99 | p99.9 | LB CPU s / 100k | machine busy "
          "| others' CPU | repeats | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in rated:
        L.append(f"| {x['round']} | {x['target']} | {x['req_s']:,.0f} | {x['p50_ms']:.2f} ms "
                 f"| {x['p99_ms']:.2f} ms | {x['p999_ms']:.2f} ms | {x['lb_cpu_s_per_100k']:.2f} "
                 f"| {x['machine_busy_pct']:.0f}% | {x['others_cpu_pct']:.0f}% | {x['repeats']} "
                 f"| {x['errors']} |")
    return L


def section(meta, rounds, summary, ratios, checks, rated, rated_summary, rated_ratios):
    env, cpus = meta["env"], meta["machine"]["cpus"]
    L = [f"## {HEADING}", ""]
    L.append(f"Date: {meta['date']}. Machine: {meta['machine']['os']}, {cpus} vCPU, "
             f"\"{meta['machine']['cpu']}\", kernel {meta['machine']['kernel']}; load average "
             f"{meta['loadavg_end'][0]:.1f} at the end; the machine was "
             f"{meta['quiet_before_pct']}% of one CPU busy in the 2 s before the run and "
             f"{meta['quiet_after_pct']}% in the 2 s after. ringlb {meta['versions']['ringlb']}, "
             f"HAProxy {meta['versions']['haproxy']}, NGINX {meta['versions']['nginx']}, wrk "
             f"{meta['versions']['wrk']}.")
    L += ["", "Command, from the repository root, release build (the whole run took "
          f"{meta['elapsed_s'] // 60} min {meta['elapsed_s'] % 60} s):", "", "```",
          f"{meta['command']}   # ROUNDS={env['ROUNDS']} DURATION={env['DURATION']} "
          f"WARMUP={env['WARMUP']} CONNECTIONS={env['CONNECTIONS']} QUIET_MAX={env['QUIET_MAX']} "
          f"QUIET_WAIT={env['QUIET_WAIT']} RETRIES={env['RETRIES']} BUDGET={env['BUDGET']}", "```", ""]
    L.append("Three ringlb-replica processes on 127.0.0.1 and in front of the same three, all started "
             "at once: ringlb `--workers N`, HAProxy `nbthread N`, NGINX `worker_processes N`, each "
             "hashing a random 6-digit `X-Request-Id` per request onto a consistent ring with "
             "keep-alive to the replicas (configurations as in bench/peers/peers.sh, from "
             "bench/lib.sh; method in the header of bench/peers/workers.sh). "
             f"`wrk -t1 -c{env['CONNECTIONS']} --latency`, {env['WARMUP']} s warm-up then "
             f"{env['DURATION']} s measured per target, targets interleaved, {env['ROUNDS']} rounds; "
             "medians over rounds. Nothing is pinned: wrk, the replicas and the LB share the "
             f"{cpus} CPUs"
             + (f", and all of them ran at nice {env['NICE']} so that other sessions' builds on "
                "this shared machine took less of the cores" if env.get("NICE") else "")
             + ". LB CPU is utime + stime from /proc/PID/stat over the measured window, "
             "every thread (NGINX: master + workers); wrk's from wait4.")
    L += ["", "| target | LB threads | req/s | p50 | p99 | LB CPU s / 100k req | LB CPU | "
          "replicas CPU s / 100k | wrk CPU | machine busy (of "
          f"{100 * cpus}%) | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in meta["targets"]:
        s = summary[t]
        L.append(f"| {t} | {meta['lbs'][t]['threads']} | {s['req_s']:,.0f} | {s['p50_ms']:.2f} ms "
                 f"| {s['p99_ms']:.2f} ms | {s['lb_cpu_s_per_100k']:.2f} | {s['lb_cpu_pct']:.0f}% "
                 f"| {s['replicas_cpu_s_per_100k']:.2f} | {s['wrk_cpu_pct']:.0f}% "
                 f"| {s['machine_busy_pct']:.0f}% | {s['errors']} |")
    L += ["", "LB threads is the count of threads in the LB's processes at the start (NGINX: master + "
          "workers). Ratios within each round, then their median (the p99 target is checked at an "
          "equal offered load, below: here each LB runs at its own req/s):", ""]
    L += ratio_table(ratios, env["ROUNDS"])
    L.append("")
    L.append("How each multi-threaded LB spread its CPU over its threads (median share of the LB's CPU "
             "per thread, largest first; threads that used none left out):")
    L.append("")
    for t in meta["targets"]:
        rs = [r for r in rounds if r["target"] == t and r["thread_shares"]]
        if not rs:
            continue
        k = max(len(r["thread_shares"]) for r in rs)
        shares = [med(r["thread_shares"][i] if i < len(r["thread_shares"]) else 0.0 for r in rs)
                  for i in range(k)]
        names = sorted({n for r in rs for n in r["thread_names"]})
        L.append(f"- {t}: " + " / ".join(f"{100 * x:.0f}%" for x in shares)
                 + f" ({', '.join(names)})")
    L += ["", "What limits requests/s here: wrk, three replicas and the LB share the "
          f"{cpus} cores, so an LB that needs less CPU per request leaves more of them to the "
          "replicas and to wrk and shows more requests/s; once the cores are full, requests/s "
          "measures the whole machine rather than the LB, and the LB's CPU per request is the "
          "figure that ranks the LBs. Where the CPU went in each target's windows (medians, in % "
          "of one CPU; softirq + irq is the kernel's interrupt time, charged to no process: mostly "
          "loopback TCP's receive path of this traffic, so part of every LB's cost that its own "
          "CPU figure leaves out, alike for all; \"others\" is the rest of the machine; "
          "sleeps and preempted are the LB's voluntary and involuntary context switches per request, "
          "summed over its threads: a sleep is a thread finding nothing to do (epoll_wait), so "
          "fewer per request means more requests handled per wake-up; "
          "\"bounded by\" is read from these figures):", "", limits(meta, summary), ""]
    L += ["Every window, in the order measured (others' CPU: what the rest of the machine used "
          "during it, beyond the LB, the replicas, wrk and interrupt time; quiet before: the machine's busy share in the last second before it, "
          f"waited for up to QUIET_WAIT s until at most {env['QUIET_MAX']}%):", "",
          "| round | target | req/s | p99 | LB CPU s / 100k | LB CPU | replicas CPU | wrk CPU "
          "| softirq + irq | machine busy | others' CPU | quiet before | repeats | errors |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in rounds:
        noisy = " (noisy)" if x["others_cpu_pct"] > env["QUIET_MAX"] else ""
        nowait = " (no wait: budget)" if x["quiet_wait_allowed_s"] == 0 and env["QUIET_WAIT"] else ""
        L.append(f"| {x['round']} | {x['target']} | {x['req_s']:,.0f} | {x['p99_ms']:.2f} ms "
                 f"| {x['lb_cpu_s_per_100k']:.2f} | {x['lb_cpu_pct']:.0f}% "
                 f"| {x['replicas_cpu_pct']:.0f}% | {x['wrk_cpu_pct']:.0f}% "
                 f"| {fmt(x['irq_cpu_pct'], '.0f')}% "
                 f"| {x['machine_busy_pct']:.0f}% | {x['others_cpu_pct']:.0f}%{noisy} "
                 f"| {fmt(x['quiet_before_pct'], '.0f')}%{nowait} | {x['repeats']} | {x['errors']} |")
    if rated:
        L += equal_load(meta, rated, rated_summary, rated_ratios)
    noisy = [x for x in rounds + rated if x["others_cpu_pct"] > env["QUIET_MAX"]]
    L += ["", f"Quiet: {len(rounds) + len(rated) - len(noisy)} of {len(rounds) + len(rated)} windows had other processes at "
          f"or under {env['QUIET_MAX']}% of one CPU"
          + ("; noisy: " + ", ".join(f"round {x['round']} {x['target']}" for x in noisy) + "."
             if noisy else ".")]
    L += ["", "Issue 12 targets, this run: " + "; ".join(
        f"{k}: {'met' if v else 'NOT met'}" for k, v in checks.items()) + "."]
    return "\n".join(L) + "\n"


def bound_by(s, n, cpus):
    """What bounded one target's requests/s, from where the CPU went (medians of its windows)."""
    if s["wrk_cpu_pct"] >= 90:
        return "wrk (its one thread near 100%)"
    if s["machine_busy_pct"] >= 0.9 * 100 * cpus:
        return "the machine's CPUs (all busy)"
    if s["lb_cpu_pct"] >= 0.9 * 100 * n:
        return f"the LB ({n} thread(s) near 100%)"
    return "no CPU full: latency and scheduling"


def limits(meta, summary):
    """The table of where each target's CPU went and what bounded its requests/s."""
    cpus = meta["machine"]["cpus"]
    L = [f"| target | LB | replicas | wrk | softirq + irq | others | idle (of {100 * cpus}%) "
         "| LB sleeps / request | LB preempted / request | bounded by |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for t in meta["targets"]:
        s = summary[t]
        idle = 100 * cpus - s["machine_busy_pct"]
        L.append(f"| {t} | {s['lb_cpu_pct']:.0f}% | {s['replicas_cpu_pct']:.0f}% "
                 f"| {s['wrk_cpu_pct']:.0f}% | {fmt(s['irq_cpu_pct'], '.0f')}% "
                 f"| {s['others_cpu_pct']:.0f}% | {idle:.0f}% "
                 f"| {fmt(s['lb_wakeups_per_request'], '.3f')} "
                 f"| {fmt(s['lb_preempted_per_request'], '.3f')} "
                 f"| {bound_by(s, int(t.rsplit('-', 1)[1]), cpus)} |")
    return "\n".join(L)


def main():
    run, results = sys.argv[1], sys.argv[2]
    meta = json.load(open(os.path.join(run, "meta.json")))
    rounds = load_rounds(run, meta["machine"]["cpus"])
    order = meta["targets"]
    rounds.sort(key=lambda r: (r["round"], r["seq"], order.index(r["target"])))
    summary = {}
    for t in order:
        rs = [r for r in rounds if r["target"] == t]
        summary[t] = {k: med(r[k] for r in rs) for k in
                      ("req_s", "p50_ms", "p99_ms", "lb_cpu_s_per_100k", "lb_cpu_pct",
                       "replicas_cpu_s_per_100k", "replicas_cpu_pct", "wrk_cpu_pct",
                       "wrk_cpu_s_per_100k", "machine_busy_pct", "machine_idle_pct",
                       "others_cpu_pct", "irq_cpu_pct", "lb_wakeups_per_request",
                       "lb_preempted_per_request")}
        summary[t]["errors"] = sum(r["errors"] for r in rs)
        summary[t].update(meta["lbs"][t])

    rated = load_rounds(run, meta["machine"]["cpus"], "rated")
    rated.sort(key=lambda r: (r["round"], r["seq"], order.index(r["target"])))
    rated_summary = {}
    for t in order:
        rs = [r for r in rated if r["target"] == t]
        if not rs:
            continue
        rated_summary[t] = {k: med(r[k] for r in rs) for k in
                            ("offered", "req_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms",
                             "lb_cpu_s_per_100k", "lb_cpu_pct", "machine_busy_pct")}
        rated_summary[t]["errors"] = sum(r["errors"] for r in rs)
    ratios, rated_ratios, checks = [], [], {}
    counts = meta["counts"]
    for n in counts:
        r, h = f"ringlb-{n}", f"haproxy-{n}"
        cpu = same_round(rounds, r, h, "lb_cpu_s_per_100k")
        p99 = same_round(rounds, r, h, "p99_ms")
        ratios.append((f"{r} / {h}: LB CPU per request", cpu, CPU_VS_HAPROXY))
        ratios.append((f"{r} / {h}: p99 (each at its own req/s)", p99, None))
        ratios.append((f"{r} / {h}: req/s", same_round(rounds, r, h, "req_s"), None))
        checks[f"{n} thread(s): ringlb CPU/request <= {CPU_VS_HAPROXY}x HAProxy's"] = (
            med(v for _, v in cpu) is not None and med(v for _, v in cpu) <= CPU_VS_HAPROXY)
        eq = same_round(rated, r, h, "p99_ms")
        rated_ratios.append((f"{r} / {h}: p99", eq, P99_VS_HAPROXY))
        rated_ratios.append((f"{r} / {h}: p99.9", same_round(rated, r, h, "p999_ms"), None))
        rated_ratios.append((f"{r} / {h}: LB CPU per request",
                             same_round(rated, r, h, "lb_cpu_s_per_100k"), None))
        checks[f"{n} thread(s): ringlb p99 <= {P99_VS_HAPROXY}x HAProxy's at an equal offered load"] = (
            med(v for _, v in eq) is not None and med(v for _, v in eq) <= P99_VS_HAPROXY)
    if 1 in counts:
        for n in counts:
            if n == 1:
                continue
            for lb in ("ringlb", "haproxy", "nginx"):
                pairs = same_round(rounds, f"{lb}-{n}", f"{lb}-1", "lb_cpu_s_per_100k")
                ratios.append((f"{lb}-{n} / {lb}-1: LB CPU per request", pairs,
                               CPU_2_VS_1 if lb == "ringlb" and n == 2 else None))
                if lb == "ringlb" and n == 2:
                    checks[f"ringlb 2 workers CPU/request <= {CPU_2_VS_1}x 1 worker's"] = (
                        med(v for _, v in pairs) is not None and med(v for _, v in pairs) <= CPU_2_VS_1)
            ratios.append((f"ringlb-{n} / ringlb-1: req/s",
                           same_round(rounds, f"ringlb-{n}", "ringlb-1", "req_s"), None))

    doc = {"meta": meta, "rounds": rounds, "summary": summary,
           "ratios": {name: {"by_round": dict(pairs), "median": med(v for _, v in pairs),
                             "target": bound} for name, pairs, bound in ratios},
           "equal_load": {"rounds": rated, "summary": rated_summary,
                          "ratios": {name: {"by_round": dict(pairs),
                                            "median": med(v for _, v in pairs), "target": bound}
                                     for name, pairs, bound in rated_ratios}},
           "issue_targets_met": checks}
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "workers.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    text = section(meta, rounds, summary, ratios, checks, rated, rated_summary, rated_ratios)
    print(text)
    if "--write" in sys.argv[3:]:
        benchlib.set_results_dir(results)
        print(f"workers: wrote {benchlib.update_results_section(HEADING, text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
