#include "bench/loadgen/stats.h"

#include <cmath>

#include <uv.h>

#include "lb/http/http_conn.h"

namespace {

// Replica IDs beyond this many distinct ones are counted as unattributed (a misbehaving target must
// not grow the tables without bound).
constexpr size_t kMaxReplicas = 4096;
// 2^40 ns (18 minutes) is above any per-request timeout the options allow.
constexpr uint64_t kHighestLatencyNs = (uint64_t{1} << 40) - 1;

// The index of replica id, added on first sight; -1 when the table is full.
int replica_index(LgStats* s, std::string_view id) {
  for (size_t i = 0; i < s->replica_ids.size(); i++)
    if (s->replica_ids[i] == id) return static_cast<int>(i);
  if (s->replica_ids.size() >= kMaxReplicas) return -1;
  s->replica_ids.emplace_back(id);
  s->replica_counts.push_back(0);
  return static_cast<int>(s->replica_ids.size() - 1);
}

}  // namespace

const char* lg_error_name(LgError e) {
  switch (e) {
    case LgError::connect_refused:
      return "connect_refused";
    case LgError::connect:
      return "connect";
    case LgError::reset:
      return "reset";
    case LgError::timeout:
      return "timeout";
    case LgError::parse:
      return "parse";
    case LgError::closed:
      return "closed";
    case LgError::other:
      return "other";
    case LgError::count:
      break;
  }
  return "?";
}

void stats_init(LgStats* s, uint64_t start_ns, uint32_t interval_ms, double time_limit_s) {
  s->start_ns = start_ns;
  s->interval_ns = static_cast<uint64_t>(interval_ms) * 1000000;
  size_t n = static_cast<size_t>(std::ceil(time_limit_s * 1000 / interval_ms)) + 1;
  s->timeline.assign(n, LgInterval());
  histogram_init(&s->latency, kHighestLatencyNs);
}

uint32_t stats_interval(LgStats* s, uint64_t start_ns) {
  uint64_t i = start_ns > s->start_ns ? (start_ns - s->start_ns) / s->interval_ns : 0;
  if (i >= s->timeline.size()) i = s->timeline.size() - 1;
  return static_cast<uint32_t>(i);
}

void stats_started(LgStats* s, uint64_t start_ns) {
  uint32_t i = stats_interval(s, start_ns);
  s->started++;
  s->timeline[i].started++;
  if (i + 1 > s->intervals_used) s->intervals_used = i + 1;
}

bool stats_replica_id(std::string_view body, std::string_view* id) {
  constexpr std::string_view kMark = "Hello from Server: ";
  size_t at = body.find(kMark);
  if (at == std::string_view::npos) return false;
  std::string_view rest = body.substr(at + kMark.size());
  size_t end = rest.find('"');
  if (end == std::string_view::npos || end == 0) return false;
  *id = rest.substr(0, end);
  return true;
}

void stats_response(LgStats* s, uint64_t start_ns, uint64_t clock_ns, uint64_t end_ns, int status,
                    std::string_view body) {
  uint64_t latency = end_ns > clock_ns ? end_ns - clock_ns : 0;
  LgInterval& iv = s->timeline[stats_interval(s, start_ns)];
  bool ok = status >= 200 && status < 400;
  s->responses++;
  iv.responses++;
  if (ok) {
    s->ok++;
    iv.ok++;
  } else {
    s->failed++;
    iv.failed++;
  }
  s->status[status >= 100 && status < 600 ? status : 0]++;
  histogram_record(&s->latency, latency);
  iv.latency_sum_ns += latency;
  if (latency > iv.latency_max_ns) iv.latency_max_ns = latency;
  if (end_ns > s->last_end_ns) s->last_end_ns = end_ns;

  std::string_view id;
  int r = stats_replica_id(body, &id) ? replica_index(s, id) : -1;
  if (r < 0) {
    s->unattributed++;
    return;
  }
  s->replica_counts[r]++;
  if (iv.replicas.size() <= static_cast<size_t>(r)) iv.replicas.resize(s->replica_ids.size(), 0);
  iv.replicas[r]++;
}

void stats_error(LgStats* s, uint64_t start_ns, uint64_t end_ns, LgError kind) {
  LgInterval& iv = s->timeline[stats_interval(s, start_ns)];
  s->errors++;
  s->errors_by_kind[static_cast<int>(kind)]++;
  s->failed++;
  iv.failed++;
  if (end_ns > s->last_end_ns) s->last_end_ns = end_ns;
}

void stats_unfinished(LgStats* s) {
  s->unfinished++;
}

LgError stats_error_kind(int err) {
  switch (err) {
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ECONNABORTED:
      return LgError::reset;
    case UV_EOF:
      return LgError::closed;
    case UV_ETIMEDOUT:
      return LgError::timeout;
    case HTTP_E_PARSE:
    case HTTP_E_TOO_LARGE:
      return LgError::parse;
    case UV_ECONNREFUSED:
      return LgError::connect_refused;
    default:
      return LgError::other;
  }
}
