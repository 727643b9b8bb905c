// admin_json: the body of /add and /rm, {"n": <int>, "hostnames": [<str>, ...]}, parsed and checked
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
};

// Why a body was refused: the HTTP status to answer (4xx) and one sentence for the client.
struct AdminJsonError {
  int status = 0;
  std::string text;
};

// Parses body (any bytes, not NUL-terminated). Returns true and fills *out, or false and fills *err;
// the other output is left in an unspecified but valid state. Refuses invalid JSON (with its
// position), a non-object, a missing or non-positive or non-integer n, hostnames that is not a list
// of strings, duplicate keys and unknown fields.
bool admin_json_parse(const std::string& body, AdminBody* out, AdminJsonError* err);

// Checks names for /add: each a valid replica name (registry_valid_name's rule,
// [A-Za-z0-9][A-Za-z0-9_.-]{0,62}) and none named twice. Returns true, or false with *err filled.
bool admin_json_check_names(const std::vector<std::string>& names, AdminJsonError* err);
