#include "lb/admin.h"

#include <algorithm>
#include <cstring>
#include <jansson.h>
#include <set>

#include "lb/admin_json.h"
#include "lb/log.h"

namespace {

std::string dump(json_t* j) {
  char* s = json_dumps(j, JSON_PRESERVE_ORDER);
  std::string out = s ? s : "{}";
  free(s);
  json_decref(j);
  return out;
}

void fail(Proxy* p, const ClientRef& client, int status, const std::string& text) {
  (void)p;
  proxy_respond(client, status, proxy_error_json(text));
}

// Parses {"n": <int>, "hostnames": [<str>, ...]} (hostnames optional; admin_json.h). Returns false
// after answering the client with the reason.
bool parse_n_hostnames(Proxy* p, const ClientRef& client, const std::string& body, long long* n,
                       std::vector<std::string>* names) {
  AdminBody parsed;
  AdminJsonError err;
  if (!admin_json_parse(body, &parsed, &err)) {
    fail(p, client, err.status, err.text);
    return false;
  }
  *n = parsed.n;
  *names = std::move(parsed.names);
  return true;
}

bool check_names(Proxy* p, const ClientRef& client, const std::vector<std::string>& names) {
  AdminJsonError err;
  if (!admin_json_check_names(names, &err)) {
    fail(p, client, err.status, err.text);
    return false;
  }
  return true;
}

void handle_add(Proxy* p, const ClientRef& client, const std::string& body) {
  Registry* reg = p->reg;
  long long n;
  std::vector<std::string> names;
  if (!parse_n_hostnames(p, client, body, &n, &names)) return;
  if (static_cast<long long>(names.size()) > n) {
    fail(p, client, 400, "Length of hostname list is more than newly added instances");
    return;
  }
  if (!p->reg->prov->can_scale()) {
    fail(p, client, 409, "the pool is static (--provisioner static): replicas cannot be added");
    return;
  }
  size_t current = registry_counted(reg).size();
  if (current + n > p->cfg->max_replicas) {
    fail(p, client, 400, "adding " + std::to_string(n) + " replicas to " + std::to_string(current) +
                             " would exceed --max-replicas " + std::to_string(p->cfg->max_replicas));
    return;
  }
  if (!check_names(p, client, names)) return;
  for (const std::string& name : names) {
    for (const Replica* r : reg->replicas) {
      if (r->name == name) {
        fail(p, client, 409, "a replica named '" + name + "' already exists");
        return;
      }
    }
  }
  while (static_cast<long long>(names.size()) < n) {
    std::string name = registry_random_name(reg);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  auto req = std::make_unique<AddRequest>();
  req->names = names;
  ClientRef ref = client;
  req->done = [p, ref](int status, const std::string& error) {
    if (status == 200) proxy_respond(ref, 200, admin_rep_json(p->reg, false));
    else proxy_respond(ref, status, proxy_error_json(error));
  };
  registry_add(reg, std::move(req));
}

void handle_rm(Proxy* p, const ClientRef& client, const std::string& body) {
  Registry* reg = p->reg;
  long long n;
  std::vector<std::string> names;
  if (!parse_n_hostnames(p, client, body, &n, &names)) return;
  if (static_cast<long long>(names.size()) > n) {
    fail(p, client, 400, "Length of hostname list is more than removable instances");
    return;
  }
  if (!p->reg->prov->can_scale()) {
    fail(p, client, 409, "the pool is static (--provisioner static): replicas cannot be removed");
    return;
  }
  std::vector<const Replica*> counted = registry_counted(reg);
  if (static_cast<size_t>(n) > counted.size()) {
    fail(p, client, 400, "cannot remove " + std::to_string(n) + " replicas: only " +
                             std::to_string(counted.size()) + " exist");
    return;
  }
  std::set<std::string> seen;
  for (const std::string& name : names) {
    if (!seen.insert(name).second) {
      fail(p, client, 400, "'" + name + "' is named twice");
      return;
    }
    bool found = false;
    for (const Replica* r : counted) found = found || r->name == name;
    if (!found) {
      fail(p, client, 404, "no replica named '" + name + "'");
      return;
    }
  }
  // The rest are chosen at random among the replicas not named (the assignment).
  std::vector<std::string> others;
  for (const Replica* r : counted)
    if (!seen.count(r->name)) others.push_back(r->name);
  while (static_cast<long long>(names.size()) < n) {
    size_t i = p->rng() % others.size();
    names.push_back(others[i]);
    others.erase(others.begin() + static_cast<long>(i));
  }
  registry_remove(reg, names);
  proxy_respond(client, 200, admin_rep_json(reg, false));
}

bool authorized(Proxy* p, const HttpHead& head) {
  if (p->cfg->admin_token.empty()) return true;
  std::string_view v;
  return http_head_get(head, "authorization", &v) && v == "Bearer " + p->cfg->admin_token;
}

}  // namespace

std::string admin_rep_json(const Registry* reg, bool verbose) {
  std::vector<const Replica*> counted = registry_counted(reg);
  json_t* msg = json_object();
  json_object_set_new(msg, "N", json_integer(static_cast<json_int_t>(counted.size())));
  json_t* list = json_array();
  for (const Replica* r : counted) json_array_append_new(list, json_string(r->name.c_str()));
  json_object_set_new(msg, "replicas", list);
  if (verbose) {
    json_t* details = json_array();
    for (const Replica* r : reg->replicas) {
      json_t* d = json_object();
      json_object_set_new(d, "name", json_string(r->name.c_str()));
      json_object_set_new(d, "state", json_string(replica_state_name(r->state)));
      json_object_set_new(d, "ring_id", json_integer(r->ring_id));
      std::string addr = r->inst.host + ":" + std::to_string(r->inst.port);
      json_object_set_new(d, "address", json_string(addr.c_str()));
      json_object_set_new(d, "id", json_string(r->inst.id.c_str()));
      json_object_set_new(d, "counts", json_boolean(r->counts));
      json_object_set_new(d, "inflight", json_integer(r->inflight));
      json_object_set_new(d, "requests", json_integer(static_cast<json_int_t>(r->requests)));
      json_object_set_new(d, "last_cause", json_string(r->last_cause.c_str()));
      json_array_append_new(details, d);
    }
    json_object_set_new(msg, "details", details);
  }
  json_t* root = json_object();
  json_object_set_new(root, "message", msg);
  json_object_set_new(root, "status", json_string("successful"));
  return dump(root);
}

void admin_handle(Proxy* p, const ClientRef& client, const HttpHead& head, const std::string& body) {
  std::string_view url = http_head_url(head);
  std::string_view path = http_url_path(url);
  llhttp_method_t m = head.method;
  bool get = m == HTTP_GET || m == HTTP_HEAD;
  auto wrong_method = [&](const char* allowed) {
    fail(p, client, 405, "method " + std::string(llhttp_method_name(m)) + " is not allowed on " +
                             std::string(path) + " (use " + allowed + ")");
  };
  if (path == "/healthz") {
    if (!get) return wrong_method("GET");
    proxy_respond(client, 200, "{\"message\": \"ok\", \"status\": \"successful\"}");
    return;
  }
  if (!authorized(p, head)) {
    fail(p, client, 401, "admin routes need 'Authorization: Bearer <token>' (--admin-token)");
    return;
  }
  if (path == "/rep") {
    if (!get) return wrong_method("GET");
    std::string_view v;
    bool verbose = http_url_query(url, "verbose", &v) && v != "0";
    proxy_respond(client, 200, admin_rep_json(p->reg, verbose));
  } else if (path == "/add") {
    if (m != HTTP_POST) return wrong_method("POST");
    handle_add(p, client, body);
  } else if (path == "/rm") {
    if (m != HTTP_DELETE) return wrong_method("DELETE");
    handle_rm(p, client, body);
  } else if (path == "/metrics") {
    if (!get) return wrong_method("GET");
    proxy_respond(client, 200, metrics_render(p->metrics, *p->reg), "text/plain; version=0.0.4");
  } else {
    fail(p, client, 404, "'" + std::string(path) + "' is not an admin route (/rep, /add, /rm, /metrics, /healthz)");
  }
}
