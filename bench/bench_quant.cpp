// Block quantizer throughput on a 4096x4096 BF16 tensor: qdq, quantize, dequantize for nvfp4, mxfp4
// and mxfp6_e3m2, at 1 thread and all threads. Bytes/s counts the BF16 tensor (2 bytes/element).
// Roofline counters: mem_frac = (bytes read + bytes written) / s over this binary's own measured copy
// bandwidth at the same thread count; flop_frac = float ops / s (estimate) over measured peak FMA rate.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstring>
#include <map>
#include <vector>

#include "mxmoe/quant.hpp"
#include "mxmoe/roofline.hpp"
#include "quant/cpu/quant_cpu.hpp"

using namespace mxmoe;

namespace {

constexpr int64_t kRows = 4096, kCols = 4096, kN = kRows * kCols;
constexpr Scheme kSchemes[] = {Scheme::NVFP4, Scheme::MXFP4, Scheme::MXFP6_E3M2};

int max_threads() {
  static const int n = omp_get_max_threads();
  return n;
}

// Float32 arithmetic per element (the integer rounding work is not counted): MX qdq scales the
// element in and out (2), NVFP4 multiplies, clamps twice and rescales (4); amax adds 1.
double flops_per_elem(Scheme s, int op) {  // op: 0 qdq, 1 quantize, 2 dequantize
  const bool nv = traits(s).tensor_scale;
  if (op == 2) return 1;
  return (nv ? 3 : 1) + 1 + (op == 0 ? 1 : 0);
}

Tensor make_input() {
  Tensor x(DType::BF16, {kRows, kCols});
  uint32_t st = 12345;
  auto* p = x.ptr<uint16_t>();
  for (int64_t i = 0; i < kN; ++i) {
    st = st * 1664525u + 1013904223u;
    // Roughly normal-ish magnitudes spanning a few binades, random signs.
    const float v = float(int32_t(st) >> 8) * 0x1p-22f * ((st & 0xf) == 0 ? 30.f : 1.f);
    p[i] = f32_to_bf16(v);
  }
  return x;
}

const Tensor& input() {
  static const Tensor x = make_input();
  return x;
}

void set_counters(benchmark::State& state, Scheme s, int op, int threads) {
  const double it = double(state.iterations());
  const double packed = double(packed_row_bytes(s, kCols) * kRows + kN / traits(s).block);
  const double moved = op == 0 ? 4.0 * kN : op == 1 ? 2.0 * kN + packed : packed + 2.0 * kN;
  state.SetBytesProcessed(int64_t(it * 2.0 * kN));
  state.counters["threads"] = threads;
  state.counters["GBps_per_core"] = benchmark::Counter(it * 2.0 * kN / 1e9 / threads, benchmark::Counter::kIsRate);
  state.counters["mem_frac"] = benchmark::Counter(it * moved / measure_copy_bandwidth(threads), benchmark::Counter::kIsRate);
  const double peak = measure_fma_peak_per_core() * threads;
  state.counters["flop_frac"] =
      benchmark::Counter(peak > 0 ? it * flops_per_elem(s, op) * kN / peak : 0, benchmark::Counter::kIsRate);
}

QuantParams params(Scheme s) {
  QuantParams p{s, ScaleRule::Even, Rounding::RNE, 1.0f};
  if (traits(s).tensor_scale) p.global_scale = nvfp4_default_global_scale(tensor_amax(input()));
  return p;
}

int threads_arg(const benchmark::State& state) { return state.range(1) == 0 ? max_threads() : int(state.range(1)); }

// The API: allocates (and zero-fills, single-threaded) the output tensor like a caller would.
void BM_Qdq(benchmark::State& state) {
  const Scheme s = kSchemes[state.range(0)];
  const int threads = threads_arg(state);
  const QuantParams p = params(s);
  omp_set_num_threads(threads);
  for (auto _ : state) benchmark::DoNotOptimize(qdq(input(), p).data.data());
  set_counters(state, s, 0, threads);
  state.SetLabel(std::string(traits(s).name) + " " + cpu::isa_name(cpu::active_isa()));
}

// The API into a reused output tensor (no allocation after the first call).
void BM_QdqInto(benchmark::State& state) {
  const Scheme s = kSchemes[state.range(0)];
  const int threads = threads_arg(state);
  const QuantParams p = params(s);
  omp_set_num_threads(threads);
  Tensor y;
  for (auto _ : state) {
    qdq(input(), p, y);
    benchmark::DoNotOptimize(y.data.data());
  }
  set_counters(state, s, 0, threads);
  state.SetLabel(std::string(traits(s).name) + " " + cpu::isa_name(cpu::active_isa()));
}

// The kernel alone, into a preallocated BF16 buffer (what a fused caller pays).
void BM_QdqKernel(benchmark::State& state) {
  const Scheme s = kSchemes[state.range(0)];
  const int threads = threads_arg(state);
  const QuantParams p = params(s);
  static std::vector<uint16_t> y(static_cast<size_t>(kN));
  const int64_t step = 16;
  for (auto _ : state) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r0 = 0; r0 < kRows; r0 += step)
      cpu::qdq_rows(input().ptr<uint16_t>() + r0 * kCols, DType::BF16, step, kCols, kCols, p, y.data() + r0 * kCols,
                    DType::BF16, kCols);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, s, 0, threads);
  state.SetLabel(std::string(traits(s).name) + " " + cpu::isa_name(cpu::active_isa()));
}

void BM_Quantize(benchmark::State& state) {
  const Scheme s = kSchemes[state.range(0)];
  const int threads = threads_arg(state);
  const QuantParams p = params(s);
  omp_set_num_threads(threads);
  for (auto _ : state) benchmark::DoNotOptimize(quantize(input(), p).codes.data.data());
  set_counters(state, s, 1, threads);
  state.SetLabel(std::string(traits(s).name) + " " + cpu::isa_name(cpu::active_isa()));
}

void BM_Dequantize(benchmark::State& state) {
  const Scheme s = kSchemes[state.range(0)];
  const int threads = threads_arg(state);
  const QuantParams p = params(s);
  omp_set_num_threads(threads);
  const QuantizedTensor q = quantize(input(), p);
  for (auto _ : state) benchmark::DoNotOptimize(dequantize(q, DType::BF16).data.data());
  set_counters(state, s, 2, threads);
  state.SetLabel(std::string(traits(s).name) + " " + cpu::isa_name(cpu::active_isa()));
}

// The dequantize kernel alone, into a preallocated BF16 buffer.
void BM_DequantizeKernel(benchmark::State& state) {
  const Scheme s = kSchemes[state.range(0)];
  const int threads = threads_arg(state);
  const QuantParams p = params(s);
  const QuantizedTensor q = quantize(input(), p);
  const int64_t rb = packed_row_bytes(s, kCols), nb = kCols / traits(s).block, step = 16;
  static std::vector<uint16_t> y(static_cast<size_t>(kN));
  for (auto _ : state) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r0 = 0; r0 < kRows; r0 += step)
      cpu::dequantize_rows(q.codes.ptr<uint8_t>() + r0 * rb, rb, q.scales.ptr<uint8_t>() + r0 * nb, nb, step, kCols, p,
                           y.data() + r0 * kCols, DType::BF16, kCols);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, s, 2, threads);
  state.SetLabel(std::string(traits(s).name) + " " + cpu::isa_name(cpu::active_isa()));
}

// The portable scalar path (what a CPU without AVX-512 gets), NVFP4 qdq, 1 thread, for scale.
void BM_QdqScalarFallback(benchmark::State& state) {
  cpu::force_scalar(true);
  omp_set_num_threads(1);
  const QuantParams p = params(Scheme::NVFP4);
  for (auto _ : state) benchmark::DoNotOptimize(qdq(input(), p).data.data());
  cpu::force_scalar(false);
  set_counters(state, Scheme::NVFP4, 0, 1);
  state.SetLabel("nvfp4 scalar");
}

// Memory roofline reference: parallel memcpy of 256 MiB; bytes = read + written.
void BM_CopyBandwidth(benchmark::State& state) {
  const int threads = threads_arg(state);
  for (auto _ : state) state.SetIterationTime(2.0 * double(size_t(256) << 20) / measure_copy_bandwidth(threads));
  state.counters["GBps"] = measure_copy_bandwidth(threads) / 1e9;
  state.counters["peak_GFLOPs_per_core"] = measure_fma_peak_per_core() / 1e9;
  state.counters["threads"] = threads;
}

void args(benchmark::internal::Benchmark* b) {
  for (int s = 0; s < 3; ++s)
    for (int t : {1, 0}) b->Args({s, t});
  b->ArgNames({"scheme", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
}

BENCHMARK(BM_CopyBandwidth)->Args({0, 1})->Args({0, 0})->UseManualTime()->Iterations(1)->ArgNames({"_", "threads"});
BENCHMARK(BM_Qdq)->Apply(args);
BENCHMARK(BM_QdqInto)->Apply(args);
BENCHMARK(BM_QdqKernel)->Apply(args);
BENCHMARK(BM_Quantize)->Apply(args);
BENCHMARK(BM_Dequantize)->Apply(args);
BENCHMARK(BM_DequantizeKernel)->Apply(args);
BENCHMARK(BM_QdqScalarFallback)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
