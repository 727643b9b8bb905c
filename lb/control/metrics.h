// metrics: the load balancer's counters, served as Prometheus text on /metrics. Plain integers updated
// on the loop thread; nothing here allocates on the request path.
#pragma once

#include <cstdint>
#include <string>

struct Registry;

struct Metrics {
  uint64_t requests = 0;        // client requests that reached routing or admin
  uint64_t responses[6] = {};   // by status class 1xx..5xx (index 1..5)
  uint64_t retries = 0;         // attempts on another replica after a failure
  uint64_t upstream_failures = 0;
  uint64_t upstream_timeouts = 0;
  uint64_t no_replica = 0;      // 503 answers
  uint64_t connections = 0;     // client connections accepted
};

inline void metrics_response(Metrics* m, int status) {
  int cls = status / 100;
  if (cls >= 1 && cls <= 5) m->responses[cls]++;
}

// Prometheus text exposition of m and of every replica in reg.
std::string metrics_render(const Metrics& m, const Registry& reg);
