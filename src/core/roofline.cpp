#include "mxmoe/roofline.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

namespace mxmoe {
namespace {

using Clock = std::chrono::steady_clock;

__attribute__((target("avx512f"))) double fma_rate_avx512() {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  const int64_t iters = 20'000'000;
  const auto t0 = Clock::now();
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  float sink = 0;
  for (int i = 0; i < 12; ++i) sink += _mm512_reduce_add_ps(acc[i]);
  volatile float keep = sink;  // the chains must not be optimized away
  (void)keep;
  return double(iters) * 12 * 16 * 2 / s;
}

}  // namespace

double measure_copy_bandwidth(int threads) {
  if (threads <= 0) threads = omp_get_max_threads();
  static std::mutex mu;
  static std::map<int, double> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(threads); it != cache.end()) return it->second;
  const size_t n = size_t(256) << 20;
  std::vector<char> a(n, 1), b(n, 0);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int c = 0; c < 64; ++c) std::memcpy(b.data() + c * (n / 64), a.data() + c * (n / 64), n / 64);
    best = std::max(best, 2.0 * double(n) / std::chrono::duration<double>(Clock::now() - t0).count());
  }
  volatile char keep = b[n / 2];
  (void)keep;
  return cache[threads] = best;
}

double measure_fma_peak_per_core() {
  static const double v = __builtin_cpu_supports("avx512f") ? fma_rate_avx512() : 0.0;
  return v;
}

}  // namespace mxmoe
