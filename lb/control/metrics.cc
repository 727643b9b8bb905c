#include "lb/control/metrics.h"

#include <dirent.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include <curl/curlver.h>
#include <llhttp.h>
#include <uv.h>

#include "lb/control/control.h"
#include "lb/control/registry.h"
#include "ring/ring.h"

#ifndef RINGLB_VERSION
#define RINGLB_VERSION "unknown"
#endif

namespace {

constexpr uint64_t kKetamaSamples = 65536;

// A label value as the text format wants it: backslash, double quote and newline escaped.
std::string label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char ch : v) {
    if (ch == '\\')
      out += "\\\\";
    else if (ch == '"')
      out += "\\\"";
    else if (ch == '\n')
      out += "\\n";
    else
      out += ch;
  }
  return out;
}

std::string num(uint64_t v) {
  return std::to_string(v);
}

// A float the way Prometheus clients print one: a whole number without a point, else the shortest
// form that reads back the same.
std::string fnum(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v)) && v > -1e15 && v < 1e15)
    return std::to_string(static_cast<int64_t>(v));
  char buf[64];
  snprintf(buf, sizeof buf, "%.17g", v);
  for (int prec = 1; prec < 17; prec++) {
    char t[64];
    snprintf(t, sizeof t, "%.*g", prec, v);
    if (strtod(t, nullptr) == v) return t;
  }
  return buf;
}

void family(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string* out, const char* name, const std::string& labels,
            const std::string& value) {
  *out += name;
  if (!labels.empty()) *out += "{" + labels + "}";
  *out += " " + value + "\n";
}

// The _bucket (cumulative), _sum and _count samples of histogram h; labels: extra labels before
// le, or empty.
void histogram(std::string* out, const char* name, const std::string& labels,
               const DurationHist& h) {
  std::string pre = labels.empty() ? "" : labels + ",";
  uint64_t cum = 0;
  std::string bucket = std::string(name) + "_bucket";
  for (int i = 0; i < kDurationBuckets; i++) {
    cum += h.counts[i];
    sample(out, bucket.c_str(), pre + "le=\"" + fnum(kDurationBoundsUs[i] / 1e6) + "\"", num(cum));
  }
  cum += h.counts[kDurationBuckets];
  sample(out, bucket.c_str(), pre + "le=\"+Inf\"", num(cum));
  sample(out, (std::string(name) + "_sum").c_str(), labels, fnum(h.sum_us / 1e6));
  sample(out, (std::string(name) + "_count").c_str(), labels, num(cum));
}

// 0 starting, 1 healthy, 2 dead, 3 draining (said in the HELP line).
int state_code(ReplicaState s) {
  switch (s) {
    case ReplicaState::starting:
      return 0;
    case ReplicaState::healthy:
      return 1;
    case ReplicaState::dead:
      return 2;
    case ReplicaState::draining:
      return 3;
  }
  return 0;
}

// The process figures, from getrusage, getrlimit and /proc/self (Linux). A figure that cannot be
// read is left out rather than reported as 0.
void render_process(std::string* out) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {  // every thread of the process
    double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    family(out, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    sample(out, "process_cpu_seconds_total", "", fnum(cpu));
  }
  long page = sysconf(_SC_PAGESIZE);
  if (FILE* f = fopen("/proc/self/statm", "r")) {
    unsigned long long size = 0, resident = 0;
    if (fscanf(f, "%llu %llu", &size, &resident) == 2) {
      family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
      sample(out, "process_virtual_memory_bytes", "", num(size * static_cast<uint64_t>(page)));
      family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
      sample(out, "process_resident_memory_bytes", "", num(resident * static_cast<uint64_t>(page)));
    }
    fclose(f);
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    uint64_t n = 0;
    while (struct dirent* e = readdir(d))
      if (e->d_name[0] != '.') n++;
    closedir(d);
    family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
    sample(out, "process_open_fds", "", num(n > 0 ? n - 1 : 0));  // less the directory's own
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    sample(out, "process_max_fds", "",
           num(rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(rl.rlim_cur)));
  }
  // Start time: the boot time (now on the wall clock less the time since boot, CLOCK_BOOTTIME: no
  // /proc/stat, which the systemd unit's ProcSubset=pid hides) plus the process's start in clock
  // ticks after boot (field 22 of /proc/self/stat, counted after the command name's parenthesis).
  static double start_time = -1;
  if (start_time < 0) {
    struct timespec real, boot;
    unsigned long long ticks = 0;
    bool have = false;
    if (FILE* f = fopen("/proc/self/stat", "r")) {
      char buf[1024];
      size_t n = fread(buf, 1, sizeof buf - 1, f);
      buf[n] = 0;
      fclose(f);
      // ')' ends field 2 (the command name, which may hold spaces); each space after it starts
      // the next field: the 20th starts field 22, starttime.
      const char* p = strrchr(buf, ')');
      for (int field = 2; p != nullptr && field < 22; field++) p = strchr(p + 1, ' ');
      if (p != nullptr) {
        ticks = strtoull(p + 1, nullptr, 10);
        have = true;
      }
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (have && hz > 0 && clock_gettime(CLOCK_REALTIME, &real) == 0 &&
        clock_gettime(CLOCK_BOOTTIME, &boot) == 0) {
      double btime = (real.tv_sec - boot.tv_sec) + (real.tv_nsec - boot.tv_nsec) / 1e9;
      start_time =
          static_cast<double>(static_cast<int64_t>(btime + static_cast<double>(ticks) / hz));
    }
  }
  if (start_time >= 0) {
    family(out, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    sample(out, "process_start_time_seconds", "", fnum(start_time));
  }
}

}  // namespace

void metrics_add_member(MetricsState* m, uint32_t ring_id, const MemberReport& r) {
  RingIdTotals& t = m->by_ring_id[ring_id];
  t.requests += r.requests;
  t.failures += r.failures;
  t.retries += r.retries;
  for (int i = 0; i < 6; i++) t.responses[i] += r.responses[i];
  duration_add(&t.duration, r.duration);
}

double metrics_keys_moved(const Ring* before, const Ring* after) {
  size_t nb = before ? ring_size(before) : 0, na = after ? ring_size(after) : 0;
  if (nb == 0 && na == 0) return 0;
  if (nb == 0 || na == 0) return 1;
  const RingConfig& cb = ring_config(before);
  const RingConfig& ca = ring_config(after);
  if (cb.mode != ca.mode) return 1;
  // The positions to compare, as ring_lookup takes them: every slot or table entry, or ketama's
  // 2^32 points sampled at the middle of kKetamaSamples equal arcs.
  uint64_t count, step = 1, first = 0;
  switch (cb.mode) {
    case RingMode::slots:
      if (cb.slots != ca.slots) return 1;
      count = cb.slots;
      break;
    case RingMode::maglev:
      if (cb.table_size != ca.table_size) return 1;
      count = cb.table_size;
      break;
    case RingMode::ketama:
    default:
      count = kKetamaSamples;
      step = (1ull << 32) / kKetamaSamples;
      first = step / 2;
      break;
  }
  uint64_t moved = 0;
  for (uint64_t i = 0; i < count; i++) {
    uint64_t pos = first + i * step;
    int b = ring_lookup(before, pos), a = ring_lookup(after, pos);
    uint32_t idb = b < 0 ? 0 : ring_member(before, static_cast<size_t>(b)).id;
    uint32_t ida = a < 0 ? 0 : ring_member(after, static_cast<size_t>(a)).id;
    if (idb != ida) moved++;
  }
  return static_cast<double>(moved) / static_cast<double>(count);
}

void metrics_ring_published(MetricsState* m, const Ring* before, const Ring* after) {
  if (before == after) return;
  std::vector<uint32_t> ib, ia;
  for (size_t i = 0; before && i < ring_size(before); i++) ib.push_back(ring_member(before, i).id);
  for (size_t i = 0; after && i < ring_size(after); i++) ia.push_back(ring_member(after, i).id);
  std::sort(ib.begin(), ib.end());
  std::sort(ia.begin(), ia.end());
  if (ib == ia) return;
  m->ring_changes++;
  m->keys_moved = metrics_keys_moved(before, after);
}

std::string metrics_render(const Control& ctl) {
  const PlaneCounters& m = ctl.totals;
  const Registry& reg = *ctl.reg;
  const MetricsState& ms = ctl.metrics;
  std::string out;
  out.reserve(16384);
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    family(&out, name, "counter", help);
    sample(&out, name, "", num(v));
  };
  auto gauge = [&](const char* name, const char* help, const std::string& v) {
    family(&out, name, "gauge", help);
    sample(&out, name, "", v);
  };
  counter("ringlb_requests_total", "Client requests received (proxied and admin).", m.requests);
  counter("ringlb_connections_total", "Client connections accepted.", m.connections);
  counter("ringlb_retries_total", "Requests retried on another replica.", m.retries);
  counter("ringlb_upstream_failures_total", "Failed attempts to reach a replica.",
          m.upstream_failures);
  counter("ringlb_upstream_timeouts_total", "Replicas that did not answer in time.",
          m.upstream_timeouts);
  counter("ringlb_no_replica_total", "Requests answered 503 because no replica was available.",
          m.no_replica);
  counter("ringlb_heals_total", "Dead replicas replaced.", reg.heals);
  gauge("ringlb_client_connections", "Client connections open now.", num(control_open_conns(&ctl)));
  counter("ringlb_client_handoffs_total",
          "Client connections moved to a less loaded worker (lb/data/spread.h).", m.handoffs);
  counter("ringlb_tunnels_total", "Upgrade (WebSocket) tunnels opened: 101 forwarded.",
          m.tunnels_opened);
  gauge("ringlb_tunnels_open", "Upgrade (WebSocket) tunnels open now.",
        num(m.tunnels_opened - m.tunnels_closed));
  counter("ringlb_h2_connections_total", "Client connections that spoke HTTP/2 (h2 or h2c).",
          m.h2_connections);
  counter("ringlb_h2_streams_total", "HTTP/2 streams opened by clients (each one a request).",
          m.h2_streams);
  counter("ringlb_h2_client_resets_total", "HTTP/2 streams reset by the client (RST_STREAM).",
          m.h2_client_resets);
  counter("ringlb_h2_rapid_reset_goaways_total",
          "HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM for resetting too many streams "
          "(rapid reset, CVE-2023-44487).",
          m.h2_calm_goaways);
  family(&out, "ringlb_worker_client_connections", "gauge",
         "Client connections open now, by worker (kept even over the workers: lb/data/spread.h).");
  for (size_t i = 0; i < ctl.workers.size(); i++)
    if (ctl.workers[i].running)
      sample(&out, "ringlb_worker_client_connections", "worker=\"" + num(i) + "\"",
             num(ctl.workers[i].open_conns));
  size_t running = 0;
  for (const WorkerSlot& w : ctl.workers) running += w.running ? 1 : 0;
  gauge("ringlb_workers", "Data-plane workers running.", num(running));
  family(&out, "ringlb_responses_total", "counter", "Responses sent, by status class.");
  for (int c = 1; c <= 5; c++)
    sample(&out, "ringlb_responses_total", "class=\"" + num(c) + "xx\"", num(m.responses[c]));
  family(&out, "ringlb_request_duration_seconds", "histogram",
         "Proxied requests answered, from the request head received to the last response byte "
         "written (admin requests are not counted).");
  histogram(&out, "ringlb_request_duration_seconds", "", m.duration);

  counter("ringlb_ring_changes_total", "Ring rebuilds that changed its members (add, remove).",
          ms.ring_changes);
  gauge("ringlb_ring_keys_moved_ratio",
        "Fraction of the key space that changed owner in the last ring change (0 before any).",
        fnum(ms.keys_moved));
  gauge("ringlb_ring_members", "Members of the ring (ring ids holding points or slots).",
        num(reg.ring ? ring_size(reg.ring.get()) : 0));
  family(&out, "ringlb_build_info", "gauge",
         "The ringlb version and the libraries it runs with; always 1.");
  char llhttp_version[32];
  snprintf(llhttp_version, sizeof llhttp_version, "%d.%d.%d", LLHTTP_VERSION_MAJOR,
           LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
  sample(&out, "ringlb_build_info",
         "version=\"" + label(RINGLB_VERSION) + "\",libuv=\"" + label(uv_version_string()) +
             "\",llhttp=\"" + llhttp_version + "\",libcurl=\"" + label(LIBCURL_VERSION) +
             "\",ring=\"" + ring_mode_name(ctl.cfg->ring.mode) + "\"",
         "1");

  // Per ring id: the replica that stands for it is the one not draining (a new replica may take
  // the ring id of one still draining after /rm), else the draining one.
  std::map<uint32_t, const Replica*> current;
  std::map<uint32_t, uint32_t> inflight;
  for (const Replica* r : reg.replicas) {
    if (r->ring_id == 0) continue;
    inflight[r->ring_id] += r->inflight;
    auto it = current.find(r->ring_id);
    if (it == current.end() || it->second->state == ReplicaState::draining) current[r->ring_id] = r;
  }
  family(&out, "ringlb_replica_info", "gauge",
         "The replica that holds each ring id now, by name; always 1.");
  for (const auto& [id, r] : current)
    sample(&out, "ringlb_replica_info",
           "ring_id=\"" + num(id) + "\",name=\"" + label(r->name) + "\"", "1");
  family(&out, "ringlb_replica_state", "gauge",
         "State of the replica holding each ring id: 0 starting, 1 healthy, 2 dead, 3 draining.");
  for (const auto& [id, r] : current)
    sample(&out, "ringlb_replica_state", "ring_id=\"" + num(id) + "\"", num(state_code(r->state)));
  family(&out, "ringlb_replica_inflight", "gauge",
         "Requests in flight to the replicas of each ring id.");
  for (const auto& [id, n] : inflight)
    sample(&out, "ringlb_replica_inflight", "ring_id=\"" + num(id) + "\"", num(n));
  // Counters: every ring id ever reported (they keep counting across replacements and removals)
  // and every current one (0 until reported).
  std::map<uint32_t, RingIdTotals> totals = ms.by_ring_id;
  for (const auto& [id, r] : current) totals[id];
  family(&out, "ringlb_replica_requests_total", "counter",
         "Requests each ring id's replicas answered completely.");
  for (const auto& [id, t] : totals)
    sample(&out, "ringlb_replica_requests_total", "ring_id=\"" + num(id) + "\"", num(t.requests));
  family(&out, "ringlb_replica_failures_total", "counter",
         "Attempts on each ring id's replicas that failed by their fault (refused, reset, timeout, "
         "malformed).");
  for (const auto& [id, t] : totals)
    sample(&out, "ringlb_replica_failures_total", "ring_id=\"" + num(id) + "\"", num(t.failures));
  family(&out, "ringlb_replica_retries_total", "counter",
         "Requests sent on to the next replica after failing on each ring id's replica.");
  for (const auto& [id, t] : totals)
    sample(&out, "ringlb_replica_retries_total", "ring_id=\"" + num(id) + "\"", num(t.retries));
  family(&out, "ringlb_replica_responses_total", "counter",
         "Responses each ring id's replicas sent, by status class (before a 404 becomes the "
         "assignment's 400).");
  for (const auto& [id, t] : totals)
    for (int c = 1; c <= 5; c++)
      sample(&out, "ringlb_replica_responses_total",
             "ring_id=\"" + num(id) + "\",class=\"" + num(c) + "xx\"", num(t.responses[c]));
  family(&out, "ringlb_replica_request_duration_seconds", "histogram",
         "Requests each ring id's replicas answered, from the request head received to the last "
         "response byte written.");
  for (const auto& [id, t] : totals)
    histogram(&out, "ringlb_replica_request_duration_seconds", "ring_id=\"" + num(id) + "\"",
              t.duration);
  render_process(&out);
  return out;
}
