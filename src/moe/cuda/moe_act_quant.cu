// Activation quantization of a GEMM input (one thread per scale block) and the finalize stage.
// Values written (bf16, exactly representable): vllm mode the qdq result rounded to bf16 (NVFP4 with
// the shared encode scale), exact mode element * block scale (the NVFP4 tensor scale goes on the GEMM
// accumulator), FP8 q (exact) or bf16(q * scale) (vllm); a16 bf16(x). Same float32 operation order as
// mxmoe::ref / src/quant/cuda (codec.cuh).
#include "moe/cuda/moe_device.cuh"

namespace mxmoe::moe::cuda {
namespace {

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

template <AQ Q>
__global__ void __launch_bounds__(256) quant_kernel(const QuantRowsArgs a) {
  constexpr int B = QTraits<Q>::block;
  constexpr Encoding EL = QTraits<Q>::elem;
  const int64_t nb = a.K / B;
  const int64_t gid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= a.rows * nb) return;
  const int64_t r = gid / nb, b = gid - r * nb;
  const int64_t sr = a.src_row ? a.src_row[r] : r;
  float v[B];
  if (a.x_bf16) {
    const uint4* p = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(a.x) + sr * a.ldx + b * B);
#pragma unroll
    for (int i = 0; i < B / 8; ++i) {
      const uint4 w = p[i];
      const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) v[8 * i + 2 * j] = cc::bitsf(ws[j] << 16), v[8 * i + 2 * j + 1] = cc::bitsf(ws[j] & 0xffff0000u);
    }
  } else {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(a.x) + sr * a.ldx + b * B);
#pragma unroll
    for (int i = 0; i < B / 4; ++i) {
      const float4 w = p[i];
      v[4 * i] = w.x, v[4 * i + 1] = w.y, v[4 * i + 2] = w.z, v[4 * i + 3] = w.w;
    }
  }
  float y[B];
  if constexpr (Q == AQ::None) {
#pragma unroll
    for (int i = 0; i < B; ++i) y[i] = v[i];
  } else if constexpr (Q == AQ::FP8) {
    const float s = fp8_scale(a.sc);
#pragma unroll
    for (int i = 0; i < B; ++i) {
      const float q = cc::decode<Encoding::E4M3>(cc::encode<Encoding::E4M3>(cc::div_rn(v[i], s), Rounding::RNE));
      y[i] = a.vllm ? cc::mul_rn(q, s) : q;
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
      const int e = a.row_expert ? a.row_expert[r] : 0;
      const float gs = nvfp4_gs(a.sc, e);
      const uint32_t sbyte = cc::nvfp4_scale_byte(bad ? cc::quiet_nan(false) : amax, gs);
      const float scale = cc::decode<Encoding::UE4M3>(sbyte);
      const float oscale = cc::vllm_rcp(cc::mul_rn(scale, cc::vllm_rcp(gs)));
      const float mult = a.vllm ? cc::div_rn(scale, gs) : scale;
#pragma unroll
      for (int i = 0; i < B; ++i) {
        float t = cc::mul_rn(v[i], oscale);
        t = t < -6.0f ? -6.0f : (6.0f < t ? 6.0f : t);
        y[i] = cc::mul_rn(cc::decode<EL>(cc::encode<EL>(t, Rounding::RNE)), mult);
      }
    } else {
      const Rounding rnd = Rounding(a.rounding);
      if (bad) {
#pragma unroll
        for (int i = 0; i < B; ++i) y[i] = cc::quiet_nan(false);
      } else {
        const uint32_t sbyte = cc::mx_scale_byte<EL>(amax, ScaleRule(a.scale_rule));
        const float inv = cc::pow2f(127 - int(sbyte));
        const float s = cc::decode_ue8m0(sbyte);
#pragma unroll
        for (int i = 0; i < B; ++i) y[i] = cc::mul_rn(cc::decode<EL>(cc::encode<EL>(cc::mul_rn(v[i], inv), rnd)), s);
      }
    }
  }
  uint4* o = reinterpret_cast<uint4*>(a.y + r * a.K + b * B);
#pragma unroll
  for (int i = 0; i < B / 8; ++i) {
    uint32_t w[4];
#pragma unroll
    for (int j = 0; j < 4; ++j)
      w[j] = uint32_t(cc::f32_to_bf16(y[8 * i + 2 * j])) | uint32_t(cc::f32_to_bf16(y[8 * i + 2 * j + 1])) << 16;
    o[i] = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

__global__ void __launch_bounds__(256) finalize_kernel(const FinalizeArgs a) {
  const int64_t h4 = a.H / 4;
  const int64_t gid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= a.T * h4) return;
  const int64_t t = gid / h4, c = (gid - t * h4) * 4;
  float acc[4] = {0, 0, 0, 0};
  for (int j = 0; j < a.k; ++j) {
    const float w = a.weights[t * a.k + j];
    const int32_t p = a.slot_to_perm[t * a.k + j];
    const float4 y = *reinterpret_cast<const float4*>(a.y + int64_t(p) * a.H + c);
    acc[0] = cc::add_rn(acc[0], cc::mul_rn(w, y.x));
    acc[1] = cc::add_rn(acc[1], cc::mul_rn(w, y.y));
    acc[2] = cc::add_rn(acc[2], cc::mul_rn(w, y.z));
    acc[3] = cc::add_rn(acc[3], cc::mul_rn(w, y.w));
  }
  if (a.vllm)
    for (float& v : acc) v = round_bf16(v);
  *reinterpret_cast<float4*>(a.out + t * a.H + c) = make_float4(acc[0], acc[1], acc[2], acc[3]);
}

}  // namespace

cudaError_t quant_rows(const QuantRowsArgs& a, cudaStream_t s) {
  if (a.rows == 0) return cudaSuccess;
  auto go = [&](auto q) {
    constexpr AQ Q = decltype(q)::value;
    const int64_t n = a.rows * (a.K / QTraits<Q>::block);
    quant_kernel<Q><<<unsigned((n + 255) / 256), 256, 0, s>>>(a);
    return cudaGetLastError();
  };
  switch (a.aq) {
    case AQ::None: return go(std::integral_constant<AQ, AQ::None>{});
    case AQ::NVFP4: return go(std::integral_constant<AQ, AQ::NVFP4>{});
    case AQ::MXFP4: return go(std::integral_constant<AQ, AQ::MXFP4>{});
    case AQ::MXFP6_E2M3: return go(std::integral_constant<AQ, AQ::MXFP6_E2M3>{});
    case AQ::MXFP6_E3M2: return go(std::integral_constant<AQ, AQ::MXFP6_E3M2>{});
    case AQ::FP8: return go(std::integral_constant<AQ, AQ::FP8>{});
  }
  return cudaErrorInvalidValue;
}

cudaError_t finalize(const FinalizeArgs& a, cudaStream_t s) {
  const int64_t n = a.T * (a.H / 4);
  if (n == 0) return cudaSuccess;
  finalize_kernel<<<unsigned((n + 255) / 256), 256, 0, s>>>(a);
  return cudaGetLastError();
}

}  // namespace mxmoe::moe::cuda
