// ringlb-loadgen: the load generator of ringlb's experiments (ASSIGNMENT.md §5) and throughput
// comparisons. It checks its options, sends the bounded load on one libuv loop (run.h), then
// reports (report.h). Traffic goes to 127.0.0.1 only. See options_usage for the command line.
#include <csignal>
#include <cstdio>
#include <string>
#include <sys/resource.h>

#include <uv.h>

#include "bench/loadgen/options.h"
#include "bench/loadgen/report.h"
#include "bench/loadgen/run.h"
#include "bench/loadgen/stats.h"

namespace {

// Raises the open-file limit towards what -c needs; the run reports connect errors if it still
// falls short.
void raise_fd_limit(uint32_t connections) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = static_cast<rlim_t>(connections) + 64;
  if (rl.rlim_cur >= want) return;
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

}  // namespace

int main(int argc, char** argv) {
  LoadgenOptions o;
  std::string error;
  switch (options_parse(argc, argv, &o, &error)) {
    case OPTIONS_HELP:
      options_usage(stdout);
      return 0;
    case OPTIONS_ERROR:
      fprintf(stderr, "ringlb-loadgen: %s\n", error.c_str());
      fprintf(stderr, "Try 'ringlb-loadgen --help'.\n");
      return 2;
    default:
      break;
  }
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit(o.connections);

  // Stats and the result live outside run_load: the histogram and timeline are sized once there.
  static LgStats stats;
  RunResult result;
  uv_loop_t loop;
  int rc = uv_loop_init(&loop);
  if (rc == 0) rc = run_load(&loop, o, &stats, &result);
  if (rc != 0) {
    fprintf(stderr, "ringlb-loadgen: cannot start the run: %s\n", uv_strerror(rc));
    return 1;
  }
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "ringlb-loadgen: handles left open at the end of the run (a bug)\n");
    return 1;
  }

  bool json_on_stdout = o.json_path == "-";
  report_summary(json_on_stdout ? stderr : stdout, o, stats, result);
  if (!o.json_path.empty() && report_json(o.json_path, o, stats, result, &error) != 0) {
    fprintf(stderr, "ringlb-loadgen: %s\n", error.c_str());
    return 1;
  }
  if (stats.written == 0) {
    fprintf(stderr, "ringlb-loadgen: no request could be sent to %s\n", o.url.c_str());
    return 1;
  }
  return 0;
}
