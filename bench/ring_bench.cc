// Ring lookup and build cost per ring for N = 3, 64, 100 and 1000 members (Google Benchmark).
//
//   lookup/<ring>/<N>        ring_lookup of precomputed positions of random keys
//   position+lookup/<ring>/<N>  ring_lookup_key: hashing the key, then the lookup
//   build/<ring>/<N>         ring_build
//
// Keys are random 6-digit request ids, the assignment's keys. slots mode uses the assignment's hash
// and its default M = 512, K = 9 where that fits (N = 3); 64 members and more need K × N <= M, so
// there it uses M = 65536 (K = 16). Rings: ketama (the default, K = 8000; not at N = 1000, whose
// 8 million points take seconds to build), ketama160 (nginx's K) and maglev (table 65537), all
// xxh3.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "ring/ring.h"

namespace {

constexpr size_t kKeys = 1 << 16;  // a power of two: the loop masks its index

RingConfig bench_config(RingMode mode, uint32_t n, uint32_t vnodes) {
  RingConfig config;
  config.mode = mode;
  config.vnodes = vnodes;
  if (mode == RingMode::slots) {
    config.hash = HashFn::assignment;
    if (uint64_t{9} * n > config.slots) config.slots = 65536;
  }
  return config;
}

std::vector<RingMember> bench_members(uint32_t n) {
  std::vector<RingMember> members;
  for (uint32_t id = 1; id <= n; id++) members.push_back(RingMember{id, "s" + std::to_string(id)});
  return members;
}

std::vector<std::string> bench_keys() {
  std::mt19937_64 rng(1);
  std::vector<std::string> keys;
  for (size_t k = 0; k < kKeys; k++) keys.push_back(std::to_string(100000 + rng() % 900000));
  return keys;
}

void bench_lookup(benchmark::State& state, RingMode mode, uint32_t n, uint32_t vnodes) {
  RingPtr r = ring_build(bench_config(mode, n, vnodes), bench_members(n), nullptr);
  std::vector<uint64_t> positions;
  for (const std::string& key : bench_keys()) positions.push_back(ring_position(r.get(), key));
  size_t k = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring_lookup(r.get(), positions[k++ & (kKeys - 1)]));
  }
  state.SetItemsProcessed(state.iterations());
}

void bench_position_lookup(benchmark::State& state, RingMode mode, uint32_t n, uint32_t vnodes) {
  RingPtr r = ring_build(bench_config(mode, n, vnodes), bench_members(n), nullptr);
  std::vector<std::string> keys = bench_keys();
  size_t k = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring_lookup_key(r.get(), keys[k++ & (kKeys - 1)]));
  }
  state.SetItemsProcessed(state.iterations());
}

void bench_build(benchmark::State& state, RingMode mode, uint32_t n, uint32_t vnodes) {
  RingConfig config = bench_config(mode, n, vnodes);
  std::vector<RingMember> members = bench_members(n);
  for (auto _ : state) {
    RingPtr r = ring_build(config, members, nullptr);
    benchmark::DoNotOptimize(r.get());
  }
}

}  // namespace

int main(int argc, char** argv) {
  struct Case {
    const char* name;
    RingMode mode;
    uint32_t vnodes;
  };
  const Case cases[] = {{"slots", RingMode::slots, 0},
                        {"ketama", RingMode::ketama, 0},
                        {"ketama160", RingMode::ketama, 160},
                        {"maglev", RingMode::maglev, 0}};
  const uint32_t sizes[] = {3, 64, 100, 1000};
  for (const Case& c : cases) {
    for (uint32_t n : sizes) {
      if (c.mode == RingMode::ketama && c.vnodes == 0 && n > 100) continue;
      std::string suffix = std::string(c.name) + "/" + std::to_string(n);
      benchmark::RegisterBenchmark(("lookup/" + suffix).c_str(), bench_lookup, c.mode, n, c.vnodes);
      benchmark::RegisterBenchmark(("position+lookup/" + suffix).c_str(), bench_position_lookup,
                                   c.mode, n, c.vnodes);
      benchmark::RegisterBenchmark(("build/" + suffix).c_str(), bench_build, c.mode, n, c.vnodes)
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
