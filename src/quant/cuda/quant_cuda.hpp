// CUDA block quantizers, flashinfer style: device pointers, sizes and strides, a stream, and a
// cudaError_t back (the launch error; the kernels run asynchronously on `stream`). No shape checks
// here: the checked, throwing API is include/mxmoe/cuda.hpp.
//
// Layout is exactly the reference's (mxmoe::ref::quantize_rows, REFERENCE.md section 2): `rows` rows
// of `k` elements (k a multiple of the scheme's block), codes packed per row (FP4 low nibble first,
// FP6 as 24-bit little-endian words, 8-bit as bytes), one scale byte per block, row-major.
// Strides: ldx / ldy in elements, ldc / lds in bytes. Results are bit-identical to mxmoe::ref.
//
// fmt-free on purpose (nvcc cannot compile fmt's consteval format strings).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mxmoe/dtype.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/scheme.hpp"

namespace mxmoe::cuda {

// The numerics of mxmoe::QuantParams without the host headers.
struct QuantConfig {
  Scheme scheme = Scheme::MXFP4;
  ScaleRule rule = ScaleRule::Floor;  // MX shared-exponent rule (ignored by NVFP4)
  Rounding rounding = Rounding::RNE;  // element rounding (NVFP4 always rounds RNE, like vLLM)
  float global_scale = 1.0f;          // NVFP4 encode scale (ignored by MX)
};

namespace kernels {

// x (F32/BF16/F16) -> packed codes + scale bytes.
cudaError_t quantize_rows(const void* x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, const QuantConfig& cfg,
                          uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds, cudaStream_t stream);
// packed codes + scale bytes -> y (F32/BF16/F16).
cudaError_t dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                            int64_t k, const QuantConfig& cfg, void* y, DType y_dtype, int64_t ldy,
                            cudaStream_t stream);
// Quantize-dequantize in one pass (no codes in memory). y may be x (same dtype and ld).
cudaError_t qdq_rows(const void* x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, const QuantConfig& cfg,
                     void* y, DType y_dtype, int64_t ldy, cudaStream_t stream);

}  // namespace kernels
}  // namespace mxmoe::cuda
