// config: every option of the daemon, as a long flag, as an environment variable RINGLB_<NAME>
// (--hb-interval = RINGLB_HB_INTERVAL) and as a line `hb-interval = 250` of the --config file. One
// table of options (config.cc) checks every value whatever its source; a flag wins over the
// environment, which wins over the file. Values are checked at start: an invalid one stops the
// daemon with one clear line and exit code 2. On SIGHUP the same sources are read again
// (config_load) and what may change live is applied (config_reload).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ring/ring.h"

struct TlsContext;

enum class HashKey : uint8_t { rid, path, ip, header, cookie };
enum class ProvKind : uint8_t { process, docker, static_list, swarm };
enum class HealName : uint8_t { random, same };

// --retry-on: the upstream failure classes that may be retried on the next replica.
enum RetryOn : uint8_t {
  RETRY_CONNECT_FAILURE = 1,   // the connect was refused, reset or timed out
  RETRY_EMPTY_RESPONSE = 2,    // the replica closed or reset the connection before any response byte
  RETRY_JUNK_RESPONSE = 4,     // the replica's response was malformed
  RETRY_RESPONSE_TIMEOUT = 8,  // no response head within --upstream-timeout
};

// --access-log: one line per request, as text or JSON (lb/access_log.h).
enum class AccessLogMode : uint8_t { off, text, json };

struct Config {
  std::string config_file;  // --config / RINGLB_CONFIG; empty: none
  // Listening and admin.
  std::string listen = "0.0.0.0:5000";
  std::string admin_listen;  // empty: admin routes on the main listener
  std::string admin_token;   // empty: no token required
  // TLS (lb/http/tls.h): PEM certificate chain and key of the main listener, and of --admin-listen
  // (empty: plain TCP). The paths need a restart; the files are read again on every SIGHUP.
  std::string tls_cert, tls_key, admin_tls_cert, admin_tls_key;
  // The contexts loaded from them, by main at start and on SIGHUP (config_load leaves them null):
  // runtime state that travels with the configuration to the workers (ToWorker::config), which
  // serve new connections with it. Shared read-only.
  std::shared_ptr<TlsContext> tls, admin_tls;
  // Data-plane workers: threads with their own loop and SO_REUSEPORT listener. 0 until main
  // resolves auto to the CPUs the process may run on (config_default_workers).
  uint32_t workers = 0;
  // Pool.
  ProvKind provisioner = ProvKind::process;
  uint32_t replicas = 3;
  uint32_t max_replicas = 64;  // slots mode: at most M / K unless given
  bool max_replicas_set = false;
  std::vector<std::string> backends;  // static: HOST:PORT
  std::string replica_bin;            // process: default next to ringlb
  std::string pool = "ringlb";
  // The engine's name of a replica is name_prefix + its name (docker, swarm), so pools side by side
  // on one engine do not collide; /rep, logs and the admin API show the plain name. Empty: the
  // engine name is the replica's name (`docker stop server2`).
  std::string name_prefix;
  // Docker.
  std::string docker_socket;  // empty: $DOCKER_HOST (unix://) or /var/run/docker.sock
  std::string docker_network = "host";
  std::string replica_image = "ringlb-replica:latest";
  uint16_t port_min = 20000, port_max = 20999;
  // The replica spec (docker): extra environment (K=V, after the provisioner's own SERVER_ID, PORT
  // and ADDRESS, which it may not name), the command (the image's CMD: arguments of its entrypoint;
  // empty: the image's), CPU limit in billionths of a CPU and memory limit in bytes (0: none).
  std::vector<std::string> replica_env;
  std::vector<std::string> replica_cmd;
  uint64_t replica_nano_cpus = 0;
  uint64_t replica_memory = 0;
  // Swarm (--provisioner swarm): the replica services' placement constraints ("node.role==worker")
  // and the node labels their tasks spread over ("node.labels.zone"); empty: the engine's default
  // (it spreads tasks over the nodes by their task count).
  std::vector<std::string> swarm_constraints;
  std::vector<std::string> swarm_spread;
  // Health checks (every provisioner): the path of the heartbeat GET.
  std::string health_path = "/heartbeat";
  // Ring and routing.
  RingConfig ring;
  bool hash_set = false;  // --hash given (slots mode defaults to the assignment's functions)
  HashKey hash_key = HashKey::rid;
  std::string hash_key_name;  // header or cookie name
  uint32_t retries = 2;
  double balance_factor = 0;  // 0: off
  uint32_t slow_start_ms = 0;  // 0: off; a replica that became healthy gets its keys over this long
  bool assignment_404 = true; // a replica's 404 becomes the assignment's 400
  // Health and healing.
  uint32_t hb_interval_ms = 500;
  uint32_t hb_timeout_ms = 1000;
  uint32_t fall = 2;
  uint32_t rise = 1;
  uint32_t strikes = 3;  // passive failures in a row that mark a replica dead at once
  bool heal = true;
  HealName heal_name = HealName::random;
  uint32_t start_timeout_ms = 10000;  // a new replica must pass a heartbeat within this
  uint32_t heal_backoff_max_ms = 30000;  // longest wait between replacements that keep dying
  // Timeouts and limits.
  uint32_t connect_timeout_ms = 2000;
  uint32_t upstream_timeout_ms = 30000;
  uint32_t header_timeout_ms = 10000;
  uint32_t idle_timeout_ms = 60000;
  uint32_t drain_timeout_ms = 10000;
  uint32_t admin_body_limit = 64 * 1024;
  uint32_t pool_idle_max = 64;  // idle keep-alive upstream connections kept per replica
  // Idle time allowed between body bytes, both ways: a client that stalls mid-upload gets 408, a
  // replica that stalls mid-response is cut (and so is a client that stops reading its response).
  uint32_t body_timeout_ms = 10000;
  // Idle time allowed in an Upgrade tunnel (WebSocket) after the 101, no byte either way; then both
  // sides are closed.
  uint32_t tunnel_timeout_ms = 3600000;
  // Which upstream failures before a response may go to the next replica (RetryOn bits). Default as
  // HAProxy's: connect failures and empty responses; a response timeout is answered 504 at once.
  uint8_t retry_on = 0x3;
  // Most client connections open at once; past it the listener is not polled (the kernel's backlog
  // holds the rest). 0 until main derives it from the fd limit (config_default_max_conns).
  uint32_t max_conns = 0;
  std::string log_level = "info";
  AccessLogMode access_log = AccessLogMode::off;
  std::string access_log_file;  // empty: stderr
  // Shutdown: remove (default) stops every replica the pool owns; keep leaves the counted Docker
  // replicas running for the next load balancer of the pool to adopt (same names and ring ids).
  bool on_exit_keep = false;
};

// Where the configuration comes from, kept for SIGHUP: the flags and the RINGLB_* variables as they
// were at start (a reload reads the file again, never a changed environment), and the file they name.
struct ConfigSources {
  std::vector<std::string> args;                         // argv[1..]
  std::vector<std::pair<std::string, std::string>> env;  // RINGLB_* at start, in environ order
};

// The text each option was last given, by option name (the flag without --), over every source;
// an option left at its default is absent. A repeated option (backend) is joined with commas.
using ConfigGiven = std::map<std::string, std::string>;

// What config_parse and config_load return besides 0.
enum : int { CONFIG_HELP = 1, CONFIG_INVALID = 2, CONFIG_VERSION = 3 };

// Captures argv and the RINGLB_* environment into *src, then config_load. Returns 0, CONFIG_HELP
// after printing --help, CONFIG_VERSION when --version was asked (the caller prints it), or
// CONFIG_INVALID after printing one line naming the invalid option (and the file and line when it
// came from the file). given may be null.
int config_parse(int argc, char** argv, Config* cfg, ConfigSources* src = nullptr,
                 ConfigGiven* given = nullptr);

// Loads *cfg (which should hold the defaults) from src: the file named by --config (else
// RINGLB_CONFIG), then the environment, then the flags, each one overriding the ones before; then
// the cross-checks. Prints nothing: returns 0, CONFIG_HELP, CONFIG_VERSION, or CONFIG_INVALID
// with *err one line without the "ringlb: " prefix ("/etc/ringlb.conf:12: hb-interval 'x' must
// be ..."). A missing or unreadable file is CONFIG_INVALID naming it.
int config_load(const ConfigSources& src, Config* cfg, ConfigGiven* given, std::string* err);

// Prints --help's text on stdout.
void config_print_help();

// A reload (SIGHUP): running and running_given are what the daemon runs with, fresh and
// fresh_given what config_load just read from the same sources. Copies into *running every option
// that may change live (config_option_live), and leaves the others as they are. For each option
// whose given text changed, appends one line to *changed ("hb-interval 500 -> 200") or, for one
// that needs a restart, to *ignored ("listen needs a restart, left as 0.0.0.0:5000"). Returns
// false with *err (nothing changed) when the result is not a usable configuration.
bool config_reload(Config* running, ConfigGiven* running_given, const Config& fresh,
                   const ConfigGiven& fresh_given, std::vector<std::string>* changed,
                   std::vector<std::string>* ignored, std::string* err);

// True when option name (without --) takes effect on SIGHUP; false for one that needs a restart
// (and for an unknown name).
bool config_option_live(const std::string& name);

// Every option name, in --help order.
std::vector<std::string> config_option_names();

// The --max-conns default for a process whose soft RLIMIT_NOFILE is fd_limit: every client
// connection may hold one upstream connection, so clients get half of what is left after a reserve
// for the rest (see config.cc). At least 1.
uint32_t config_default_max_conns(const Config& cfg, uint64_t fd_limit);

// --workers auto: the CPUs this process may run on (its affinity mask, as nginx's and HAProxy's
// auto), at least 1 and at most 64.
uint32_t config_default_workers();
