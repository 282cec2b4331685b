// CUDA MoE layer benchmark: one synthetic layer of a real model's shape per scheme, forward for
// T tokens captured in a CUDA graph (one graph per rotating input set), median of CUDA-event timings;
// eager_us: the same forward launched directly (kernel launch overhead included).
// Prints one line per (shape, scheme, mode, T) with the roofline floor (touched packed weights +
// activations at the measured copy bandwidth, GEMM FLOPs at the bf16 tensor-core rate).
//   bench_moe_cuda [--shape qwen3-30b-a3b] [--schemes a,b] [--tokens 1,64,4096] [--modes vllm,exact]
//                  [--paths auto,multi,tiled,gemv,tile128] [--tflops N]   (mode column: vllm / exact, or vllm-tiled ... for a
//                  forced path; multi = the multi-kernel forward where auto would run the fused kernel)
//                  [--stages 1]   (after each fused-kernel line: its per-stage times from clock64 stamps)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "moe/cuda/moe_heuristics.hpp"
#include "mxmoe/cuda.hpp"
#include "mxmoe/moe/cuda_moe.hpp"
#include "mxmoe/moe/layer.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(x);
  return v;
}

double measure_copy_bw() {  // device-to-device copy, bytes read + written
  const size_t n = size_t(1) << 30;
  void *a, *b;
  MXMOE_CUDA_CHECK(cudaMalloc(&a, n));
  MXMOE_CUDA_CHECK(cudaMalloc(&b, n));
  MXMOE_CUDA_CHECK(cudaMemset(a, 1, n));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < 8; ++i) {
    cudaEventRecord(e0);
    MXMOE_CUDA_CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float m;
    cudaEventElapsedTime(&m, e0, e1);
    ms.push_back(m);
  }
  std::sort(ms.begin(), ms.end());
  cudaFree(a), cudaFree(b);
  return 2.0 * n / (ms[ms.size() / 2] * 1e-3);
}

// One eager forward of the fused kernel with clock64 stamps: per stage the mean and max over CTAs (us).
void print_stages(CudaMoeLayer& dev, const void* x, int64_t T, Emulation em, float* out, int32_t* ids, float* w,
                  cudaStream_t st) {
  namespace k = mxmoe::moe::cuda;
  int devi = 0, sms = 0, khz = 0;
  MXMOE_CUDA_CHECK(cudaGetDevice(&devi));
  MXMOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, devi));
  MXMOE_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, devi));
  const size_t n = size_t(4 * sms * k::kFusedStamps);
  unsigned long long* d = nullptr;
  MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), n * 8));
  MXMOE_CUDA_CHECK(cudaMemset(d, 0, n * 8));
  k::fused_stage_stamps() = d;
  for (int i = 0; i < 3; ++i) dev.forward(x, T, em, out, ids, w, st);
  k::fused_stage_stamps() = nullptr;
  MXMOE_CUDA_CHECK(cudaStreamSynchronize(st));
  std::vector<unsigned long long> h(n);
  MXMOE_CUDA_CHECK(cudaMemcpy(h.data(), d, n * 8, cudaMemcpyDeviceToHost));
  cudaFree(d);
  const char* names[k::kFusedStamps - 1] = {"logits", "sync", "route", "gemm1", "sync", "gemm2", "sync", "finalize"};
  std::printf("    stages (us, mean/max over CTAs):");
  double total_mean = 0, total_max = 0;
  int ctas = 0;
  for (int c = 0; c < 4 * sms; ++c) ctas += h[size_t(c) * k::kFusedStamps] != 0;
  for (int i = 0; i + 1 < k::kFusedStamps; ++i) {
    double sum = 0, mx = 0;
    for (int c = 0; c < ctas; ++c) {
      const unsigned long long* r = h.data() + size_t(c) * k::kFusedStamps;
      const double us = double(r[i + 1] - r[i]) / khz * 1e3;
      sum += us, mx = std::max(mx, us);
    }
    std::printf(" %s %.1f/%.1f", names[i], sum / ctas, mx);
  }
  for (int c = 0; c < ctas; ++c) {
    const unsigned long long* r = h.data() + size_t(c) * k::kFusedStamps;
    const double us = double(r[k::kFusedStamps - 1] - r[0]) / khz * 1e3;
    total_mean += us / ctas, total_max = std::max(total_max, us);
  }
  std::printf(" | total %.1f/%.1f (%d CTAs)\n", total_mean, total_max, ctas);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "qwen3-30b-a3b", schemes = "w_nvfp4_a_nvfp4,w_mxfp4_a_mxfp4,w_nvfp4_a16", tokens = "1,64,4096";
  std::string modes = "vllm,exact", paths = "auto";
  double tflops = 790;
  bool stages = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape") shape = v;
    else if (k == "--schemes") schemes = v;
    else if (k == "--tokens") tokens = v;
    else if (k == "--modes") modes = v;
    else if (k == "--paths") paths = v;  // auto,multi,tiled,gemv,tile128 (fused kernel / grouped-GEMM kernel choice)
    else if (k == "--tflops") tflops = std::stod(v);
    else if (k == "--stages") stages = v == "1";
  }
  std::string why;
  if (!mxmoe::cuda::cuda_available(&why)) {
    std::printf("no CUDA device (%s)\n", why.c_str());
    return 0;
  }
  const double bw = measure_copy_bw();
  std::printf("copy bandwidth %.0f GB/s, bf16 rate assumed %.0f TFLOP/s\n", bw / 1e9, tflops);
  const SyntheticShape sh = synthetic_shape(shape);
  std::vector<int64_t> Ts;
  for (auto& t : split(tokens)) Ts.push_back(std::stoll(t));
  const int64_t maxT = *std::max_element(Ts.begin(), Ts.end());
  std::printf("%-14s %-18s %-12s %6s %10s %10s %8s %8s %10s\n", "shape", "scheme", "mode", "T", "us", "floor_us", "x_floor",
              "experts", "eager_us");
  for (const auto& sname : split(schemes)) {
    const MoeScheme& s = parse_moe_scheme(sname);
    MoeLayer l = synthetic_layer(sh, s, 1);
    if (s.act == ActQuant::Block && traits(s.act_scheme).tensor_scale)
      for (int e = 0; e < l.num_experts; ++e) l.w13[size_t(e)].input_scale = 4.0f / 2688, l.w2[size_t(e)].input_scale = 1.0f / 2688;
    CudaMoeLayer dev(l, maxT);
    const int64_t H = l.hidden, I = l.inter;
    const int k = l.router.top_k;
    // packed bytes of one expert (w13 + w2 codes and scales)
    auto proj_bytes = [&](const ExpertLinear& w) {
      return w.packed ? double(w.packed->codes.data.size() + w.packed->scales.data.size()) : double(w.dense.data.size());
    };
    const double expert_bytes = proj_bytes(l.w13[0]) + proj_bytes(l.w2[0]);
    constexpr int kSets = 4;
    void* x[kSets];
    float *out, *w;
    int32_t* ids;
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<uint16_t> hx(size_t(maxT * H));
    for (auto& xx : x) {
      for (auto& v : hx) v = f32_to_bf16(nd(rng));
      MXMOE_CUDA_CHECK(cudaMalloc(&xx, hx.size() * 2));
      MXMOE_CUDA_CHECK(cudaMemcpy(xx, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
    }
    MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&out), size_t(maxT * H) * 4));
    MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&w), size_t(maxT * k) * 4));
    MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ids), size_t(maxT * k) * 4));
    cudaStream_t st;
    MXMOE_CUDA_CHECK(cudaStreamCreate(&st));
    for (const auto& pname : split(paths))
    for (const auto& mode_name : split(modes)) {
      const Emulation em = parse_emulation(mode_name);
      mxmoe::moe::cuda::gemm_path_override() = pname == "tiled" ? mxmoe::moe::cuda::GemmPath::Tiled
                                               : pname == "gemv"    ? mxmoe::moe::cuda::GemmPath::Gemv
                                               : pname == "tile128" ? mxmoe::moe::cuda::GemmPath::Tile128
                                                                    : mxmoe::moe::cuda::GemmPath::Auto;
      mxmoe::moe::cuda::fused_enabled() = pname == "auto";  // every forced path runs the multi-kernel forward
      const std::string mname = pname == "auto" ? mode_name : mode_name + "-" + pname;
      for (int64_t T : Ts) {
        cudaGraphExec_t ge[kSets];
        for (int i = 0; i < kSets; ++i) {
          cudaGraph_t g;
          MXMOE_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
          dev.forward(x[i], T, em, out, ids, w, st);
          MXMOE_CUDA_CHECK(cudaStreamEndCapture(st, &g));
          MXMOE_CUDA_CHECK(cudaGraphInstantiate(&ge[i], g, 0));
          cudaGraphDestroy(g);
        }
        const int reps = T <= 64 ? 20 : 3;
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0), cudaEventCreate(&e1);
        // Median us per forward over 25 timed batches of `reps`, after `warm` untimed forwards;
        // launch(i) runs forward i on input set i % kSets.
        auto median_us = [&](int warm, auto&& launch) {
          for (int i = 0; i < warm; ++i) launch(i);
          std::vector<float> ms;
          for (int it = 0; it < 25; ++it) {
            cudaEventRecord(e0, st);
            for (int r = 0; r < reps; ++r) launch(it * reps + r);
            cudaEventRecord(e1, st);
            MXMOE_CUDA_CHECK(cudaEventSynchronize(e1));
            float m;
            cudaEventElapsedTime(&m, e0, e1);
            ms.push_back(m / reps);
          }
          std::sort(ms.begin(), ms.end());
          return ms[ms.size() / 2] * 1e3;
        };
        const double us =
            median_us(3 * kSets, [&](int i) { MXMOE_CUDA_CHECK(cudaGraphLaunch(ge[i % kSets], st)); });
        // eager: the same forward launched kernel by kernel (launch overhead included)
        const double eager_us =
            median_us(2 * kSets, [&](int i) { dev.forward(x[i % kSets], T, em, out, ids, w, st); });
        // experts touched by the last input set
        std::vector<int32_t> hid(size_t(T * k));
        MXMOE_CUDA_CHECK(cudaMemcpy(hid.data(), ids, hid.size() * 4, cudaMemcpyDeviceToHost));
        const std::set<int32_t> touched(hid.begin(), hid.end());
        const double bytes = touched.size() * expert_bytes + double(T * H) * (2 + 4);
        const double flops = 2.0 * double(T * k) * (2.0 * I * H + double(I) * H);
        const double floor_us = std::max(bytes / bw, flops / (tflops * 1e12)) * 1e6;
        std::printf("%-14s %-18s %-12s %6lld %10.1f %10.1f %8.2f %8zu %10.1f\n", shape.c_str(), sname.c_str(),
                    mname.c_str(), (long long)T, us, floor_us, us / floor_us, touched.size(), eager_us);
        if (stages && pname == "auto" && T <= dev.fused_tokens(em)) print_stages(dev, x[0], T, em, out, ids, w, st);
        std::fflush(stdout);
        for (auto& g : ge) cudaGraphExecDestroy(g);
        cudaEventDestroy(e0), cudaEventDestroy(e1);
      }
    }
    for (auto& xx : x) cudaFree(xx);
    cudaFree(out), cudaFree(w), cudaFree(ids);
    cudaStreamDestroy(st);
  }
  return 0;
}
