// What the CUDA MoE tests share (test_moe_cuda.cpp, test_moe_cuda_routing.cpp): the device skip, the
// quick mode, the CUDA-vs-ref comparison and its bound, scoped overrides of the kernel choice, and the
// device buffers of a CudaMoeLayer::forward.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "moe/cuda/moe_heuristics.hpp"
#include "mxmoe/cuda.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe/layer.hpp"
#include "test_util.hpp"

#define SKIP_WITHOUT_DEVICE()                                                                              \
  do {                                                                                                     \
    std::string why_;                                                                                      \
    if (!::mxmoe::cuda::cuda_available(&why_)) GTEST_SKIP() << "no usable CUDA device (" << why_ << ")"; \
  } while (0)

namespace mxmoe::moe_test {

inline bool quick() { return std::getenv("MXMOE_TEST_QUICK") != nullptr; }

// Layer outputs against the CPU ref: a float32 summation-order difference can flip a re-quantized GEMM2
// input by one FP4 step.
constexpr double kTol = 5e-3;

// Relative L2, or absolute where the ref is all zero (an expert_map with no local expert).
inline double rel_l2(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), den += double(b[i]) * b[i];
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Compared {
  double err;           // rel L2 of the output
  int64_t id_mismatch;  // top-k ids that differ
  double w_err;         // rel L2 of the router weights (the logits' float32 summation order differs)
  moe::MoeResult got;
};

// run_moe through cuda and ref with the same options; every output element must be finite (the device
// output buffers start unwritten).
inline Compared compare(const moe::MoeLayer& l, const Tensor& x, moe::MoeOptions o, const std::string& what) {
  o.backend = moe::Backend::Ref;
  const moe::MoeResult ref = run_moe(l, x, o);
  o.backend = moe::Backend::Cuda;
  Compared c{0, 0, 0, run_moe(l, x, o)};
  const moe::MoeResult& got = c.got;
  EXPECT_EQ(got.backend.rfind("cuda", 0), 0u) << got.backend;
  EXPECT_EQ(test::first_nonfinite(got.out), -1) << what << ": non-finite output";
  c.err = rel_l2(got.out.ptr<float>(), ref.out.ptr<float>(), ref.out.numel());
  for (int64_t i = 0; i < ref.topk_ids.numel(); ++i)
    c.id_mismatch += got.topk_ids.ptr<int32_t>()[i] != ref.topk_ids.ptr<int32_t>()[i];
  c.w_err = rel_l2(got.topk_weights.ptr<float>(), ref.topk_weights.ptr<float>(), ref.topk_weights.numel());
  return c;
}
inline Compared compare(const moe::MoeLayer& l, const Tensor& x, moe::Emulation e, const std::string& what) {
  moe::MoeOptions o;
  o.emulation = e;
  return compare(l, x, o, what);
}

// Turns the fused single-kernel layer (sm90_fp4_moe_fused.cu) on or off for one scope, and lets it take
// up to `cap` tokens (the kernel's limit is 8; the default cap is what pays off on the H200).
struct ForceFused {
  bool saved;
  int64_t saved_cap;
  explicit ForceFused(bool on, int64_t cap = 8)
      : saved(moe::cuda::fused_enabled()), saved_cap(moe::cuda::fused_token_cap()) {
    moe::cuda::fused_enabled() = on;
    moe::cuda::fused_token_cap() = cap;
  }
  ~ForceFused() {
    moe::cuda::fused_enabled() = saved;
    moe::cuda::fused_token_cap() = saved_cap;
  }
};

// Forces a grouped-GEMM path of the multi-kernel forward for one scope (the decode-shaped GEMV kernel,
// the swap-AB tiled kernel or the 128 x 128 kernel), with the fused small-T kernel off.
struct ForcePath {
  ForceFused off{false};
  moe::cuda::GemmPath saved;
  explicit ForcePath(moe::cuda::GemmPath p) : saved(moe::cuda::gemm_path_override()) {
    moe::cuda::gemm_path_override() = p;
  }
  ~ForcePath() { moe::cuda::gemm_path_override() = saved; }
};

// One of moe_heuristics.hpp's on / off switches, set for one scope.
struct ForceFlag {
  bool& flag;
  bool saved;
  ForceFlag(bool& f, bool on) : flag(f), saved(f) { flag = on; }
  ~ForceFlag() { flag = saved; }
};

// tile128's products on wgmma (where the GPU takes it) or on mma.sync, for one scope.
struct ForceWgmma : ForceFlag {
  explicit ForceWgmma(bool on) : ForceFlag(moe::cuda::tile128_wgmma_enabled(), on) {}
};

// The device side of CudaMoeLayer::forward for the bf16 tokens x [T, H] and top-k: x uploaded, the
// outputs, and a stream; freed with the object.
struct DeviceIo {
  int64_t T, H;
  int k;
  void* x = nullptr;
  float* out = nullptr;
  float* w = nullptr;
  int32_t* ids = nullptr;
  cudaStream_t st = nullptr;
  DeviceIo(const Tensor& x_host, int top_k) : T(x_host.shape[0]), H(x_host.shape[1]), k(top_k) {
    MXMOE_CUDA_CHECK(cudaMalloc(&x, size_t(T * H) * 2));
    MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&out), size_t(T * H) * 4));
    MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&w), size_t(T * k) * 4));
    MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ids), size_t(T * k) * 4));
    MXMOE_CUDA_CHECK(cudaMemcpy(x, x_host.data.data(), size_t(T * H) * 2, cudaMemcpyHostToDevice));
    MXMOE_CUDA_CHECK(cudaStreamCreate(&st));
  }
  ~DeviceIo() {
    cudaStreamDestroy(st);
    cudaFree(x), cudaFree(out), cudaFree(w), cudaFree(ids);
  }
  DeviceIo(const DeviceIo&) = delete;
  DeviceIo& operator=(const DeviceIo&) = delete;

  // NaN in every output element and 0xFFFFFFFF in every id: anything left unwritten shows.
  void poison() const {
    MXMOE_CUDA_CHECK(cudaMemset(out, 0xFF, size_t(T * H) * 4));
    MXMOE_CUDA_CHECK(cudaMemset(ids, 0xFF, size_t(T * k) * 4));
  }
  // forward(st) enqueued directly, or captured once in a CUDA graph that is launched `replays` times;
  // then the output on the host.
  std::vector<float> run(const std::function<void(cudaStream_t)>& forward, int replays = 0) const {
    if (replays > 0) {
      cudaGraph_t g;
      cudaGraphExec_t ge;
      MXMOE_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
      forward(st);
      MXMOE_CUDA_CHECK(cudaStreamEndCapture(st, &g));
      MXMOE_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
      for (int i = 0; i < replays; ++i) MXMOE_CUDA_CHECK(cudaGraphLaunch(ge, st));
      MXMOE_CUDA_CHECK(cudaStreamSynchronize(st));
      MXMOE_CUDA_CHECK(cudaGraphExecDestroy(ge));
      MXMOE_CUDA_CHECK(cudaGraphDestroy(g));
    } else {
      forward(st);
      MXMOE_CUDA_CHECK(cudaStreamSynchronize(st));
    }
    std::vector<float> h(size_t(T * H));
    MXMOE_CUDA_CHECK(cudaMemcpy(h.data(), out, h.size() * 4, cudaMemcpyDeviceToHost));
    return h;
  }
  std::vector<int32_t> ids_host() const {
    std::vector<int32_t> h(size_t(T * k));
    MXMOE_CUDA_CHECK(cudaMemcpy(h.data(), ids, h.size() * 4, cudaMemcpyDeviceToHost));
    return h;
  }
};

}  // namespace mxmoe::moe_test
