// Raw launchers of the CUDA MoE stages (flashinfer style: device pointers, sizes, a stream, a
// cudaError_t back; no checks here: the checked API is include/mxmoe/moe/cuda_moe.hpp). fmt-free.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

namespace mxmoe::moe::cuda {

// How the expert weights are stored on the device (one value per projection kind).
enum class WKind : uint8_t { NVFP4, MXFP4, MXFP6_E2M3, MXFP6_E3M2, MXFP8_E4M3, BF16 };

// f(std::integral_constant<WKind, wk>{}): a launcher templated on the weight kind, picked at run time.
template <class F>
cudaError_t visit_wkind(WKind wk, F&& f) {
  using W = WKind;
  switch (wk) {
    case W::NVFP4: return f(std::integral_constant<W, W::NVFP4>{});
    case W::MXFP4: return f(std::integral_constant<W, W::MXFP4>{});
    case W::MXFP6_E2M3: return f(std::integral_constant<W, W::MXFP6_E2M3>{});
    case W::MXFP6_E3M2: return f(std::integral_constant<W, W::MXFP6_E3M2>{});
    case W::MXFP8_E4M3: return f(std::integral_constant<W, W::MXFP8_E4M3>{});
    case W::BF16: return f(std::integral_constant<W, W::BF16>{});
  }
  return cudaErrorInvalidValue;
}

// How a GEMM input is quantized (docs/numerics.md): the values written are element * block scale
// (exact mode) or the qdq result rounded to bf16 (vllm mode), always bf16-representable.
enum class AQ : uint8_t { None, NVFP4, MXFP4, MXFP6_E2M3, MXFP6_E3M2, FP8 };

// The encode scale of a GEMM input per expert (NVFP4) or the per-tensor FP8 scale.
struct ActScale {
  float static_gs = 0.0f;             // > 0: one encode scale for all experts (vllm static)
  const float* static_gs_e = nullptr;  // [E] per-expert encode scales (exact static), 0 = dynamic
  const float* amax_all = nullptr;     // dynamic shared (vllm NVFP4, FP8): amax over all rows
  const float* amax_e = nullptr;       // dynamic per expert (exact NVFP4): amax over its rows
};

struct QuantRowsArgs {
  AQ aq = AQ::None;
  bool vllm = true;
  int scale_rule = 0, rounding = 0;  // ScaleRule / Rounding values (MX)
  ActScale sc;
  const void* x = nullptr;  // bf16 (x_bf16) or float32 rows
  bool x_bf16 = true;
  int64_t ldx = 0;
  const int32_t* src_row = nullptr;     // row r reads x row src_row[r] (nullptr: r)
  const int32_t* row_expert = nullptr;  // expert of row r (per-expert scales)
  const int64_t* nrows_dev = nullptr;   // number of rows (device, at most rows) or nullptr: rows
  int64_t rows = 0, K = 0;
  uint16_t* y = nullptr;  // bf16 [rows, K]
};
cudaError_t quant_rows(const QuantRowsArgs& a, cudaStream_t s);
// xs[t, h] = x[t, h] * w[t * k] in float32 (bf16 x [T, H]): vLLM's apply_router_weight_on_input (k = 1).
cudaError_t scale_rows(const uint16_t* x, int64_t T, int64_t H, const float* w, int k, float* xs, cudaStream_t s);
// y[i * n + j] (i = 0, 1, 2) = hi, mid, lo of x[j]: each the bf16 (round to nearest) of what the terms
// before it leave, so hi + mid + lo == x exactly (the swap-AB kernel's split of float32 B rows).
cudaError_t split_bf16x3(const float* x, int64_t n, uint16_t* y, cudaStream_t s);


struct RouteArgs {
  const uint16_t* x = nullptr;  // bf16 [T, H]
  const float* gate = nullptr;  // f32 [E, H]
  const uint16_t* gate3 = nullptr;  // bf16 [3, E, H]: hi, mid, lo with hi + mid + lo == gate (tensor-core logits)
  int gate_terms = 3;  // gate3's planes the tensor-core logits multiply: 1 where mid and lo are all zero
  const float* gate_bias = nullptr;
  int64_t T = 0, H = 0;
  int E = 0, k = 0;
  int kind = 0;  // 0 softmax_topk, 1 sigmoid_grouped_topk, 2 topk_then_softmax (RouterKind values)
  bool renormalize = true;
  float scaling = 1.0f;
  // sigmoid_grouped_topk: the selection-only correction bias [E] (or nullptr) and the groups
  const float* corr_bias = nullptr;
  int n_group = 1, topk_group = 1;
  float* logits = nullptr;   // [T, E]
  float* rowamax = nullptr;  // [T]
  float* amax_x = nullptr;   // scalar (zeroed)
  int32_t* ids = nullptr;    // [T, k]
  float* weights = nullptr;  // [T, k]
  int32_t* counts = nullptr;    // [E] (zeroed)
  uint32_t* bitmap = nullptr;   // [E, words] (zeroed)
  int64_t words = 0;            // ceil(T / 32)
  // permutation outputs
  int tile_tokens = 8;
  int32_t* perm_token = nullptr;    // [P]
  int32_t* row_expert = nullptr;    // [P]
  int32_t* slot_to_perm = nullptr;  // [T * k]
  float* amax1_e = nullptr;         // [E] per-expert amax of x rows
  int4* tiles = nullptr;            // {expert, first row, rows, 0}
  int32_t* num_tiles = nullptr;
  // Expert parallelism: expert_map [E] global -> local id or -1 (nullptr: all local). Slots of experts
  // of another rank get no row; their slot_to_perm is zero_row, a row of y that holds zeros.
  const int32_t* expert_map = nullptr;
  int32_t zero_row = 0;
  bool amax_by_weight = false;  // per-expert amax of x rows times the slot-0 weight (weights on the input)
  float* amax_routed = nullptr;   // atomic max of amax1_e over the experts (zeroed) or nullptr
  int64_t* rows_routed = nullptr;  // the number of permuted rows, or nullptr
};
cudaError_t route(const RouteArgs& a, cudaStream_t s);
// The tile list of one expert (0) taking all `rows` rows in order, tiles of at most tile_rows
// (a dense MLP pass through the grouped GEMMs: the shared experts).
cudaError_t dense_tiles(int64_t rows, int tile_rows, int4* tiles, int32_t* num_tiles, cudaStream_t s);
// The logits (and |x| maxima) of route() on the tensor cores (sm80_router_logits.cu); needs gate3, H % 8 == 0.
cudaError_t router_logits_mma(const RouteArgs& a, cudaStream_t s);

// One grouped GEMM over the tile list. GEMM1 (act != -1): out columns [0, I) of the gated activation,
// written float32 to y [P, I]; GEMM2: y [P, N]. Weight rows are decoded in registers.
struct GemmArgs {
  WKind wk = WKind::NVFP4;
  const uint8_t* codes = nullptr;  // [E][N][row_bytes] (BF16: [E][N][K] bf16)
  int64_t row_bytes = 0;
  const uint8_t* scales = nullptr;  // [E][N][K / block]
  bool w_tiles = false;  // FP4 codes and scales in the m-tile layout (fp4_weight_tiles.hpp), not by rows
  const float* w_gs = nullptr;      // [E] NVFP4 weight encode scales (vllm mode divides the block scale)
  const float* w_alpha = nullptr;   // [E] accumulator factor from the weights
  const float* bias = nullptr;      // [E][N] or nullptr
  int N = 0, K = 0;
  // B operand: bf16 [.., K] rows (b_row[p] or p), or float32 rows split in 3 bf16 terms
  const uint16_t* b16 = nullptr;
  const int32_t* b_row = nullptr;
  const float* b32 = nullptr;
  int64_t ldb = 0;
  // grouped_gemm_tile128 only: B is the sum of b_terms bf16 planes b16 + i * b_term_stride (float32 rows
  // as the exact hi + mid + lo of split_bf16x3)
  int b_terms = 1;
  int64_t b_term_stride = 0;
  // accumulator factor from the activations: per expert 1 / gs (exact NVFP4) or FP8 scale
  int a_alpha_kind = 0;  // 0: 1, 1: 1/gs (NVFP4 exact), 2: FP8 amax/448 (exact)
  ActScale a_sc;
  bool vllm = true;
  // epilogue
  int act = -1;  // -1: plain (GEMM2); else Activation value
  float act_alpha = 1.702f, act_limit = 0.0f;
  float* y = nullptr;
  uint16_t* y16 = nullptr;  // GEMM2: bf16 output there instead of float32 y (vllm mode: bf16 values already)
  int64_t ldy = 0;
  float* amax_out = nullptr;    // GEMM1: atomic max of |y| (all rows) or nullptr
  float* amax_out_e = nullptr;  // GEMM1: per expert
  // GEMM1 on grouped_gemm_tile128 only: when yq is set, the epilogue also quantizes its output rows the
  // way quant_rows would for GEMM2 (static scales only: yq_sc must not read an amax) and writes those
  // bf16 values to yq [rows, ldy] instead of float32 y.
  uint16_t* yq = nullptr;
  AQ yq_aq = AQ::None;
  int yq_rule = 0, yq_rounding = 0;
  ActScale yq_sc;
  const int4* tiles = nullptr;
  const int32_t* num_tiles = nullptr;
  int max_tiles = 0;
  int nt = 1;  // n-tiles of 8 tokens per CTA (1, 2 or 4; 16 for grouped_gemm_tile128); tiles hold at most 8 * nt rows
  int l2_ahead = 0;  // FP4 weight streams (GEMV, fused): L2 prefetch this many chunks past the loads (0: off)
};
cudaError_t grouped_gemm(const GemmArgs& a, cudaStream_t s);

// The many-tokens grouped GEMM (sm80_moe_gemm_tile128.cuh): CTA tile 128 weight rows x 128 tokens from
// shared memory; tiles of at most 128 tokens (nt = 16), bf16 B rows (b16); the same operands and epilogue.
cudaError_t grouped_gemm_tile128(const GemmArgs& a, cudaStream_t s);

// The decode-shaped grouped GEMM (sm90_fp4_moe_gemv.cu): FP4 weights (NVFP4, MXFP4), bf16 B rows
// (b16), tiles of at most 8 tokens (nt = 1); the same results as grouped_gemm's operands and
// epilogue. ksplit (1, 2, 4): how many of a CTA's 4 warps share one 16-row m-tile (split K); depth (4, 8):
// 128-element chunks of weights in flight per warp.
// Dynamic shared memory: gemv_smem_bytes(K) (the caller checks it fits, see moe_heuristics.hpp).
cudaError_t grouped_gemv(const GemmArgs& a, int ksplit, int depth, cudaStream_t s);
int gemv_row_stride(int64_t K);
int gemv_smem_bytes(int64_t K);

// The whole layer for a few tokens in one cooperative kernel (sm90_fp4_moe_fused.cu): logits | top-k,
// grouping, GEMM1 with its input quantization and the activation | GEMM2 with its input quantization |
// finalize, with grid-wide barriers at the bars. FP4 weights (NVFP4, MXFP4), bf16 GEMM inputs, at most
// 8 tokens and 32 (token, expert) rows, the softmax_topk / topk_then_softmax routers. The numerics are
// those of route + quant_rows + grouped_gemv + finalize (the K split may differ: float32 summation order).
struct FusedArgs {
  RouteArgs r;     // x, gate, gate_bias, T, H, E, k, kind, renormalize, scaling, logits, ids, weights
  GemmArgs g1;     // w13 and GEMM1's epilogue: y = [P, I] float32, amax_out / amax_out_e (zeroed here)
  GemmArgs g2;     // w2: y = [P, H] float32; a_sc reads GEMM1's amax outputs
  AQ aq = AQ::None;
  int scale_rule = 0, rounding = 0;
  ActScale sc1;    // GEMM1 input: the static parts (the kernel adds its own amax where dynamic)
  int sc1_dyn = 0;  // 0: static, 1: dynamic over all tokens, 2: dynamic per expert
  int ksplit1 = 1, ksplit2 = 1;  // warps per m-tile (1, 2, 4, 8) of GEMM1 / GEMM2
  float* out = nullptr;          // [T, H]
  // Profiling (bench_moe_cuda --stages): when set, thread 0 of every CTA writes kFusedStamps clock64
  // values per CTA at the stage boundaries (start, logits, barrier, routing, GEMM1, barrier, GEMM2,
  // barrier, end).
  unsigned long long* stamps = nullptr;
};
constexpr int kFusedStamps = 9;
constexpr int kFusedDepth = 4;  // 128-element weight chunks in flight per warp (in registers)
// The stamps buffer fused_moe launches with (nullptr: none); set by the benchmark.
inline unsigned long long*& fused_stage_stamps() {
  static unsigned long long* p = nullptr;
  return p;
}
// grid: at most fused_max_grid CTAs (all co-resident). Dynamic shared memory: fused_smem_bytes.
cudaError_t fused_moe(const FusedArgs& a, int grid, cudaStream_t s);
int fused_smem_bytes(int64_t T, int E, int64_t H, int64_t I);
// 0 when the kernel cannot run co-resident or has no instantiation for (wk, aq) (the scheme table's pairs).
int fused_max_grid(WKind wk, AQ aq, int E, int smem_bytes);

struct FinalizeArgs {
  const float* y = nullptr;  // [P, H]
  const uint16_t* y16 = nullptr;  // or bf16 [P, H] (GEMM2's y16)
  const int32_t* slot_to_perm = nullptr;
  const float* weights = nullptr;
  int64_t T = 0, H = 0;
  int k = 0;
  bool vllm = true;
  const float* shared = nullptr;  // [T, H] added to the sum (the shared experts) or nullptr
  float* out = nullptr;
};
cudaError_t finalize(const FinalizeArgs& a, cudaStream_t s);

}  // namespace mxmoe::moe::cuda
