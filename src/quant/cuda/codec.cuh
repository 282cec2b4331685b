// Exact element and scale codecs for device code (and the host, for emulation tests), driven by the
// constexpr traits tables of format.hpp / scheme.hpp. Every function is bit-identical to the scalar
// reference (src/format/encoding.cpp, src/quant/ref/quant_ref.cpp): encodings are done with integer
// arithmetic on the float32 bits, and each float operation the reference does in float32 is done
// here with an explicitly rounded intrinsic (no FMA contraction, no flush-to-zero, IEEE division).
//
// This header must stay free of fmt (mxmoe/error.hpp): fmt's consteval format strings do not
// compile under nvcc.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/host_device.hpp"
#include "mxmoe/dtype.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/scheme.hpp"

namespace mxmoe::cuda::codec {

// ---- exact float32 helpers (identical on host and device) -----------------------------------------

MXMOE_HD uint32_t fbits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

MXMOE_HD float bitsf(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Correctly rounded (RNE) float32 operations that the compiler may not contract into an FMA.
MXMOE_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
MXMOE_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
MXMOE_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
MXMOE_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

MXMOE_HD int clz32(uint32_t u) {  // u != 0
#if defined(__CUDA_ARCH__)
  return __clz(int(u));
#else
  return __builtin_clz(u);
#endif
}

MXMOE_HD bool is_nan_bits(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }
MXMOE_HD bool is_finite_bits(uint32_t u) { return (u & 0x7f800000u) != 0x7f800000u; }

// floor(log2(a)) of a positive, finite, non-zero float given by its bits (subnormals included).
MXMOE_HD int ilogb_pos(uint32_t a) {
  const int e8 = int(a >> 23);
  return e8 != 0 ? e8 - 127 : (31 - clz32(a)) - 149;
}
// Whether a positive, finite, non-zero float is a power of two.
MXMOE_HD bool pow2_pos(uint32_t a) { return (a >> 23) != 0 ? (a & 0x7fffffu) == 0 : (a & (a - 1)) == 0; }
// ceil(log2(a)), a > 0 finite: the reference's ceil_log2.
MXMOE_HD int ceil_log2_pos(uint32_t a) { return ilogb_pos(a) + (pow2_pos(a) ? 0 : 1); }

// 2^e as a float32, e in [-149, 127] (subnormal powers included).
MXMOE_HD float pow2f(int e) { return e >= -126 ? bitsf(uint32_t(e + 127) << 23) : bitsf(1u << (e + 149)); }

MXMOE_HD float quiet_nan(bool neg) { return bitsf(neg ? 0xffc00000u : 0x7fc00000u); }

// Float32 bits of a positive double that is exactly a normal float32 (the traits' max_finite values).
constexpr uint32_t exact_f32_bits(double v) {
  int e = 0;
  while (v >= 2.0) v /= 2.0, ++e;
  while (v < 1.0) v *= 2.0, --e;
  return uint32_t(e + 127) << 23 | uint32_t((v - 1.0) * 8388608.0);
}

// ---- compile-time facts of an encoding, read off the traits table ----------------------------------

template <Encoding E>
struct Enc {
  static constexpr int bits = traits(E).bits;
  static constexpr int ebits = traits(E).ebits;
  static constexpr int mbits = traits(E).mbits;
  static constexpr int bias = traits(E).bias;
  static constexpr int emin = 1 - bias;  // exponent of the smallest normal
  static constexpr bool is_signed = traits(E).is_signed;
  static constexpr Special special = traits(E).special;
  static constexpr int emax = traits(E).emax;
  static constexpr uint32_t nan_code = traits(E).nan_code;
  static constexpr uint32_t max_bits = exact_f32_bits(traits(E).max_finite);
  static constexpr float max_finite = float(traits(E).max_finite);
};

// ---- element codecs ---------------------------------------------------------------------------------

// encode_minifloat of encoding.cpp: nearest code under r, finite overflow saturates, Inf saturates
// (E5M2 keeps it), NaN gives the format's nan_code, negatives clamp to 0 in unsigned formats.
// Branch-free integer rounding: with a = sig * 2^(E - 150) (E = max(float exponent field, 1)), the
// element quantum is 2^(max(E, emin + 127) - 127 - mbits), so the code is
// ((max(E, emin + 127) - 127 - emin) << mbits) + round(sig >> sh) with sh = max(E, emin + 127) - E +
// 23 - mbits; a carry of the rounded count into 2^(mbits + 1) lands on the next exponent by itself.
template <Encoding E>
MXMOE_HD uint32_t encode_minifloat(float x, Rounding r) {
  using T = Enc<E>;
  constexpr int kEminF = T::emin + 127;  // emin as a float32 exponent field
  const uint32_t u = fbits(x);
  const uint32_t sign = T::is_signed ? ((u >> 31) << (T::bits - 1)) : 0u;
  const uint32_t abits = u & 0x7fffffffu;
  // Rounding is monotone and max_finite is a code, so anything >= max_finite (Inf too) saturates.
  const uint32_t a = abits < T::max_bits ? abits : T::max_bits;
  const int e8 = int(a >> 23);
  const int ef = e8 > 1 ? e8 : 1;
  const int eq = ef > kEminF ? ef : kEminF;
  const uint32_t sig = (a & 0x7fffffu) | (e8 != 0 ? 0x800000u : 0u);
  int sh = eq - ef + 23 - T::mbits;
  sh = sh < 31 ? sh : 31;  // sig < 2^24 <= 2^(sh - 1) rounds to 0 with no tie from sh = 25 on
  const uint32_t half = 1u << (sh - 1);
  const uint32_t up = r == Rounding::Away ? half : half - 1 + ((sig >> sh) & 1u);
  const uint32_t n = (sig + up) >> sh;
  uint32_t code = sign | ((uint32_t(eq - kEminF) << T::mbits) + n);
  if constexpr (T::special == Special::IEEE)
    code = abits == 0x7f800000u ? (sign | (((1u << T::ebits) - 1) << T::mbits)) : code;
  if constexpr (!T::is_signed) code = (u >> 31) ? 0u : code;
  return abits > 0x7f800000u ? T::nan_code : code;
}

// Decodes by placing the code's exponent and mantissa bits in a float32 (a float32 subnormal when the
// element is subnormal) and scaling by 2^(127 - bias): exact, no branches but the NaN/Inf codes.
template <Encoding E>
MXMOE_HD float decode_minifloat(uint32_t code) {
  using T = Enc<E>;
  constexpr uint32_t man_mask = (1u << T::mbits) - 1, exp_mask = (1u << T::ebits) - 1;
  const uint32_t mag = code & ((1u << (T::ebits + T::mbits)) - 1);
  const bool neg = T::is_signed && ((code >> (T::bits - 1)) & 1u);
  float v = mul_rn(bitsf(mag << (23 - T::mbits)), bitsf(uint32_t(127 - T::bias + 127) << 23));
  if constexpr (T::special == Special::IEEE)
    v = (mag >> T::mbits) == exp_mask ? ((mag & man_mask) == 0 ? bitsf(0x7f800000u) : quiet_nan(false)) : v;
  if constexpr (T::special == Special::FnNaN) v = mag == ((exp_mask << T::mbits) | man_mask) ? quiet_nan(false) : v;
  return neg ? -v : v;
}

// MXINT8 element: k * 2^-6, k = round(clamp(64 x, -127, 127)); NaN gives 0. x * 64 is exact in float32
// (or overflows to Inf, which clamps like the reference's double).
MXMOE_HD uint32_t encode_int8(float x, Rounding r) {
  if (is_nan_bits(fbits(x))) return 0;
  float k = mul_rn(x, 64.0f);
  k = k < -127.0f ? -127.0f : (k > 127.0f ? 127.0f : k);
  k = r == Rounding::RNE ? rintf(k) : roundf(k);  // both are symmetric in sign
  return uint32_t(uint8_t(int8_t(int(k))));
}
MXMOE_HD float decode_int8(uint32_t code) { return mul_rn(float(int8_t(uint8_t(code))), 0.015625f); }

// UE8M0: 2^(code - 127), 0xFF is NaN.
MXMOE_HD float decode_ue8m0(uint32_t code) { return code == 0xffu ? quiet_nan(false) : pow2f(int(code) - 127); }

template <Encoding E>
MXMOE_HD uint32_t encode(float x, Rounding r) {
  static_assert(E != Encoding::UE8M0, "UE8M0 scales are made by mx_scale_byte");
  if constexpr (E == Encoding::INT8) return encode_int8(x, r);
  else return encode_minifloat<E>(x, r);
}

template <Encoding E>
MXMOE_HD float decode(uint32_t code) {
  if constexpr (E == Encoding::INT8) return decode_int8(code);
  else if constexpr (E == Encoding::UE8M0) return decode_ue8m0(code);
  else if constexpr (E == Encoding::UE4M3) return decode_minifloat<E>(code & 0x7fu);  // sign bit unused
  else return decode_minifloat<E>(code & ((1u << Enc<E>::bits) - 1));
}

// ---- block scales -----------------------------------------------------------------------------------

// mx_scale_byte of quant_ref.cpp for a finite amax >= 0 (non-finite amax gives 0xFF).
template <Encoding Elem>
MXMOE_HD uint32_t mx_scale_byte(float amax, ScaleRule rule) {
  using T = Enc<Elem>;
  const uint32_t a = fbits(amax);
  if (!is_finite_bits(a)) return 0xffu;
  int e;
  switch (rule) {
    case ScaleRule::Floor: e = a == 0 ? -127 : ilogb_pos(a) - T::emax; break;
    case ScaleRule::Ceil: e = a == 0 ? -127 : ceil_log2_pos(a) - T::emax; break;
    case ScaleRule::Even: {
      const uint32_t b = a + (1u << (23 - T::mbits - 1));
      const int expf = int((b >> 23) & 0xffu);
      if (expf == 0) return 0;
      if (expf == 0xff) return 254;
      e = expf - 127 - T::emax;
      break;
    }
    default: {  // RCeil: smallest power of two >= amax / max_finite, divided in float32
      const uint32_t v = fbits(div_rn(amax, T::max_finite));
      e = v == 0 ? -127 : ceil_log2_pos(v);
      break;
    }
  }
  e = e < -127 ? -127 : (e > 127 ? 127 : e);
  return uint32_t(e + 127);
}

// vLLM's get_reciprocal: 1 / (v + (v == 0) * 1e8).
MXMOE_HD float vllm_rcp(float v) { return div_rn(1.0f, add_rn(v, v == 0.0f ? 1e8f : 0.0f)); }

// NVFP4 block scale byte: e4m3(min(gs * (amax * (1/6)), 448)); a NaN amax gives the NaN code.
MXMOE_HD uint32_t nvfp4_scale_byte(float amax, float gs) {
  float s = mul_rn(gs, mul_rn(amax, 1.0f / 6.0f));
  s = 448.0f < s ? 448.0f : s;  // std::min(s, 448.0f): keeps NaN
  return encode_minifloat<Encoding::UE4M3>(s, Rounding::RNE);
}

// ---- storage dtypes (ports of dtype.hpp / dtype.cpp, bit for bit, NaN payloads included) ---------

MXMOE_HD float bf16_to_f32(uint32_t h) { return bitsf(h << 16); }
// Device: the hardware conversions are IEEE round-to-nearest-even (as the host ports below); only
// NaN payloads are patched to match the host bit for bit.
MXMOE_HD uint16_t f32_to_bf16(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t n = fbits(f);
  return is_nan_bits(n) ? uint16_t((n >> 16) | 0x40) : __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  uint32_t u = fbits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1);
  return uint16_t(u >> 16);
#endif
}

MXMOE_HD float f16_to_f32(uint32_t h) {
#if defined(__CUDA_ARCH__)
  if ((h & 0x7c00u) != 0x7c00u) return __half2float(__ushort_as_half(uint16_t(h)));  // exact
#endif
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bitsf(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    const float v = mul_rn(float(man), 0x1p-24f);
    return sign ? -v : v;
  }
  return bitsf(sign | ((exp + 112) << 23) | (man << 13));
}
MXMOE_HD uint16_t f32_to_f16(float f) {
#if defined(__CUDA_ARCH__)
  const uint32_t n = fbits(f);
  return is_nan_bits(n) ? uint16_t(((n >> 16) & 0x8000u) | 0x7e00u | ((n >> 13) & 0x3ffu))
                        : __half_as_ushort(__float2half_rn(f));
#else
  const uint32_t u = fbits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);
  if (a < 0x38800000u) {
    const float scaled = mul_rn(bitsf(a), 0x1p24f);
    const uint32_t q = uint32_t(scaled);
    const float rem = sub_rn(scaled, float(q));
    const uint32_t r = q + ((rem > 0.5f) || (rem == 0.5f && (q & 1u)));
    return uint16_t(sign | r);
  }
  uint32_t v = a - (112u << 23);
  v += 0xfffu + ((v >> 13) & 1u);
  return uint16_t(sign | (v >> 13));
#endif
}

// Storage <-> float32 for the float dtypes the quantizers read and write.
template <DType D>
struct Storage;
template <>
struct Storage<DType::F32> {
  using T = uint32_t;
  MXMOE_HD static float load(T v) { return bitsf(v); }
  MXMOE_HD static T store(float f) { return fbits(f); }
};
template <>
struct Storage<DType::BF16> {
  using T = uint16_t;
  MXMOE_HD static float load(T v) { return bf16_to_f32(v); }
  MXMOE_HD static T store(float f) { return f32_to_bf16(f); }
};
template <>
struct Storage<DType::F16> {
  using T = uint16_t;
  MXMOE_HD static float load(T v) { return f16_to_f32(v); }
  MXMOE_HD static T store(float f) { return f32_to_f16(f); }
};

}  // namespace mxmoe::cuda::codec
