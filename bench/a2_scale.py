#!/usr/bin/env python3
"""A-2: the load per replica as N grows from 2 to 6, the assignment's ring and ringlb's default.

For each ring, starts the real ringlb with the process provisioner and two replicas on 127.0.0.1,
then for N = 2..6: sends 10,000 GET /home through it with ringlb-loadgen (64 keep-alive connections,
a random 6-digit X-Request-Id per request, the same seed at every N and for every ring) and counts
the answers per replica; then grows the pool by one with POST /add (as the assignment increments N:
one LB throughout, ring ids 1..N, the same ring a fresh start with N replicas builds). Writes
bench/results/a2_scale.json and .png (average load per replica with the min-max spread, and
max/mean, against N) and the "A-2" section of bench/RESULTS.md.

  python3 bench/a2_scale.py                          # the full run (about 15 s)
  python3 bench/a2_scale.py --smoke --out /tmp/a2    # N = 2..3, 500 requests each
"""
import os

import benchlib
from benchlib import fill
import rings

NAME = "a2_scale"


def grow(port, n):
    """Adds replica server<n+1> with POST /add and waits until the LB lists n + 1 and serves."""
    status, body = benchlib.admin(port, "POST", "/add", {"n": 1, "hostnames": [f"server{n + 1}"]})
    if status != 200 or body["message"]["N"] != n + 1:
        raise RuntimeError(f"/add answered {status}: {body}")


def run(ring, n_min, n_max, requests, seed, connections, on_step=None):
    """One LB for the ring, grown from n_min to n_max replicas by /add; the counts at every N.
    on_step(port, n, step), when given, runs after the counts at each N and may add to step."""
    steps = []
    with benchlib.Procs() as procs:
        lb = procs.start_lb(*ring.args, replicas=n_min)
        for n in range(n_min, n_max + 1):
            if n > n_min:
                grow(lb.port, n - 1)
                benchlib.harness.wait_lb_ready(lb, n)
            details = benchlib.rep_details(lb.port)
            ids = sorted(d["ring_id"] for d in details)
            if ids != list(range(1, n + 1)):
                raise RuntimeError(f"ring ids {ids} at N = {n}, expected 1..{n}")
            report = benchlib.replica_counts(lb.port, requests, seed, connections)
            counts = rings.by_ring_id(report["replicas"], details)
            step = {"n": n, "counts": counts, **rings.balance(counts),
                    "elapsed_s": report["elapsed_s"]}
            if on_step:
                on_step(lb.port, n, step)
            steps.append(step)
    return {**ring.as_json(), "steps": steps}


def chart(data, png, title="A-2"):
    """Left: the average load per replica (requests / N) with each ring's min-max spread as error
    bars; right: max/mean against N."""
    rows = data["rings"]
    colors = ["#c0392b", "#2e86c1", "#27ae60", "#8e44ad", "#d35400", "#16a085"]
    width = 0.5 / max(len(rows), 1)
    n_lo, n_hi = data["n_min"], data["n_max"]
    top = max(s["max"] for r in rows for s in r["steps"]) * (1.2 + 0.08 * len(rows))
    script = [
        "set multiplot layout 1,2 title \"{/:Bold %s: %s requests with random 6-digit ids at each "
        "N (replicas added with POST /add)}\" font ',14'" % (title, f"{data['requests']:,}"),
        "set grid ytics lc '#dddddd'", "set key inside top right box opaque",
        f"set xrange [{n_lo - 0.5}:{n_hi + 0.5}]", "set xtics 1",
        "set xlabel 'N (replicas)'",
    ]
    for k, r in enumerate(rows):
        off = (k - (len(rows) - 1) / 2) * width
        script.append("$d%d << EOD" % k)
        script += [f"{s['n'] + off} {s['mean']} {s['min']} {s['max']} {s['max_over_mean']} {s['n']}"
                   for s in r["steps"]]
        script.append("EOD")
    plots = [f"{data['requests']}/x with lines lw 2 lc rgb '#333333' "
             f"title 'average load per replica ({data['requests']:,}/N)'"]
    for k, r in enumerate(rows):
        label = r["short"]
        plots.append(f"$d{k} using 1:2:3:4 with yerrorbars pt 7 ps 0.8 lw 2 lc rgb "
                     f"'{colors[k % len(colors)]}' title '{label}: min-max over replicas'")
    script += [
        "set title 'Requests per replica: average and min-max spread'",
        "set ylabel 'requests per replica (count)'", f"set yrange [0:{top:.0f}]",
        "set format y '%.0f'",
        "plot " + ", ".join(plots),
    ]
    top_ratio = max(s["max_over_mean"] for r in rows for s in r["steps"]) * 1.15
    plots = ["1 with lines dt 2 lw 2 lc rgb '#333333' title 'perfect balance'"]
    for k, r in enumerate(rows):
        label = r["short"]
        plots.append(f"$d{k} using 6:5 with linespoints pt 7 ps 0.9 lw 2 lc rgb "
                     f"'{colors[k % len(colors)]}' title '{label}'")
    script += [
        "set title 'Busiest replica over the average (max/mean)'",
        "set key inside top left box opaque",
        "set ylabel 'max/mean (1 = perfect)'", f"set yrange [0:{max(top_ratio, 1.5):.2f}]",
        "set format y '%.1f'",
        "plot " + ", ".join(plots),
        "unset multiplot",
    ]
    benchlib.gnuplot("\n".join(script) + "\n", png, width=1300, height=600)



def results_section(data):
    heading = f"A-2 Load per replica as N grows from {data['n_min']} to {data['n_max']}"
    lines = benchlib.section_head(heading, data, "the counts do not depend on timing, only on the "
                                  "ids and the ring") + [
        fill(f"One ringlb per ring with the process provisioner, started with N = {data['n_min']} "
             "replicas and grown by one with `POST /add` after each step (ring ids 1..N, checked "
             "at each step: the same ring a fresh start with N replicas builds). At each N "
             f"ringlb-loadgen sends {data['requests']:,} GET /home over {data['connections']} "
             "keep-alive connections with random 6-digit X-Request-Ids (seed "
             f"{data['seed']}, the same ids at every N and for every ring). "
             f"Data: [{NAME}.json](results/{NAME}.json), chart: [{NAME}.png](results/{NAME}.png)."),
        "",
        "| ring | N | average | min | max | max/mean | per replica |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rings"]:
        for s in r["steps"]:
            per = " / ".join(f"{c:,}" for c in s["counts"].values())
            lines.append(f"| {r['label']} | {s['n']} | {s['mean']:,.0f} | {s['min']:,} | "
                         f"{s['max']:,} | {s['max_over_mean']:.2f} | {per} |")
    a, b = data["rings"][0]["steps"], data["rings"][-1]["steps"]
    facts = data["assignment_model"]["per_n"]
    lo, hi = facts[a[0]["n"]], facts[a[-1]["n"]]
    first = lambda s: list(s["counts"].values())[0]  # noqa: E731  server1's count
    cap = lambda s: s["total"] / s["max"]  # noqa: E731  capacity in replicas' worth
    lines += [
        "",
        fill("What happened and why. The average load per replica is requests / N whatever the "
             f"ring: {a[0]['mean']:,.0f} at N = {a[0]['n']} down to {a[-1]['mean']:,.0f} at N = "
             f"{a[-1]['n']}. What the ring decides is the spread around it. With the assignment's "
             f"ring server1 keeps {first(a[0]):,} requests at N = {a[0]['n']} and still "
             f"{first(a[-1]):,} at N = {a[-1]['n']} "
             f"({100 * first(a[-1]) / data['requests']:.0f}%): "
             f"max/mean grows from {a[0]['max_over_mean']:.2f} to {a[-1]['max_over_mean']:.2f}, "
             "because every server Φ adds lands in the same narrow band of slots next to the "
             f"others (slots {lo['first_point']} to {lo['last_point']} for servers 1 and 2, "
             f"{hi['first_point']} to {hi['last_point']} for servers 1 to {a[-1]['n']}), and the "
             f"{hi['wrap_slots']} slots outside the band (of 512) still wrap around to server1's "
             f"point at slot {hi['first_point']}. The new replicas only split the little that "
             "falls inside the band; A-4 has the numbers."),
        "",
        fill("With ketama the busiest replica stays within "
             f"{100 * (max(s['max_over_mean'] for s in b) - 1):.0f}% "
             f"of the mean at every N (max/mean {min(s['max_over_mean'] for s in b):.2f} to "
             f"{max(s['max_over_mean'] for s in b):.2f}), so each replica added takes its share."),
        "",
        fill("Scalability: the load a pool can take is bounded by its busiest replica: it "
             "saturates when that one does, at requests / max times one replica's capacity. "
             f"With ketama that is {cap(b[0]):.2f} replicas' worth at N = {b[0]['n']} and "
             f"{cap(b[-1]):.2f} at N = {b[-1]['n']}, close to linear in N. With the assignment's "
             f"ring it is {cap(a[0]):.2f} at N = {a[0]['n']} and {cap(a[-1]):.2f} at N = "
             f"{a[-1]['n']}: server1's load falls only "
             f"{100 * (1 - first(a[-1]) / first(a[0])):.0f}% ({first(a[0]):,} to "
             f"{first(a[-1]):,}) where an even ring would cut it by "
             f"{100 * (1 - a[0]['n'] / a[-1]['n']):.0f}%, so adding replicas buys almost nothing "
             "until the hash functions change (A-4)."),
    ]
    return "\n".join(lines) + "\n"


def main():
    args = benchlib.experiment_args(__doc__.splitlines()[0],
                                    **{"--seed": {"type": int, "default": 1,
                                                  "help": "request id seed (default 1)"}})
    requests, n_max = (500, 3) if args.smoke else (10000, 6)
    n_min, connections = 2, 64
    data = {
        "experiment": "A-2", "machine": benchlib.machine(), "loadavg": os.getloadavg(),
        "command": benchlib.command_line(), "n_min": n_min, "n_max": n_max,
        "requests": requests, "seed": args.seed, "connections": connections, "grow": "POST /add",
        "rings": [run(r, n_min, n_max, requests, args.seed, connections)
                  for r in (rings.ASSIGNMENT, rings.KETAMA)],
        "assignment_model": rings.assignment_facts(n_max),
    }
    benchlib.write_json(NAME + ".json", data)
    chart(data, benchlib.results_path(NAME + ".png"))
    benchlib.update_results_section("A-2", results_section(data))
    for r in data["rings"]:
        print(f"A-2 {r['label']}: " + ", ".join(
            f"N={s['n']} max/mean {s['max_over_mean']:.2f}" for s in r["steps"]))


if __name__ == "__main__":
    main()
