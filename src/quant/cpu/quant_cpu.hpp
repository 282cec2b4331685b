// CPU fast paths of the block quantizers. Same contract as mxmoe::ref (bit-identical results),
// tested against it in tests/quant/test_quant_cpu.cpp. Rows are read and written in their storage
// dtype (F32, BF16 or F16; strides in elements), so callers need no float32 staging buffer.
#pragma once
#include "mxmoe/quant.hpp"

namespace mxmoe::cpu {

void quantize_rows(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p,
                   uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds);
void dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                     int64_t k, const QuantParams& p, void* y, DType ydt, int64_t ldy);
// y may alias x when both have the same dtype and stride.
void qdq_rows(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, void* y,
              DType ydt, int64_t ldy);

// Which kernels run: AVX-512 (F/BW/DQ/VL, checked at run time) or the portable scalar path.
enum class Isa { Scalar, Avx512 };
Isa active_isa();
const char* isa_name(Isa isa);
// Forces the scalar path (tests, benchmarks); false restores the CPU's best.
void force_scalar(bool on);

namespace avx512 {  // internal: call only when the CPU supports it
void quantize_rows(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p,
                   uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds);
void dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                     int64_t k, const QuantParams& p, void* y, DType ydt, int64_t ldy);
void qdq_rows(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, void* y,
              DType ydt, int64_t ldy);
}  // namespace avx512

}  // namespace mxmoe::cpu
