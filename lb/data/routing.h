// routing: where a request goes. The routing key of a request (--hash-key), and the pick: the
// replica that owns the key's ring position in the worker's installed snapshot, walking clockwise
// past members that may not take requests, those this exchange already tried, and (with
// --balance-factor) those over their share of the load.
//
// A ring position depends only on the ring's configuration, never on its membership, so an
// exchange computes it once and every retry picks from whatever snapshot the worker holds then.
// Everything here runs on the worker's thread and reads only the worker's own state.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "lb/config.h"
#include "lb/http/http_head.h"
#include "lb/plane.h"

struct Pool;
struct Pools;

// The pick's scratch buffers, sized with the installed snapshot's ring, so a pick never allocates
// and never writes past a buffer however many members the ring has.
struct Routing {
  std::vector<uint8_t> scratch_tried, scratch_capped;
};

// The routing key of request h from the client at peer_ip. When the request carries no key, a fresh
// 6-digit request id (the assignment's Rid) is drawn from rng into rid_buf (7 bytes) and *generated
// is set: the caller sends it upstream as X-Request-Id. The returned view points into h, peer_ip or
// rid_buf.
std::string_view routing_key(const Config* cfg, const HttpHead& h, const std::string& peer_ip,
                             std::mt19937_64* rng, char* rid_buf, bool* generated);

// The snapshot s was installed: the scratch buffers follow its size.
void routing_install(Routing* rt, const Snapshot& s);

// The other workers' in-flight counts from a ToWorker::load indexed by the ring of snapshot gen:
// for each pool, the sum at the workers' last reports minus what this worker reported then. A load
// for another generation than the installed one is dropped (its indexes may mean other members);
// the next one follows within a report interval.
void routing_apply_load(Pools* ps, const Snapshot& s, uint64_t gen, const std::vector<uint32_t>& load);

// Picks the pool for ring position pos in snapshot s, walking past members that are not usable and
// those whose ring id is in tried. With balance_factor > 0 (HAProxy's hash-balance-factor) a member
// whose in-flight estimate (the other workers' as last reported, plus this worker's now) has reached
// ceil(balance_factor x average) is walked past too, unless every member has. Returns nullptr when
// no member is usable.
Pool* routing_pick(Routing* rt, const Snapshot& s, const Pools& ps, double balance_factor,
                   uint64_t pos, const std::vector<uint32_t>& tried);
