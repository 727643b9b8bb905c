// admin: the assignment's API (/rep, /add, /rm) and the operator's (/metrics, /healthz, /readyz).
// /healthz is liveness (200 while the loop answers); /readyz is readiness (200 while at least one
// replica is healthy, else 503 with the reason). Neither needs the admin token.
// Seeing the ring (lb/control/ring_view.h): /route?key=K, /ring, /add?dry_run=1. /dashboard is a
// page without data (lb/control/dashboard.h), served without the token; its API calls send it.
//
// Every error is a 4xx (or 5xx for a failure of the provisioner) with
// {"message": "<Error> ...", "status": "failure"} naming the problem, and a rejected request changes
// nothing. /add answers once the new replicas passed their first heartbeat (all or nothing); /rm answers
// at once and drains the removed replicas in the background.
#pragma once

#include <string>

#include "lb/http/http_head.h"
#include "lb/control/control.h"

// Handles one complete admin request (head and body) that worker call.worker handed over. Answers
// through control_answer, always later than this call: /add once its replicas are healthy and every
// worker routes to them, /rm once no worker routes to the removed ones, /metrics and /rep once every
// worker reported what it counted before the request. peer: the client's address, logged with
// what /add and /rm change.
void admin_handle(Control* ctl, AdminCallRef call, const HttpHead& head, const std::string& body,
                  const std::string& peer);

// The /rep answer: {"message": {"N": n, "replicas": [...]}, "status": "successful"}; verbose adds each
// replica's state, address and ring id under "details".
std::string admin_rep_json(const Registry* reg, bool verbose);
