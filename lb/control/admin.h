// admin: the assignment's API (/rep, /add, /rm) and the operator's (/metrics, /healthz, /readyz).
// /healthz is liveness (200 while the loop answers); /readyz is readiness (200 while at least one
// replica is healthy, else 503 with the reason). Neither needs the admin token.
//
// Every error is a 4xx (or 5xx for a failure of the provisioner) with
// {"message": "<Error> ...", "status": "failure"} naming the problem, and a rejected request changes
// nothing. /add answers once the new replicas passed their first heartbeat (all or nothing); /rm answers
// at once and drains the removed replicas in the background.
#pragma once

#include <string>

#include "lb/http/http_head.h"
#include "lb/data/proxy.h"

// Handles one complete admin request (head and body). Answers through proxy_respond, now or later.
void admin_handle(Proxy* p, const ClientRef& client, const HttpHead& head, const std::string& body);

// The /rep answer: {"message": {"N": n, "replicas": [...]}, "status": "successful"}; verbose adds each
// replica's state, address and ring id under "details".
std::string admin_rep_json(const Registry* reg, bool verbose);
