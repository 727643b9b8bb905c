// run: drives one load generator run on one libuv loop: the client connections, the request rate,
// the per-request timeouts, the duration, the hard time limit and the progress line.
//
// Each connection runs one request at a time. A request starts when a connection is free and the
// run grants it (count not reached, duration not over, and with --rate its even share of time
// come); it connects first when the connection has none, writes the request, and ends with the
// response, an error or its timeout. After an error the connection is closed and opened again for
// the next request; after a failed connect it waits 10 ms first, so a dead target costs little CPU.
// With --no-keepalive every request has its own connection.
//
// When no more requests may start, free connections close and busy ones finish (each bounded by its
// timeout). The hard time limit, SIGINT or SIGTERM end the run at once: requests in flight are
// counted as unfinished. The loop returns once every handle is closed.
#pragma once

#include <cstdint>

#include <uv.h>

#include "bench/loadgen/options.h"
#include "bench/loadgen/stats.h"

// Why the run ended.
enum class RunEnd : uint8_t { count, duration, time_limit, signal };

struct RunResult {
  RunEnd end = RunEnd::count;
  uint64_t start_ns = 0;      // uv_hrtime at the start
  uint64_t end_ns = 0;        // when the last request ended (or the run was cut short)
  int64_t start_unix_ms = 0;  // wall clock at the start
};

const char* run_end_name(RunEnd e);

// Runs the load o describes on loop (which must have no other handles) and fills stats and result.
// Returns 0, or a negative libuv code when the run could not be set up (nothing was sent then). The
// loop has no open handles when this returns.
int run_load(uv_loop_t* loop, const LoadgenOptions& o, LgStats* stats, RunResult* result);
