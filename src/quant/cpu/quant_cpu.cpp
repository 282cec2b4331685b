// Placeholder-free first version: forwards to the reference until the SIMD kernels land.
#include "quant/cpu/quant_cpu.hpp"

namespace mxmoe::cpu {
void quantize_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, uint8_t* codes,
                   int64_t ldc, uint8_t* scales, int64_t lds) {
  ref::quantize_rows(x, rows, k, ldx, p, codes, ldc, scales, lds);
}
void dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                     int64_t k, const QuantParams& p, float* y, int64_t ldy) {
  ref::dequantize_rows(codes, ldc, scales, lds, rows, k, p, y, ldy);
}
void qdq_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, float* y, int64_t ldy) {
  ref::qdq_rows(x, rows, k, ldx, p, y, ldy);
}
}  // namespace mxmoe::cpu
