#!/bin/sh
# Runs one libFuzzer target for a bounded time: run_fuzz.sh EXE SEED_DIR WORK_DIR
#   FUZZ_SECONDS  total time (default 10)     FUZZ_TIMEOUT  seconds one input may take (default 20)
# New inputs go to WORK_DIR/corpus (the seeds in the repository are only read); a crash, a leak, a
# timeout or an oracle breach exits 1 with the input in WORK_DIR/artifacts/. libFuzzer's own exit
# codes (77 on a crash) are mapped to 1: 77 means "skipped" to meson.
set -eu
exe=$1 seeds=$2 work=$3
mkdir -p "$work/corpus" "$work/artifacts"
here=$(dirname "$0")
case "$(basename "$exe")" in
  fuzz_admin) dict="-dict=$here/json.dict" ;;
  fuzz_h2) dict="-dict=$here/h2.dict" ;;
  fuzz_tls) dict="" ;;  # binary records: the seeds carry the structure
  *) dict="-dict=$here/http.dict" ;;
esac
"$exe" $dict -max_total_time="${FUZZ_SECONDS:-10}" -timeout="${FUZZ_TIMEOUT:-20}" -max_len=4096 \
  -error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds"
