// Scalar reference of the block quantizers: written to read like REFERENCE.md sections 3 and 4.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "mxmoe/error.hpp"
#include "mxmoe/quant.hpp"

namespace mxmoe {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Exponent of a power of two >= v, v > 0 finite.
int ceil_log2(double v) {
  const int e = std::ilogb(v);
  return std::ldexp(1.0, e) == v ? e : e + 1;
}

// vLLM's get_reciprocal on float32 tensors: 1 / (v + (v == 0) * 1e8).
float vllm_rcp(float v) { return 1.0f / (v + (v == 0.0f ? 1e8f : 0.0f)); }

float block_amax(const float* x, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return kNaN;
    m = std::max(m, std::fabs(x[i]));
  }
  return m;
}

// NVFP4, one block: returns the E2M1 codes and scale byte exactly as vLLM's torch path computes them.
uint8_t nvfp4_block(const float* x, int n, float gs, uint8_t* codes) {
  const float amax = block_amax(x, n);
  const uint8_t sbyte = nvfp4_scale_byte(amax, gs);
  const float scale = decode(Encoding::UE4M3, sbyte);
  const float oscale = vllm_rcp(scale * vllm_rcp(gs));
  for (int i = 0; i < n; ++i) {
    const float v = std::clamp(x[i] * oscale, -6.0f, 6.0f);  // clamp keeps NaN, encode maps it to 0
    codes[i] = encode(Encoding::E2M1, v, Rounding::RNE);
  }
  return sbyte;
}

// MX, one block: shared exponent, then each element x / 2^e cast with saturation.
uint8_t mx_block(const float* x, int n, const QuantParams& p, uint8_t* codes) {
  const Encoding elem = traits(p.scheme).element;
  float amax = 0;
  bool nonfinite = false;
  for (int i = 0; i < n; ++i) {
    nonfinite |= !std::isfinite(x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  if (nonfinite) {
    // microxcaling: a block whose shared exponent is not finite becomes NaN as a whole.
    std::fill(codes, codes + n, uint8_t(0));
    return 0xff;
  }
  const uint8_t sbyte = mx_scale_byte(amax, elem, p.rule);
  const int e = int(sbyte) - 127;
  for (int i = 0; i < n; ++i) codes[i] = encode(elem, float(std::ldexp(double(x[i]), -e)), p.rounding);
  return sbyte;
}

}  // namespace

uint8_t mx_scale_byte(float amax, Encoding elem, ScaleRule rule) {
  if (!std::isfinite(amax)) return 0xff;
  const auto& t = traits(elem);
  int e;  // unbiased shared exponent before clamping
  switch (rule) {
    case ScaleRule::Floor:
      e = amax == 0 ? -127 : std::ilogb(double(amax)) - t.emax;
      break;
    case ScaleRule::Ceil:
      e = amax == 0 ? -127 : ceil_log2(amax) - t.emax;
      break;
    case ScaleRule::Even: {
      // Round amax up at the element's mantissa width, keep sign and exponent, floor(log2).
      uint32_t bits = f32_bits(amax) + (1u << (23 - t.mbits - 1));
      const int expf = int((bits >> 23) & 0xff);
      if (expf == 0) return 0;        // log2(0) = -inf, clamped to byte 0
      if (expf == 0xff) return 254;   // rounded up to Inf: clamped to byte 254
      e = expf - 127 - t.emax;
      break;
    }
    case ScaleRule::RCeil: {
      // Smallest power of two >= amax / max_finite, the division done in float32.
      const float v = amax / float(t.max_finite);
      e = v == 0 ? -127 : ceil_log2(v);
      break;
    }
    default: MXMOE_THROW("invalid scale rule {}", int(rule));
  }
  return uint8_t(std::clamp(e, -127, 127) + 127);
}

uint8_t nvfp4_scale_byte(float amax, float gs) {
  const float s = gs * (amax * (1.0f / 6.0f));
  return encode(Encoding::UE4M3, std::min(s, 448.0f), Rounding::RNE);  // min keeps NaN
}

float nvfp4_default_global_scale(float amax) {
  return (amax > 0 && std::isfinite(amax)) ? (448.0f * 6.0f) / amax : 1.0f;
}

void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* out) {
  if (bits == 8) {
    std::copy(codes, codes + n, out);
  } else if (bits == 4) {
    for (int64_t i = 0; i < n; i += 2) out[i / 2] = uint8_t((codes[i] & 0xf) | ((codes[i + 1] & 0xf) << 4));
  } else if (bits == 6) {
    for (int64_t i = 0; i < n; i += 4) {
      const uint32_t w = (codes[i] & 0x3fu) | (codes[i + 1] & 0x3fu) << 6 | (codes[i + 2] & 0x3fu) << 12 |
                         (codes[i + 3] & 0x3fu) << 18;
      uint8_t* o = out + i / 4 * 3;
      o[0] = uint8_t(w), o[1] = uint8_t(w >> 8), o[2] = uint8_t(w >> 16);
    }
  } else {
    MXMOE_THROW("cannot pack {}-bit codes", bits);
  }
}

void unpack_codes(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) {
  if (bits == 8) {
    std::copy(packed, packed + n, codes);
  } else if (bits == 4) {
    for (int64_t i = 0; i < n; i += 2) codes[i] = packed[i / 2] & 0xf, codes[i + 1] = packed[i / 2] >> 4;
  } else if (bits == 6) {
    for (int64_t i = 0; i < n; i += 4) {
      const uint8_t* p = packed + i / 4 * 3;
      const uint32_t w = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16;
      for (int j = 0; j < 4; ++j) codes[i + j] = uint8_t((w >> (6 * j)) & 0x3f);
    }
  } else {
    MXMOE_THROW("cannot unpack {}-bit codes", bits);
  }
}

namespace ref {

void quantize_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, uint8_t* codes,
                   int64_t ldc, uint8_t* scales, int64_t lds) {
  const auto& st = traits(p.scheme);
  std::vector<uint8_t> row_codes(static_cast<size_t>(k));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    for (int64_t b = 0; b < k / st.block; ++b) {
      const float* xb = xr + b * st.block;
      uint8_t* cb = row_codes.data() + b * st.block;
      scales[r * lds + b] = st.tensor_scale ? nvfp4_block(xb, st.block, p.global_scale, cb) : mx_block(xb, st.block, p, cb);
    }
    pack_codes(row_codes.data(), k, element_bits(p.scheme), codes + r * ldc);
  }
}

void dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows, int64_t k,
                     const QuantParams& p, float* y, int64_t ldy) {
  const auto& st = traits(p.scheme);
  std::vector<uint8_t> row_codes(static_cast<size_t>(k));
  for (int64_t r = 0; r < rows; ++r) {
    unpack_codes(codes + r * ldc, k, element_bits(p.scheme), row_codes.data());
    for (int64_t b = 0; b < k / st.block; ++b) {
      const float s = decode(st.scale, scales[r * lds + b]);
      // NVFP4: q * (scale / gs) in float32, as vLLM dequantizes. MX: q * 2^e, exact.
      const float mult = st.tensor_scale ? s / p.global_scale : s;
      for (int i = 0; i < st.block; ++i) {
        const int64_t c = b * st.block + i;
        y[r * ldy + c] = decode(st.element, row_codes[size_t(c)]) * mult;
      }
    }
  }
}

void qdq_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, float* y, int64_t ldy) {
  const auto& st = traits(p.scheme);
  const int64_t nb = k / st.block;
  std::vector<uint8_t> codes(static_cast<size_t>(packed_row_bytes(p.scheme, k))), scales(static_cast<size_t>(nb));
  for (int64_t r = 0; r < rows; ++r) {
    quantize_rows(x + r * ldx, 1, k, ldx, p, codes.data(), 0, scales.data(), 0);
    dequantize_rows(codes.data(), 0, scales.data(), 0, 1, k, p, y + r * ldy, ldy);
  }
}

}  // namespace ref
}  // namespace mxmoe
