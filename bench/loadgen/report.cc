#include "bench/loadgen/report.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstring>
#include <ctime>
#include <numeric>
#include <vector>

#include <jansson.h>

namespace {

constexpr uint32_t kMaxSummaryIntervals = 60;

double seconds(uint64_t ns) {
  return static_cast<double>(ns) / 1e9;
}
double round3(double v) {
  return std::round(v * 1000) / 1000;
}
double us(uint64_t ns) {
  return round3(static_cast<double>(ns) / 1e3);
}
double ms(uint64_t ns) {
  return static_cast<double>(ns) / 1e6;
}

double elapsed_s(const RunResult& r) {
  return r.end_ns > r.start_ns ? seconds(r.end_ns - r.start_ns) : 0;
}

// Replica IDs in natural order: numbers by value, then names alphabetically.
std::vector<size_t> replica_order(const LgStats& s) {
  std::vector<size_t> order(s.replica_ids.size());
  std::iota(order.begin(), order.end(), 0);
  auto numeric = [](const std::string& id) {
    return !id.empty() && id.size() < 19 && id.find_first_not_of("0123456789") == std::string::npos;
  };
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const std::string& x = s.replica_ids[a];
    const std::string& y = s.replica_ids[b];
    bool nx = numeric(x), ny = numeric(y);
    if (nx != ny) return nx;
    if (nx) return std::stoull(x) < std::stoull(y);
    return x < y;
  });
  return order;
}

std::string iso_time(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(unix_ms % 1000));
  return buf;
}

json_t* json_u64(uint64_t v) {
  return json_integer(static_cast<json_int_t>(v));
}

json_t* json_real3(double v) {
  return json_real(round3(v));
}

json_t* config_json(const LoadgenOptions& o) {
  json_t* c = json_object();
  json_object_set_new(c, "url", json_string(o.url.c_str()));
  json_object_set_new(c, "method", json_string(o.method.c_str()));
  json_object_set_new(c, "path", json_string(o.path.c_str()));
  json_object_set_new(c, "body_size", json_u64(o.body_size));
  json_object_set_new(c, "requests", o.requests ? json_u64(o.requests) : json_null());
  json_object_set_new(c, "duration_s", o.duration_s > 0 ? json_real3(o.duration_s) : json_null());
  json_object_set_new(c, "connections", json_u64(o.connections));
  json_object_set_new(c, "keepalive", json_boolean(o.keepalive));
  json_object_set_new(c, "rid", json_boolean(o.rid));
  json_object_set_new(c, "zipf", o.zipf >= 0 ? json_real(o.zipf) : json_null());
  json_object_set_new(c, "keys", o.zipf >= 0 ? json_u64(o.keys) : json_null());
  json_object_set_new(c, "seed", o.rid || o.zipf >= 0 ? json_u64(o.seed) : json_null());
  json_object_set_new(c, "rate", o.rate > 0 ? json_real3(o.rate) : json_null());
  json_object_set_new(c, "latency_from", json_string(o.rate > 0 ? "schedule" : "send"));
  json_object_set_new(c, "timeout_ms", json_u64(o.timeout_ms));
  json_object_set_new(c, "time_limit_s", json_real3(o.time_limit_s));
  json_object_set_new(c, "interval_ms", json_u64(o.interval_ms));
  return c;
}

json_t* latency_json(const Histogram& h) {
  json_t* l = json_object();
  json_object_set_new(l, "count", json_u64(h.total));
  json_object_set_new(l, "min", json_real(us(h.min)));
  json_object_set_new(l, "mean", json_real3(histogram_mean(&h) / 1e3));
  json_object_set_new(l, "p50", json_real(us(histogram_percentile(&h, 50))));
  json_object_set_new(l, "p90", json_real(us(histogram_percentile(&h, 90))));
  json_object_set_new(l, "p99", json_real(us(histogram_percentile(&h, 99))));
  json_object_set_new(l, "p99_9", json_real(us(histogram_percentile(&h, 99.9))));
  json_object_set_new(l, "max", json_real(us(h.max)));
  return l;
}

json_t* timeline_json(const LoadgenOptions& o, const LgStats& s, const RunResult& r,
                      const std::vector<size_t>& order) {
  json_t* t = json_object();
  json_object_set_new(t, "interval_ms", json_u64(o.interval_ms));
  json_t* list = json_array();
  uint32_t n = report_intervals(o, s, r);
  for (uint32_t i = 0; i < n; i++) {
    const LgInterval& iv = s.timeline[i];
    json_t* e = json_object();
    json_object_set_new(e, "t_s", json_real3(static_cast<double>(i) * o.interval_ms / 1000));
    json_object_set_new(e, "started", json_u64(iv.started));
    json_object_set_new(e, "ok", json_u64(iv.ok));
    json_object_set_new(e, "failed", json_u64(iv.failed));
    json_object_set_new(e, "responses", json_u64(iv.responses));
    json_object_set_new(e, "latency_mean_us",
                        json_real3(iv.responses ? static_cast<double>(iv.latency_sum_ns) /
                                                      static_cast<double>(iv.responses) / 1e3
                                                : 0));
    json_object_set_new(e, "latency_max_us", json_real(us(iv.latency_max_ns)));
    json_t* reps = json_object();
    for (size_t k : order)
      if (k < iv.replicas.size() && iv.replicas[k] > 0)
        json_object_set_new(reps, s.replica_ids[k].c_str(), json_u64(iv.replicas[k]));
    json_object_set_new(e, "replicas", reps);
    json_array_append_new(list, e);
  }
  json_object_set_new(t, "intervals", list);
  return t;
}

}  // namespace

uint32_t report_intervals(const LoadgenOptions& o, const LgStats& s, const RunResult& r) {
  uint64_t n = s.intervals_used;
  if (r.end == RunEnd::duration && o.duration_s > 0) {
    uint64_t want = static_cast<uint64_t>(std::ceil(o.duration_s * 1000 / o.interval_ms - 1e-9));
    n = std::max(n, want);
  }
  return static_cast<uint32_t>(std::min<uint64_t>(n, s.timeline.size()));
}

void report_summary(FILE* out, const LoadgenOptions& o, const LgStats& s, const RunResult& r) {
  double el = elapsed_s(r);
  fprintf(out, "ringlb-loadgen: %s %s, %u connection%s, %s%s, ended by %s\n", o.method.c_str(),
          o.url.c_str(), o.connections, o.connections == 1 ? "" : "s",
          o.keepalive ? "keep-alive" : "one connection per request",
          o.rate > 0
              ? (", rate cap " + std::to_string(static_cast<uint64_t>(o.rate)) + "/s").c_str()
              : "",
          run_end_name(r.end));
  fprintf(out,
          "  requests   %" PRIu64 " started, %" PRIu64 " responses (%" PRIu64 " ok), %" PRIu64
          " failed (%" PRIu64 " errors), %" PRIu64 " unfinished\n",
          s.started, s.responses, s.ok, s.failed, s.errors, s.unfinished);
  fprintf(out, "  time       %.3f s, %.1f responses/s, %.1f ok/s, %" PRIu64 " connections opened\n",
          el, el > 0 ? static_cast<double>(s.responses) / el : 0.0,
          el > 0 ? static_cast<double>(s.ok) / el : 0.0, s.connects);
  const Histogram& h = s.latency;
  if (h.total > 0) {
    fprintf(out,
            "  latency    min %.3f  mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f "
            "ms\n",
            ms(h.min), histogram_mean(&h) / 1e6, ms(histogram_percentile(&h, 50)),
            ms(histogram_percentile(&h, 90)), ms(histogram_percentile(&h, 99)),
            ms(histogram_percentile(&h, 99.9)), ms(h.max));
  } else {
    fprintf(out, "  latency    no responses\n");
  }
  fprintf(out, "  status    ");
  bool any = false;
  for (int code = 0; code < 600; code++) {
    if (s.status[code] == 0) continue;
    if (code == 0)
      fprintf(out, " other: %" PRIu64, s.status[code]);
    else
      fprintf(out, " %d: %" PRIu64, code, s.status[code]);
    any = true;
  }
  fprintf(out, "%s\n", any ? "" : " none");
  fprintf(out, "  replicas  ");
  std::vector<size_t> order = replica_order(s);
  for (size_t k : order) {
    double share = s.responses ? 100.0 * static_cast<double>(s.replica_counts[k]) /
                                     static_cast<double>(s.responses)
                               : 0;
    fprintf(out, " %s: %" PRIu64 " (%.1f%%)", s.replica_ids[k].c_str(), s.replica_counts[k], share);
  }
  if (order.empty()) fprintf(out, " none");
  if (s.unattributed) fprintf(out, "  unattributed: %" PRIu64, s.unattributed);
  fprintf(out, "\n  errors    ");
  for (int k = 0; k < static_cast<int>(LgError::count); k++)
    if (s.errors_by_kind[k])
      fprintf(out, " %s: %" PRIu64, lg_error_name(static_cast<LgError>(k)), s.errors_by_kind[k]);
  fprintf(out, "%s\n", s.errors ? "" : " none");
  uint32_t n = report_intervals(o, s, r);
  if (n > kMaxSummaryIntervals) {
    fprintf(out, "  timeline   %u intervals of %u ms (in the JSON report)\n", n, o.interval_ms);
    return;
  }
  fprintf(out, "  timeline   per %u ms: started, ok, failed\n", o.interval_ms);
  for (uint32_t i = 0; i < n; i++) {
    const LgInterval& iv = s.timeline[i];
    fprintf(out, "    %8.3f s %9" PRIu64 " %9" PRIu64 " %9" PRIu64 "\n",
            static_cast<double>(i) * o.interval_ms / 1000, iv.started, iv.ok, iv.failed);
  }
}

int report_json(const std::string& path, const LoadgenOptions& o, const LgStats& s,
                const RunResult& r, std::string* error) {
  double el = elapsed_s(r);
  json_t* doc = json_object();
  json_object_set_new(doc, "tool", json_string("ringlb-loadgen"));
  json_object_set_new(doc, "start_time", json_string(iso_time(r.start_unix_ms).c_str()));
  json_object_set_new(doc, "start_unix_ms", json_integer(r.start_unix_ms));
  json_object_set_new(doc, "config", config_json(o));
  json_object_set_new(doc, "ended_by", json_string(run_end_name(r.end)));
  json_object_set_new(doc, "elapsed_s", json_real(round3(el * 1000) / 1000));

  json_t* totals = json_object();
  json_object_set_new(totals, "started", json_u64(s.started));
  json_object_set_new(totals, "written", json_u64(s.written));
  json_object_set_new(totals, "responses", json_u64(s.responses));
  json_object_set_new(totals, "ok", json_u64(s.ok));
  json_object_set_new(totals, "failed", json_u64(s.failed));
  json_object_set_new(totals, "errors", json_u64(s.errors));
  json_object_set_new(totals, "unfinished", json_u64(s.unfinished));
  json_object_set_new(totals, "connects", json_u64(s.connects));
  json_object_set_new(totals, "body_bytes", json_u64(s.body_bytes));
  json_object_set_new(totals, "responses_per_s",
                      json_real3(el > 0 ? static_cast<double>(s.responses) / el : 0));
  json_object_set_new(totals, "ok_per_s", json_real3(el > 0 ? static_cast<double>(s.ok) / el : 0));
  json_object_set_new(doc, "totals", totals);

  json_t* status = json_object();
  for (int code = 0; code < 600; code++)
    if (s.status[code])
      json_object_set_new(status, code ? std::to_string(code).c_str() : "other",
                          json_u64(s.status[code]));
  json_object_set_new(doc, "status", status);

  std::vector<size_t> order = replica_order(s);
  json_t* reps = json_object();
  for (size_t k : order)
    json_object_set_new(reps, s.replica_ids[k].c_str(), json_u64(s.replica_counts[k]));
  json_object_set_new(doc, "replicas", reps);
  json_object_set_new(doc, "unattributed", json_u64(s.unattributed));

  json_t* errors = json_object();
  for (int k = 0; k < static_cast<int>(LgError::count); k++)
    json_object_set_new(errors, lg_error_name(static_cast<LgError>(k)),
                        json_u64(s.errors_by_kind[k]));
  json_object_set_new(doc, "errors", errors);
  json_object_set_new(doc, "latency_us", latency_json(s.latency));
  json_object_set_new(doc, "timeline", timeline_json(o, s, r, order));

  const size_t flags = JSON_INDENT(2) | JSON_REAL_PRECISION(12);
  int rc;
  if (path == "-") {
    rc = json_dumpf(doc, stdout, flags);
    fputc('\n', stdout);
    fflush(stdout);
  } else {
    rc = json_dump_file(doc, path.c_str(), flags);
  }
  json_decref(doc);
  if (rc != 0) {
    *error = "cannot write the JSON report to '" + path + "': " + strerror(errno);
    return -1;
  }
  return 0;
}
