// access_log: one line per request (--access-log text|json, --access-log-file PATH or stderr),
// written by each data-plane worker on its own, with no lock and no blocking on the request path.
//
// A worker formats each line into its own buffer (fill). The buffer goes to the file from the
// libuv threadpool (uv_queue_work), at most one write in flight per worker: when fill passes
// kAccessLogFlushAt, when the worker's sweep ticks (every 100 ms), and when the worker stops. While
// a write is in flight new lines wait in fill; once fill holds kAccessLogFillMax bytes further lines
// are dropped, never queued without bound and never waited for, and the drops are counted and said
// in a warn line (access_log_tick). Lines never interleave mid-line with another worker's or the
// daemon's own log lines: a regular file is opened O_APPEND (each write lands whole at the end), and
// a pipe (stderr under systemd or compose) is written in pieces of at most PIPE_BUF bytes ending at
// a line end, which the kernel keeps whole. A FIFO given as the file whose reader stops taking lines
// costs a write at most 2 s (then the batch is counted as dropped), never a stuck thread.
//
// The file is opened by the control loop (access_log_open) and shared read-only by the workers
// (AccessLogSink, freed with its descriptor by the last holder: a write in flight keeps the old one
// alive after a reopen). SIGHUP opens it again (logrotate: rename, then SIGHUP; the next lines go to
// the new file) and hands the new sink to every worker with the new configuration.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <uv.h>

#include "lb/config.h"

struct AccessLogSink {
  int fd = -1;
  bool owned = false;  // opened here (closed with the sink); stderr is not
  bool pipe = false;   // a pipe or socket: written in pieces of at most PIPE_BUF bytes
  std::string path;    // "" for stderr
  ~AccessLogSink();
};
using AccessLogSinkPtr = std::shared_ptr<const AccessLogSink>;

// Opens path for appending (created 0640 when missing), or stderr when path is empty. Control loop
// (or main, at start). Returns the sink, or null with *err naming the file and the reason.
AccessLogSinkPtr access_log_open(const std::string& path, std::string* err);

// What an exchange knows when it ends; views are valid during access_log_write only.
struct AccessLogEntry {
  std::string_view client;      // the client's IP address
  std::string_view method;
  std::string_view target;      // the request target as received (path and query)
  uint8_t http_major = 1;       // HTTP/1.x, or 2 (HTTP/2.0: an h2 stream)
  uint8_t http_minor = 1;
  int status = 0;               // the status sent; 0: no complete response (client left, or cut)
  uint64_t bytes_in = 0;        // request head (as parsed) and body bytes from the client
  uint64_t bytes_out = 0;       // response bytes written to the client
  std::string_view replica;     // the replica that answered, or empty (the LB's own answer)
  uint32_t ring_id = 0;         // its ring id (0: none)
  uint64_t duration_us = 0;     // from the request head to the end of the response
  uint32_t retries = 0;         // attempts on other replicas
  std::string_view request_id;  // the X-Request-Id routed (the client's or the one generated)
};

constexpr size_t kAccessLogFlushAt = 32 * 1024;
// About 1.5 s of lines at 10k requests/s: a threadpool write delayed that long (a busy machine,
// a slow disk) loses no line; a longer stall drops lines rather than grow.
constexpr size_t kAccessLogFillMax = 4 * 1024 * 1024;

// One worker's access log. Loop thread only (the write in flight owns `flight`).
struct AccessLog {
  uv_loop_t* loop = nullptr;
  uint32_t worker = 0;
  AccessLogMode mode = AccessLogMode::off;
  AccessLogSinkPtr sink;
  std::string fill;    // formatted lines waiting for the next write
  std::string flight;  // the lines being written (threadpool)
  AccessLogSinkPtr flight_sink;
  uv_work_t work;
  bool writing = false;
  bool closing = false;
  int write_err = 0;          // set by the threadpool: the write's errno, 0 when it went through
  uint64_t write_lost = 0;    // set by the threadpool: lines of the batch not written
  uint64_t dropped = 0;       // lines dropped since the last warn line
  uint64_t dropped_total = 0;
  uint64_t failed_at = 0;     // loop time of the last write-failure warn line
  // Called (loop thread) when a write ends after access_log_close with nothing left to write:
  // a worker on a loop that goes on (the control loop's) waits for it before it says it stopped.
  void (*on_drained)(AccessLog* al) = nullptr;
  int64_t stamp_sec = -1;     // the second time_text holds
  char time_text[24] = {};    // "2026-12-02T10:40:01" for stamp_sec
};

void access_log_init(AccessLog* al, uv_loop_t* loop, uint32_t worker);
// From the next request on: mode and where lines go (sink may be null only when mode is off).
void access_log_configure(AccessLog* al, AccessLogMode mode, AccessLogSinkPtr sink);
// Appends one line for e (a no-op when off); starts a write once fill passes kAccessLogFlushAt.
void access_log_write(AccessLog* al, const AccessLogEntry& e);
// The sweep's tick: writes what waits, and says how many lines were dropped since the last tick.
void access_log_tick(AccessLog* al);
// The worker stops: what waits is written; the loop runs until that write is done (its work
// request keeps the loop alive), so no line accepted is lost. on_drained runs once it is.
void access_log_close(AccessLog* al);
// True while a write is in flight (the AccessLog must not be freed before it ends).
inline bool access_log_busy(const AccessLog* al) { return al->writing; }

// The line for e as --access-log mode writes it, ending in '\n', appended to out. time_text is
// the UTC time with milliseconds ("2026-12-02T10:40:01.123Z").
void access_log_format(std::string* out, AccessLogMode mode, const AccessLogEntry& e,
                       std::string_view time_text);
// s as the inside of a JSON string: '"', '\\' and control bytes escaped, valid UTF-8 kept, every
// byte of an invalid sequence as U+FFFD. Appended to out.
void access_log_json_escape(std::string* out, std::string_view s);
