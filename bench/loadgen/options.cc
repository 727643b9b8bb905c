#include "bench/loadgen/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <uv.h>

namespace {

constexpr uint32_t kMaxConnections = 10000;
constexpr double kMaxTimeLimit = 24 * 3600;
constexpr uint64_t kMaxIntervals = 1000000;  // timeline entries, preallocated
constexpr uint64_t kMaxBody = 64 * 1024 * 1024;

bool parse_u64(const char* text, uint64_t min, uint64_t max, uint64_t* out) {
  if (*text < '0' || *text > '9') return false;
  char* end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

bool parse_double(const char* text, double min, double max, double* out) {
  char* end;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || *end || end == text || !std::isfinite(v) || v < min || v > max) return false;
  *out = v;
  return true;
}

std::string quoted(const char* s) {
  return std::string("'") + s + "'";
}

}  // namespace

void options_usage(FILE* out) {
  fprintf(
      out,
      "usage: ringlb-loadgen [options] http://127.0.0.1:PORT/PATH\n"
      "\n"
      "Sends HTTP/1.1 requests to one local target on one libuv thread and reports throughput,\n"
      "latency percentiles, answers per replica (the ID in /home's \"Hello from Server: ID\"),\n"
      "status codes, errors by kind and a timeline. Targets other than 127.0.0.1 are refused.\n"
      "\n"
      "  -n, --requests N          requests to send (at least one of -n and -d)\n"
      "  -d, --duration SECONDS    time to send for (decimal); with -n, whichever ends first\n"
      "  -c, --connections N       concurrent connections (default 10, at most 10000)\n"
      "  -r, --rate R              at most R requests per second, spread evenly (default: no cap);\n"
      "                            a request whose time came while every connection was busy\n"
      "                            counts its latency from that time (no coordinated omission),\n"
      "                            or from when a connection was last free, if later\n"
      "  -m, --method GET|POST     request method (default GET)\n"
      "  -b, --body-size BYTES     POST body size (default 0)\n"
      "      --no-keepalive        one connection per request, HTTP/1.0 without keep-alive (as "
      "ab)\n"
      "      --rid                 send a random 6-digit X-Request-Id header with every request\n"
      "      --seed S              seed of the request ids (default: from the clock)\n"
      "      --zipf S              X-Request-Id drawn from a Zipf(S) distribution (S >= 0, e.g.\n"
      "                            1.1) over --keys fixed 6-digit ids, rank 1 the hottest;\n"
      "                            the same --seed gives the same sequence of keys\n"
      "      --keys K              the Zipf key space (default 10000, at most 900000)\n"
      "      --log FILE            one line per finished request: start_us end_us key status\n"
      "                            replica (microseconds from the run's start; key and replica\n"
      "                            '-' when none; status 0 for an error)\n"
      "  -t, --timeout MS          per-request timeout, connect included (default 5000)\n"
      "  -T, --time-limit SECONDS  hard limit of the whole run (default 60, or duration + 10)\n"
      "  -i, --interval MS         timeline interval (default 1000)\n"
      "  -q, --quiet               no progress line on stderr\n"
      "  -j, --json FILE           write everything as JSON to FILE; '-' for stdout (the summary\n"
      "                            then goes to stderr)\n"
      "  -h, --help                this text\n"
      "\n"
      "Latency runs from the start of a request (its connect, when it needs one) to the last byte\n"
      "of the response. The timeline counts each request in the interval in which it started.\n"
      "Exit status: 0 when the run completed (failed requests are reported, not fatal), 1 when no\n"
      "request could be sent, 2 for a usage error.\n");
}

bool options_parse_url(const std::string& url, LoadgenOptions* o, std::string* error) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    *error = "the target must be an http:// URL (got '" + url + "')";
    return false;
  }
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  std::string host = authority, port_text = "80";
  if (size_t colon = authority.rfind(':'); colon != std::string::npos) {
    host = authority.substr(0, colon);
    port_text = authority.substr(colon + 1);
  }
  if (host != "127.0.0.1" && host != "localhost") {
    *error = "refusing target host '" + host +
             "': ringlb-loadgen sends traffic only to 127.0.0.1 (or localhost)";
    return false;
  }
  uint64_t port;
  if (!parse_u64(port_text.c_str(), 1, 65535, &port)) {
    *error = "the port in '" + url + "' must be a number from 1 to 65535";
    return false;
  }
  for (char ch : path) {
    if (static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f) {
      *error = "the path in '" + url + "' contains a space or control character";
      return false;
    }
  }
  if (size_t hash = path.find('#'); hash != std::string::npos) path.resize(hash);
  o->url = url;
  o->path = path;
  o->host_header = "127.0.0.1:" + std::to_string(port);
  uv_ip4_addr("127.0.0.1", static_cast<int>(port), &o->addr);
  return true;
}

int options_parse(int argc, char** argv, LoadgenOptions* o, std::string* error) {
  std::string url;
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    std::string inline_value;
    bool has_inline = false;
    if (arg.rfind("--", 0) == 0) {
      if (size_t eq = arg.find('='); eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg.resize(eq);
        has_inline = true;
      }
    }
    // The option's value: the text after '=' or the next argument.
    auto value = [&](const char** v) -> bool {
      if (has_inline) {
        *v = argv[i] + (strlen(argv[i]) - inline_value.size());
        return true;
      }
      if (i + 1 >= argc) {
        *error = arg + " needs a value";
        return false;
      }
      *v = argv[++i];
      return true;
    };
    const char* v = nullptr;
    uint64_t u = 0;
    if (arg == "-h" || arg == "--help") {
      return OPTIONS_HELP;
    } else if (arg == "-n" || arg == "--requests") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_u64(v, 1, UINT64_C(1000000000000), &o->requests)) {
        *error = "-n must be a positive number of requests, got " + quoted(v);
        return OPTIONS_ERROR;
      }
    } else if (arg == "-d" || arg == "--duration") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_double(v, 0.001, kMaxTimeLimit, &o->duration_s)) {
        *error = "-d must be a number of seconds from 0.001 to 86400, got " + quoted(v);
        return OPTIONS_ERROR;
      }
    } else if (arg == "-c" || arg == "--connections") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_u64(v, 1, kMaxConnections, &u)) {
        *error = "-c must be a number of connections from 1 to 10000, got " + quoted(v);
        return OPTIONS_ERROR;
      }
      o->connections = static_cast<uint32_t>(u);
    } else if (arg == "-r" || arg == "--rate") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_double(v, 0.001, 1e7, &o->rate)) {
        *error = "--rate must be requests per second above 0 (at most 1e7), got " + quoted(v);
        return OPTIONS_ERROR;
      }
    } else if (arg == "-m" || arg == "--method") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (strcmp(v, "GET") != 0 && strcmp(v, "POST") != 0) {
        *error = "--method must be GET or POST, got " + quoted(v);
        return OPTIONS_ERROR;
      }
      o->method = v;
    } else if (arg == "-b" || arg == "--body-size") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_u64(v, 0, kMaxBody, &o->body_size)) {
        *error = "--body-size must be a number of bytes up to 64 MiB, got " + quoted(v);
        return OPTIONS_ERROR;
      }
    } else if (arg == "--no-keepalive") {
      o->keepalive = false;
    } else if (arg == "--rid") {
      o->rid = true;
    } else if (arg == "--zipf") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_double(v, 0, 10, &o->zipf)) {
        *error = "--zipf must be an exponent from 0 to 10, got " + quoted(v);
        return OPTIONS_ERROR;
      }
    } else if (arg == "--keys") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_u64(v, 1, 900000, &u)) {
        *error = "--keys must be a number of keys from 1 to 900000, got " + quoted(v);
        return OPTIONS_ERROR;
      }
      o->keys = static_cast<uint32_t>(u);
    } else if (arg == "--log") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (*v == '\0') {
        *error = "--log needs a file name";
        return OPTIONS_ERROR;
      }
      o->log_path = v;
    } else if (arg == "--seed") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_u64(v, 0, UINT64_MAX, &o->seed)) {
        *error = "--seed must be a non-negative integer, got " + quoted(v);
        return OPTIONS_ERROR;
      }
      o->seed_given = true;
    } else if (arg == "-t" || arg == "--timeout") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_u64(v, 1, 3600000, &u)) {
        *error = "--timeout must be milliseconds from 1 to 3600000, got " + quoted(v);
        return OPTIONS_ERROR;
      }
      o->timeout_ms = static_cast<uint32_t>(u);
    } else if (arg == "-T" || arg == "--time-limit") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_double(v, 0.001, kMaxTimeLimit, &o->time_limit_s)) {
        *error = "--time-limit must be a number of seconds from 0.001 to 86400, got " + quoted(v);
        return OPTIONS_ERROR;
      }
      o->time_limit_given = true;
    } else if (arg == "-i" || arg == "--interval") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (!parse_u64(v, 1, 3600000, &u)) {
        *error = "--interval must be milliseconds from 1 to 3600000, got " + quoted(v);
        return OPTIONS_ERROR;
      }
      o->interval_ms = static_cast<uint32_t>(u);
    } else if (arg == "-q" || arg == "--quiet") {
      o->quiet = true;
    } else if (arg == "-j" || arg == "--json") {
      if (!value(&v)) return OPTIONS_ERROR;
      if (*v == '\0') {
        *error = "--json needs a file name or '-'";
        return OPTIONS_ERROR;
      }
      o->json_path = v;
    } else if (arg.size() > 1 && arg[0] == '-') {
      *error = "unknown option " + quoted(argv[i]);
      return OPTIONS_ERROR;
    } else if (url.empty()) {
      url = arg;
    } else {
      *error = "one target URL only (got " + quoted(url.c_str()) + " and " + quoted(argv[i]) + ")";
      return OPTIONS_ERROR;
    }
    if (has_inline && v == nullptr) {
      *error = "option " + arg + " takes no value";
      return OPTIONS_ERROR;
    }
  }

  if (url.empty()) {
    *error = "give the target URL, e.g. http://127.0.0.1:5000/home";
    return OPTIONS_ERROR;
  }
  if (!options_parse_url(url, o, error)) return OPTIONS_ERROR;
  if (o->requests == 0 && o->duration_s == 0) {
    *error = "give -n (requests) or -d (seconds) or both, so the run is bounded";
    return OPTIONS_ERROR;
  }
  if (o->zipf >= 0 && o->rid) {
    *error = "--zipf and --rid both choose the X-Request-Id: give one";
    return OPTIONS_ERROR;
  }
  if (o->body_size > 0 && o->method != "POST") {
    *error = "--body-size needs --method POST";
    return OPTIONS_ERROR;
  }
  if (o->time_limit_given) {
    if (o->duration_s > o->time_limit_s) {
      *error = "-d is longer than --time-limit; raise the limit or shorten the run";
      return OPTIONS_ERROR;
    }
  } else if (o->duration_s + 10 > o->time_limit_s) {
    o->time_limit_s = o->duration_s + 10;
  }
  if (std::ceil(o->time_limit_s * 1000 / o->interval_ms) > kMaxIntervals) {
    *error = "--interval is too small for the time limit (at most 1000000 intervals)";
    return OPTIONS_ERROR;
  }
  if (!o->seed_given) o->seed = uv_hrtime() ^ (static_cast<uint64_t>(uv_os_getpid()) << 32);
  return OPTIONS_OK;
}
