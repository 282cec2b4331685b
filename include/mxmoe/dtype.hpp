// Storage dtypes (the safetensors set) and conversions between float32 and the 16-bit float types.
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>

namespace mxmoe {

enum class DType : uint8_t { BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0 };

struct DTypeTraits {
  DType dtype;
  std::string_view name;  // safetensors spelling
  int bytes;
  bool is_float;  // holds real numbers a tensor op can read as float
};

inline constexpr DTypeTraits kDTypes[] = {
    {DType::BOOL, "BOOL", 1, false},    {DType::U8, "U8", 1, false},
    {DType::I8, "I8", 1, false},        {DType::I16, "I16", 2, false},
    {DType::I32, "I32", 4, false},      {DType::I64, "I64", 8, false},
    {DType::F16, "F16", 2, true},       {DType::BF16, "BF16", 2, true},
    {DType::F32, "F32", 4, true},       {DType::F64, "F64", 8, true},
    {DType::F8_E4M3, "F8_E4M3", 1, true}, {DType::F8_E5M2, "F8_E5M2", 1, true},
    {DType::F8_E8M0, "F8_E8M0", 1, true},
};

constexpr const DTypeTraits& traits(DType d) { return kDTypes[static_cast<int>(d)]; }
constexpr int dtype_size(DType d) { return traits(d).bytes; }
constexpr std::string_view dtype_name(DType d) { return traits(d).name; }
// Parses a safetensors dtype name; throws mxmoe::Error naming the unknown string.
DType parse_dtype(std::string_view name);

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// bfloat16: upper half of a float32. float -> bf16 rounds to nearest even; NaN stays a (quiet) NaN.
inline float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

// IEEE binary16, round to nearest even, overflow to Inf, subnormals kept.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Reads element i of a float-typed buffer (F32, BF16, F16, F64) as float32.
float load_as_f32(const void* p, DType d, int64_t i);
// Writes v to element i of a float-typed buffer (F32, BF16, F16, F64), rounding to nearest even.
void store_from_f32(void* p, DType d, int64_t i, float v);
// Converts n elements of a float-typed buffer to float32 (row-at-a-time helper for kernels).
void to_f32(const void* src, DType d, int64_t n, float* dst);
void from_f32(const float* src, int64_t n, DType d, void* dst);

}  // namespace mxmoe
