// metrics: the load balancer's counters, served as Prometheus text on /metrics: what every worker
// reported (summed by the control plane) and every replica of the registry.
#pragma once

#include <string>

struct Control;

// Prometheus text exposition of the control plane's totals and its registry's replicas.
std::string metrics_render(const Control& ctl);
