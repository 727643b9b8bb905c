// engine_pool: what the docker and the swarm provisioner share. Both keep a pool of replicas in a
// Docker engine (containers or services labelled ringlb.pool=<pool>) through one Engine API client
// (lb/provision/docker_api.h), and both follow the same life: calls in flight are counted, ids the
// provisioner removes itself are kept "quiet" (their deaths are not failures), the pool is listed
// by label, replicas on the host network are probed on 127.0.0.1 until they listen, an event
// stream that ends is reopened with a backoff, and close() ends the timers and the streams at
// once and the client last, once no call of the provisioner is left.
//
// Each provisioner embeds one EnginePool by value (ProvDocker::eng, ProvSwarm::eng) and one
// EngineProbe per start; what differs (containers or services, the ring id claim, ports) stays in
// docker*.cc and swarm*.cc. Internal to lb/provision. Everything here runs on the loop thread.
#pragma once

#include <jansson.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <string>

#include "lb/provision/docker_api.h"
#include "lb/provision/provisioner.h"

// ---- names, ids, time ----

// Docker's rule for names ([a-zA-Z0-9][a-zA-Z0-9_.-]+) within DESIGN.md's 63 characters (a service
// name is also a DNS label on an overlay network).
bool engine_valid_name(const std::string& n);
// The engine's 12-character short form of a container or service id, for messages.
std::string engine_short_id(const std::string& id);
// Milliseconds since t (a uv_hrtime() value).
double engine_ms_since(uint64_t t);

// ---- configuration ----

// set_template (a reload): what new replicas are made from, into either provisioner's
// configuration (ProvDockerConfig, ProvSwarmConfig); replicas running already keep theirs.
template <typename Config>
void engine_template_apply(Config* cfg, const ReplicaTemplate& t) {
  cfg->image = t.image;
  cfg->env = t.env;
  cfg->cmd = t.cmd;
  cfg->nano_cpus = t.nano_cpus;
  cfg->memory = t.memory;
}

// Checks what both provisioners take alike: an image, a pool name of 1 to 63 of A-Z a-z 0-9 _ . -,
// a network (network_hint completes "the <kind> provisioner needs a network: ..."), and on the host
// network a port range port_min..port_max with 0 < port_min <= port_max. Returns false with *err
// set to one sentence for the first that is wrong; kind is "docker" or "swarm".
bool engine_config_check(const char* kind, const std::string& image, const std::string& pool,
                         const std::string& network, const char* network_hint, uint16_t port_min,
                         uint16_t port_max, std::string* err);

// ---- engine replies ----

// A failed reply as (negative errno, one sentence); what says what was tried ("cannot create
// replica server1"). No answer: -EIO (or -ECANCELED when the client closed) and the client's
// reason. An answer: the sentence quotes the engine; 404 -> -ENOENT (with how to build a missing
// image), 400 -> -EINVAL, 409 -> -EEXIST, anything else -> -EIO (a 503 "not a swarm manager" says
// how to make one).
int engine_reply_failure(const DockerReply& r, const std::string& what, std::string* err);
// A DELETE of a container or service worked, or what it named was gone already (200, 204, 404).
bool engine_removed_ok(const DockerReply& r);
// The JSON array of a list reply (the caller owns it: json_decref), or nullptr with *st (-EIO, or
// -ECANCELED when the client closed) and *err (from engine_reply_failure with what) when the engine
// did not answer 200 with an array.
json_t* engine_reply_array(const DockerReply& r, const std::string& what, int* st,
                           std::string* err);
// The id of what a create made (key "Id" for a container, "ID" for a service), from the engine's
// 201 answer; "" when the answer has none.
std::string engine_reply_id(const DockerReply& r, const char* key);
// The filters JSON f (consumed) as an escaped query value (?filters=...).
std::string engine_filter_query(json_t* f);
// The escaped filters query value {"label":[label]} (and label2 when not empty): the pool's
// labelled objects, for a list or an event stream's filters.
std::string engine_label_filter(const std::string& label, const std::string& label2 = "");

// ---- ports on the host network ----

// Whether 127.0.0.1:port can be bound now (nothing listens on it, on 127.0.0.1 or on any address).
bool engine_port_bindable(uint16_t port);

// ---- readiness probe: one connection attempt to 127.0.0.1:port ----

// Embedded by value in a start's state (the owner recovers itself with container_of); one attempt
// at a time.
struct EngineProbe {
  uv_tcp_t tcp;
  uv_connect_t req;
  bool connecting = false;  // the attempt's tcp handle is open
  bool connected = false;   // the outcome of the last attempt
  void (*on_done)(EngineProbe* pr) = nullptr;
};

// Connects once to 127.0.0.1:port. on_done(pr) runs later on the loop, exactly once, after the
// attempt's tcp handle is closed (never inside this call, also when the connect fails at once),
// with pr->connected true when the replica accepted. The owner must not free pr before then.
void engine_probe_attempt(EngineProbe* pr, uv_loop_t* loop, uint16_t port,
                          void (*on_done)(EngineProbe* pr));

// ---- the provisioner's life: calls in flight, quiet ids, timers, close ----

struct EnginePool {
  uv_loop_t* loop = nullptr;
  DockerApi* api = nullptr;  // nullptr once closed
  const char* kind = "";     // "docker" or "swarm", for the log
  // Ids (containers, services) this provisioner stops or removes itself: their deaths are its own,
  // never reported. The last kQuietMax are remembered.
  std::set<std::string> quiet;
  std::deque<std::string> quiet_order;
  // Event streams: reopened by events_retry after one ended, backing off from 1 s to 30 s; any
  // event resets the backoff (events_ok). The provisioner sets events_retry.data and resync.data
  // to itself; resync is its periodic (or debounced) re-list of the pool.
  uv_timer_t events_retry;
  int events_retry_ms = 1000;
  uv_timer_t resync;
  // Calls of the provisioner (start, stop, list, ...) whose callback has not run, and other
  // holders of the client (docker: starts whose probe has handles open): close waits for both.
  int ops = 0;
  int busy = 0;
  bool closing = false;
  bool api_closing = false;
  int close_pending = 0;
  std::function<void()> close_cb;
};

// Sets up e on loop with the open client api, and initialises its two timers (their data is the
// caller's to set).
void engine_pool_init(EnginePool* e, uv_loop_t* loop, DockerApi* api, const char* kind);
void engine_quiet_add(EnginePool* e, const std::string& id);
bool engine_quiet_has(const EnginePool* e, const std::string& id);
// An event arrived: the stream works, the next reconnect waits 1 s again.
void engine_events_ok(EnginePool* e);
// The stream `what` ("events stream") ended with r: logs why and, unless closing or a reconnect
// is already due, starts events_retry with on_retry after the current backoff, then doubles it.
void engine_events_retry(EnginePool* e, const char* what, const DockerReply& r,
                         uv_timer_cb on_retry);
// close(): marks e closing and closes both timers; cb runs once they and the client are closed.
// The provisioner then closes its event streams, ends its waiting starts, and calls
// engine_maybe_close_api, which closes the client once no call is in flight (ops == 0, busy == 0).
// Returns false (and does nothing) when e was closing already.
bool engine_pool_close(EnginePool* e, std::function<void()> cb);
// Closes the client when e is closing and nothing holds it any more; call after every ops-- and
// busy--, and after close. The provisioner may be deleted once close's cb has run.
void engine_maybe_close_api(EnginePool* e);
