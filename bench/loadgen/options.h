// options: the load generator's command line, checked in full before anything is sent.
//
// The target must be http://127.0.0.1[:PORT][/PATH] (localhost is taken as 127.0.0.1): the tool
// sends test traffic to the local machine only, and refuses any other address with a sentence that
// says so. Every run is bounded: by -n, -d or both, and always by the hard time limit.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include <netinet/in.h>

struct LoadgenOptions {
  std::string url;             // as given
  std::string host_header;     // "127.0.0.1:PORT"
  std::string path = "/";      // path and query, as sent
  struct sockaddr_in addr {};  // 127.0.0.1:PORT
  std::string method = "GET";  // GET or POST
  uint64_t body_size = 0;      // POST body bytes
  uint64_t requests = 0;       // -n; 0: bounded by time only
  double duration_s = 0;       // -d; 0: bounded by count only
  uint32_t connections = 10;   // -c
  double rate = 0;             // -r requests per second; 0: no cap
  bool keepalive = true;
  bool rid = false;  // random 6-digit X-Request-Id per request
  double zipf = -1;  // --zipf S: X-Request-Id drawn from Zipf(S) over `keys` fixed ids; < 0 off
  uint32_t keys = 10000;  // --keys: the Zipf key space
  std::string log_path;   // --log: one line per request ("" none)
  uint64_t seed = 0;
  bool seed_given = false;
  uint32_t timeout_ms = 5000;  // per request, connect included
  double time_limit_s = 60;    // hard bound of the whole run
  bool time_limit_given = false;
  uint32_t interval_ms = 1000;  // timeline
  bool quiet = false;
  std::string json_path;  // "" none, "-" stdout
};

enum : int { OPTIONS_OK = 0, OPTIONS_HELP = 1, OPTIONS_ERROR = 2 };

// Parses argv into o. Returns OPTIONS_OK, OPTIONS_HELP (--help: print options_usage, exit 0) or
// OPTIONS_ERROR with one sentence in *error.
int options_parse(int argc, char** argv, LoadgenOptions* o, std::string* error);

void options_usage(FILE* out);

// Parses "http://127.0.0.1:PORT/PATH" into o's target fields. Returns false with *error for a
// malformed URL or a host other than 127.0.0.1 (or localhost).
bool options_parse_url(const std::string& url, LoadgenOptions* o, std::string* error);
