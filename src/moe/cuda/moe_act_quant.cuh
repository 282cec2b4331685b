// Activation quantization of one scale block of a GEMM input (device function shared by the quantize
// kernel, moe_act_quant.cu, and the fused small-T layer kernel). Values written (bf16, exactly
// representable): vllm mode the qdq result rounded to bf16 (NVFP4 with the shared encode scale), exact
// mode element * block scale (the NVFP4 tensor scale goes on the GEMM accumulator), FP8 q (exact) or
// bf16(q * scale) (vllm); a16 bf16(x). Same float32 operation order as mxmoe::ref / src/quant/cuda
// (codec.cuh).
#pragma once
#include <type_traits>

#include "moe/cuda/moe_device.cuh"

namespace mxmoe::moe::cuda {

// The block scheme of a quantized GEMM input (format traits: scheme.hpp). None and FP8 (one scale per
// tensor) have none: they are processed elementwise, in chunks of 32.
constexpr bool aq_blocked(AQ q) { return q == AQ::NVFP4 || q == AQ::MXFP4 || q == AQ::MXFP6_E2M3 || q == AQ::MXFP6_E3M2; }
constexpr Scheme aq_scheme(AQ q) {
  return q == AQ::NVFP4 ? Scheme::NVFP4 : q == AQ::MXFP6_E2M3 ? Scheme::MXFP6_E2M3 : q == AQ::MXFP6_E3M2 ? Scheme::MXFP6_E3M2 : Scheme::MXFP4;
}

// The run-time activation kind as a compile-time one: f(std::integral_constant<AQ, Q>{}) for q's Q. Shared
// by the host launchers and device code (tile128's epilogue), like visit_wkind for the weights. AQ only ever
// holds its listed values (cuda_moe.cpp maps the scheme), so None also takes the place of a default.
template <class F>
__host__ __device__ __forceinline__ decltype(auto) visit_aq(AQ q, F&& f) {
  switch (q) {
    case AQ::NVFP4: return f(std::integral_constant<AQ, AQ::NVFP4>{});
    case AQ::MXFP4: return f(std::integral_constant<AQ, AQ::MXFP4>{});
    case AQ::MXFP6_E2M3: return f(std::integral_constant<AQ, AQ::MXFP6_E2M3>{});
    case AQ::MXFP6_E3M2: return f(std::integral_constant<AQ, AQ::MXFP6_E3M2>{});
    case AQ::FP8: return f(std::integral_constant<AQ, AQ::FP8>{});
    case AQ::None: break;
  }
  return f(std::integral_constant<AQ, AQ::None>{});
}

template <AQ Q>
struct QTraits {
  static constexpr int block = aq_blocked(Q) ? traits(aq_scheme(Q)).block : 32;
  static constexpr Encoding elem = Q == AQ::FP8 ? Encoding::E4M3 : traits(aq_scheme(Q)).element;
};

// The parameters of one row's quantization.
struct RowQuant {
  bool vllm = true;
  int scale_rule = 0, rounding = 0;  // MX
  float scale = 1.0f;                 // NVFP4: the encode scale gs; FP8: the per-tensor scale
};

// Row parameters of a GEMM input of expert e (sc: see ActScale).
template <AQ Q>
__device__ __forceinline__ RowQuant row_quant(const ActScale& sc, bool vllm, int scale_rule, int rounding, int e) {
  RowQuant q;
  q.vllm = vllm, q.scale_rule = scale_rule, q.rounding = rounding;
  if constexpr (Q == AQ::NVFP4) q.scale = nvfp4_gs(sc, e);
  if constexpr (Q == AQ::FP8) q.scale = fp8_scale(sc);
  return q;
}

// A block's parameters from its |x| max (NaN excluded) and whether it holds a NaN (NVFP4) or a non-finite
// value (MX): then each element goes through quant_elem on its own, so a block can be split across lanes.
struct BlockQ {
  float oscale = 1.0f, mult = 1.0f;  // NVFP4: x * oscale -> E2M1 -> * mult; MX: * inv (oscale) -> EL -> * s (mult)
  bool nan = false;                  // MX: the block holds a non-finite value, every element becomes NaN
};

// Folds N values into a block's |x| max (NaN excluded: the comparisons skip it) and its bad flag (a NaN
// for NVFP4, a non-finite value for MX); a block split across lanes folds each lane's part, then combines.
template <AQ Q, int N>
__device__ __forceinline__ void scan_block(const float* v, float& amax, bool& bad) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const uint32_t u = cc::fbits(v[i]);
    bad |= Q == AQ::NVFP4 ? cc::is_nan_bits(u) : !cc::is_finite_bits(u);
    const float f = cc::bitsf(u & 0x7fffffffu);
    amax = f > amax ? f : amax;
  }
}

template <AQ Q>
__device__ __forceinline__ BlockQ block_params(float amax, bool bad, const RowQuant& rq) {
  constexpr Encoding EL = QTraits<Q>::elem;
  BlockQ p;
  if constexpr (Q == AQ::NVFP4) {
    const float gs = rq.scale;
    const uint32_t sbyte = cc::nvfp4_scale_byte(bad ? cc::quiet_nan(false) : amax, gs);
    const float scale = cc::decode<Encoding::UE4M3>(sbyte);
    p.oscale = cc::vllm_rcp(cc::mul_rn(scale, cc::vllm_rcp(gs)));
    p.mult = rq.vllm ? cc::div_rn(scale, gs) : scale;
  } else if constexpr (Q != AQ::None && Q != AQ::FP8) {
    p.nan = bad;
    if (!bad) {
      const uint32_t sbyte = cc::mx_scale_byte<EL>(amax, ScaleRule(rq.scale_rule));
      p.oscale = cc::pow2f(127 - int(sbyte));
      p.mult = cc::decode_ue8m0(sbyte);
    }
  }
  return p;
}

// One element of a block with parameters p (see quant_block for what the values are).
template <AQ Q>
__device__ __forceinline__ float quant_elem(float v, const BlockQ& p, const RowQuant& rq) {
  constexpr Encoding EL = QTraits<Q>::elem;
  if constexpr (Q == AQ::None) {
    return v;
  } else if constexpr (Q == AQ::FP8) {
    const float q = cc::decode<Encoding::E4M3>(cc::encode<Encoding::E4M3>(cc::div_rn(v, rq.scale), Rounding::RNE));
    return rq.vllm ? cc::mul_rn(q, rq.scale) : q;
  } else if constexpr (Q == AQ::NVFP4) {
    float t = cc::mul_rn(v, p.oscale);
    t = t < -6.0f ? -6.0f : (6.0f < t ? 6.0f : t);
    return cc::mul_rn(cc::decode<EL>(cc::encode<EL>(t, Rounding::RNE)), p.mult);
  } else {
    if (p.nan) return cc::quiet_nan(false);
    return cc::mul_rn(cc::decode<EL>(cc::encode<EL>(cc::mul_rn(v, p.oscale), Rounding(rq.rounding))), p.mult);
  }
}

// Two elements -> one bf16 pair (the first low).
template <AQ Q>
__device__ __forceinline__ uint32_t quant_pair(float v0, float v1, const BlockQ& p, const RowQuant& rq) {
  return uint32_t(cc::f32_to_bf16(quant_elem<Q>(v0, p, rq))) | uint32_t(cc::f32_to_bf16(quant_elem<Q>(v1, p, rq))) << 16;
}

// One block of QTraits<Q>::block values -> bf16 pairs (element 2i low, 2i + 1 high).
template <AQ Q>
__device__ __forceinline__ void quant_block(const float* v, const RowQuant& rq, uint32_t* out) {
  constexpr int B = QTraits<Q>::block;
  float amax = 0.0f;
  bool bad = false;
  if constexpr (aq_blocked(Q)) scan_block<Q, B>(v, amax, bad);
  const BlockQ p = block_params<Q>(amax, bad, rq);
#pragma unroll
  for (int i = 0; i < B / 2; ++i) out[i] = quant_pair<Q>(v[2 * i], v[2 * i + 1], p, rq);
}

// Loads B consecutive bf16 or float32 values as float (through L2: the fused kernel reads rows that other
// CTAs wrote in the same launch).
template <int B>
__device__ __forceinline__ void load_block(const void* p, bool bf16, float* v) {
  if (bf16) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int i = 0; i < B / 8; ++i) {
      const uint4 w = __ldcg(q + i);
      const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) v[8 * i + 2 * j] = cc::bitsf(ws[j] << 16), v[8 * i + 2 * j + 1] = cc::bitsf(ws[j] & 0xffff0000u);
    }
  } else {
    const float4* q = reinterpret_cast<const float4*>(p);
#pragma unroll
    for (int i = 0; i < B / 4; ++i) {
      const float4 w = __ldcg(q + i);
      v[4 * i] = w.x, v[4 * i + 1] = w.y, v[4 * i + 2] = w.z, v[4 * i + 3] = w.w;
    }
  }
}

}  // namespace mxmoe::moe::cuda
