// stats: what a load generator run counts. Every request that starts ends in exactly one of three
// ways, so started == responses + errors + unfinished:
//   a response   (any status; ok when 2xx or 3xx), counted by status, by the replica that answered
//                (the ID in a /home body, "Hello from Server: <ID>") and in the latency histogram;
//   an error     (no complete response), counted by kind;
//   unfinished   (still in flight when the hard time limit or a signal ended the run).
// failed = errors + responses with a status of 400 or more.
//
// The timeline counts each request in the interval in which it started, so a run of D seconds has
// ceil(D / interval) intervals and a failure shows where the requests it hit were sent.
//
// All memory is sized by stats_init; recording allocates only when a replica ID is seen for the
// first time (overall, and in an interval).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench/loadgen/histogram.h"

enum class LgError : uint8_t {
  connect_refused,  // ECONNREFUSED: nothing listens on the port
  connect,          // any other connect failure (EADDRNOTAVAIL when ports run out, ...)
  reset,            // ECONNRESET or EPIPE while sending or waiting
  timeout,          // no complete response within --timeout
  parse,            // a malformed or oversized response
  closed,           // the peer closed before the response was complete
  other,            // any other error, e.g. a write that failed otherwise
  count
};

const char* lg_error_name(LgError e);

struct LgInterval {
  uint64_t started = 0, ok = 0, failed = 0;
  uint64_t latency_sum_ns = 0, latency_max_ns = 0, responses = 0;
  std::vector<uint64_t> replicas;  // by replica index, grows when an ID first answers here
};

struct LgStats {
  uint64_t start_ns = 0;  // uv_hrtime at the start of the run
  uint64_t interval_ns = 0;
  uint64_t started = 0, written = 0, responses = 0, ok = 0, failed = 0, errors = 0, unfinished = 0;
  uint64_t connects = 0;  // connections established (one per request with --no-keepalive)
  uint64_t errors_by_kind[static_cast<int>(LgError::count)] = {};
  uint64_t status[600] = {};             // by status code; index 0 counts codes outside 100..599
  std::vector<std::string> replica_ids;  // in order of first answer
  std::vector<uint64_t> replica_counts;
  uint64_t unattributed = 0;  // responses without "Hello from Server: <ID>"
  uint64_t body_bytes = 0;
  Histogram latency;                 // nanoseconds
  std::vector<LgInterval> timeline;  // preallocated, one per interval up to the time limit
  uint32_t intervals_used = 0;       // 1 + the last interval a request started in
  uint64_t last_end_ns = 0;          // when the last request ended (response or error)
};

// Prepares s for a run starting at start_ns, with interval_ms timeline intervals and room for
// time_limit_s seconds of them.
void stats_init(LgStats* s, uint64_t start_ns, uint32_t interval_ms, double time_limit_s);

// The timeline interval of a request that started at start_ns (the last one when past the end).
uint32_t stats_interval(LgStats* s, uint64_t start_ns);

// A request started at start_ns (counted in started and in its interval).
void stats_started(LgStats* s, uint64_t start_ns);
// A complete response with status to the request started at start_ns, its latency counted from
// clock_ns (start_ns, or earlier: the time a --rate schedule gave it); body holds the first bytes
// of its body (enough for the replica ID).
void stats_response(LgStats* s, uint64_t start_ns, uint64_t clock_ns, uint64_t end_ns, int status,
                    std::string_view body);
// The request started at start_ns ended without a complete response.
void stats_error(LgStats* s, uint64_t start_ns, uint64_t end_ns, LgError kind);
// The request started at start_ns was still in flight when the run was cut short.
void stats_unfinished(LgStats* s);

// The replica ID in a /home body ("Hello from Server: <ID>"), false when there is none.
bool stats_replica_id(std::string_view body, std::string_view* id);

// Maps a libuv or HTTP-layer error code seen while waiting for a response to an error kind.
LgError stats_error_kind(int err);
