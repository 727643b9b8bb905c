"""The rings the analysis experiments compare, and a model of the assignment's ring.

RINGS names each ring ringlb can run (the flags that select it and a label for charts); A-1 and A-2
compare ASSIGNMENT with ringlb's default (KETAMA), A-4 all of them.

The model reproduces ringlb's slots ring with the assignment's functions (ring/ring_slots.cc:
members placed in ascending id order, linear probing, the nearest occupied slot clockwise) so the
experiments can state what the formulas imply and check the measurements against it:
  H(i) = i² + 2i + 17 = (i + 1)² + 16   (mod M)
  Φ(i, j) = i² + j² + 2j + 25 = i² + (j + 1)² + 24   (mod M)
"""
import collections

M, K = 512, 9
RID_LO, RID_HI = 100000, 999999  # the 6-digit request ids loadgen sends


class Ring:
    """key: a name for files and JSON; label: for tables; short: for chart legends."""

    def __init__(self, key, label, short, args):
        self.key, self.label, self.short, self.args = key, label, short, args

    def as_json(self):
        return {"key": self.key, "label": self.label, "short": self.short, "args": self.args}


SLOTS = ["--ring", "slots", "--slots", str(M), "--vnodes", str(K), "--probe", "linear"]
RINGS = {r.key: r for r in [
    Ring("assignment", "slots, assignment H and Φ", "assignment H, Φ (slots)",
         SLOTS + ["--hash", "assignment"]),
    Ring("slots-xxh3", "slots, xxh3", "slots, xxh3", SLOTS + ["--hash", "xxh3"]),
    Ring("slots-murmur", "slots, murmur (fmix64)", "slots, murmur", SLOTS + ["--hash", "murmur"]),
    Ring("slots-fibonacci", "slots, fibonacci", "slots, fibonacci",
         SLOTS + ["--hash", "fibonacci"]),
    Ring("ketama", "ketama, xxh3, 8000 points (ringlb default)", "ketama (default)",
         ["--ring", "ketama"]),
    Ring("ketama-160", "ketama, xxh3, 160 points (nginx's K)", "ketama 160",
         ["--ring", "ketama", "--vnodes", "160"]),
    Ring("maglev", "maglev, xxh3, table 65537", "maglev", ["--ring", "maglev"]),
]}
ASSIGNMENT, KETAMA = RINGS["assignment"], RINGS["ketama"]


def H(i):
    return (i * i + 2 * i + 17) % M


def PHI(i, j):
    return (i * i + j * j + 2 * j + 25) % M


def assignment_ring(n):
    """(slot -> ring id (1..n) of the virtual server there, as ringlb builds it; how many virtual
    servers were probed away from their home slot Φ(i, j))."""
    occupied, probed = {}, 0
    for i in range(1, n + 1):
        for j in range(K):
            s = PHI(i, j)
            probed += s in occupied
            while s in occupied:
                s = (s + 1) % M
            occupied[s] = i
    return occupied, probed


def owner_of_slot(occupied):
    """A list: slot -> ring id serving it (nearest occupied slot clockwise, itself included)."""
    points = sorted(occupied)
    owners, p = [0] * M, 0
    for s in range(M):
        while p < len(points) and points[p] < s:
            p += 1
        owners[s] = occupied[points[p % len(points)]]
    return owners


def key_slot_histogram():
    """slot -> how many 6-digit request ids H sends there."""
    return collections.Counter(H(i) for i in range(RID_LO, RID_HI + 1))


def slot_classes(hist, total):
    """A sentence grouping H's reachable slots by the share of ids each one gets."""
    groups = collections.defaultdict(list)
    for slot, count in hist.items():
        groups[round(total / count)].append(slot)  # 1/x of the ids each
    parts = []
    for inverse in sorted(groups, reverse=True):
        slots = sorted(groups[inverse])
        what = f"slot {slots[0]}" if len(slots) == 1 else f"{len(slots)} slots"
        each = "" if len(slots) == 1 else " each"
        parts.append(f"{what} get{'s' if len(slots) == 1 else ''} 1/{inverse} of the ids{each}")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def assignment_facts(n_max=6):
    """What the formulas imply, computed exactly over every 6-digit id: H's reachable slots, where
    Φ places servers 1..n, and each server's expected share of uniformly random ids."""
    hist = key_slot_histogram()
    total = RID_HI - RID_LO + 1
    squares = {(x * x) % M for x in range(M)}
    facts = {
        "M": M, "K": K,
        "key_slots_reachable": len(hist),
        "squares_mod_M": len(squares),
        "key_slots_are_square_plus_16": sorted(hist) == sorted((q + 16) % M for q in squares),
        "key_slots_odd": sum(1 for s in hist if s % 2),
        "busiest_key_slot": max(hist, key=hist.get),
        "busiest_key_slot_share": max(hist.values()) / total,
        "key_slot_classes": slot_classes(hist, total),
        "per_n": {},
    }
    for n in range(1, n_max + 1):
        occupied, probed = assignment_ring(n)
        owners = owner_of_slot(occupied)
        share = collections.Counter()
        for s, c in hist.items():
            share[owners[s]] += c
        points = sorted(occupied)
        facts["per_n"][n] = {
            "first_point": points[0], "last_point": points[-1],
            "points_span": points[-1] - points[0] + 1,
            "probed": probed,
            "wrap_owner": occupied[points[0]],
            "wrap_slots": M - points[-1] - 1 + points[0] + 1,
            "expected_share": {f"server{i}": share[i] / total for i in range(1, n + 1)},
        }
    return facts


def balance(counts):
    """Figures of a per-replica count dict: total, mean, min, max and max/mean, min/mean."""
    values = list(counts.values())
    total = sum(values)
    mean = total / len(values)
    return {"total": total, "mean": mean, "min": min(values), "max": max(values),
            "max_over_mean": max(values) / mean, "min_over_mean": min(values) / mean}


def by_ring_id(counts, details):
    """counts (replica name -> count) in ring id order, with every replica listed (0 if none)."""
    order = sorted(details, key=lambda d: d["ring_id"])
    return {d["name"]: counts.get(d["name"], 0) for d in order}
