// SIMD kernels of the CPU experts (AVX-512, dispatched at run time, scalar fallback).
#pragma once
#include <cstdint>

#include "mxmoe/dtype.hpp"

namespace mxmoe::moe::cpu {
// out[c] = lut16[code c] * block_mult[c / block] for one packed FP4 row of K elements (K even),
// optionally rounded to bf16 precision (RNE). allow_simd = false forces the scalar path (tests).
void decode_fp4_row(const uint8_t* packed, const float* block_mult, int64_t K, int block, bool to_bf16,
                    const float* lut16, float* out, bool allow_simd = true);
// sum_c a[c] * b[c] in float32 (vector lanes, then a tree reduction).
float dot(const float* a, const float* b, int64_t n);
}  // namespace mxmoe::moe::cpu
