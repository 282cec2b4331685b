// Tuning decisions of the CPU experts, kept apart from the kernels: which GEMM path a task takes,
// how weight rows are tiled into work items, and how many threads a grouped GEMM uses.
// The numbers are measured on the 2-core AMD EPYC (Zen 5) of bench/RESULTS.md (MoE section).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace mxmoe::moe::cpu {

enum class GemmPath : uint8_t {
  Fused,      // FP4 weights decoded in registers and FMA'd with the token rows (fp4_gemv); with many
              // tokens and bf16 activations a decoded bf16 panel + dot-product GEMM (use_panel)
  FusedMx,    // MXFP6 / MXFP8 weights decoded in registers (mx_gemv_bf16, mx_gemv)
  DecodeDot,  // 16 weight rows decoded to an L1 buffer, then dot products (few tokens, MXINT8, dense)
  Sgemm,      // a 64-row tile decoded to float32 once, then OpenBLAS sgemm over all token rows
};

// Fused FP4 up to this many token rows per expert: the kernel re-decodes the (L1-resident) packed
// row block for every 2-4 tokens, which still beats the float32 tile + sgemm path at ~32 tokens per
// expert (Qwen3 T = 512, 1 thread: 377 ms fused vs 671 ms sgemm). Beyond 256 it is unmeasured.
inline constexpr int64_t kFusedMaxTokens = 256;
inline constexpr int64_t kDecodeDotMaxTokens = 4;
// Fused FP4 tasks with bf16 activations and at least this many token rows decode each 64-row tile
// once into a bf16 panel and run the panel GEMM (fp4_gemm_panel_bf16) instead of re-decoding the
// packed rows for every 2-4 tokens. BM_Fp4GemvKernel (1536 x 2048, 1 thread, cpu us): exact n = 8:
// 224 fused vs 290 panel, n = 16: 441 vs 359 (loaded machine); vllm NVFP4, where the fused kernel is
// the weight-table one (fp4_gemv_vllm_table), load 1.0: n = 8: 231 vs 301, n = 12: 342 vs 340,
// n = 16: 447 vs 411.
inline constexpr int64_t kPanelMinTokens = 16;
inline constexpr int64_t kPanelMinTokensVllmNv = 12;
inline bool use_panel(bool vllm_nvfp4, int64_t tokens) {
  return tokens >= (vllm_nvfp4 ? kPanelMinTokensVllmNv : kPanelMinTokens);
}

// Fused vllm NVFP4 tasks below the panel threshold decode through a per-projection bf16 weight
// table (n = 1: 58 us vs 101 us for the two-table fused kernel, n = 4: 125 vs 257; same run).
inline bool use_vllm_table(bool vllm_nvfp4, int64_t tokens) { return vllm_nvfp4 && !use_panel(true, tokens); }

// Fused MXFP6 / MXFP8 up to this many token rows per expert (decoded again for every 4 tokens): Qwen3
// w_mxfp6_e2m3_a_mxfp6_e2m3 exact, 2 threads, T = 64 (~4 per expert): 37 ms vs 150 ms with 16-row
// decode + dot, T = 512 (~32 per expert): 252 ms vs 388-400 ms with the float32 tile + sgemm;
// 1 thread, vllm, T = 512: w_mxfp8_e4m3_a16 463-480 vs 667-717 ms, MXFP6 417-474 vs 729-732 ms;
// exact w_mxfp8_e4m3_a16 (GEMM2 with float32 activations, mx_gemv vs sgemm): 503-526 vs 498-503 ms,
// even. Beyond 64 it is unmeasured.
inline constexpr int64_t kFusedMxMaxTokens = 64;

// fused_bits: the element bits of packed weights a fused kernel takes (4: FP4, 6: MXFP6, 8: MXFP8),
// else 0.
inline GemmPath choose_path(int fused_bits, int64_t tokens) {
  if (fused_bits == 4 && tokens <= kFusedMaxTokens) return GemmPath::Fused;
  if ((fused_bits == 6 || fused_bits == 8) && tokens <= kFusedMxMaxTokens) return GemmPath::FusedMx;
  return tokens <= kDecodeDotMaxTokens ? GemmPath::DecodeDot : GemmPath::Sgemm;
}

// Software prefetch distance of the fused FP4 kernels: short rows defeat the hardware prefetcher
// (4, 8 and 16 KiB measured equal; bench/RESULTS.md v1).
#ifndef MXMOE_FP4_PREFETCH
#define MXMOE_FP4_PREFETCH 8192
#endif
inline constexpr int64_t kFp4PrefetchBytes = MXMOE_FP4_PREFETCH;

// Weight rows per block of the fused GEMV kernels: a block's packed bytes stay in L1 while the token
// groups pass over it.
inline constexpr int64_t kRowStep = 16;

// Calls f(std::integral_constant<int, nt>{}) for nt in [1, G]: each token-group size of a fused kernel
// gets its own register-blocked instantiation.
template <int G, class F>
inline void with_token_group(int64_t nt, F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (void)((nt == I + 1 && (f(std::integral_constant<int, I + 1>{}), true)) || ...);
  }(std::make_integer_sequence<int, G>{});
}

// Weight rows per work item: small enough to balance 2 threads over a handful of experts, large
// enough that scheduling (one atomic per item) is noise.
inline constexpr int64_t kTileRows = 64;

// Threads for a grouped GEMM touching `bytes` of weights in `items` work items: one thread when the
// whole problem is a few microseconds of work (OpenMP fork/join costs ~5-10 us).
inline int choose_threads(double bytes, int64_t items, int max_threads) {
  if (bytes < 256.0 * 1024) return 1;
  return int(std::max<int64_t>(1, std::min<int64_t>(items, max_threads)));
}

}  // namespace mxmoe::moe::cpu
