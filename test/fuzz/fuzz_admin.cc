// fuzz_admin: the /add and /rm body parser (lb/admin_json.h) on arbitrary bytes (libFuzzer).
//
// Oracle: no crash, leak or undefined behaviour (ASan, UBSan); a refusal is a 4xx with a sentence; an
// accepted body has n > 0; writing the accepted {n, hostnames} back as JSON parses to the same
// result (nothing was invented or lost); admin_json_check_names accepts only valid, distinct names.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include <jansson.h>

#include "lb/control/admin_json.h"
#include "lb/control/registry.h"

namespace {

[[noreturn]] void breach(const char* what) {
  fprintf(stderr, "fuzz_admin: ORACLE BREACH: %s\n", what);
  abort();
}

std::string body_of(long long n, const std::vector<std::string>& names) {
  json_t* root = json_object();
  json_object_set_new(root, "n", json_integer(n));
  json_t* list = json_array();
  for (const std::string& name : names) json_array_append_new(list, json_stringn(name.data(), name.size()));
  json_object_set_new(root, "hostnames", list);
  char* s = json_dumps(root, JSON_COMPACT);
  std::string out = s ? s : "";
  free(s);
  json_decref(root);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  std::string body(reinterpret_cast<const char*>(data), len);
  AdminBody parsed;
  AdminJsonError err;
  if (!admin_json_parse(body, &parsed, &err)) {
    if (err.status < 400 || err.status > 499 || err.text.empty()) breach("a refusal without a 4xx and a reason");
    return 0;
  }
  if (parsed.n <= 0) breach("an accepted body with n <= 0");
  std::string again = body_of(parsed.n, parsed.names);
  AdminBody reparsed;
  if (!admin_json_parse(again, &reparsed, &err)) breach("the accepted body, written back, is refused");
  if (reparsed.n != parsed.n || reparsed.names != parsed.names) breach("the accepted body does not round-trip");

  AdminJsonError name_err;
  bool ok = admin_json_check_names(parsed.names, &name_err);
  std::set<std::string> seen;
  bool expect = true;
  for (const std::string& name : parsed.names) expect = expect && registry_valid_name(name) && seen.insert(name).second;
  if (ok != expect) breach("admin_json_check_names disagrees with the name rule");
  if (!ok && (name_err.status != 400 || name_err.text.empty())) breach("a name refusal without 400 and a reason");
  return 0;
}
