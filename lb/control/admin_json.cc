#include "lb/control/admin_json.h"

#include <cstring>
#include <jansson.h>
#include <set>

#include "lb/control/registry.h"
#include "ring/ring.h"

namespace {

bool refuse(AdminJsonError* err, int status, std::string text) {
  err->status = status;
  err->text = std::move(text);
  return false;
}

}  // namespace

bool admin_json_parse(const std::string& body, AdminBody* out, AdminJsonError* err) {
  json_error_t jerr;
  json_t* root = json_loadb(body.data(), body.size(), JSON_REJECT_DUPLICATES, &jerr);
  if (root == nullptr) {
    return refuse(err, 400, std::string("body is not valid JSON: ") + jerr.text + " at line " +
                                std::to_string(jerr.line) + ", column " + std::to_string(jerr.column));
  }
  struct Guard { json_t* j; ~Guard() { json_decref(j); } } guard{root};
  if (!json_is_object(root))
    return refuse(err, 400, "body must be a JSON object like {\"n\": 1, \"hostnames\": [\"S1\"]}");
  json_t* jn = json_object_get(root, "n");
  if (jn == nullptr)
    return refuse(err, 400, "\"n\" is missing: give the number of replicas as a positive integer");
  if (!json_is_integer(jn) || json_integer_value(jn) <= 0)
    return refuse(err, 400, "\"n\" must be a positive integer");
  out->n = json_integer_value(jn);
  out->names.clear();
  json_t* jh = json_object_get(root, "hostnames");
  if (jh != nullptr && !json_is_null(jh)) {
    if (!json_is_array(jh)) return refuse(err, 400, "\"hostnames\" must be a list of names");
    size_t i;
    json_t* v;
    json_array_foreach(jh, i, v) {
      if (!json_is_string(v)) return refuse(err, 400, "\"hostnames\" must contain only strings");
      out->names.push_back(json_string_value(v));
    }
  }
  out->weight = 1;
  out->weight_given = false;
  json_t* jw = json_object_get(root, "weight");
  if (jw != nullptr) {
    if (!json_is_integer(jw) || json_integer_value(jw) < 1 ||
        json_integer_value(jw) > static_cast<json_int_t>(kRingMaxWeight)) {
      return refuse(err, 400, "\"weight\" must be a whole number from 1 to " +
                                  std::to_string(kRingMaxWeight) +
                                  " (the replica's share of keys relative to a replica of weight 1)");
    }
    out->weight = static_cast<uint32_t>(json_integer_value(jw));
    out->weight_given = true;
  }
  const char* key;
  json_t* value;
  json_object_foreach(root, key, value) {
    if (strcmp(key, "n") != 0 && strcmp(key, "hostnames") != 0 && strcmp(key, "weight") != 0)
      return refuse(err, 400, std::string("unknown field \"") + key + "\" (expected n, hostnames and weight)");
  }
  return true;
}

bool admin_json_check_names(const std::vector<std::string>& names, AdminJsonError* err) {
  std::set<std::string> seen;
  for (const std::string& name : names) {
    if (!registry_valid_name(name)) {
      return refuse(err, 400, "'" + name + "' is not a valid replica name: use 1 to 63 of [A-Za-z0-9_.-], "
                              "starting with a letter or digit");
    }
    if (!seen.insert(name).second) return refuse(err, 400, "'" + name + "' is named twice");
  }
  return true;
}
