// Device pieces of the router shared by the route kernels (moe_route.cu) and the fused small-T layer
// kernel: the logits of one expert for 4 tokens (by one warp, or by a CTA of 8 warps), and the top-k
// selection of one token (softmax_topk, topk_then_softmax; the grouped sigmoid router runs in
// moe_route.cu only).
#pragma once
#include <cfloat>

#include "moe/cuda/moe_device.cuh"

namespace mxmoe::moe::cuda {

// The logit summation order, the same bits whatever the caller's geometry: H is cut into 256-wide
// slices (lane l holds elements 256 i + 8 l .. + 7 of slice i), each slice's products summed by one FMA
// chain from 0; slice group g (slices g, g + 8, g + 16, ...) adds its slices in order into q_g; per lane
// the logit part is 0 + q_0 + q_1 + ... + q_7 in order, then the warp's xor butterfly. Slice groups let
// the fused kernel give the eight groups of one expert to eight warps (one 256-wide slice each at H =
// 2048) instead of a chain of H / 256 dependent loads in one warp.

// q[i]: slice group `grp` of gate row `grow` with token t0 + i (< a.T); am[i]: running |x| max.
__device__ __forceinline__ void logits_group(const RouteArgs& a, const float* grow, int64_t t0, int lane, int grp,
                                             float q[4], float am[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) q[i] = 0.0f;
  for (int64_t h = 256 * int64_t(grp) + int64_t(lane) * 8; h < a.H; h += 2048) {
    const float4 g0 = __ldg(reinterpret_cast<const float4*>(grow + h));
    const float4 g1 = __ldg(reinterpret_cast<const float4*>(grow + h + 4));
    const float gv[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t t = t0 + i;
      if (t >= a.T) break;
      const uint4 xv = __ldg(reinterpret_cast<const uint4*>(a.x + t * a.H + h));
      const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
      float part = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float lo = cc::bitsf(xw[j] << 16), hi = cc::bitsf(xw[j] & 0xffff0000u);
        part = fmaf(lo, gv[2 * j], part);
        part = fmaf(hi, gv[2 * j + 1], part);
        am[i] = fmaxf(am[i], fmaxf(fabsf(lo), fabsf(hi)));
      }
      q[i] += part;
    }
  }
}

// The xor butterfly of the order above (sums) and of the |x| maxima; every lane gets the results.
__device__ __forceinline__ void logits_reduce(float acc[4], float am[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
      am[i] = fmaxf(am[i], __shfl_xor_sync(0xffffffffu, am[i], o));
    }
  }
}

// One warp: the logit dot products of gate row `grow` with tokens t0 .. t0 + 3 (< a.T) and the tokens'
// |x| maxima, reduced over the warp (every lane holds the results).
__device__ __forceinline__ void logits4(const RouteArgs& a, const float* grow, int64_t t0, int lane, float acc[4],
                                        float am[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) acc[i] = 0.0f, am[i] = 0.0f;
  for (int grp = 0; grp < 8; ++grp) {
    float q[4];
    logits_group(a, grow, t0, lane, grp, q, am);
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i] += q[i];
  }
  logits_reduce(acc, am);
}

// One item of the logits by a whole CTA of 8 warps (every thread calls it): expert e with tokens t0 ..
// t0 + 3 (< a.T), warp w on slice group w, warp 0 adding the groups in order (logits4's bits); writes
// the logits (+ gate bias) and, for e == 0, the tokens' |x| maxima to rowamax (and into amax_x when
// amax_all). Shared memory: red 8 * 32 float4, lmax 8 * 4 floats.
__device__ __forceinline__ void logits_item_cta(const RouteArgs& a, int e, int64_t t0, float4* red, float* lmax,
                                                bool amax_all) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float q[4], am[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  logits_group(a, a.gate + int64_t(e) * a.H, t0, lane, warp, q, am);
  red[warp * 32 + lane] = make_float4(q[0], q[1], q[2], q[3]);
  if (e == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) am[i] = fmaxf(am[i], __shfl_xor_sync(0xffffffffu, am[i], o));
    if (lane == 0)
#pragma unroll
      for (int i = 0; i < 4; ++i) lmax[warp * 4 + i] = am[i];
  }
  __syncthreads();
  if (warp == 0) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, m[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int w = 0; w < 8; ++w) {
      const float4 v = red[w * 32 + lane];
      acc[0] += v.x, acc[1] += v.y, acc[2] += v.z, acc[3] += v.w;
    }
    logits_reduce(acc, m);
    if (lane == 0)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (t0 + i < a.T) {
          a.logits[(t0 + i) * a.E + e] = acc[i] + (a.gate_bias ? a.gate_bias[e] : 0.0f);
          if (e == 0) {
            float mx = 0.0f;
            for (int w = 0; w < 8; ++w) mx = fmaxf(mx, lmax[w * 4 + i]);
            a.rowamax[t0 + i] = mx;
            if (amax_all) atomic_max_pos(a.amax_x, mx);
          }
        }
  }
  __syncthreads();  // red and lmax are reused by the next item
}

__device__ __forceinline__ bool ranks_before(float a, int ia, float b, int ib) {
  return a > b || (a == b && ia < ib);
}

// k rounds of a warp arg-max over the lanes' candidates sc[i] (expert lane + 32 i) whose bit i of
// `removed` is clear (set it for experts past E): lane j < k gets the j-th best (higher score, then lower
// index) in id / score.
template <int NPL>
__device__ __forceinline__ void warp_top_k(const float (&sc)[NPL], uint32_t removed, int k, int lane, int& id,
                                           float& score) {
  int my_id = 0;
  float my_score = 0.0f;
  for (int j = 0; j < k; ++j) {
    float best = 0.0f;
    int bidx = INT_MAX;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
      const int e = lane + 32 * i;
      if (!((removed >> i) & 1u) && (bidx == INT_MAX || ranks_before(sc[i], e, best, bidx))) best = sc[i], bidx = e;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bidx, o);
      if (oi != INT_MAX && (bidx == INT_MAX || ranks_before(ob, oi, best, bidx))) best = ob, bidx = oi;
    }
    if (bidx == INT_MAX) bidx = 0;  // unreachable for k <= candidates; keeps indices in bounds
    if ((bidx & 31) == lane) removed |= 1u << (bidx >> 5);
    if (lane == j) my_id = bidx, my_score = best;
  }
  id = my_id, score = my_score;
}

// The selection scores of one token's logits x[E] (softmax_topk: the softmax; topk_then_softmax: the
// logits) for lane's candidates e = lane + 32 i (i < NPL, E <= 32 * NPL); `removed` bit i set where
// e >= E (score -inf / 0 there, so a smaller NPL gives the same bits as 16: the softmax sum only drops
// additions of +0).
template <int NPL>
__device__ __forceinline__ void topk_scores(const RouteArgs& a, const float* x, int lane, float (&sc)[NPL],
                                            uint32_t& removed) {
  float v[NPL];
  float m = -INFINITY;
#pragma unroll
  for (int i = 0; i < NPL; ++i) {
    const int e = lane + 32 * i;
    v[i] = e < a.E ? x[e] : -INFINITY;
    m = fmaxf(m, v[i]);
  }
  if (a.kind == 0) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
      sc[i] = lane + 32 * i < a.E ? expf(v[i] - m) : 0.0f;
      sum += sc[i];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
#pragma unroll
    for (int i = 0; i < NPL; ++i) sc[i] = cc::div_rn(sc[i], sum);
  } else {
#pragma unroll
    for (int i = 0; i < NPL; ++i) sc[i] = v[i];
  }
  removed = 0;
#pragma unroll
  for (int i = 0; i < NPL; ++i)
    if (lane + 32 * i >= a.E) removed |= 1u << i;
}

// The router weight of slot `lane` (< k) from the selected scores, slot j's in lane j: renormalized
// softmax (softmax_topk) or the softmax over the k logits (topk_then_softmax), times the scaling.
__device__ __forceinline__ float topk_weight(const RouteArgs& a, float my_score) {
  float w = my_score;
  if (a.kind == 0) {
    if (a.renormalize) {
      float s = 0.0f;
      for (int j = 0; j < a.k; ++j) s = cc::add_rn(s, __shfl_sync(0xffffffffu, my_score, j));
      w = cc::div_rn(my_score, s);
    }
    return cc::mul_rn(w, a.scaling);
  }
  const float m0 = __shfl_sync(0xffffffffu, my_score, 0);
  const float ex = expf(my_score - m0);
  float s = 0.0f;
  for (int j = 0; j < a.k; ++j) s = cc::add_rn(s, __shfl_sync(0xffffffffu, ex, j));
  return cc::mul_rn(cc::div_rn(ex, s), a.scaling);
}

// Top-k of one token's logits x[E] by one warp: scores, k rounds of a warp arg-max (higher score, then
// lower index), weights; lane j < k gets slot j's expert and weight.
template <int NPL>
__device__ __forceinline__ void topk_select(const RouteArgs& a, const float* x, int lane, int& id, float& weight) {
  float sc[NPL];
  uint32_t removed;
  topk_scores<NPL>(a, x, lane, sc, removed);
  float my_score;
  warp_top_k<NPL>(sc, removed, a.k, lane, id, my_score);
  weight = topk_weight(a, my_score);
}

}  // namespace mxmoe::moe::cuda
