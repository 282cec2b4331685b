// CPU fast paths of the block quantizers. Same contract as mxmoe::ref (bit-identical results),
// tested against it in tests/quant/test_quant_cpu.cpp.
#pragma once
#include "mxmoe/quant.hpp"

namespace mxmoe::cpu {
void quantize_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, uint8_t* codes,
                   int64_t ldc, uint8_t* scales, int64_t lds);
void dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                     int64_t k, const QuantParams& p, float* y, int64_t ldy);
// In place is allowed (y == x with equal strides).
void qdq_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, float* y, int64_t ldy);
}  // namespace mxmoe::cpu
