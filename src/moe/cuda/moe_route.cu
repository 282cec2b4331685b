// Router and permutation on the device: logits = x . gate^T + bias (float32), softmax top-k (or top-k
// then softmax, or DeepSeek-V3's grouped sigmoid top-k) per token, then the deterministic grouping by
// expert of docs/routing.md: rows of one expert are contiguous, experts in id order, rows of an expert
// in token order (slot order), exactly like mxmoe::moe::group_by_expert (with an expert_map the local
// experts stay in global id order: only the row layout differs from the ref, not any result). Also the
// per-token and per-expert amax of x (dynamic scales) and the GEMM tile list {expert, first row, rows}.
#include <cstdlib>

#include "moe/cuda/moe_heuristics.hpp"
#include "moe/cuda/moe_route.cuh"

namespace mxmoe::moe::cuda {
namespace {

// Logits: warp = one expert (blockDim.x / 32 experts per CTA), gridDim.y covers the tokens, `tpc` (a
// multiple of 4) per CTA, 4 at a time; lanes stride over H by 8 (16-byte x loads); bit-identical for any
// geometry (logits4).
__global__ void __launch_bounds__(256) logits_kernel(const RouteArgs a, int tpc) {
  pdl_wait();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int e = blockIdx.x * (blockDim.x >> 5) + warp;
  const int64_t tbase = int64_t(blockIdx.y) * tpc;
  const bool do_amax = blockIdx.x == 0 && warp == 0;
  if (e >= a.E && !do_amax) return;
  const float* grow = a.gate + int64_t(e < a.E ? e : 0) * a.H;
  for (int t4 = 0; t4 < tpc; t4 += 4) {
    if (tbase + t4 >= a.T) break;
    float acc[4], am[4];
    logits4(a, grow, tbase + t4, lane, acc, am);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t t = tbase + t4 + i;
      if (lane == 0 && t < a.T) {
        if (e < a.E) a.logits[t * a.E + e] = acc[i] + (a.gate_bias ? a.gate_bias[e] : 0.0f);
        if (do_amax) {
          a.rowamax[t] = am[i];
          atomic_max_pos(a.amax_x, am[i]);
        }
      }
    }
  }
}

// Logits at few tokens: a CTA per (expert, 4 tokens) item, its 8 warps on the 8 slice groups
// (logits_item_cta, as the fused kernel): H / 2048 loads per warp in flight instead of H / 256 in a chain.
__global__ void __launch_bounds__(256) logits_sliced_kernel(const RouteArgs a) {
  pdl_wait();
  __shared__ float4 red[8 * 32];
  __shared__ float lmax[8 * 4];
  const int tg = int((a.T + 3) / 4);
  for (int item = blockIdx.x; item < a.E * tg; item += gridDim.x)
    logits_item_cta(a, item % a.E, 4 * int64_t(item / a.E), red, lmax, true);
}

// Lane j < k writes slot j of token t, and counts it for the permutation unless its expert belongs to
// another rank (then the finalize reads the zero row for it).
__device__ __forceinline__ void emit_slot(const RouteArgs& a, int64_t t, int lane, int id, float w) {
  if (lane >= a.k) return;
  a.ids[t * a.k + lane] = id;
  a.weights[t * a.k + lane] = w;
  if (a.expert_map && a.expert_map[id] < 0) {
    a.slot_to_perm[t * a.k + lane] = a.zero_row;
    return;
  }
  atomicAdd(a.counts + id, 1);
  atomicOr(a.bitmap + int64_t(id) * a.words + (t >> 5), 1u << (t & 31));
}

// One warp per token: the selection, then the outputs and the per-expert counts and token bitmap.
template <int NPL>
__device__ __forceinline__ void topk_token(const RouteArgs& a, int64_t t, int lane) {
  int my_id;
  float w;
  topk_select<NPL>(a, a.logits + t * a.E, lane, my_id, w);
  emit_slot(a, t, lane, my_id, w);
}

// The ref's sigmoid 1 / (1 + exp(-x)) in float32, with exp in double rounded once to float32: the
// correctly rounded expf (CUDA's expf is within 2 ulp), which glibc's expf in the CPU ref also returns
// but for rare last-bit cases; scores, and so exact ties, match the ref's.
__device__ __forceinline__ float sigmoid_ref(float x) {
  return cc::div_rn(1.0f, cc::add_rn(1.0f, __double2float_rn(exp(-double(x)))));
}

constexpr int kGroupedWarps = 4;  // tokens per CTA of the grouped router (shared memory per warp)
inline int grouped_smem_bytes(int E, int G) { return kGroupedWarps * (E + 2 * G) * 4; }

// DeepSeek-V3's grouped sigmoid router for token t (mxmoe::moe::route, docs/routing.md): selection
// score c = sigmoid + correction bias; group score = best + second best c of its E / G experts (ranking
// rule: higher, then lower index); keep the topk_group best groups (a group's rank = the groups ranking
// before it); top-k of c among their experts; weights = the chosen experts' uncorrected sigmoid,
// renormalized by (sum in slot order + 1e-20), times the scaling factor. sel [E], gs [G], keep [G]: this
// warp's shared memory.
template <int NPL>
__device__ __forceinline__ void grouped_topk_token(const RouteArgs& a, int64_t t, int lane, float* sel, float* gs,
                                                   int* keep) {
  const float* x = a.logits + t * a.E;
  const int G = a.n_group, gsize = a.E / G;
  float c[NPL];
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    const int e = lane + 32 * i;
    c[i] = 0.0f;
    if (e < a.E) {
      const float sg = sigmoid_ref(x[e]);
      c[i] = a.corr_bias ? cc::add_rn(sg, a.corr_bias[e]) : sg;
      sel[e] = c[i];
    }
  }
  __syncwarp();
  for (int g = lane; g < G; g += 32) {
    const int base = g * gsize;
    int b1 = base;
    for (int e = base + 1; e < base + gsize; ++e)
      if (ranks_before(sel[e], e, sel[b1], b1)) b1 = e;
    float score = sel[b1];
    if (gsize > 1) {
      int b2 = -1;
      for (int e = base; e < base + gsize; ++e)
        if (e != b1 && (b2 < 0 || ranks_before(sel[e], e, sel[b2], b2))) b2 = e;
      score = cc::add_rn(score, sel[b2]);
    }
    gs[g] = score;
  }
  __syncwarp();
  for (int g = lane; g < G; g += 32) {
    int rank = 0;
    for (int h = 0; h < G; ++h) rank += ranks_before(gs[h], h, gs[g], g);
    keep[g] = rank < a.topk_group;
  }
  __syncwarp();
  uint32_t removed = 0;
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    const int e = lane + 32 * i;
    if (e >= a.E || !keep[e / gsize]) removed |= 1u << i;
  }
  int id;
  float score;
  warp_top_k<NPL>(c, removed, a.k, lane, id, score);
  float w = lane < a.k ? sigmoid_ref(x[id]) : 0.0f;
  if (a.renormalize) {
    float sum = 0.0f;
    for (int j = 0; j < a.k; ++j) sum = cc::add_rn(sum, __shfl_sync(0xffffffffu, w, j));
    w = cc::div_rn(w, cc::add_rn(sum, 1e-20f));
  }
  emit_slot(a, t, lane, id, cc::mul_rn(w, a.scaling));
}

__device__ __forceinline__ int warp_sum(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int NPL>
__global__ void __launch_bounds__(256) topk_kernel(const RouteArgs a) {
  pdl_wait();
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (t >= a.T) return;
  topk_token<NPL>(a, t, threadIdx.x & 31);
}

template <int NPL>
__global__ void __launch_bounds__(kGroupedWarps * 32) grouped_topk_kernel(const RouteArgs a) {
  pdl_wait();
  extern __shared__ float route_smem[];
  const int warp = threadIdx.x >> 5;
  const int64_t t = int64_t(blockIdx.x) * kGroupedWarps + warp;
  if (t >= a.T) return;
  float* sel = route_smem + warp * (a.E + 2 * a.n_group);
  grouped_topk_token<NPL>(a, t, threadIdx.x & 31, sel, sel + a.E, reinterpret_cast<int*>(sel + a.E + a.n_group));
}

__global__ void dense_tiles_kernel(int64_t rows, int tile_rows, int4* tiles, int32_t* num_tiles) {
  pdl_wait();
  const int64_t n = (rows + tile_rows - 1) / tile_rows;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t left = rows - i * tile_rows;
  if (i < n) tiles[i] = make_int4(0, int(i * tile_rows), int(left < tile_rows ? left : tile_rows), 0);
  if (i == 0) *num_tiles = int32_t(n);
}

// One warp per expert: its row offset and tile offset (sums over the lower experts), its tiles, and
// its rows in token order from the token bitmap.
__device__ __forceinline__ void permute_expert(const RouteArgs& a, int e, int lane) {
  const int TT = a.tile_tokens;
  int off = 0, toff = 0;
  for (int i = lane; i < e; i += 32) {
    const int c = a.counts[i];
    off += c, toff += (c + TT - 1) / TT;
  }
  off = warp_sum(off), toff = warp_sum(toff);
  const int n = a.counts[e], nt = (n + TT - 1) / TT;
  for (int i = lane; i < nt; i += 32) a.tiles[toff + i] = make_int4(e, off + i * TT, min(TT, n - i * TT), 0);
  if (e == a.E - 1 && lane == 0) {
    *a.num_tiles = toff + nt;
    if (a.rows_routed) *a.rows_routed = off + n;
  }
  const uint32_t* bits = a.bitmap + int64_t(e) * a.words;
  int base = off;
  float amax = 0.0f;
  for (int64_t w0 = 0; w0 < a.words; w0 += 32) {
    const int64_t wi = w0 + lane;
    uint32_t word = wi < a.words ? bits[wi] : 0u;
    const int c = __popc(word);
    int pre = c;  // inclusive scan
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, pre, o);
      if (lane >= o) pre += y;
    }
    int r = base + pre - c;
    while (word) {
      const int b = __ffs(word) - 1;
      word &= word - 1;
      const int64_t t = wi * 32 + b;
      a.perm_token[r] = int32_t(t);
      a.row_expert[r] = e;
      for (int j = 0; j < a.k; ++j)
        if (a.ids[t * a.k + j] == e) {
          a.slot_to_perm[t * a.k + j] = r;
          break;
        }
      // weights on the input: max |x w| = max |x| * w (rounding is monotonic, w >= 0)
      amax = fmaxf(amax, a.amax_by_weight ? cc::mul_rn(a.rowamax[t], a.weights[t * a.k]) : a.rowamax[t]);
      ++r;
    }
    base += __shfl_sync(0xffffffffu, pre, 31);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (lane == 0) {
    a.amax1_e[e] = amax;
    if (a.amax_routed) atomic_max_pos(a.amax_routed, amax);
  }
}

__global__ void __launch_bounds__(256) permute_kernel(const RouteArgs a) {
  pdl_wait();
  const int e = int((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5);
  if (e >= a.E) return;
  permute_expert(a, e, threadIdx.x & 31);
}

int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}

// Both after the logits kernel (PDL edges; the logits kernel itself follows the forward's memset).
template <int NPL>
cudaError_t launch_topk_permute(const RouteArgs& a, cudaStream_t s) {
  const cudaError_t err =
      a.kind == 1 ? launch_kernel(grouped_topk_kernel<NPL>, unsigned((a.T + kGroupedWarps - 1) / kGroupedWarps),
                                  kGroupedWarps * 32, grouped_smem_bytes(a.E, a.n_group), s, true, a)
                  : launch_kernel(topk_kernel<NPL>, unsigned((a.T * 32 + 255) / 256), 256, 0, s, true, a);
  if (err != cudaSuccess) return err;
  return launch_kernel(permute_kernel, unsigned((a.E * 32 + 255) / 256), 256, 0, s, true, a);
}

}  // namespace

cudaError_t route(const RouteArgs& a, cudaStream_t s) {
  if (a.T == 0) return cudaSuccess;
  // MXMOE_CUDA_ROUTE_LEGACY=1: the v2 geometry (8 experts x 16 tokens per CTA, 16 candidates per lane)
  // for A/B runs (same bits, see logits_kernel / topk_token).
  static const bool legacy = env_int("MXMOE_CUDA_ROUTE_LEGACY", 0) != 0;
  // Up to 256 tokens 4 tokens per CTA, so that the E x H gate streams through many SMs.
  const int epc = 8, tpc = legacy ? 16 : (a.T <= 256 ? 4 : 16);
  if (!legacy && use_logits_mma(a.T, a.H) && a.gate3 != nullptr) {
    const cudaError_t err = router_logits_mma(a, s);
    if (err != cudaSuccess) return err;
  } else if (!legacy && a.T <= kLogitsSlicedMaxTokens) {
    const int64_t items = int64_t(a.E) * ((a.T + 3) / 4);
    logits_sliced_kernel<<<unsigned(items < 4096 ? items : 4096), 256, 0, s>>>(a);
  } else {
    const dim3 g1(unsigned((a.E + epc - 1) / epc), unsigned((a.T + tpc - 1) / tpc));
    logits_kernel<<<g1, 32 * epc, 0, s>>>(a, tpc);
  }
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  if (legacy || a.E > 256) return launch_topk_permute<16>(a, s);
  if (a.E > 128) return launch_topk_permute<8>(a, s);
  return launch_topk_permute<4>(a, s);
}

cudaError_t dense_tiles(int64_t rows, int tile_rows, int4* tiles, int32_t* num_tiles, cudaStream_t s) {
  const int64_t n = (rows + tile_rows - 1) / tile_rows;
  return launch_kernel(dense_tiles_kernel, unsigned(n / 256 + 1), 256, 0, s, true, rows, tile_rows, tiles, num_tiles);
}

}  // namespace mxmoe::moe::cuda
