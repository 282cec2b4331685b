// Exact element codecs driven by the traits table. This is the reference every fast path is tested
// against, so it favours clarity: the arithmetic is done in double, where every step is exact.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "mxmoe/error.hpp"
#include "mxmoe/format.hpp"

namespace mxmoe {
namespace {

double round_int(double m, Rounding r) {
  // m >= 0. nearbyint uses the default FE_TONEAREST mode: ties go to the even integer.
  return r == Rounding::RNE ? std::nearbyint(m) : std::round(m);
}

float decode_minifloat(const EncodingTraits& t, uint8_t code) {
  const int man_mask = (1 << t.mbits) - 1, exp_mask = (1 << t.ebits) - 1;
  const int man = code & man_mask;
  const int expf = (code >> t.mbits) & exp_mask;
  const bool neg = t.is_signed && ((code >> (t.bits - 1)) & 1);
  double v;
  if (t.special == Special::IEEE && expf == exp_mask) {
    v = man == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (t.special == Special::FnNaN && expf == exp_mask && man == man_mask) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (expf == 0) {
    v = std::ldexp(double(man), 1 - t.bias - t.mbits);  // subnormal
  } else {
    v = std::ldexp(double((1 << t.mbits) | man), expf - t.bias - t.mbits);
  }
  return float(neg ? -v : v);
}

uint8_t encode_minifloat(const EncodingTraits& t, float x, Rounding r) {
  const bool neg = std::signbit(x);
  const uint8_t sign = (t.is_signed && neg) ? uint8_t(1u << (t.bits - 1)) : 0;
  if (std::isnan(x)) return t.nan_code;
  if (!t.is_signed && neg) return 0;  // unsigned scale formats: negatives clamp to zero
  double a = std::fabs(double(x));
  if (std::isinf(a)) {
    if (t.special == Special::IEEE) return uint8_t(sign | (((1 << t.ebits) - 1) << t.mbits));
    a = t.max_finite;
  }
  if (a == 0) return sign;
  const int emin = 1 - t.bias;  // exponent of the smallest normal
  int e = std::max(std::ilogb(a), emin);
  double v = std::ldexp(round_int(std::ldexp(a, t.mbits - e), r), e - t.mbits);
  v = std::min(v, t.max_finite);
  if (v == 0) return sign;
  const int ev = std::ilogb(v);
  int expf, man;
  if (ev < emin) {
    expf = 0;
    man = int(std::ldexp(v, t.mbits - emin));
  } else {
    expf = ev + t.bias;
    man = int(std::ldexp(v, t.mbits - ev)) - (1 << t.mbits);
  }
  return uint8_t(sign | (expf << t.mbits) | man);
}

// UE8M0: a bare power of two 2^(code-127); 0xFF is NaN; there is no zero.
float decode_ue8m0(uint8_t code) {
  return code == 0xff ? std::numeric_limits<float>::quiet_NaN() : float(std::ldexp(1.0, int(code) - 127));
}

uint8_t encode_ue8m0(float x, Rounding r) {
  if (std::isnan(x)) return 0xff;
  if (!(x > 0)) return 0;
  if (std::isinf(x)) return 254;
  int e = std::ilogb(double(x));
  // Round the mantissa in [1, 2) to 1 or 2 (a tie at 1.5 goes up under both modes: 2 is even).
  if (round_int(std::ldexp(double(x), -e), r) >= 2) ++e;
  return uint8_t(std::clamp(e, -127, 127) + 127);
}

// MXINT8 element: a two's-complement byte k meaning k * 2^-6, saturated to [-127, 127].
float decode_int8(uint8_t code) { return float(int8_t(code)) / 64.0f; }

uint8_t encode_int8(float x, Rounding r) {
  if (std::isnan(x)) return 0;
  double k = std::clamp(double(x) * 64.0, -127.0, 127.0);
  k = k < 0 ? -round_int(-k, r) : round_int(k, r);
  return uint8_t(int8_t(k));
}

}  // namespace

float decode(Encoding e, uint8_t code) {
  const auto& t = traits(e);
  switch (e) {
    case Encoding::UE8M0: return decode_ue8m0(code);
    case Encoding::INT8: return decode_int8(code);
    case Encoding::UE4M3: return decode_minifloat(t, code & 0x7f);  // sign bit unused
    default: return decode_minifloat(t, uint8_t(code & ((1 << t.bits) - 1)));
  }
}

uint8_t encode(Encoding e, float x, Rounding r) {
  switch (e) {
    case Encoding::UE8M0: return encode_ue8m0(x, r);
    case Encoding::INT8: return encode_int8(x, r);
    default: return encode_minifloat(traits(e), x, r);
  }
}

const float* decode_table(Encoding e) {
  static const auto tables = [] {
    std::array<std::array<float, 256>, kNumEncodings> t{};
    for (int i = 0; i < kNumEncodings; ++i)
      for (int c = 0; c < 256; ++c) t[i][c] = decode(Encoding(i), uint8_t(c));
    return t;
  }();
  return tables[static_cast<int>(e)].data();
}

Encoding parse_encoding(std::string_view name) {
  for (const auto& t : kEncodings)
    if (t.name == name) return t.enc;
  MXMOE_THROW("unknown element encoding '{}' (expected e2m1, e2m3, e3m2, e4m3, e5m2, ue8m0, ue4m3, int8)", name);
}

Rounding parse_rounding(std::string_view name) {
  if (name == "rne" || name == "even") return Rounding::RNE;
  if (name == "away" || name == "nearest") return Rounding::Away;
  MXMOE_THROW("unknown rounding '{}' (expected rne or away)", name);
}

std::string_view rounding_name(Rounding r) { return r == Rounding::RNE ? "rne" : "away"; }

}  // namespace mxmoe
