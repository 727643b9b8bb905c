#include "lb/control/metrics.h"

#include "lb/control/control.h"
#include "lb/control/registry.h"

std::string metrics_render(const Control& ctl) {
  const PlaneCounters& m = ctl.totals;
  const Registry& reg = *ctl.reg;
  std::string out;
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out += std::string("# HELP ringlb_") + name + " " + help + "\n# TYPE ringlb_" + name +
           " counter\nringlb_" + name + " " + std::to_string(v) + "\n";
  };
  counter("requests_total", "Client requests received.", m.requests);
  counter("connections_total", "Client connections accepted.", m.connections);
  counter("retries_total", "Requests retried on another replica.", m.retries);
  counter("upstream_failures_total", "Failed attempts to reach a replica.", m.upstream_failures);
  counter("upstream_timeouts_total", "Replicas that did not answer in time.", m.upstream_timeouts);
  counter("no_replica_total", "Requests answered 503 because no replica was available.", m.no_replica);
  counter("heals_total", "Dead replicas replaced.", reg.heals);
  out += "# HELP ringlb_client_connections Client connections open now.\n"
         "# TYPE ringlb_client_connections gauge\nringlb_client_connections " +
         std::to_string(control_open_conns(&ctl)) + "\n";
  out += "# HELP ringlb_worker_client_connections Client connections open now, by worker (kept even "
         "over the workers: lb/data/spread.h).\n"
         "# TYPE ringlb_worker_client_connections gauge\n";
  for (size_t i = 0; i < ctl.workers.size(); i++)
    if (ctl.workers[i].running)
      out += "ringlb_worker_client_connections{worker=\"" + std::to_string(i) + "\"} " +
             std::to_string(ctl.workers[i].open_conns) + "\n";
  out += "# HELP ringlb_workers Data-plane workers running.\n"
         "# TYPE ringlb_workers gauge\nringlb_workers ";
  size_t running = 0;
  for (const WorkerSlot& w : ctl.workers) running += w.running ? 1 : 0;
  out += std::to_string(running) + "\n";
  out += "# HELP ringlb_responses_total Responses sent, by status class.\n"
         "# TYPE ringlb_responses_total counter\n";
  for (int c = 1; c <= 5; c++)
    out += "ringlb_responses_total{class=\"" + std::to_string(c) + "xx\"} " +
           std::to_string(m.responses[c]) + "\n";
  // One series per name: a draining replica whose name a new replica took (/rm then /add of the
  // same name) is left out, since two samples with one label set make Prometheus reject the scrape.
  std::vector<const Replica*> series;
  for (const Replica* r : reg.replicas) {
    bool shadowed = false;
    if (r->state == ReplicaState::draining)
      for (const Replica* o : reg.replicas)
        shadowed = shadowed || (o != r && o->name == r->name && o->state != ReplicaState::draining);
    if (!shadowed) series.push_back(r);
  }
  out += "# HELP ringlb_replica_requests_total Requests sent to each replica.\n"
         "# TYPE ringlb_replica_requests_total counter\n";
  for (const Replica* r : series)
    out += "ringlb_replica_requests_total{replica=\"" + r->name + "\"} " + std::to_string(r->requests) + "\n";
  out += "# HELP ringlb_replica_up Whether each replica is healthy (1) or not (0).\n"
         "# TYPE ringlb_replica_up gauge\n";
  for (const Replica* r : series)
    out += "ringlb_replica_up{replica=\"" + r->name + "\",state=\"" + replica_state_name(r->state) +
           "\"} " + (r->state == ReplicaState::healthy ? "1" : "0") + "\n";
  out += "# HELP ringlb_replica_inflight Requests in flight to each replica.\n"
         "# TYPE ringlb_replica_inflight gauge\n";
  for (const Replica* r : series)
    out += "ringlb_replica_inflight{replica=\"" + r->name + "\"} " + std::to_string(r->inflight) + "\n";
  return out;
}
