// Bandwidth of the CUDA block quantizers (scripts/device/bench.sh runs it on the device machine).
// Per scheme: quantize, dequantize and qdq of bf16 tensors, timed with CUDA events (median of
// batches), as GB/s of compulsory traffic (each input read once, each output written once) and as a
// fraction of the measured device-to-device copy bandwidth (bytes read + written).
// Sizes: 4096x4096 rotating over 8 buffer sets (so the 60 MB L2 does not hold the data) and
// 16384x8192 (256 MiB in).
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "mxmoe/cuda.hpp"
#include "mxmoe/quant.hpp"

using namespace mxmoe;

namespace {

template <class F>
double median_ms(int batches, int per_batch, F&& launch_batch) {
  cudaEvent_t a, b;
  MXMOE_CUDA_CHECK(cudaEventCreate(&a));
  MXMOE_CUDA_CHECK(cudaEventCreate(&b));
  launch_batch();  // warm-up
  launch_batch();
  MXMOE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int i = 0; i < batches; ++i) {
    MXMOE_CUDA_CHECK(cudaEventRecord(a));
    launch_batch();
    MXMOE_CUDA_CHECK(cudaEventRecord(b));
    MXMOE_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    MXMOE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(double(ms) / per_batch);
  }
  MXMOE_CUDA_CHECK(cudaGetLastError());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Set {
  void* x;
  void* y;
  uint8_t* codes;
  uint8_t* scales;
};

}  // namespace

int main() {
  std::string why;
  if (!cuda::cuda_available(&why)) {
    std::printf("no CUDA device (%s): benchmark skipped\n", why.c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  MXMOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);

  // Copy roofline: 2 GiB device-to-device, bytes read + written.
  const size_t cbytes = size_t(2) << 30;
  void *c0, *c1;
  MXMOE_CUDA_CHECK(cudaMalloc(&c0, cbytes));
  MXMOE_CUDA_CHECK(cudaMalloc(&c1, cbytes));
  MXMOE_CUDA_CHECK(cudaMemset(c0, 1, cbytes));
  const double copy_ms = median_ms(10, 1, [&] { MXMOE_CUDA_CHECK(cudaMemcpyAsync(c1, c0, cbytes, cudaMemcpyDeviceToDevice)); });
  const double copy_gbs = 2.0 * double(cbytes) / (copy_ms * 1e6);
  MXMOE_CUDA_CHECK(cudaFree(c0));
  MXMOE_CUDA_CHECK(cudaFree(c1));
  std::printf("copy roofline: %.0f GB/s (2 GiB D2D, read+write)\n\n", copy_gbs);

  std::printf("%-11s %-10s %-12s %10s %9s %8s\n", "scheme", "op", "shape", "time_us", "GB/s", "of_copy");
  const std::pair<int64_t, int64_t> shapes[] = {{4096, 4096}, {16384, 8192}};
  for (const auto& [rows, k] : shapes) {
    const int nsets = rows * k <= 4096 * 4096 ? 8 : 1;
    const int64_t n = rows * k;
    std::vector<Set> sets(static_cast<size_t>(nsets));
    std::vector<uint16_t> host(static_cast<size_t>(n));
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (auto& h : host) h = f32_to_bf16(nd(rng) * ((rng() % 50) == 0 ? 30.f : 1.f));
    for (auto& s : sets) {
      MXMOE_CUDA_CHECK(cudaMalloc(&s.x, size_t(n) * 2));
      MXMOE_CUDA_CHECK(cudaMalloc(&s.y, size_t(n) * 2));
      MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.codes), size_t(n)));
      MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.scales), size_t(n) / 16));
      MXMOE_CUDA_CHECK(cudaMemcpy(s.x, host.data(), size_t(n) * 2, cudaMemcpyHostToDevice));
    }
    const std::string shape = std::to_string(rows) + "x" + std::to_string(k);
    for (int si = 0; si < kNumSchemes; ++si) {
      const Scheme sc = Scheme(si);
      const auto& st = traits(sc);
      QuantParams p{sc, ScaleRule::RCeil, Rounding::RNE, 1.0f};
      const int64_t rb = packed_row_bytes(sc, k), nb = k / st.block;
      const double code_bytes = double(rows) * double(rb + nb);
      for (auto& s : sets) cuda::quantize(s.x, DType::BF16, rows, k, k, p, s.codes, rb, s.scales, nb);
      struct OpDef {
        const char* name;
        double bytes;
        int which;
      } ops[] = {{"quantize", 2.0 * n + code_bytes, 0}, {"dequantize", code_bytes + 2.0 * n, 1},
                 {"qdq", 4.0 * n, 2}};
      for (const auto& op : ops) {
        const double ms = median_ms(15, nsets, [&] {
          for (auto& s : sets) {
            if (op.which == 0) cuda::quantize(s.x, DType::BF16, rows, k, k, p, s.codes, rb, s.scales, nb);
            else if (op.which == 1) cuda::dequantize(s.codes, rb, s.scales, nb, rows, k, p, s.y, DType::BF16, k);
            else cuda::qdq(s.x, DType::BF16, rows, k, k, p, s.y, DType::BF16, k);
          }
        });
        const double gbs = op.bytes / (ms * 1e6);
        std::printf("%-11s %-10s %-12s %10.1f %9.0f %7.0f%%\n", st.name.data(), op.name, shape.c_str(), ms * 1e3, gbs,
                    100.0 * gbs / copy_gbs);
      }
    }
    for (auto& s : sets) {
      MXMOE_CUDA_CHECK(cudaFree(s.x));
      MXMOE_CUDA_CHECK(cudaFree(s.y));
      MXMOE_CUDA_CHECK(cudaFree(s.codes));
      MXMOE_CUDA_CHECK(cudaFree(s.scales));
    }
  }
  return 0;
}
