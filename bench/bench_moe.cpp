// One synthetic MoE layer forward on the CPU (`cpu` experts backend) against the roofline:
// Qwen3-30B-A3B (H 2048, I 768, 128 experts, top-8) at T = 1, 8, 64, 512 and gpt-oss-20b at T = 1, 64,
// for w_nvfp4_a_nvfp4, w_mxfp4_a_mxfp4, w_nvfp4_a16 and w_mxfp6_e2m3_a_mxfp6_e2m3 in both emulation
// modes.
// Counters: touched_MB = packed weights + scales of the experts that received a token (what one
// forward must read at least; averaged over 16 rotating inputs, see BM_MoeLayer); GB/s = touched bytes / time; floor_us = touched bytes / this binary's
// measured copy bandwidth (read + write bytes per second, all threads); x_floor = time / floor;
// GFLOP/s counts 2 * T * top_k * 3 * H * I; flop_frac = that over the measured FMA peak (all threads).
// Layers are built once per shape and scheme (a 128-expert layer takes seconds) and cached.
// Thread count: OMP_NUM_THREADS (default: all cores). BM_WeightReadPattern: the fused FP4 kernel's read
// order alone against sequential reads (one thread).
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moe/cpu/simd_kernels.hpp"
#include "mxmoe/moe/layer.hpp"
#include "mxmoe/roofline.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;

namespace {

using Clock = std::chrono::steady_clock;

const MoeLayer& layer(const std::string& shape, const std::string& scheme) {
  static std::map<std::string, std::unique_ptr<MoeLayer>> cache;
  auto& slot = cache[shape + "/" + scheme];
  if (!slot) slot = std::make_unique<MoeLayer>(synthetic_layer(synthetic_shape(shape), parse_moe_scheme(scheme), 1));
  return *slot;
}

void BM_MoeLayer(benchmark::State& st, std::string shape, std::string scheme, Emulation e, int64_t T) {
  const MoeLayer& l = layer(shape, scheme);
  // Rotating inputs route to different experts each iteration, so the touched weights come from
  // DRAM as in a real model (one fixed input would keep a T = 1 working set of 21 MB in the 32 MB L3).
  constexpr int kInputs = 16;
  std::vector<Tensor> xs;
  for (int i = 0; i < kInputs; ++i) xs.push_back(synthetic_tokens(T, l.hidden, uint32_t(7 + i)));
  MoeOptions o;
  o.emulation = e;
  o.backend = Backend::Cpu;
  double bytes = 0;
  for (const Tensor& x : xs) bytes += touched_weight_bytes(l, run_moe(l, x, o).topk_ids) / kInputs;  // also warm-up
  int64_t it = 0;
  const auto t0 = Clock::now();
  for (auto _ : st) {
    MoeResult r = run_moe(l, xs[size_t(it++ % kInputs)], o);
    benchmark::DoNotOptimize(r.out.data.data());
  }
  // Plain (unit-less) counters from our own wall clock: Google Benchmark's rate counters would print
  // fractions as "/s".
  const double sec = std::chrono::duration<double>(Clock::now() - t0).count() / double(std::max<int64_t>(it, 1));
  const double bw = measure_copy_bandwidth();
  const double flops = 2.0 * double(T) * l.router.top_k * 3.0 * double(l.hidden) * double(l.inter);
  st.counters["touched_MB"] = bytes / 1e6;
  st.counters["GB/s"] = bytes / sec / 1e9;
  st.counters["floor_us"] = bytes / bw * 1e6;
  st.counters["bw_GB/s"] = bw / 1e9;
  st.counters["GFLOP/s"] = flops / sec / 1e9;
  const double peak = measure_fma_peak_per_core() * omp_get_max_threads();
  st.counters["flop_frac"] = peak > 0 ? flops / sec / peak : 0.0;
  st.counters["x_floor"] = sec / (bytes / bw);
}

// The fused FP4 kernel alone on one expert's w13 (2I x H = 1536 x 2048, nvfp4, exact mode) with n
// token rows, single thread; the weights (1.8 MB) stay in L2/L3, so this is the kernel's compute rate.
// bf16dot: 1 = the AVX512_BF16 dot-product kernel (activations packed as bf16) instead of the float one;
// 2 = the decoded-panel GEMM (fp4_gemm_panel_bf16) the layer uses from kPanelMinTokens token rows;
// 3 (vllm only) = the bf16 weight-table kernel (fp4_gemv_vllm_table) vllm mode uses below the panel.
void BM_Fp4GemvKernel(benchmark::State& st) {
  const int64_t n = st.range(0);
  const MoeLayer& l = layer("qwen3-30b-a3b", "w_nvfp4_a_nvfp4");
  const ExpertLinear& w = l.w13[0];
  const int64_t N = w.out_features(), K = w.in_features();
  const cpu::Fp4Weight fw{w.packed->codes.ptr<uint8_t>(), w.packed->scales.ptr<uint8_t>(), K, 16, Encoding::UE4M3,
                          st.range(1) ? w.packed->params.global_scale : 0.0f};
  const bool dot16 = st.range(2) != 0, panel = st.range(2) == 2, table = st.range(2) == 3;
  if (dot16 && !cpu::fp4_bf16_dot_active()) return st.SkipWithError("no AVX512_BF16");
  if (table && !st.range(1)) return st.SkipWithError("the table kernel is vllm only");
  cpu::Nvfp4VllmTable tab;
  if (table) cpu::nvfp4_vllm_table(fw.gs, &tab);
  std::vector<float> a(size_t(n * K), 0.5f), ap(size_t(n * cpu::fp4_act_stride(K))), y(size_t(n * N));
  std::vector<uint16_t> ap16(ap.size());
  cpu::fp4_pack_activations(a.data(), n, K, ap.data());
  cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data());
  for (auto _ : st) {
    if (table) {
      cpu::fp4_gemv_vllm_table(fw, tab, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N);
    } else if (panel) {
      if (!cpu::fp4_gemm_panel_bf16(fw, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N))
        return st.SkipWithError("panel kernel declined");
    } else if (dot16) cpu::fp4_gemv_bf16(fw, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N);
    else cpu::fp4_gemv(fw, 0, N, ap.data(), n, 1.0f, nullptr, y.data(), N);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["Gelem/s"] = benchmark::Counter(double(N * K), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(N * K * n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Fp4GemvKernel)
    ->ArgsProduct({{1, 2, 4, 8, 12, 16, 32, 64}, {0, 1}, {0, 1, 2, 3}})
    ->ArgNames({"n", "vllm", "bf16dot"})->Unit(benchmark::kMicrosecond);

// The fused FP4 GEMV's read pattern alone, one thread, 256 MiB: rows of 1 KiB (a Qwen3 w13 row) in groups
// of 4 read chunk by chunk (64 bytes of each row in turn, as rows_kernel16<R = 4>), with a software
// prefetch `prefetch` bytes ahead (0: none), against the same bytes in consumption order (interleave:0)
// and the 4 rows read in runs of 256 / 512 bytes (modes 3, 4).
// What the layer's T = 1 stream can reach on this machine next to the copy bandwidth of the floor.
__attribute__((target("avx512f"))) void BM_WeightReadPattern(benchmark::State& st) {
  if (!__builtin_cpu_supports("avx512f")) return st.SkipWithError("no AVX-512");
  const int64_t mode = st.range(0);
  const bool interleave = mode != 0;
  const int64_t pf = st.range(1);
  constexpr size_t kBytes = size_t(256) << 20, kRow = 1024, kGroup = 4 * kRow;
  static char* buf = [] {
    char* p = static_cast<char*>(std::aligned_alloc(64, kBytes));
    std::memset(p, 1, kBytes);
    return p;
  }();
  for (auto _ : st) {
    __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (size_t g = 0; g < kBytes; g += kGroup)
      for (size_t i = 0; i < kGroup / 64; ++i) {  // the i-th 64-byte load of the group
        // modes 1, 2: 64 bytes of each row in turn; 3, 4: runs of 4 / 8 lines (256 / 512 bytes) of each
        const size_t run = mode == 3 ? 4 : mode == 4 ? 8 : 1, q = i / run, row = q % 4;
        const size_t off = interleave ? row * kRow + ((q / 4) * run + i % run) * 64 : i * 64;
        const char* p = buf + g + off;
        // mode 2: the interleaved loads, prefetches in address order (line i of the group pf ahead)
        if (pf) _mm_prefetch((mode == 2 ? buf + g + i * 64 : p) + pf, _MM_HINT_T0);
        s[row] = _mm512_add_ps(s[row], _mm512_load_ps(reinterpret_cast<const float*>(p)));
      }
    benchmark::DoNotOptimize(s);
  }
  st.counters["GB/s"] = benchmark::Counter(double(kBytes), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["copy_GB/s"] = measure_copy_bandwidth(1) / 1e9;
}
BENCHMARK(BM_WeightReadPattern)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {0, 4096, 8192, 16384}})
    ->ArgNames({"interleave", "prefetch"})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  struct Case {
    const char* shape;
    std::vector<int64_t> tokens;
  };
  const Case cases[] = {{"qwen3-30b-a3b", {1, 8, 64, 512}}, {"gpt-oss-20b", {1, 64}}};
  for (const auto& c : cases)
    for (const char* scheme : {"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_nvfp4_a16", "w_mxfp6_e2m3_a_mxfp6_e2m3"})
      for (Emulation e : {Emulation::Exact, Emulation::VLLM})
        for (int64_t T : c.tokens) {
          const std::string name = std::string("BM_MoeLayer/") + c.shape + "/" + scheme + "/" +
                                   std::string(emulation_name(e)) + "/T:" + std::to_string(T);
          benchmark::RegisterBenchmark(name.c_str(), BM_MoeLayer, c.shape, scheme, e, T)
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime()
              ->MinTime(T >= 512 ? 1.0 : 0.3);
        }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
