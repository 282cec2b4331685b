// Which grouped-GEMM kernel runs for which shape (kept apart from the kernels): the tiled mma kernel
// (sm80_moe_gemm.cuh, weights decoded once per tile of up to 32 tokens) or the decode-shaped GEMV kernel
// (sm90_fp4_moe_gemv.cu, tiles of at most 8 tokens, built to stream weights with every SM). The choice is
// made on the host from the average rows per expert (the per-expert counts live on the device and the
// forward pass must not synchronize); an expert with more than 8 rows gets several GEMV tiles, which
// re-read its weights (mostly from L2).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "moe/cuda/moe_kernels.hpp"

namespace mxmoe::moe::cuda {

enum class GemmPath : uint8_t { Auto, Tiled, Gemv };

// Forces a path (tests compare both on the same inputs). Starts from the environment variable
// MXMOE_CUDA_MOE_GEMM=tiled|gemv (anything else: auto). Gemv still falls back to tiled where it cannot
// run (non-FP4 weights, float32 GEMM inputs, too much shared memory).
inline GemmPath& gemm_path_override() {
  static GemmPath p = [] {
    const char* v = std::getenv("MXMOE_CUDA_MOE_GEMM");
    if (v && std::strcmp(v, "tiled") == 0) return GemmPath::Tiled;
    if (v && std::strcmp(v, "gemv") == 0) return GemmPath::Gemv;
    return GemmPath::Auto;
  }();
  return p;
}

// Up to this many rows per expert on average, the GEMV kernel (measured on the H200: see
// bench/RESULTS.md; T = 64 tokens of Qwen3-30B-A3B is 4 rows per expert).
constexpr double kGemvMaxAvgRows = 8.0;
constexpr int kGemvMaxSmem = 160 * 1024;

struct GemmPlan {
  int nt = 1;           // tiled kernel: n-tiles of 8 tokens per CTA (tiles hold 8 * nt rows)
  bool gemv1 = false;   // GEMM1 on the GEMV kernel
  bool gemv2 = false;   // GEMM2 on the GEMV kernel
  int ksplit1 = 1, ksplit2 = 1;
  int depth = 4;  // GEMV: weight chunks in flight per warp (4 or 8; MXMOE_CUDA_GEMV_DEPTH=8 for experiments)
};

inline bool gemv_weights(WKind wk) { return wk == WKind::NVFP4 || wk == WKind::MXFP4; }

// ksplit: the fewest warps per m-tile that still give about two CTAs per SM.
inline int gemv_ksplit(int64_t active_experts, int64_t N, int sms) {
  int ks = 1;
  while (ks < 4 && active_experts * ((N / 16 + 4 / ks - 1) / (4 / ks)) < 2 * sms) ks *= 2;
  return ks;
}

// P rows (T * top_k) over E experts; GEMM1 [N1 x K1], GEMM2 [N2 x K2] per expert; gemm2_f32: GEMM2 reads
// float32 rows (exact-mode a16).
inline GemmPlan plan_gemms(WKind wk, int64_t P, int E, int64_t N1, int64_t K1, int64_t N2, int64_t K2,
                           bool gemm2_f32, int sms) {
  GemmPlan p;
  const double avg = double(P) / E;
  p.nt = avg <= 8 ? 1 : avg <= 16 ? 2 : 4;
  const GemmPath force = gemm_path_override();
  bool gemv = gemv_weights(wk) && (force == GemmPath::Gemv || (force == GemmPath::Auto && avg <= kGemvMaxAvgRows));
  if (!gemv) return p;
  p.nt = 1;
  static const int depth = [] {
    const char* v = std::getenv("MXMOE_CUDA_GEMV_DEPTH");
    return v && std::strcmp(v, "8") == 0 ? 8 : 4;
  }();
  p.depth = depth;
  const int64_t active = P < E ? P : E;
  p.gemv1 = gemv_smem_bytes(K1) <= kGemvMaxSmem;
  p.gemv2 = !gemm2_f32 && gemv_smem_bytes(K2) <= kGemvMaxSmem;
  p.ksplit1 = gemv_ksplit(active, N1, sms);
  p.ksplit2 = gemv_ksplit(active, N2, sms);
  return p;
}

}  // namespace mxmoe::moe::cuda
