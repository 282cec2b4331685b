// Activation quantization of one scale block of a GEMM input (device function shared by the quantize
// kernel, moe_act_quant.cu, and the fused small-T layer kernel). Values written (bf16, exactly
// representable): vllm mode the qdq result rounded to bf16 (NVFP4 with the shared encode scale), exact
// mode element * block scale (the NVFP4 tensor scale goes on the GEMM accumulator), FP8 q (exact) or
// bf16(q * scale) (vllm); a16 bf16(x). Same float32 operation order as mxmoe::ref / src/quant/cuda
// (codec.cuh).
#pragma once
#include "moe/cuda/moe_device.cuh"

namespace mxmoe::moe::cuda {

template <AQ Q>
struct QTraits {
  static constexpr int block = 32;
  static constexpr Encoding elem = Encoding::E2M1;
};
template <>
struct QTraits<AQ::NVFP4> {
  static constexpr int block = 16;
  static constexpr Encoding elem = Encoding::E2M1;
};
template <>
struct QTraits<AQ::MXFP6_E2M3> {
  static constexpr int block = 32;
  static constexpr Encoding elem = Encoding::E2M3;
};
template <>
struct QTraits<AQ::MXFP6_E3M2> {
  static constexpr int block = 32;
  static constexpr Encoding elem = Encoding::E3M2;
};
template <>
struct QTraits<AQ::FP8> {
  static constexpr int block = 32;
  static constexpr Encoding elem = Encoding::E4M3;
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

// One block of QTraits<Q>::block values -> bf16 pairs (element 2i low, 2i + 1 high).
template <AQ Q>
__device__ __forceinline__ void quant_block(const float* v, const RowQuant& rq, uint32_t* out) {
  constexpr int B = QTraits<Q>::block;
  constexpr Encoding EL = QTraits<Q>::elem;
  float y[B];
  if constexpr (Q == AQ::None) {
#pragma unroll
    for (int i = 0; i < B; ++i) y[i] = v[i];
  } else if constexpr (Q == AQ::FP8) {
    const float s = rq.scale;
#pragma unroll
    for (int i = 0; i < B; ++i) {
      const float q = cc::decode<Encoding::E4M3>(cc::encode<Encoding::E4M3>(cc::div_rn(v[i], s), Rounding::RNE));
      y[i] = rq.vllm ? cc::mul_rn(q, s) : q;
    }
  } else {
    float amax = 0.0f;
    uint32_t bad = 0;
#pragma unroll
    for (int i = 0; i < B; ++i) {
      const uint32_t u = cc::fbits(v[i]);
      bad |= Q == AQ::NVFP4 ? uint32_t(cc::is_nan_bits(u)) : uint32_t(!cc::is_finite_bits(u));
      const float f = cc::bitsf(u & 0x7fffffffu);
      amax = f > amax ? f : amax;
    }
    if constexpr (Q == AQ::NVFP4) {
      const float gs = rq.scale;
      const uint32_t sbyte = cc::nvfp4_scale_byte(bad ? cc::quiet_nan(false) : amax, gs);
      const float scale = cc::decode<Encoding::UE4M3>(sbyte);
      const float oscale = cc::vllm_rcp(cc::mul_rn(scale, cc::vllm_rcp(gs)));
      const float mult = rq.vllm ? cc::div_rn(scale, gs) : scale;
#pragma unroll
      for (int i = 0; i < B; ++i) {
        float t = cc::mul_rn(v[i], oscale);
        t = t < -6.0f ? -6.0f : (6.0f < t ? 6.0f : t);
        y[i] = cc::mul_rn(cc::decode<EL>(cc::encode<EL>(t, Rounding::RNE)), mult);
      }
    } else {
      const Rounding rnd = Rounding(rq.rounding);
      if (bad) {
#pragma unroll
        for (int i = 0; i < B; ++i) y[i] = cc::quiet_nan(false);
      } else {
        const uint32_t sbyte = cc::mx_scale_byte<EL>(amax, ScaleRule(rq.scale_rule));
        const float inv = cc::pow2f(127 - int(sbyte));
        const float s = cc::decode_ue8m0(sbyte);
#pragma unroll
        for (int i = 0; i < B; ++i) y[i] = cc::mul_rn(cc::decode<EL>(cc::encode<EL>(cc::mul_rn(v[i], inv), rnd)), s);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < B / 2; ++i)
    out[i] = uint32_t(cc::f32_to_bf16(y[2 * i])) | uint32_t(cc::f32_to_bf16(y[2 * i + 1])) << 16;
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
