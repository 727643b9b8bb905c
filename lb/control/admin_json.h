// admin_json: the body of /add and /rm, {"n": <int>, "hostnames": [<str>, ...]} and for /add an
// optional "weight": <int> (ringlb's extension; the assignment's form is unchanged), parsed and checked
// without a connection, a proxy or any I/O, so it is unit-testable and fuzzable on its own
// (test/fuzz/fuzz_admin.cc). admin.cc turns an error into the client's answer.
#pragma once

#include <string>
#include <vector>

// What a valid body says: n > 0 and the names given (possibly none, possibly more than n: the caller
// checks that against the route's own rule).
struct AdminBody {
  long long n = 0;
  std::vector<std::string> names;
  // The new replicas' ring weight, 1..kRingMaxWeight (ring/ring.h); 1 when not given.
  uint32_t weight = 1;
  bool weight_given = false;
};

// Why a body was refused: the HTTP status to answer (4xx) and one sentence for the client.
struct AdminJsonError {
  int status = 0;
  std::string text;
};

// Parses body (any bytes, not NUL-terminated). Returns true and fills *out, or false and fills *err;
// the other output is left in an unspecified but valid state. Refuses invalid JSON (with its
// position), a non-object, a missing or non-positive or non-integer n, hostnames that is not a list
// of strings, a weight that is not a whole number from 1 to kRingMaxWeight, duplicate keys and
// unknown fields. Whether a weight is allowed at all (only /add, not in slots mode) is the caller's.
bool admin_json_parse(const std::string& body, AdminBody* out, AdminJsonError* err);

// Checks names for /add: each a valid replica name (registry_valid_name's rule,
// [A-Za-z0-9][A-Za-z0-9_.-]{0,62}) and none named twice. Returns true, or false with *err filled.
bool admin_json_check_names(const std::vector<std::string>& names, AdminJsonError* err);
