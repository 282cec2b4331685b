// The MoE layer for a few tokens (decode) in one cooperative kernel. At T = 1 the multi-kernel forward
// is a chain of ~9 small latency-bound launches (route, permute, quantize, GEMM, quantize, GEMM,
// finalize) around ~5 us of weight streaming; here the stages are separated by grid-wide barriers
// instead, and each CTA recomputes the tiny shared decisions (top-k, grouping, activation
// quantization) in its own shared memory instead of waiting for another launch:
//   A  logits (one CTA per expert and 4 tokens, its eight warps on the eight slice groups of
//      moe_route.cuh) and the tokens' |x| max to global memory; CTA 0 zeroes GEMM1's amax outputs
//   -- grid barrier --
//   B  every CTA: top-k of every token and the grouping by expert (same order as route/permute:
//      experts ascending, tokens ascending); then GEMM1 items {active expert, group of m-tiles}: the
//      expert's token rows quantized into shared memory, the FP4 weight stream (sm90_fp4_gemv.cuh),
//      the gated activation written to a2 [P, I] with the amax atomics of the dynamic scales
//   -- grid barrier --
//   C  GEMM2 items likewise, a2 rows quantized with GEMM2's scales, output y [P, H]
//   -- grid barrier --
//   D  finalize (weighted sum over the k slots in slot order)
// All CTAs must be co-resident: the launch is cooperative with at most fused_max_grid CTAs.
// fused_kernel<W, Q, NPL> is a template on the weights W, the activation scheme Q (both GEMM inputs use
// the layer's one scheme, FusedArgs::aq) and the router's scores per lane NPL. A runtime switch over Q
// inlined every quantizer into one ~370 KB kernel, and a third of the GEMM stall samples were on
// instruction fetch; one scheme per kernel is ~105-155 KB. Only the scheme table's (W, Q) pairs exist.
#include <cooperative_groups.h>

#include "moe/cuda/moe_act_quant.cuh"
#include "moe/cuda/moe_route.cuh"
#include "moe/cuda/sm90_fp4_gemv.cuh"

namespace mxmoe::moe::cuda {
namespace fused {
namespace {

namespace cg = cooperative_groups;
using namespace gemv;

constexpr int kWarps = 8, kThreads = 32 * kWarps, kMaxSlots = 32, kDepth = kFusedDepth;
static_assert(kWarps == 8, "stage A gives each warp one of the eight logit slice groups");

// Shared memory: scale tables, K-split (and logit) partial sums, the warps' |x| maxima, the routing of
// all tokens, per-expert amax, staged rows.
struct Layout {
  int lut = 0, red = 0, lmax = 0, slots = 0, amax_e = 0, act = 0, bytes = 0;
  __host__ __device__ Layout(int64_t T, int E, int64_t H, int64_t I) {
    red = kLutBytes;
    lmax = red + kWarps * 32 * 16;
    slots = lmax + kWarps * 4 * 4;
    amax_e = slots + 7 * kMaxSlots * 4 + 16 * 4;
    act = amax_e + ((E * 4 + 15) / 16) * 16;
    const int rs = row_stride(H) > row_stride(I) ? row_stride(H) : row_stride(I);
    bytes = act + int(T) * rs;
  }
};

struct Routing {  // in shared memory; slot s = token * k + j
  int* slot_e;    // expert of slot s
  float* slot_w;  // weight of slot s
  int* slot_p;    // row of slot s in the grouped order
  int* row_tok;   // token of grouped row p
  int* act_e;     // active experts, ascending
  int* act_p0;    // their first grouped row
  int* act_n;     // their number of rows
  float* misc;    // [0, 8): |x| max per token, [8]: over all tokens, [9]: number of active experts (int)
  float* amax_e;  // [E]: |x| max over each active expert's tokens
};

// Quantizes n rows of K into `act` in the fragment order, with the scales of expert e: source rows
// row_of[j] (GEMM1: the expert's tokens in x) or first + j (GEMM2: its grouped rows of a2).
template <AQ Q>
__device__ void stage_rows_q(const void* src, bool bf16, int64_t ld, const int* row_of, int first, int n, int64_t K, int e,
                             const ActScale& sc, const FusedArgs& a, uint8_t* act, int rs) {
  constexpr int B = QTraits<Q>::block;
  const RowQuant rq = row_quant<Q>(sc, a.g1.vllm, a.scale_rule, a.rounding, e);
  const int nb = int(K / B);
  const size_t esz = bf16 ? 2 : 4;
  for (int i = threadIdx.x; i < n * nb; i += blockDim.x) {
    const int j = i / nb, b = i - j * nb;
    float v[B];
    load_block<B>(static_cast<const uint8_t*>(src) + (int64_t(row_of ? row_of[j] : first + j) * ld + int64_t(b) * B) * esz, bf16, v);
    uint32_t w[B / 2];
    quant_block<Q>(v, rq, w);
#pragma unroll
    for (int u = 0; u < B / 8; ++u)
      *reinterpret_cast<uint4*>(act + frag_offset(j, b * B + 8 * u, rs)) =
          make_uint4(w[4 * u], w[4 * u + 1], w[4 * u + 2], w[4 * u + 3]);
  }
}

// Top-k by rank counting (T * E <= kRankMax: T = 1 with up to 128 experts): warp t puts token t's
// scores in shared memory, then two threads per candidate count, over half the experts each, the
// candidates ranked before it (higher score, then lower index: warp_top_k's order), and the candidate
// of rank j < k takes slot j. A few hundred independent compares per thread instead of k rounds of a
// warp arg-max (5 dependent shuffle pairs each) on one warp while seven wait. A token with a NaN score
// keeps the arg-max (NaN is unordered, so ranks could collide). Shared memory: s [T * E] scores,
// c [kThreads + kWarps] counts and NaN flags.
constexpr int kRankMax = kThreads / 2;
static_assert((kRankMax + kThreads + kWarps) * 4 <= kWarps * 32 * 16, "route_tokens' s and c fit in Layout::red");

// Top-k of every token (warp t), then (warp 0) the grouping of the T * k slots:
// row of slot s = the number of slots with a smaller (expert, token) key.
template <int NPL>
__device__ void route_tokens(const FusedArgs& a, const Routing& R, float* s, int* c) {
  const RouteArgs& r = a.r;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k = r.k;
  const bool by_rank = r.T * r.E <= kRankMax;
  float sc[NPL];
  uint32_t removed = 0;
  bool nan = false;
  if (by_rank) {
    if (warp < r.T) {
      topk_scores<NPL>(r, r.logits + int64_t(warp) * r.E, lane, sc, removed);
      bool bad = false;
#pragma unroll
      for (int i = 0; i < NPL; ++i)
        if (!((removed >> i) & 1u)) s[warp * r.E + lane + 32 * i] = sc[i], bad |= isnan(sc[i]);
      nan = __any_sync(0xffffffffu, bad);
      if (lane == 0) c[kThreads + warp] = nan;
    }
    __syncthreads();
    const int cand = threadIdx.x % kRankMax, h = threadIdx.x / kRankMax, ncand = int(r.T) * r.E;
    const int t = cand / r.E, e = cand - t * r.E;  // the candidate's token and expert
    int cnt = 0;
    if (cand < ncand) {
      const int half = (r.E + 1) / 2, j1 = min(r.E, (h + 1) * half);
      const float* st = s + t * r.E;
      const float me = st[e];
      for (int j = h * half; j < j1; ++j) cnt += ranks_before(st[j], j, me, e);
    }
    c[threadIdx.x] = cnt;
    __syncthreads();
    if (h == 0 && cand < ncand) {
      const int rank = cnt + c[kRankMax + cand];
      if (rank < k && !c[kThreads + t]) R.slot_e[t * k + rank] = e, R.slot_w[t * k + rank] = s[cand];
    }
    __syncthreads();
  }
  for (int t = warp; t < r.T; t += kWarps) {
    int id;
    float w;
    if (by_rank && !nan) {  // slot_w holds the selected scores until the weights replace them
      const float my_score = lane < k ? R.slot_w[t * k + lane] : 0.0f;
      id = lane < k ? R.slot_e[t * k + lane] : 0;
      w = topk_weight(r, my_score);
    } else if (by_rank) {
      float my_score;
      warp_top_k<NPL>(sc, removed, k, lane, id, my_score);
      w = topk_weight(r, my_score);
    } else {
      topk_select<NPL>(r, r.logits + int64_t(t) * r.E, lane, id, w);
    }
    if (lane < k) {
      R.slot_e[t * k + lane] = id, R.slot_w[t * k + lane] = w;
      if (blockIdx.x == 0) r.ids[t * k + lane] = id, r.weights[t * k + lane] = w;
    }
    if (lane == 0) R.misc[t] = __ldcg(r.rowamax + t);  // stage A's |x| max of the token
  }
  __syncthreads();
  if (warp != 0) return;
  const int P = int(r.T) * k;
  const bool live = lane < P;
  const int e = live ? R.slot_e[lane] : INT_MAX, tok = lane / k;
  int pos = 0, same = 0, lower_leaders = 0;
  bool leader = live;
  float am = 0.0f;
  for (int s = 0; s < P; ++s) {
    const int es = R.slot_e[s], ts = s / k;
    const bool before = es < e || (es == e && ts < tok);
    pos += before;
    if (es == e) {
      ++same;
      am = fmaxf(am, R.misc[ts]);
      if (ts < tok) leader = false;
    }
  }
  const unsigned lead_mask = __ballot_sync(0xffffffffu, leader);
  for (int s = 0; s < P; ++s) lower_leaders += ((lead_mask >> s) & 1u) && R.slot_e[s] < e;
  if (live) {
    R.slot_p[lane] = pos, R.row_tok[pos] = tok;
    if (leader) R.act_e[lower_leaders] = e, R.act_p0[lower_leaders] = pos, R.act_n[lower_leaders] = same, R.amax_e[e] = am;
  }
  float all = lane < r.T ? R.misc[lane] : 0.0f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) all = fmaxf(all, __shfl_xor_sync(0xffffffffu, all, o));
  if (lane == 0) R.misc[8] = all, reinterpret_cast<int*>(R.misc)[9] = __popc(lead_mask);
}

// One GEMM stage over the items {active expert, group of 8 / ksplit m-tiles}. GEMM1 (gated): src = x
// (bf16), rows = tokens; GEMM2: src = a2 (float32), rows = grouped rows. The stage is a runtime
// argument so that both stages run one copy of the code (see fused_kernel); both quantize their input
// with the layer's one scheme Q (FusedArgs::aq).
template <WKind W, AQ Q>
__device__ void gemm_stage(const FusedArgs& a, bool gated, const Routing& R, uint8_t* smem, const Layout& L) {
  const GemmArgs g = gated ? a.g1 : a.g2;
  ActScale sc = gated ? a.sc1 : a.g2.a_sc;
  if (gated && a.sc1_dyn == 1) sc.amax_all = R.misc + 8;
  if (gated && a.sc1_dyn == 2) sc.amax_e = R.amax_e;
  // Only NVFP4 (1 / gs) and FP8 (its scale) put an activation factor on the accumulator (act_side in
  // cuda_moe.cpp): the other kernels leave act_alpha's branches out.
  const int alpha_kind = Q == AQ::NVFP4 || Q == AQ::FP8 ? g.a_alpha_kind : 0;
  const int ksplit = gated ? a.ksplit1 : a.ksplit2;
  uint4* lut = reinterpret_cast<uint4*>(smem + L.lut);
  uint8_t* act = smem + L.act;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g8 = lane >> 2, t = lane & 3;
  const int mpc = kWarps / ksplit, M16 = g.N / 16, groups = (M16 + mpc - 1) / mpc;
  const int n_act = reinterpret_cast<const int*>(R.misc)[9];
  const int mode = row_mode(g, gated), rs = row_stride(g.K);
  const bool lut_per_expert = W == WKind::NVFP4 && g.vllm;
  int staged = -1;
  // CTA c takes a contiguous run of items, mostly of one expert: fewer restagings than a strided order
  // (measured: bench/RESULTS.md v4).
  const int total = n_act * groups, per = (total + gridDim.x - 1) / gridDim.x;
  const int first = blockIdx.x * per, last = min(total, first + per);
  for (int item = first; item < last; ++item) {
    const int ea = item / groups, grp = item - ea * groups;
    const int e = R.act_e[ea], n = R.act_n[ea], p0 = R.act_p0[ea];
    const int mt = grp * mpc + warp % mpc, kg = warp / mpc;
    const bool mt_ok = mt < M16;
    WeightStream<W, kDepth> ws;
    ws.start(g, e, mode, mt, mt_ok, kg, ksplit);
    if (e != staged) {
      if (staged < 0 || lut_per_expert) build_luts<W>(lut, g, e);
      // One call for both stages: one inlined copy of the quantizer (its bf16 / float32 load is a branch).
      stage_rows_q<Q>(gated ? static_cast<const void*>(a.r.x) : a.g1.y, gated, gated ? a.r.H : a.g1.ldy,
                      gated ? R.row_tok + p0 : nullptr, gated ? 0 : p0, n, g.K, e, sc, a, act, rs);
      staged = e;
    }
    __syncthreads();
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    ws.run(lut, act + (g8 < n ? g8 : 0) * rs + t * 16, acc);
    bool lead = true;
    if (ksplit > 1) lead = reduce_ksplit(reinterpret_cast<float4*>(smem + L.red), ksplit, mpc, acc);
    if (lead && mt_ok) {
      const float alpha = cc::mul_rn(gemm::act_alpha(alpha_kind, sc, e), g.w_alpha[e]);
      if (gated) store_mtile<true>(g, e, alpha, mode, mt, acc, n, p0);
      else store_mtile<false>(g, e, alpha, mode, mt, acc, n, p0);
    }
    __syncthreads();  // the next item restages the shared rows
  }
}

template <WKind W, AQ Q, int NPL>
__global__ void __launch_bounds__(kThreads, 1) fused_kernel(const FusedArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  cg::grid_group grid = cg::this_grid();
  const RouteArgs& r = a.r;
  const Layout L(r.T, r.E, r.H, a.g1.N / 2);
  int* si = reinterpret_cast<int*>(smem + L.slots);
  Routing R{si,
            reinterpret_cast<float*>(si + kMaxSlots),
            si + 2 * kMaxSlots,
            si + 3 * kMaxSlots,
            si + 4 * kMaxSlots,
            si + 5 * kMaxSlots,
            si + 6 * kMaxSlots,
            reinterpret_cast<float*>(si + 7 * kMaxSlots),
            reinterpret_cast<float*>(smem + L.amax_e)};
  unsigned long long* stamp = a.stamps && threadIdx.x == 0 ? a.stamps + blockIdx.x * kFusedStamps : nullptr;
  auto mark = [&](int i) {
    if (stamp) stamp[i] = clock64();
  };
  mark(0);

  // A: logits; GEMM1's amax outputs start at 0.
  if (blockIdx.x == 0) {
    if (a.g1.amax_out && threadIdx.x == 0) *a.g1.amax_out = 0.0f;
    if (a.g1.amax_out_e)
      for (int e = threadIdx.x; e < r.E; e += kThreads) a.g1.amax_out_e[e] = 0.0f;
  }
  // A CTA per (expert, 4 tokens) item: warp w on slice group w (logits4's bits).
  const int tg = int((r.T + 3) / 4);
  for (int item = blockIdx.x; item < r.E * tg; item += gridDim.x)
    logits_item_cta(r, item % r.E, 4 * int64_t(item / r.E), reinterpret_cast<float4*>(smem + L.red),
                    reinterpret_cast<float*>(smem + L.lmax), false);
  mark(1);
  grid.sync();
  mark(2);

  // B: routing (every CTA), GEMM1.
  route_tokens<NPL>(a, R, reinterpret_cast<float*>(smem + L.red), reinterpret_cast<int*>(smem + L.red) + kRankMax);
  __syncthreads();
  mark(3);
  // GEMM1, then (C) GEMM2: one loop, so GEMM2 runs the instructions GEMM1 has just fetched. At T = 1 each
  // stage's stream code runs only a few times per warp, and ncu put a quarter of the kernel's stall
  // samples on instruction fetch, most in the copy GEMM2 had of its own (bench/RESULTS.md v10).
#pragma unroll 1
  for (int s = 0; s < 2; ++s) {
    gemm_stage<W, Q>(a, s == 0, R, smem, L);
    mark(4 + 2 * s);
    grid.sync();
    mark(5 + 2 * s);
  }

  // D: finalize.
  FinalizeArgs f;
  f.y = a.g2.y, f.slot_to_perm = R.slot_p, f.weights = R.slot_w, f.T = r.T, f.H = r.H, f.k = r.k, f.vllm = a.g1.vllm;
  f.out = a.out;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < r.T * (r.H / 4); i += int64_t(gridDim.x) * kThreads)
    finalize_vec4(f, i);
  mark(8);
}

// Calls f(kernel) with the instantiation for these weights, activation scheme and experts, its dynamic
// shared-memory limit raised to at least smem_bytes.
template <WKind W, AQ Q, class F>
cudaError_t with_scheme(int E, int smem_bytes, F& f) {
  auto go = [&](auto kern, cudaError_t raised) { return raised != cudaSuccess ? raised : f(kern); };
  return E <= 128 ? go(fused_kernel<W, Q, 4>, ensure_smem<fused_kernel<W, Q, 4>>(smem_bytes))
                  : go(fused_kernel<W, Q, 16>, ensure_smem<fused_kernel<W, Q, 16>>(smem_bytes));
}

// Only the (weights, activations) pairs of the scheme table (moe_scheme.cpp) are instantiated: each
// kernel inlines one quantizer. Any other pair is refused, so fused_max_grid gives 0 and the layer
// takes the multi-kernel path.
template <class F>
cudaError_t with_kernel(WKind wk, AQ aq, int E, int smem_bytes, F&& f) {
  using W = WKind;
  if (wk == W::NVFP4 && aq == AQ::NVFP4) return with_scheme<W::NVFP4, AQ::NVFP4>(E, smem_bytes, f);
  if (wk == W::NVFP4 && aq == AQ::None) return with_scheme<W::NVFP4, AQ::None>(E, smem_bytes, f);
  if (wk == W::MXFP4 && aq == AQ::MXFP4) return with_scheme<W::MXFP4, AQ::MXFP4>(E, smem_bytes, f);
  if (wk == W::MXFP4 && aq == AQ::MXFP6_E2M3) return with_scheme<W::MXFP4, AQ::MXFP6_E2M3>(E, smem_bytes, f);
  if (wk == W::MXFP4 && aq == AQ::MXFP6_E3M2) return with_scheme<W::MXFP4, AQ::MXFP6_E3M2>(E, smem_bytes, f);
  if (wk == W::MXFP4 && aq == AQ::FP8) return with_scheme<W::MXFP4, AQ::FP8>(E, smem_bytes, f);
  if (wk == W::MXFP4 && aq == AQ::None) return with_scheme<W::MXFP4, AQ::None>(E, smem_bytes, f);
  return cudaErrorInvalidValue;
}

}  // namespace
}  // namespace fused

int fused_smem_bytes(int64_t T, int E, int64_t H, int64_t I) { return fused::Layout(T, E, H, I).bytes; }

int fused_max_grid(WKind wk, AQ aq, int E, int smem_bytes) {
  int dev = 0, sms = 0, coop = 0, per_sm = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) || !coop)
    return 0;
  const cudaError_t err = fused::with_kernel(wk, aq, E, smem_bytes, [&](auto kern) {
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, fused::kThreads, smem_bytes);
  });
  if (err != cudaSuccess) {
    // A shape that does not fit, or a scheme pair without a kernel: the caller takes the multi-kernel path.
    (void)cudaGetLastError();
    return 0;
  }
  return sms * (per_sm < 2 ? per_sm : 2);
}

cudaError_t fused_moe(const FusedArgs& a, int grid, cudaStream_t s) {
  if (a.r.T == 0) return cudaSuccess;
  if (a.r.T > 8 || a.r.T * a.r.k > fused::kMaxSlots || a.r.E > 512 || grid <= 0) return cudaErrorInvalidValue;
  const int smem = fused_smem_bytes(a.r.T, a.r.E, a.r.H, a.g1.N / 2);
  return fused::with_kernel(a.g1.wk, a.aq, a.r.E, smem, [&](auto kern) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    cfg.gridDim = dim3(unsigned(grid)), cfg.blockDim = dim3(fused::kThreads), cfg.dynamicSmemBytes = size_t(smem);
    cfg.stream = s, cfg.attrs = attr, cfg.numAttrs = 1;
    if (!fused_stage_stamps()) return cudaLaunchKernelEx(&cfg, kern, a);
    FusedArgs b = a;
    b.stamps = fused_stage_stamps();
    return cudaLaunchKernelEx(&cfg, kern, b);
  });
}

}  // namespace mxmoe::moe::cuda
