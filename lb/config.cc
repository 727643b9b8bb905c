#include "lb/config.h"

#include <sched.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include <jansson.h>

#include "lb/http/http_server.h"

namespace {

// Each option: its flag name (without --), help text, default shown in --help, and a setter that
// returns an empty string or the reason the value is invalid.
struct Option {
  const char* name;
  const char* arg;  // nullptr: a switch without value
  const char* help;
  std::function<std::string(Config*, const std::string&)> set;
  // Takes effect on SIGHUP (config_reload copies it into the running configuration); false: needs
  // a restart, and a reload that finds it changed says so and leaves it.
  bool live = false;
};

std::string parse_u32(const std::string& v, uint32_t lo, uint32_t hi, uint32_t* out) {
  char* end;
  errno = 0;
  unsigned long long x = strtoull(v.c_str(), &end, 10);
  if (v.empty() || *end || errno || v[0] == '-' || x < lo || x > hi)
    return "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi);
  *out = static_cast<uint32_t>(x);
  return "";
}

std::string parse_bool(const std::string& v, bool* out) {
  if (v == "on" || v == "true" || v == "1" || v == "yes") *out = true;
  else if (v == "off" || v == "false" || v == "0" || v == "no") *out = false;
  else return "must be on or off";
  return "";
}

// "connect-failure,empty-response": a comma-separated list of RetryOn names, or "none".
std::string parse_retry_on(const std::string& v, uint8_t* out) {
  static const struct {
    const char* name;
    uint8_t bit;
  } kNames[] = {{"connect-failure", RETRY_CONNECT_FAILURE},
                {"empty-response", RETRY_EMPTY_RESPONSE},
                {"junk-response", RETRY_JUNK_RESPONSE},
                {"response-timeout", RETRY_RESPONSE_TIMEOUT}};
  const std::string why =
      "must be none or a comma-separated list of connect-failure, empty-response, junk-response, "
      "response-timeout";
  if (v == "none") {
    *out = 0;
    return "";
  }
  uint8_t bits = 0;
  size_t start = 0;
  while (true) {
    size_t comma = v.find(',', start);
    std::string one = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    bool known = false;
    for (const auto& n : kNames)
      if (one == n.name) {
        bits |= n.bit;
        known = true;
      }
    if (!known) return one.empty() ? why : why + " ('" + one + "' is none of them)";
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  *out = bits;
  return "";
}

// --replica-env K=V: K a portable environment name, V without line breaks; the provisioner's own
// names are refused (a replica listening on another PORT than the one the LB gave it is lost).
std::string parse_replica_env(const std::string& v, std::vector<std::string>* out) {
  size_t eq = v.find('=');
  std::string k = v.substr(0, eq);
  bool name_ok = eq != std::string::npos && !k.empty() && k.size() <= 256 &&
                 (isalpha(static_cast<unsigned char>(k[0])) || k[0] == '_') &&
                 k.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") ==
                     std::string::npos;
  if (!name_ok) return "must be NAME=VALUE with NAME of [A-Za-z_][A-Za-z0-9_]*";
  if (k == "SERVER_ID" || k == "PORT" || k == "ADDRESS")
    return "names " + k + ", which the provisioner sets itself";
  for (char ch : v)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) return "must not hold control characters";
  if (v.size() > 4096) return "must be at most 4096 bytes";
  if (out->size() >= 64) return "is one too many (at most 64 --replica-env)";
  out->push_back(v);
  return "";
}

// --replica-cmd: a JSON array of strings (["--debug-routes"]), or words separated by spaces.
std::string parse_replica_cmd(const std::string& v, std::vector<std::string>* out) {
  const std::string why = "must be a JSON array of strings or words separated by spaces (at most 64, "
                          "each at most 4096 bytes, no control characters)";
  std::vector<std::string> words;
  if (!v.empty() && v[0] == '[') {
    json_error_t jerr;
    json_t* a = json_loads(v.c_str(), 0, &jerr);
    if (a == nullptr || !json_is_array(a)) {
      json_decref(a);
      return why;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
      json_t* e = json_array_get(a, i);
      if (!json_is_string(e)) {
        json_decref(a);
        return why;
      }
      words.emplace_back(json_string_value(e), json_string_length(e));
    }
    json_decref(a);
  } else {
    size_t i = 0;
    while (i < v.size()) {
      while (i < v.size() && v[i] == ' ') i++;
      size_t j = v.find(' ', i);
      if (j == std::string::npos) j = v.size();
      if (j > i) words.push_back(v.substr(i, j - i));
      i = j;
    }
  }
  if (words.empty() || words.size() > 64) return why;
  for (const std::string& w : words) {
    if (w.size() > 4096) return why;
    for (char ch : w)
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) return why;
  }
  *out = std::move(words);
  return "";
}

// --swarm-constraint, --swarm-spread: comma-separated items of printable ASCII, each at most 256
// bytes and (constraints) with an operator; the engine checks the rest when a service is created.
std::string parse_swarm_list(const std::string& v, const char* op, std::vector<std::string>* out) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= v.size()) {
    size_t comma = v.find(',', start);
    std::string one = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    while (!one.empty() && one.front() == ' ') one.erase(0, 1);
    while (!one.empty() && one.back() == ' ') one.pop_back();
    if (one.empty() || one.size() > 256) return "must be comma-separated items of 1 to 256 characters";
    for (char ch : one)
      if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) >= 0x7f)
        return "must be printable ASCII";
    if (op && one.find(op) == std::string::npos && one.find("!=") == std::string::npos)
      return "each constraint must be ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE (node.role==worker)";
    items.push_back(one);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (items.size() > 32) return "must have at most 32 items";
  *out = std::move(items);
  return "";
}

// --replica-memory: bytes, or a number with k, m or g (KiB, MiB, GiB); at least 6 MiB (the
// engine's own minimum) and at most 1 TiB.
std::string parse_memory(const std::string& v, uint64_t* out) {
  const std::string why = "must be a size from 6m to 1024g (bytes, or a number with k, m or g)";
  char* end;
  errno = 0;
  unsigned long long x = strtoull(v.c_str(), &end, 10);
  if (v.empty() || !isdigit(static_cast<unsigned char>(v[0])) || errno) return why;
  uint64_t mul = 1;
  std::string unit(end);
  if (unit == "k" || unit == "K") mul = 1ull << 10;
  else if (unit == "m" || unit == "M") mul = 1ull << 20;
  else if (unit == "g" || unit == "G") mul = 1ull << 30;
  else if (!unit.empty()) return why;
  if (x > (1ull << 40) / mul || x * mul < (6ull << 20)) return why;
  *out = x * mul;
  return "";
}

#define U32(field, lo, hi) [](Config* c, const std::string& v) { return parse_u32(v, lo, hi, &c->field); }
#define STR(field) [](Config* c, const std::string& v) { c->field = v; return std::string(); }
// A listening address, checked now (HOST:PORT, [V6]:PORT, :PORT or PORT), so that a bad one is the
// same one-line exit 2 as any other bad value instead of a failure to listen later. empty_ok: ""
// keeps the default (--admin-listen: the main listener).
#define ADDR(field, empty_ok) [](Config* c, const std::string& v) { \
    struct sockaddr_storage a; \
    if (!((empty_ok) && v.empty()) && http_parse_address(v, &a) != 0) \
      return std::string("must be HOST:PORT, [V6]:PORT or :PORT"); \
    c->field = v; \
    return std::string(); }
#define BOOL(field) [](Config* c, const std::string& v) { return parse_bool(v, &c->field); }

const std::vector<Option>& options() {
  static const std::vector<Option> opts = {
      {"listen", "ADDR:PORT", "where clients connect (default 0.0.0.0:5000)", ADDR(listen, false)},
      {"admin-listen", "ADDR:PORT", "serve /rep /add /rm /metrics on their own listener (default: the main one)",
       ADDR(admin_listen, true)},
      {"admin-token", "TOKEN", "require 'Authorization: Bearer TOKEN' on admin routes", STR(admin_token), true},
      {"tls-cert", "FILE", "serve TLS on the main listener with this PEM certificate chain (with "
       "--tls-key; the files are read again on SIGHUP)", STR(tls_cert)},
      {"tls-key", "FILE", "the PEM private key of --tls-cert", STR(tls_key)},
      {"admin-tls-cert", "FILE", "serve TLS on --admin-listen with this PEM certificate chain (with "
       "--admin-tls-key; read again on SIGHUP)", STR(admin_tls_cert)},
      {"admin-tls-key", "FILE", "the PEM private key of --admin-tls-cert", STR(admin_tls_key)},
      {"provisioner", "KIND", "process (local replica processes, default), docker, swarm (one service per replica), or static",
       [](Config* c, const std::string& v) {
         if (v == "process") c->provisioner = ProvKind::process;
         else if (v == "docker") c->provisioner = ProvKind::docker;
         else if (v == "static") c->provisioner = ProvKind::static_list;
         else if (v == "swarm") c->provisioner = ProvKind::swarm;
         else return std::string("must be process, docker, swarm or static");
         return std::string();
       }},
      {"replicas", "N", "replicas started at launch (default 3)", U32(replicas, 0, 1024)},
      {"max-replicas", "N", "most replicas /add may reach (default 64; slots mode: at most M / K)",
       [](Config* c, const std::string& v) {
         c->max_replicas_set = true;
         return parse_u32(v, 1, 1024, &c->max_replicas);
       }, true},
      {"backend", "HOST:PORT", "a static backend (repeat, or comma-separated in the variable)",
       [](Config* c, const std::string& v) {
         size_t start = 0;
         while (start <= v.size()) {
           size_t comma = v.find(',', start);
           std::string one = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
           if (one.empty() || one.rfind(':') == std::string::npos || one.rfind(':') == 0)
             return std::string("must be HOST:PORT");
           c->backends.push_back(one);
           if (comma == std::string::npos) break;
           start = comma + 1;
         }
         return std::string();
       }},
      {"replica-bin", "PATH", "replica binary for the process provisioner (default: next to ringlb)",
       STR(replica_bin)},
      {"pool", "NAME", "pool name; docker containers are labelled ringlb.pool=NAME (default ringlb)",
       [](Config* c, const std::string& v) {
         if (v.empty() || v.size() > 63 || v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != std::string::npos)
           return std::string("must be 1 to 63 of [A-Za-z0-9_.-]");
         c->pool = v;
         return std::string();
       }},
      {"name-prefix", "PREFIX",
       "engine names of replicas are PREFIX+name, so pools side by side do not collide; /rep shows "
       "the plain name (default empty)",
       [](Config* c, const std::string& v) {
         // Names are [A-Za-z0-9][A-Za-z0-9_.-]{0,62}: prefix + any name stays a valid Docker name
         // ([a-zA-Z0-9][a-zA-Z0-9_.-]+) when the prefix is empty or one itself.
         if (!v.empty() && (v.size() > 63 || !isalnum(static_cast<unsigned char>(v[0])) ||
                            v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != std::string::npos))
           return std::string("must be empty or 1 to 63 of [A-Za-z0-9_.-] starting with a letter or digit");
         c->name_prefix = v;
         return std::string();
       }},
      {"docker-socket", "PATH", "Docker engine socket (default: DOCKER_HOST=unix://... or /var/run/docker.sock)", STR(docker_socket)},
      {"docker-network", "NAME", "host (replicas on 127.0.0.1 ports) or a user-defined bridge network (swarm: an overlay network)",
       STR(docker_network)},
      {"replica-image", "IMAGE", "replica image (default ringlb-replica:latest)", STR(replica_image), true},
      {"replica-port-range", "LO-HI", "host-network replica ports (default 20000-20999)",
       [](Config* c, const std::string& v) {
         unsigned lo, hi;
         char extra;
         if (sscanf(v.c_str(), "%u-%u%c", &lo, &hi, &extra) != 2 || lo == 0 || lo > hi || hi > 65535)
           return std::string("must be LO-HI with 1 <= LO <= HI <= 65535");
         c->port_min = static_cast<uint16_t>(lo);
         c->port_max = static_cast<uint16_t>(hi);
         return std::string();
       }},
      {"replica-env", "K=V",
       "docker: environment of each replica (repeat; in the variable, comma-separated)",
       [](Config* c, const std::string& v) { return parse_replica_env(v, &c->replica_env); }, true},
      {"replica-cmd", "CMD", "docker: command of each replica: the arguments of the image's entrypoint, "
       "as a JSON array or words separated by spaces (default: the image's)",
       [](Config* c, const std::string& v) { return parse_replica_cmd(v, &c->replica_cmd); }, true},
      {"replica-cpus", "C", "docker: CPU limit of each replica, in CPUs, 0.01 to 1024 (default: none)",
       [](Config* c, const std::string& v) {
         char* end;
         double x = strtod(v.c_str(), &end);
         if (v.empty() || *end || !std::isfinite(x) || x < 0.01 || x > 1024)
           return std::string("must be a number of CPUs from 0.01 to 1024");
         c->replica_nano_cpus = static_cast<uint64_t>(x * 1e9 + 0.5);
         return std::string();
       }, true},
      {"replica-memory", "SIZE", "docker: memory limit of each replica, e.g. 256m (default: none)",
       [](Config* c, const std::string& v) { return parse_memory(v, &c->replica_memory); }, true},
      {"swarm-constraint", "LIST", "swarm: placement constraints of each replica service, comma-separated "
       "(e.g. node.role==worker)",
       [](Config* c, const std::string& v) { return parse_swarm_list(v, "==", &c->swarm_constraints); }},
      {"swarm-spread", "LIST", "swarm: node labels the replica tasks spread over, comma-separated "
       "(e.g. node.labels.zone)",
       [](Config* c, const std::string& v) { return parse_swarm_list(v, nullptr, &c->swarm_spread); }},
      {"health-path", "PATH", "path of the heartbeat GET sent to every replica (default /heartbeat)",
       [](Config* c, const std::string& v) {
         if (v.empty() || v[0] != '/' || v.size() > 1024)
           return std::string("must be a path starting with / (at most 1024 bytes)");
         for (char ch : v)
           if (static_cast<unsigned char>(ch) <= 0x20 || static_cast<unsigned char>(ch) >= 0x7f)
             return std::string("must be printable ASCII without spaces (percent-encode the rest)");
         c->health_path = v;
         return std::string();
       }, true},
      {"ring", "MODE", "slots (the assignment's ring), ketama (default, 8000 points per replica: the most even) or maglev",
       [](Config* c, const std::string& v) {
         return ring_mode_parse(v, &c->ring.mode) ? std::string() : "must be slots, ketama or maglev";
       }},
      {"slots", "M", "slots mode: number of slots (default 512)", U32(ring.slots, 1, 1u << 24)},
      {"vnodes", "K", "virtual servers per replica (default: slots log2(M), ketama 8000, fewer past 131 --max-replicas: 2^20 / max, at least 160; nginx uses 160)",
       U32(ring.vnodes, 0, 100000)},
      {"probe", "KIND", "slots mode: linear (default) or quadratic probing",
       [](Config* c, const std::string& v) {
         return ring_probe_parse(v, &c->ring.probe) ? std::string() : "must be linear or quadratic";
       }},
      {"hash", "FN", "assignment, xxh3, murmur or fibonacci (default: assignment for slots, else xxh3)",
       [](Config* c, const std::string& v) {
         c->hash_set = true;
         return hash_parse(v, &c->ring.hash) ? std::string()
                                             : "must be assignment, xxh3, murmur or fibonacci";
       }},
      {"table-size", "P", "maglev: prime table size (default 65537)", U32(ring.table_size, 1, 1u << 24)},
      {"hash-key", "KEY", "rid (X-Request-Id or a fresh 6-digit id, default), path, ip, header:NAME, cookie:NAME",
       [](Config* c, const std::string& v) {
         if (v == "rid") c->hash_key = HashKey::rid;
         else if (v == "path") c->hash_key = HashKey::path;
         else if (v == "ip") c->hash_key = HashKey::ip;
         else if (v.rfind("header:", 0) == 0 && v.size() > 7) { c->hash_key = HashKey::header; c->hash_key_name = v.substr(7); }
         else if (v.rfind("cookie:", 0) == 0 && v.size() > 7) { c->hash_key = HashKey::cookie; c->hash_key_name = v.substr(7); }
         else return std::string("must be rid, path, ip, header:NAME or cookie:NAME");
         return std::string();
       }, true},
      {"retries", "N", "other replicas tried when one fails before answering (default 2)", U32(retries, 0, 16), true},
      {"balance-factor", "C", "bounded load: skip a replica above C x average in-flight (default 0: off)",
       [](Config* c, const std::string& v) {
         char* end;
         double x = strtod(v.c_str(), &end);
         if (v.empty() || *end || !std::isfinite(x) || (x != 0 && x < 1) || x > 100)
           return std::string("must be 0 (off) or a number from 1 to 100");
         c->balance_factor = x;
         return std::string();
       }, true},
      {"slow-start", "MS",
       "a replica that becomes healthy (added, or a replacement) gets its share of keys ramped up "
       "over MS; the rest stay where they were served (default 0: off)",
       U32(slow_start_ms, 0, 3600000), true},
      {"assignment-404", "on|off", "turn a replica's 404 into the assignment's 400 (default on)", BOOL(assignment_404), true},
      {"hb-interval", "MS", "heartbeat interval (default 500)", U32(hb_interval_ms, 10, 3600000), true},
      {"hb-timeout", "MS", "heartbeat timeout (default 1000)", U32(hb_timeout_ms, 10, 3600000), true},
      {"fall", "N", "failed heartbeats in a row that mark a replica dead (default 2)", U32(fall, 1, 100), true},
      {"rise", "N", "heartbeats that bring a starting replica in (default 1)", U32(rise, 1, 100), true},
      {"strikes", "N", "failed proxied requests in a row that mark a replica dead at once (default 3)",
       U32(strikes, 1, 1000), true},
      {"heal", "on|off", "replace dead replicas (default on)", BOOL(heal), true},
      {"heal-name", "random|same", "name of a replacement (default random, as the assignment)",
       [](Config* c, const std::string& v) {
         if (v == "random") c->heal_name = HealName::random;
         else if (v == "same") c->heal_name = HealName::same;
         else return std::string("must be random or same");
         return std::string();
       }, true},
      {"heal-backoff-max", "MS",
       "longest wait between replacements that keep dying (default 30000)",
       U32(heal_backoff_max_ms, 100, 3600000), true},
      {"start-timeout", "MS", "a new replica must answer a heartbeat within this (default 10000)",
       U32(start_timeout_ms, 100, 600000), true},
      {"connect-timeout", "MS", "upstream connect timeout (default 2000)", U32(connect_timeout_ms, 10, 600000), true},
      {"upstream-timeout", "MS", "time for a replica to answer; then 504 (default 30000)",
       U32(upstream_timeout_ms, 10, 3600000), true},
      {"header-timeout", "MS", "time for a client to send a request head (default 10000)",
       U32(header_timeout_ms, 10, 3600000), true},
      {"idle-timeout", "MS", "idle keep-alive client connections are closed after (default 60000)",
       U32(idle_timeout_ms, 10, 3600000), true},
      {"drain-timeout", "MS", "longest wait for in-flight requests of a removed replica (default 10000)",
       U32(drain_timeout_ms, 0, 3600000), true},
      {"admin-body-limit", "BYTES", "largest admin request body (default 65536)", U32(admin_body_limit, 64, 1u << 24), true},
      {"body-timeout", "MS",
       "idle time allowed between request or response body bytes; then 408 or a cut (default 10000)",
       U32(body_timeout_ms, 10, 3600000), true},
      {"tunnel-timeout", "MS",
       "idle time allowed in an Upgrade (WebSocket) tunnel, no byte either way (default 3600000)",
       U32(tunnel_timeout_ms, 10, 86400000), true},
      {"retry-on", "LIST",
       "failures retried on the next replica: comma-separated connect-failure, empty-response, "
       "junk-response, response-timeout, or none (default connect-failure,empty-response)",
       [](Config* c, const std::string& v) { return parse_retry_on(v, &c->retry_on); }, true},
      {"workers", "N|auto",
       "data-plane threads, each with its own loop and listener (default auto: one per CPU)",
       [](Config* c, const std::string& v) {
         if (v == "auto") {
           c->workers = 0;
           return std::string();
         }
         char* end;
         unsigned long n = strtoul(v.c_str(), &end, 10);
         if (v.empty() || *end || v[0] == '-' || n < 1 || n > 64)
           return std::string("must be auto or a number from 1 to 64");
         c->workers = static_cast<uint32_t>(n);
         return std::string();
       }},
      {"max-conns", "N", "most client connections at once (default: from the fd limit)",
       U32(max_conns, 1, 100000000)},
      {"pool-idle-max", "N", "idle upstream connections kept per replica (default 64)", U32(pool_idle_max, 0, 100000), true},
      {"on-exit", "remove|keep",
       "at exit stop the replicas (remove, default) or leave Docker replicas for the next LB (keep)",
       [](Config* c, const std::string& v) {
         if (v == "remove") c->on_exit_keep = false;
         else if (v == "keep") c->on_exit_keep = true;
         else return std::string("must be remove or keep");
         return std::string();
       }, true},
      {"log-level", "LEVEL", "debug, info (default), warn or error",
       [](Config* c, const std::string& v) {
         if (v != "debug" && v != "info" && v != "warn" && v != "error")
           return std::string("must be debug, info, warn or error");
         c->log_level = v;
         return std::string();
       }, true},
      {"access-log", "off|text|json", "one line per request, as text or JSON (default off)",
       [](Config* c, const std::string& v) {
         if (v == "off") c->access_log = AccessLogMode::off;
         else if (v == "text") c->access_log = AccessLogMode::text;
         else if (v == "json") c->access_log = AccessLogMode::json;
         else return std::string("must be off, text or json");
         return std::string();
       }, true},
      {"access-log-file", "PATH", "where the access log goes (default: stderr); reopened on SIGHUP",
       STR(access_log_file), true},
      {"config", "FILE", "read options from FILE, one 'option = value' a line (flags and variables win)",
       STR(config_file)},
  };
  return opts;
}

std::string env_name(const char* flag) {
  std::string e = "RINGLB_";
  for (const char* p = flag; *p; p++) e.push_back(*p == '-' ? '_' : static_cast<char>(toupper(*p)));
  return e;
}

const Option* find_option(const std::string& name) {
  for (const Option& o : options())
    if (name == o.name) return &o;
  return nullptr;
}

// Where a value comes from, in increasing precedence.
enum class Source : uint8_t { file, env, flag };

// The options' values from all sources, applied in order of precedence (config_load).
struct Loader {
  Config* cfg;
  ConfigGiven* given;
  std::string* err;
  int backend_source = -1;  // the source the backend list came from: a higher one replaces it
  int replica_env_source = -1;  // the same for the replica-env list
};

// Sets option o to value from source src; where names it for an error ("--hb-interval",
// "RINGLB_HB_INTERVAL", "/etc/ringlb.conf:3: hb-interval"). Returns false with *err set.
bool apply(Loader* l, const Option& o, const std::string& value, Source src, const std::string& where) {
  bool backend = strcmp(o.name, "backend") == 0;
  bool replica_env = strcmp(o.name, "replica-env") == 0;
  int* list_source = backend ? &l->backend_source : replica_env ? &l->replica_env_source : nullptr;
  if (list_source != nullptr && *list_source != static_cast<int>(src)) {
    // A higher source replaces the list of a lower one.
    if (backend) l->cfg->backends.clear();
    else l->cfg->replica_env.clear();
    l->given->erase(o.name);
    *list_source = static_cast<int>(src);
  }
  // RINGLB_REPLICA_ENV is a list: K=V,K=V (a value with a comma needs the flag or the file).
  std::vector<std::string> values{value};
  if (replica_env && src == Source::env) {
    values.clear();
    for (size_t start = 0;;) {
      size_t comma = value.find(',', start);
      values.push_back(value.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  for (const std::string& v : values) {
    std::string why = o.set(l->cfg, v);
    if (!why.empty()) {
      *l->err = where + " '" + v + "' " + why;
      return false;
    }
  }
  std::string& text = (*l->given)[o.name];
  text = list_source != nullptr && !text.empty() ? text + "," + value : value;
  return true;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

// A line of the file as it may be quoted in an error: at most 80 bytes, control bytes as '?'.
std::string printable(const std::string& s) {
  std::string out = s.substr(0, 80);
  for (char& ch : out)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
  return s.size() > 80 ? out + "..." : out;
}

constexpr size_t kConfigFileMax = 1 << 20;

// Applies the file at path: one `option = value` a line (the long option name, with or without
// its --), blank lines and lines starting with # ignored, a # after a space ending the value (a
// comment), a value optionally in double quotes (kept as written inside them, # included).
// Returns false with *err naming the file and the line.
bool load_file(Loader* l, const std::string& path) {
  FILE* f = fopen(path.c_str(), "re");
  if (f == nullptr) {
    *l->err = "cannot read the config file '" + path + "': " + strerror(errno);
    return false;
  }
  std::string text;
  char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0 && text.size() <= kConfigFileMax) text.append(buf, n);
  bool read_error = ferror(f) != 0;
  int read_errno = errno;
  fclose(f);
  if (read_error) {
    *l->err = "cannot read the config file '" + path + "': " + strerror(read_errno);
    return false;
  }
  if (text.size() > kConfigFileMax) {
    *l->err = "the config file '" + path + "' is larger than 1 MiB";
    return false;
  }
  size_t at = 0;
  for (int line_no = 1; at < text.size(); line_no++) {
    size_t nl = text.find('\n', at);
    std::string raw = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? text.size() : nl + 1;
    std::string line = trim(raw);
    if (line.empty() || line[0] == '#') continue;
    std::string where = path + ":" + std::to_string(line_no) + ": ";
    size_t eq = line.find('=');
    if (eq == std::string::npos) {
      *l->err = where + "expected 'option = value', got '" + printable(line) + "'";
      return false;
    }
    std::string name = trim(line.substr(0, eq));
    std::string value = trim(line.substr(eq + 1));
    if (name.rfind("--", 0) == 0) name = name.substr(2);
    if (!value.empty() && value.front() == '"') {
      size_t close = value.find('"', 1);
      std::string rest = close == std::string::npos ? "" : trim(value.substr(close + 1));
      if (close == std::string::npos || (!rest.empty() && rest[0] != '#')) {
        *l->err = where + name + ": a quoted value must end with its quote (then only a # comment)";
        return false;
      }
      value = value.substr(1, close - 1);
    } else if (size_t hash = value.find_first_of("#"); hash != std::string::npos) {
      // A comment after the value: a # that follows a space or tab (abc#def is a value).
      for (size_t i = hash; i != std::string::npos; i = value.find('#', i + 1))
        if (i > 0 && (value[i - 1] == ' ' || value[i - 1] == '\t')) {
          value = trim(value.substr(0, i));
          break;
        }
    }
    const Option* o = find_option(name);
    if (o == nullptr) {
      *l->err = where + "unknown option '" + printable(name) + "' (see --help)";
      return false;
    }
    if (strcmp(o->name, "config") == 0) {
      *l->err = where + "config cannot name another file from inside the config file";
      return false;
    }
    if (!apply(l, *o, value, Source::file, where + name)) return false;
  }
  return true;
}

// The cross-checks over the loaded options. Returns false with *err set.
bool cross_check(Config* cfg, std::string* err) {
  if (cfg->ring.mode == RingMode::slots && !cfg->hash_set) cfg->ring.hash = HashFn::assignment;
  if (cfg->provisioner == ProvKind::static_list && cfg->backends.empty()) {
    *err = "--provisioner static needs at least one --backend HOST:PORT";
    return false;
  }
  std::vector<std::string> sorted = cfg->backends;  // one member per address: a second is refused
  std::sort(sorted.begin(), sorted.end());
  auto twice = std::adjacent_find(sorted.begin(), sorted.end());
  if (twice != sorted.end()) {
    *err = "--backend " + *twice + " is given twice";
    return false;
  }
  if (cfg->ring.mode == RingMode::slots && !cfg->max_replicas_set && cfg->ring.slots > 0) {
    uint32_t k = cfg->ring.vnodes;
    if (k == 0)
      for (uint32_t m = cfg->ring.slots; m > 1; m >>= 1) k++;
    if (k > 0 && cfg->max_replicas > cfg->ring.slots / k) cfg->max_replicas = cfg->ring.slots / k;
  }
  if (cfg->on_exit_keep && cfg->provisioner == ProvKind::process) {
    // Process replicas end with their parent (--die-with-parent): nothing could adopt them.
    *err = "--on-exit keep needs --provisioner docker or swarm (process replicas end with the LB)";
    return false;
  }
  if (cfg->provisioner == ProvKind::static_list && cfg->backends.size() > cfg->max_replicas)
    cfg->max_replicas = static_cast<uint32_t>(cfg->backends.size());
  if (cfg->provisioner != ProvKind::static_list && cfg->replicas > cfg->max_replicas) {
    *err = "--replicas " + std::to_string(cfg->replicas) + " is above --max-replicas " +
           std::to_string(cfg->max_replicas);
    return false;
  }
  // ketama's default K: 8000 points per replica (the most even ring, issue 16), but no more than
  // 2^20 points over --max-replicas replicas, at least 160 (nginx's K): a pool of 2000 static
  // backends would otherwise build a ring of 16 million points (400 MB and seconds on the control
  // loop at every change). K is fixed for the process's life, so keys still move only with the
  // replica added or removed.
  if (cfg->ring.mode == RingMode::ketama && cfg->ring.vnodes == 0) {
    uint32_t k = (1u << 20) / std::max<uint32_t>(cfg->max_replicas, 1);
    cfg->ring.vnodes = std::max<uint32_t>(160, std::min<uint32_t>(8000, k));
  }
  // The ring must hold --max-replicas members of weight 1 (ring_fits: the build's own size checks,
  // without building a ring of that size; /add checks weights against it again).
  std::string why;
  if (!ring_fits(cfg->ring, cfg->max_replicas, cfg->max_replicas, &why)) {
    *err = "the ring cannot hold --max-replicas " + std::to_string(cfg->max_replicas) + ": " + why;
    return false;
  }
  return true;
}

// The options config_reload copies into the running configuration: those marked live in the
// table (config_test checks that each live option's value follows the fresh configuration).
void copy_live(Config* to, const Config& from) {
  to->admin_token = from.admin_token;
  to->max_replicas = from.max_replicas;
  to->max_replicas_set = from.max_replicas_set;
  to->replica_image = from.replica_image;
  to->replica_env = from.replica_env;
  to->replica_cmd = from.replica_cmd;
  to->replica_nano_cpus = from.replica_nano_cpus;
  to->replica_memory = from.replica_memory;
  to->health_path = from.health_path;
  to->hash_key = from.hash_key;
  to->hash_key_name = from.hash_key_name;
  to->retries = from.retries;
  to->balance_factor = from.balance_factor;
  to->slow_start_ms = from.slow_start_ms;
  to->assignment_404 = from.assignment_404;
  to->hb_interval_ms = from.hb_interval_ms;
  to->hb_timeout_ms = from.hb_timeout_ms;
  to->fall = from.fall;
  to->rise = from.rise;
  to->strikes = from.strikes;
  to->heal = from.heal;
  to->heal_name = from.heal_name;
  to->heal_backoff_max_ms = from.heal_backoff_max_ms;
  to->start_timeout_ms = from.start_timeout_ms;
  to->connect_timeout_ms = from.connect_timeout_ms;
  to->upstream_timeout_ms = from.upstream_timeout_ms;
  to->header_timeout_ms = from.header_timeout_ms;
  to->idle_timeout_ms = from.idle_timeout_ms;
  to->drain_timeout_ms = from.drain_timeout_ms;
  to->admin_body_limit = from.admin_body_limit;
  to->body_timeout_ms = from.body_timeout_ms;
  to->tunnel_timeout_ms = from.tunnel_timeout_ms;
  to->retry_on = from.retry_on;
  to->pool_idle_max = from.pool_idle_max;
  to->on_exit_keep = from.on_exit_keep;
  to->log_level = from.log_level;
  to->access_log = from.access_log;
  to->access_log_file = from.access_log_file;
}

// An option's given text as a log line shows it: quoted, "(default)" when not given, and never
// the admin token itself.
std::string shown(const std::string& name, const ConfigGiven& given) {
  auto it = given.find(name);
  if (it == given.end()) return "(default)";
  if (name == "admin-token") return it->second.empty() ? "(none)" : "(a token)";
  return "'" + it->second + "'";
}

}  // namespace

void config_print_help() {
  printf("usage: ringlb [OPTION]...\n"
         "A consistent-hashing HTTP load balancer that manages its replicas.\n"
         "Every option can also be set as an environment variable RINGLB_<NAME>, or as a line\n"
         "'name = value' of the --config file; a flag wins over the variable, which wins over the file.\n"
         "  --version                          print the version and the libraries' versions\n"
         "       ringlb --check URL   (GET http://IPV4:PORT/PATH; exit 0 on a 2xx: container healthchecks)\n\n");
  for (const Option& o : options()) {
    std::string left = std::string("--") + o.name + (o.arg ? std::string(" ") + o.arg : "");
    printf("  %-34s %s%s\n  %-34s [%s]\n", left.c_str(), o.help,
           o.live ? "" : strcmp(o.name, "config") == 0 ? "" : " (restart)", "",
           env_name(o.name).c_str());
  }
}

int config_load(const ConfigSources& src, Config* cfg, ConfigGiven* given, std::string* err) {
  ConfigGiven local;
  Loader l{cfg, given ? given : &local, err};
  l.given->clear();
  // The flags are checked first (an unknown one is a usage error whatever the file says), and
  // --config among them names the file.
  struct Flag {
    const Option* opt;
    std::string name, value;
  };
  std::vector<Flag> flags;
  for (size_t i = 0; i < src.args.size(); i++) {
    std::string a = src.args[i];
    if (a == "--help" || a == "-h") return CONFIG_HELP;
    if (a == "--version") return CONFIG_VERSION;
    std::string value;
    bool has_value = false;
    if (size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    const Option* opt = a.rfind("--", 0) == 0 ? find_option(a.substr(2)) : nullptr;
    if (opt == nullptr) {
      *err = "unknown option '" + a + "' (see --help)";
      return CONFIG_INVALID;
    }
    if (!has_value) {
      if (i + 1 >= src.args.size()) {
        *err = a + " needs a value (" + opt->arg + ")";
        return CONFIG_INVALID;
      }
      value = src.args[++i];
    }
    flags.push_back({opt, a, value});
  }
  std::string file;
  for (const auto& [name, value] : src.env)
    if (name == "RINGLB_CONFIG") file = value;
  for (const Flag& f : flags)
    if (strcmp(f.opt->name, "config") == 0) file = f.value;
  if (!file.empty() && !load_file(&l, file)) return CONFIG_INVALID;
  // The environment in table order (as before: RINGLB_BACKEND's list, then the flags').
  for (const Option& o : options()) {
    std::string name = env_name(o.name);
    for (const auto& [n, v] : src.env)
      if (n == name && !apply(&l, o, v, Source::env, name)) return CONFIG_INVALID;
  }
  for (const Flag& f : flags)
    if (!apply(&l, *f.opt, f.value, Source::flag, f.name)) return CONFIG_INVALID;
  cfg->config_file = file;
  return cross_check(cfg, err) ? 0 : CONFIG_INVALID;
}

int config_parse(int argc, char** argv, Config* cfg, ConfigSources* src, ConfigGiven* given) {
  ConfigSources local;
  if (src == nullptr) src = &local;
  src->args.assign(argv + 1, argv + argc);
  src->env.clear();
  for (const Option& o : options()) {
    std::string name = env_name(o.name);
    if (const char* v = getenv(name.c_str())) src->env.emplace_back(name, v);
  }
  std::string err;
  int rc = config_load(*src, cfg, given, &err);
  if (rc == CONFIG_HELP) config_print_help();
  if (rc == CONFIG_INVALID) fprintf(stderr, "ringlb: %s\n", err.c_str());
  return rc;
}

bool config_reload(Config* running, ConfigGiven* running_given, const Config& fresh,
                   const ConfigGiven& fresh_given, std::vector<std::string>* changed,
                   std::vector<std::string>* ignored, std::string* err) {
  Config next = *running;
  copy_live(&next, fresh);
  // The live options must fit what stays: --max-replicas against the running ring.
  std::string why;
  if (!ring_fits(next.ring, next.max_replicas, next.max_replicas, &why)) {
    *err = "the running ring cannot hold --max-replicas " + std::to_string(next.max_replicas) + ": " + why;
    return false;
  }
  ConfigGiven next_given = *running_given;
  for (const Option& o : options()) {
    auto was = running_given->find(o.name);
    auto now = fresh_given.find(o.name);
    bool same = (was == running_given->end() && now == fresh_given.end()) ||
                (was != running_given->end() && now != fresh_given.end() && was->second == now->second);
    if (same) continue;
    if (o.live) {
      changed->push_back(std::string(o.name) + " " + shown(o.name, *running_given) + " -> " +
                         shown(o.name, fresh_given));
      if (now == fresh_given.end()) next_given.erase(o.name);
      else next_given[o.name] = now->second;
    } else {
      ignored->push_back(std::string(o.name) + " needs a restart, left as " + shown(o.name, *running_given));
    }
  }
  *running = std::move(next);
  *running_given = std::move(next_given);
  return true;
}

bool config_option_live(const std::string& name) {
  const Option* o = find_option(name);
  return o != nullptr && o->live;
}

std::vector<std::string> config_option_names() {
  std::vector<std::string> names;
  for (const Option& o : options()) names.push_back(o.name);
  return names;
}

// Descriptors that are not client connections: 64 for the process itself (stdio, epoll, the loop's
// signal and async pipes, listeners, the log, the provisioner's pipes and Docker API sockets) plus
// one heartbeat per replica the pool may reach. Of the rest, half go to clients and half to their
// upstream connections (one each while an exchange runs), so a full house of clients still leaves
// every heartbeat and upstream connect its descriptor. Idle pooled upstream connections are not
// reserved for: under pressure they yield (a connect that finds no descriptor is a local error,
// answered 503, and blames no replica).
uint32_t config_default_max_conns(const Config& cfg, uint64_t fd_limit) {
  uint64_t reserve = 64 + cfg.max_replicas;
  if (cfg.provisioner == ProvKind::static_list && cfg.backends.size() > cfg.max_replicas)
    reserve = 64 + cfg.backends.size();
  uint64_t n = fd_limit > reserve ? (fd_limit - reserve) / 2 : 1;
  if (n < 1) n = 1;
  if (n > 100000000) n = 100000000;
  return static_cast<uint32_t>(n);
}

uint32_t config_default_workers() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return static_cast<uint32_t>(std::min(64, std::max(1, n)));
}
