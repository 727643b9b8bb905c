#!/bin/sh
# Balance under hot keys (issue 16): ringlb with and without --balance-factor 1.25, HAProxy with and
# without hash-balance-factor 125, and nginx, on the same Zipf(1.1) key sequence in one run. Options
# go to zipf.py (--smoke, --rounds R, --requests N, --connections C, --sleep-ms D, --zipf S, --keys
# K, --seed SEED, --out DIR, --build DIR). Needs haproxy, nginx and gnuplot (deps/install.sh bench).
exec python3 "$(dirname "$0")/zipf.py" "$@"
