#!/usr/bin/env python3
"""Prints meson's test results as the plain line 'N passed, N failed' and exits non-zero on any failure.

A skipped test (exit 77) counts as skipped, and as failed when RINGLB_REQUIRE_DOCKER=1 made it mandatory
(the docker suite turns a skip into a failure itself in that case)."""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "build/meson-logs/testlog.json"
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
    print(f"summary: cannot read {path}: {e}", file=sys.stderr)
    failed += 1
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed == 0 else 0)
