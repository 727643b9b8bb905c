// routing: where a request goes. The routing key of a request (--hash-key), and the pick: the
// replica that owns the key's ring position in the worker's installed snapshot, walking clockwise
// past members that may not take requests, those this exchange already tried, (with --slow-start)
// members still ramping up that do not take this position yet, and (with --balance-factor) those
// over their share of the load.
//
// Slow start: for --slow-start MS after a member became healthy (SnapMember::usable_since_ms), it
// takes a position only when a second hash of the position, mapped to [0, 1), is below
// ramp = elapsed / MS; other positions walk on clockwise as if it were not there, to the replica
// that served them before it came. The ramp only grows, so a position that moved to the new member
// stays there. Every worker computes the same from the same snapshot and the monotonic clock: no
// shared state, no republication while a ramp runs.
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
  std::vector<uint8_t> scratch_tried, scratch_ramped, scratch_capped;
  uint64_t newest_since_ms = 0;  // the latest SnapMember::usable_since_ms (0: no member ramps)
  bool none_usable = true;       // the snapshot's skip marks every member (or it has none)
};

// The routing key of request h from the client at peer_ip. When the request carries no key, a fresh
// 6-digit request id (the assignment's Rid) is drawn from rng into rid_buf (7 bytes) and *generated
// is set: the caller sends it upstream as X-Request-Id. The returned view points into h, peer_ip or
// rid_buf.
std::string_view routing_key(const Config* cfg, const HttpHead& h, const std::string& peer_ip,
                             std::mt19937_64* rng, char* rid_buf, bool* generated);

// The snapshot s was installed: the scratch buffers follow its size.
void routing_install(Routing* rt, const Snapshot& s);

// The other workers' in-flight counts from a ToWorker::load indexed by the ring of snapshot gen
// (the control plane's sums over every other worker's last report; this worker's own count is
// exact and added at pick). A load for another generation than the installed one is dropped (its
// indexes may mean other members); the next one follows within a report interval.
void routing_apply_load(Pools* ps, const Snapshot& s, uint64_t gen, const std::vector<uint32_t>& load);

// Picks the pool for ring position pos in snapshot s, walking past members that are not usable and
// those whose ring id is in tried, and (cfg->slow_start_ms) ramping members that do not take pos
// yet. With cfg->balance_factor c > 0 (HAProxy's hash-balance-factor) a member is walked past too
// when it has reached its bound, by either count:
// - every worker's: the other workers' in-flight as last reported plus this worker's now, against
//   ceil(c x (total + 1) x its weight / the usable members' weights), as HAProxy;
// - this worker's own: its exchanges on the member against ceil(c x (its total + 1) x its weight /
//   the usable members' weights).
//   That one is exact, and the workers' bounds add up to the global one (plus at most one per
//   worker), so the bound holds however stale the other workers' counts are.
// Fallbacks, in order: without the load bound, without the ramp. Returns nullptr when no member is
// usable.
Pool* routing_pick(Routing* rt, const Snapshot& s, const Pools& ps, const Config* cfg, uint64_t pos,
                   const std::vector<uint32_t>& tried);

// The fraction of positions, [0, 1), below which a member ramping for --slow-start takes pos: a
// 64-bit mix of pos, independent of the ring's own hash of the key. Exposed for tests.
double routing_ramp_point(uint64_t pos);
