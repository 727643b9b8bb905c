// Ring lookup and build cost per mode for N = 3, 100 and 1000 members (Google Benchmark).
//
//   lookup/<mode>/<N>        ring_lookup of precomputed positions of random keys
//   position+lookup/<mode>/<N>  ring_lookup_key: hashing the key, then the lookup
//   build/<mode>/<N>         ring_build
//
// Keys are random 6-digit request ids, the assignment's keys. slots mode uses the assignment's hash
// and its default M = 512, K = 9 where that fits (N = 3); 100 and 1000 members need K × N <= M, so
// there it uses M = 65536 (K = 16). ketama (K = 160) and maglev (table 65537) use xxh3.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "ring/ring.h"

namespace {

constexpr size_t kKeys = 1 << 16;  // a power of two: the loop masks its index

RingConfig bench_config(RingMode mode, uint32_t n) {
  RingConfig config;
  config.mode = mode;
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

void bench_lookup(benchmark::State& state, RingMode mode, uint32_t n) {
  RingPtr r = ring_build(bench_config(mode, n), bench_members(n), nullptr);
  std::vector<uint64_t> positions;
  for (const std::string& key : bench_keys()) positions.push_back(ring_position(r.get(), key));
  size_t k = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring_lookup(r.get(), positions[k++ & (kKeys - 1)]));
  }
  state.SetItemsProcessed(state.iterations());
}

void bench_position_lookup(benchmark::State& state, RingMode mode, uint32_t n) {
  RingPtr r = ring_build(bench_config(mode, n), bench_members(n), nullptr);
  std::vector<std::string> keys = bench_keys();
  size_t k = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring_lookup_key(r.get(), keys[k++ & (kKeys - 1)]));
  }
  state.SetItemsProcessed(state.iterations());
}

void bench_build(benchmark::State& state, RingMode mode, uint32_t n) {
  RingConfig config = bench_config(mode, n);
  std::vector<RingMember> members = bench_members(n);
  for (auto _ : state) {
    RingPtr r = ring_build(config, members, nullptr);
    benchmark::DoNotOptimize(r.get());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const RingMode modes[] = {RingMode::slots, RingMode::ketama, RingMode::maglev};
  const uint32_t sizes[] = {3, 100, 1000};
  for (RingMode mode : modes) {
    for (uint32_t n : sizes) {
      std::string suffix = std::string(ring_mode_name(mode)) + "/" + std::to_string(n);
      benchmark::RegisterBenchmark(("lookup/" + suffix).c_str(), bench_lookup, mode, n);
      benchmark::RegisterBenchmark(("position+lookup/" + suffix).c_str(), bench_position_lookup,
                                   mode, n);
      benchmark::RegisterBenchmark(("build/" + suffix).c_str(), bench_build, mode, n)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
