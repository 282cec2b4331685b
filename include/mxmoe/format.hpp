// Element encodings: one constexpr traits row per encoding is the single source of truth for bit
// layouts, ranges and MX emax. Codecs are exact (see docs/numerics.md for NaN/Inf behaviour).
#pragma once
#include <cstdint>
#include <span>
#include <string_view>

namespace mxmoe {

enum class Encoding : uint8_t { E2M1, E2M3, E3M2, E4M3, E5M2, UE8M0, UE4M3, INT8 };
inline constexpr int kNumEncodings = 8;

// Ties: RNE = round half to even; Away = round half away from zero (microxcaling "nearest").
enum class Rounding : uint8_t { RNE, Away };

enum class Special : uint8_t {
  None,        // every code is finite (E2M1, E2M3, E3M2, INT8)
  FnNaN,       // E4M3 "fn": S.1111.111 is NaN, no Inf
  IEEE,        // E5M2: exponent all-ones is Inf (mantissa 0) or NaN
  ScaleNaN,    // UE8M0: 0xFF is NaN, no zero, no sign
};

struct EncodingTraits {
  Encoding enc;
  std::string_view name;
  int bits;       // storage bits per element
  int ebits;      // exponent bits (0 for INT8)
  int mbits;      // explicit mantissa bits (INT8: 6 fractional bits)
  int bias;       // exponent bias
  bool is_signed; // has a sign bit
  Special special;
  double max_finite;
  int emax;       // exponent of the largest normal, used by the MX scale rules
  uint8_t nan_code;  // code returned for NaN inputs (0 where the format has none; see numerics.md)
};

inline constexpr EncodingTraits kEncodings[kNumEncodings] = {
    {Encoding::E2M1, "e2m1", 4, 2, 1, 1, true, Special::None, 6.0, 2, 0x0},
    {Encoding::E2M3, "e2m3", 6, 2, 3, 1, true, Special::None, 7.5, 2, 0x0},
    {Encoding::E3M2, "e3m2", 6, 3, 2, 3, true, Special::None, 28.0, 4, 0x0},
    {Encoding::E4M3, "e4m3", 8, 4, 3, 7, true, Special::FnNaN, 448.0, 8, 0x7f},
    {Encoding::E5M2, "e5m2", 8, 5, 2, 15, true, Special::IEEE, 57344.0, 15, 0x7e},
    {Encoding::UE8M0, "ue8m0", 8, 8, 0, 127, false, Special::ScaleNaN, 0x1p127, 127, 0xff},
    {Encoding::UE4M3, "ue4m3", 8, 4, 3, 7, false, Special::FnNaN, 448.0, 8, 0x7f},
    {Encoding::INT8, "int8", 8, 0, 6, 0, true, Special::None, 127.0 / 64.0, 0, 0x0},
};

constexpr const EncodingTraits& traits(Encoding e) { return kEncodings[static_cast<int>(e)]; }
constexpr int num_codes(Encoding e) { return 1 << traits(e).bits; }

// Decodes one code (only the low `bits` bits are read) to its exact value.
float decode(Encoding e, uint8_t code);
// Encodes a float32 to the nearest code under `r`, saturating finite overflow to +-max_finite.
// Inf: E5M2 keeps Inf, the others saturate. NaN: the format's NaN code, or 0 where it has none
// (block quantizers then mark the block's scale NaN so the NaN is not lost).
uint8_t encode(Encoding e, float x, Rounding r);
// 256-entry decode table (codes past 2^bits repeat the low bits), built once.
const float* decode_table(Encoding e);

Encoding parse_encoding(std::string_view name);
Rounding parse_rounding(std::string_view name);
std::string_view rounding_name(Rounding r);

}  // namespace mxmoe
