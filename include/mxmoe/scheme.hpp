// Block quantization schemes: element encoding + block size + scale encoding (+ tensor scale).
#pragma once
#include <cstdint>
#include <string_view>

#include "mxmoe/dtype.hpp"
#include "mxmoe/format.hpp"

namespace mxmoe {

enum class Scheme : uint8_t { NVFP4, MXFP4, MXFP6_E2M3, MXFP6_E3M2, MXFP8_E4M3, MXFP8_E5M2, MXINT8 };
inline constexpr int kNumSchemes = 7;

// How an MX block's shared exponent is chosen from the block's amax (REFERENCE.md section 4).
enum class ScaleRule : uint8_t { Floor, Even, RCeil, Ceil };

struct SchemeTraits {
  Scheme scheme;
  std::string_view name;
  Encoding element;
  Encoding scale;      // UE4M3 (NVFP4) or UE8M0 (MX)
  int block;           // elements per scale, along the last dimension
  bool tensor_scale;   // NVFP4's float32 second-level scale
  DType scale_dtype;   // how checkpoints store the block scales
};

inline constexpr SchemeTraits kSchemes[kNumSchemes] = {
    {Scheme::NVFP4, "nvfp4", Encoding::E2M1, Encoding::UE4M3, 16, true, DType::F8_E4M3},
    {Scheme::MXFP4, "mxfp4", Encoding::E2M1, Encoding::UE8M0, 32, false, DType::U8},
    {Scheme::MXFP6_E2M3, "mxfp6_e2m3", Encoding::E2M3, Encoding::UE8M0, 32, false, DType::U8},
    {Scheme::MXFP6_E3M2, "mxfp6_e3m2", Encoding::E3M2, Encoding::UE8M0, 32, false, DType::U8},
    {Scheme::MXFP8_E4M3, "mxfp8_e4m3", Encoding::E4M3, Encoding::UE8M0, 32, false, DType::U8},
    {Scheme::MXFP8_E5M2, "mxfp8_e5m2", Encoding::E5M2, Encoding::UE8M0, 32, false, DType::U8},
    {Scheme::MXINT8, "mxint8", Encoding::INT8, Encoding::UE8M0, 32, false, DType::U8},
};

constexpr const SchemeTraits& traits(Scheme s) { return kSchemes[static_cast<int>(s)]; }
constexpr int element_bits(Scheme s) { return traits(traits(s).element).bits; }
// Bytes of one packed row of k elements (FP4: k/2, FP6: 3k/4, 8-bit: k). k must be a block multiple.
constexpr int64_t packed_row_bytes(Scheme s, int64_t k) { return k * element_bits(s) / 8; }
// Storage bits per element including the block scale (tensor scale amortized away).
constexpr double bits_per_element(Scheme s) {
  return traits(traits(s).element).bits + 8.0 / traits(s).block;
}

Scheme parse_scheme(std::string_view name);
ScaleRule parse_scale_rule(std::string_view name);
std::string_view scale_rule_name(ScaleRule r);

}  // namespace mxmoe
