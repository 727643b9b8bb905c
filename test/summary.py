#!/usr/bin/env python3
"""Prints meson's test results as the plain line 'N passed, N failed' and exits non-zero on any failure.

Usage: summary.py TESTLOG.json [TESTLOG.json ...] (default build/meson-logs/testlog.json). With several
testlogs (the main build, build-fuzz, build-asan) it prints one line per testlog first, then the total
over all of them as the last line, so the last line covers everything that ran. A testlog that is
missing counts as one failure: its tree did not build or its tests did not run (make removes each
testlog before running its tree, so an old one is never counted).

A skipped test (exit 77) counts as skipped, and as failed when RINGLB_REQUIRE_DOCKER=1 made it mandatory
(the docker suite turns a skip into a failure itself in that case)."""
import json
import sys


def count(path):
    passed = failed = skipped = 0
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                result = json.loads(line).get("result")
                if result in ("OK", "EXPECTEDFAIL"):
                    passed += 1
                elif result == "SKIP":
                    skipped += 1
                else:
                    failed += 1
    except OSError as e:
        print(f"summary: cannot read {path}: {e} (its tree did not build or run)", file=sys.stderr)
        failed += 1
    return passed, failed, skipped


def line_of(passed, failed, skipped):
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    return line


paths = sys.argv[1:] or ["build/meson-logs/testlog.json"]
total = [0, 0, 0]
for path in paths:
    c = count(path)
    if len(paths) > 1:
        print(f"{path}: {line_of(*c)}")
    total = [a + b for a, b in zip(total, c)]
print(line_of(*total))
sys.exit(1 if total[1] or total[0] == 0 else 0)
