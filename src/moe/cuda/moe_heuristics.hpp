// Which kernels run for which shape (kept apart from the kernels). A few tokens: the whole layer in one
// cooperative kernel (sm90_fp4_moe_fused.cu). Otherwise, per GEMM, the tiled mma kernel
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

enum class GemmPath : uint8_t { Auto, Tiled, Gemv, Tile128 };

// Forces a path (tests compare both on the same inputs). Starts from the environment variable
// MXMOE_CUDA_MOE_GEMM=tiled|gemv (anything else: auto). Gemv still falls back to tiled where it cannot
// run (non-FP4 weights, float32 GEMM inputs, too much shared memory).
inline GemmPath& gemm_path_override() {
  static GemmPath p = [] {
    const char* v = std::getenv("MXMOE_CUDA_MOE_GEMM");
    if (v && std::strcmp(v, "tiled") == 0) return GemmPath::Tiled;
    if (v && std::strcmp(v, "gemv") == 0) return GemmPath::Gemv;
    if (v && std::strcmp(v, "tile128") == 0) return GemmPath::Tile128;
    return GemmPath::Auto;
  }();
  return p;
}

// Up to this many rows per expert on average, the GEMV kernel (measured on the H200: see
// bench/RESULTS.md; T = 64 tokens of Qwen3-30B-A3B is 4 rows per expert).
constexpr double kGemvMaxAvgRows = 8.0;
constexpr int kGemvMaxSmem = 160 * 1024;

// From this many rows per expert on average, the 128 x 128 shared-memory kernel (sm80_moe_gemm_tile128.cuh);
// measured on the H200 (bench/RESULTS.md, "v5"): level with the tiled kernel at 16, ahead from 32 on.
constexpr double kTile128MinAvgRows = 16.0;

// An on-by-default switch for A/B runs: off when the environment sets it to 0.
inline bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::strcmp(v, "0") == 0);
}

// Programmatic dependent launch between the multi-kernel forward's kernels (moe_device.cuh `launch_kernel`),
// where the current device is sm_90 or newer; MXMOE_CUDA_PDL=0 turns it off (A/B runs; tests flip it).
inline bool& pdl_enabled() {
  static bool on = [] {
    int dev = 0, major = 0;
    return env_flag("MXMOE_CUDA_PDL") && cudaGetDevice(&dev) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
  }();
  return on;
}

// tile128's products on wgmma where the GPU runs sm_90a code (else mma.sync). MXMOE_CUDA_WGMMA=0 turns
// it off for A/B runs; tests flip it to compare the two on the same inputs.
inline bool& tile128_wgmma_enabled() {
  static bool on = env_flag("MXMOE_CUDA_WGMMA");
  return on;
}

// Where GEMM2's input has static scales (MX, bf16, NVFP4 with input_scale), tile128's GEMM1 epilogue
// quantizes it (GemmArgs::yq) instead of writing float32 rows for quant_rows to read back; and in vllm
// mode GEMM2 writes bf16 (GemmArgs::y16: its values are bf16 already), halving finalize's read.
// MXMOE_CUDA_EPILOGUE_QUANT=0 / MXMOE_CUDA_Y_BF16=0 turn them off (A/B runs; tests compare both ways).
inline bool& epilogue_quant_enabled() {
  static bool on = env_flag("MXMOE_CUDA_EPILOGUE_QUANT");
  return on;
}
inline bool& y_bf16_enabled() {
  static bool on = env_flag("MXMOE_CUDA_Y_BF16");
  return on;
}

// FP4 weight streams: L2 prefetch distance in 128-element chunks past the register loads (GemmArgs::
// l2_ahead; MXMOE_CUDA_L2_AHEAD=n for A/B runs, 0 turns it off). Measured on the H200 (bench/RESULTS.md
// v6, Qwen3 NVFP4): 0 / 4 / 8 / 16 chunks gave T = 1 38.1 / 37.1 / 37.2 / 38.1 us, T = 64 239 / 235 / 238 /
// 239 us.
constexpr int kL2AheadChunks = 4;
inline int l2_ahead_chunks() {
  static const int n = [] {
    const char* v = std::getenv("MXMOE_CUDA_L2_AHEAD");
    const int x = v && *v ? std::atoi(v) : kL2AheadChunks;
    return x >= 0 && x <= 64 ? x : kL2AheadChunks;
  }();
  return n;
}

struct GemmPlan {
  int nt = 1;           // tiled kernel: n-tiles of 8 tokens per CTA (tiles hold 8 * nt rows)
  bool tile128 = false;  // both GEMMs on grouped_gemm_tile128 (nt = 16)
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

// P rows (T * top_k) over E experts; GEMM1 [N1 x K1], GEMM2 [N2 x K2] per expert; gemm1_f32 / gemm2_f32:
// that GEMM reads float32 rows (GEMM1: a16 with the router weight on the input; GEMM2: exact-mode a16).
inline GemmPlan plan_gemms(WKind wk, int64_t P, int E, int64_t N1, int64_t K1, int64_t N2, int64_t K2,
                           bool gemm1_f32, bool gemm2_f32, int sms) {
  GemmPlan p;
  const double avg = double(P) / E;
  p.nt = avg <= 8 ? 1 : avg <= 16 ? 2 : 4;
  const GemmPath force = gemm_path_override();
  // tile128 reads bf16 planes: a float32 input as three (split_bf16x3). Only tile128 takes them for GEMM1,
  // so a float32 GEMM1 input runs there at every T.
  if (gemm1_f32 || force == GemmPath::Tile128 || (force == GemmPath::Auto && avg >= kTile128MinAvgRows)) {
    p.nt = 16, p.tile128 = true;
    return p;
  }
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

// FP4 expert weights in the m-tile layout (fp4_weight_tiles.hpp) at upload; MXMOE_CUDA_WEIGHT_TILES=0 keeps
// the checkpoint's row layout (A/B runs; tests compare both).
inline bool& weight_tiles_enabled() {
  static bool on = env_flag("MXMOE_CUDA_WEIGHT_TILES");
  return on;
}

// The fused layer kernel: MXMOE_CUDA_MOE_FUSED=0 turns it off (A/B runs, tests of both paths).
inline bool& fused_enabled() {
  static bool on = [] {
    const char* v = std::getenv("MXMOE_CUDA_MOE_FUSED");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

// Tokens up to which the fused kernel runs. The kernel takes up to 8 tokens and 32 (token, expert) slots;
// on the H200 it beats the multi-kernel forward at T = 1 and 2 of Qwen3-30B-A3B and loses at T = 4
// (bench/RESULTS.md, "v4"), so it runs up to 2 (MXMOE_CUDA_FUSED_MAX_T=1..8 for A/B runs).
inline int64_t& fused_token_cap() {  // tests raise it to cover the kernel's whole range
  static int64_t cap = [] {
    const char* v = std::getenv("MXMOE_CUDA_FUSED_MAX_T");
    const int64_t t = v ? std::atoll(v) : 2;
    return t >= 1 && t <= 8 ? t : 2;
  }();
  return cap;
}
inline int64_t fused_max_tokens(int top_k) {
  const int64_t by_slots = 32 / top_k, cap = fused_token_cap() < 8 ? fused_token_cap() : 8;
  return by_slots < cap ? by_slots : cap;
}
constexpr int kFusedMaxSmem = 160 * 1024;

// From this many tokens the router logits run on the tensor cores (sm80_router_logits.cu: the same
// exact products, another float32 summation order). Measured on the H200 (bench/RESULTS.md v6, Qwen3
// gate 128 x 2048): the tensor-core kernel took ~47 us at any T up to 4096 with three gate terms (one
// CTA walks all of H; one term for a bf16 gate saved 11-31 us at T = 512-4096 on the H100, v18; the
// threshold was not re-measured since), the SIMT kernel ~13 us at T = 64 and ~380 us at T = 4096. Far
// above the fused kernel's 8 tokens, so the fused and multi-kernel forwards, which must agree bit for
// bit, always share logits4.
// MXMOE_CUDA_LOGITS_MMA_MIN=n moves the threshold (A/B runs; n > 8 keeps the fused kernel's T on logits4).
constexpr int64_t kLogitsMmaMinTokens = 512;
inline int64_t logits_mma_min_tokens() {
  static const int64_t t = [] {
    const char* v = std::getenv("MXMOE_CUDA_LOGITS_MMA_MIN");
    const int64_t n = v ? std::atoll(v) : kLogitsMmaMinTokens;
    return n > 8 ? n : kLogitsMmaMinTokens;
  }();
  return t;
}
// Up to this many tokens the SIMT logits give each (expert, 4 tokens) item a CTA of 8 warps, one per
// slice group (the fused kernel's stage A, 5.7 -> 1.3 us there), instead of one warp walking all of H.
constexpr int64_t kLogitsSlicedMaxTokens = 64;
inline bool use_logits_mma(int64_t T, int64_t H) { return T >= logits_mma_min_tokens() && H % 8 == 0; }
// A gate that is bf16 already (mid and lo terms all zero) takes one term on the tensor cores instead of
// three (same bits). MXMOE_CUDA_LOGITS_ONE_TERM=0 multiplies all three (A/B runs; tests compare both).
inline bool& logits_one_term_enabled() {
  static bool on = env_flag("MXMOE_CUDA_LOGITS_ONE_TERM");
  return on;
}

struct FusedPlan {
  bool use = false;
  int ksplit1 = 1, ksplit2 = 1;
};

// Warps per m-tile for one GEMM of the fused kernel (CTA = 8 warps): the least time as waves of CTA
// items times (rounds of a warp's kFusedDepth-chunk weight stream + about two rounds of per-item
// restaging and barriers), `active` experts of N x K. Measured: one warp per m-tile wins at T = 1.
inline int fused_ksplit(int64_t active, int64_t N, int64_t K, int grid) {
  int best = 1;
  int64_t best_cost = INT64_MAX;
  const int64_t m16 = N / 16, chunks = (K + 127) / 128;
  for (int ks = 1; ks <= 8; ks *= 2) {
    const int64_t items = active * ((m16 + 8 / ks - 1) / (8 / ks));
    const int64_t waves = (items + grid - 1) / grid;
    const int64_t rounds = ((chunks + ks - 1) / ks + kFusedDepth - 1) / kFusedDepth;
    const int64_t cost = waves * (rounds + 2);
    if (cost < best_cost) best = ks, best_cost = cost;
  }
  return best;
}

// grid: the co-resident CTAs of the fused kernel (0: it cannot run); max_tokens: the T it was sized for.
inline FusedPlan plan_fused(WKind wk, bool gemm2_f32, int64_t T, int top_k, int E, int64_t N1, int64_t K1, int64_t N2,
                            int64_t K2, int64_t max_tokens, int grid) {
  FusedPlan p;
  if (!fused_enabled() || !gemv_weights(wk) || gemm2_f32 || grid <= 0 || T < 1 || T > max_tokens) return p;
  p.use = true;
  const int64_t active = T * top_k < E ? T * top_k : E;
  static const int forced_ks = [] {  // MXMOE_CUDA_FUSED_KSPLIT=1|2|4|8 (A/B runs)
    const char* v = std::getenv("MXMOE_CUDA_FUSED_KSPLIT");
    const int ks = v ? std::atoi(v) : 0;
    return ks == 1 || ks == 2 || ks == 4 || ks == 8 ? ks : 0;
  }();
  p.ksplit1 = forced_ks ? forced_ks : fused_ksplit(active, N1, K1, grid);
  p.ksplit2 = forced_ks ? forced_ks : fused_ksplit(active, N2, K2, grid);
  return p;
}

}  // namespace mxmoe::moe::cuda
