// ring_view: where keys go, for people. The answers of GET /route?key=K (the replica a key reaches
// now and the ones failover would try next), GET /ring (every member's arcs and share of the key
// space) and POST /add?dry_run=1 (the share of keys that would move to each new replica).
//
// Everything is computed with the data plane's own functions (ring_position, ring_lookup) over the
// snapshot the workers route by, or for a dry run over a candidate ring built as registry_add
// would build it, so the answers agree with where real requests go. Nothing here changes the
// registry or a snapshot. Runs on the control loop; the answers are complete JSON documents in the
// admin API's envelope {"message": ..., "status": "successful"}.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "lb/config.h"
#include "lb/control/registry.h"
#include "lb/plane.h"

// The routing key of /route: the query parameter key of url, percent-decoded (%XX; '+' is a plus,
// as in a path), checked against what a request can carry as a routing key under cfg->hash_key:
// a header value (rid, header:NAME, cookie:NAME: no control bytes, no leading or trailing
// whitespace; a cookie value has no ';'), a request path (path: starts with '/', visible ASCII,
// no '?' or '#'), or a client address (ip: any non-empty text). In rid mode an empty key is
// refused: a request without a key (or an empty X-Request-Id) gets a fresh random request id, so it
// has no fixed replica. Bytes 0x80-0xFF are kept as they are (a header may carry them; the ring
// hashes bytes, not characters). Returns true with *key set, or false with *err one sentence for a
// 400 answer.
bool ring_view_key(const Config* cfg, std::string_view url, std::string* key, std::string* err);

// The /route answer for key in snapshot s: the ring position; "replica", the member a request with
// that key reaches now (ring_lookup walking past members that are not usable, as routing_pick does
// without --balance-factor), or null when none is usable; "failover", the usable members a failed
// request would try next, in order, at most cfg->retries; "clockwise", every member in the order
// the walk meets them from the key's position, each with its state.
std::string ring_view_route_json(const Config* cfg, const Snapshot& s, std::string_view key);

// The /ring answer for snapshot s: the mode, hash and size of the key space, and for every member
// (by ring id) its state, points (ketama points, slots virtual servers, maglev table entries),
// share of the key space it owns, share it serves now (its own arcs while usable, plus those that
// walk to it from members that are not), and its arcs as [first, last] position pairs (inclusive).
// The arcs are left out ("arcs_omitted" says why) when with_arcs is false or they are more than
// kRingViewMaxArcs over all members, so the answer stays small: a 64-member ketama ring at 160
// points has about 10,000 arcs, some 200 KB.
constexpr size_t kRingViewMaxArcs = 20000;
std::string ring_view_ring_json(const Snapshot& s, bool with_arcs);

// The /add?dry_run=1 answer: builds the ring registry_add would build for new replicas `names`
// (each on the lowest ring id no other member holds, in order) beside reg's ring, and compares the
// owner of every position: the fraction of the key space that moves, to each new replica and
// between the members that were there before (0 for ketama, a little for maglev and slots). The
// registry is untouched. Returns false with *err when the candidate ring cannot be built.
bool ring_view_add_dry_run_json(const Config* cfg, const Registry* reg,
                                const std::vector<std::string>& names, std::string* out,
                                std::string* err);
