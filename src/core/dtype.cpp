#include "mxmoe/dtype.hpp"

#include "mxmoe/error.hpp"

namespace mxmoe {

DType parse_dtype(std::string_view name) {
  for (const auto& t : kDTypes)
    if (t.name == name) return t.dtype;
  MXMOE_THROW("unknown dtype '{}' (expected one of BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, "
              "F8_E4M3, F8_E5M2, F8_E8M0)",
              name);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));  // Inf / NaN
  if (exp == 0) {
    // Subnormal: man * 2^-24, exact in float32.
    float v = float(man) * 0x1p-24f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00 | ((a >> 13) & 0x3ff));  // NaN, keep payload bits
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds to >= 65520: Inf
  if (a < 0x38800000u) {
    // Result is subnormal (or zero) in f16: quantum 2^-24. Round |f| / 2^-24 to nearest even.
    const float scaled = bits_f32(a) * 0x1p24f;  // exact: power-of-two scale of a small float
    const uint32_t q = uint32_t(scaled);
    const float rem = scaled - float(q);
    uint32_t r = q + ((rem > 0.5f) || (rem == 0.5f && (q & 1)));
    return uint16_t(sign | r);  // r == 0x400 carries into the smallest normal, as it should
  }
  // Normal: drop 13 mantissa bits with round-to-nearest-even (carry may bump the exponent).
  uint32_t v = a - (112u << 23);
  v += 0xfffu + ((v >> 13) & 1);
  return uint16_t(sign | (v >> 13));
}

float load_as_f32(const void* p, DType d, int64_t i) {
  switch (d) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F64: return float(static_cast<const double*>(p)[i]);
    default: MXMOE_THROW("dtype {} is not a float type this operation reads", dtype_name(d));
  }
}

void store_from_f32(void* p, DType d, int64_t i, float v) {
  switch (d) {
    case DType::F32: static_cast<float*>(p)[i] = v; return;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); return;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); return;
    case DType::F64: static_cast<double*>(p)[i] = v; return;
    default: MXMOE_THROW("dtype {} is not a float type this operation writes", dtype_name(d));
  }
}

void to_f32(const void* src, DType d, int64_t n, float* dst) {
  switch (d) {
    case DType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case DType::BF16: {
      auto s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_as_f32(src, d, i);
  }
}

void from_f32(const float* src, int64_t n, DType d, void* dst) {
  switch (d) {
    case DType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case DType::BF16: {
      auto o = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(src[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) store_from_f32(dst, d, i, src[i]);
  }
}

}  // namespace mxmoe
