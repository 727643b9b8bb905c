// report: what a load generator run tells its reader. A summary for people (throughput, latency
// percentiles in ms, status codes, answers per replica, errors by kind, the timeline when it is
// short) and a JSON document with everything, for scripts and charts (ASSIGNMENT.md §5, A-1..A-4).
//
// JSON shape (latencies in microseconds; counts are integers; absent limits are null):
//   { "tool": "ringlb-loadgen", "start_time": ISO-8601 UTC, "start_unix_ms",
//     "config": { url, method, path, body_size, requests, duration_s, connections, keepalive, rid,
//                 seed, rate, timeout_ms, time_limit_s, interval_ms },
//     "ended_by": "count" | "duration" | "time_limit" | "signal", "elapsed_s",
//     "totals": { started, written, responses, ok, failed, errors, unfinished, connects,
//                 body_bytes, responses_per_s, ok_per_s },
//     "status": { "200": n, ... },  "replicas": { "<ID>": n, ... },  "unattributed": n,
//     "errors": { connect_refused, connect, reset, timeout, parse, closed, other },
//     "latency_us": { count, min, mean, p50, p90, p99, p99_9, max },
//     "timeline": { "interval_ms", "intervals": [ { t_s, started, ok, failed, responses,
//                   latency_mean_us, latency_max_us, replicas: { "<ID>": n } }, ... ] } }
#pragma once

#include <cstdio>
#include <string>

#include "bench/loadgen/options.h"
#include "bench/loadgen/run.h"
#include "bench/loadgen/stats.h"

// Prints the summary for people to out.
void report_summary(FILE* out, const LoadgenOptions& o, const LgStats& s, const RunResult& r);

// Writes the JSON document to path ("-": stdout). Returns 0, or -1 with *error when it cannot.
int report_json(const std::string& path, const LoadgenOptions& o, const LgStats& s,
                const RunResult& r, std::string* error);

// The number of timeline intervals the run covers: ceil(duration / interval) for a run that sent
// until its duration ended, else up to the last interval in which a request started.
uint32_t report_intervals(const LoadgenOptions& o, const LgStats& s, const RunResult& r);
