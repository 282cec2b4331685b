// Checked host API of the CUDA backend (built when MXMOE_CUDA is ON; MXMOE_HAVE_CUDA is then defined
// for every user of mxmoe_core). Device pointers in, no mxmoe::Tensor: the caller owns the memory.
// Shapes, strides and dtypes are checked here and every failure, a CUDA error included, throws
// mxmoe::Error naming file:line. Launches are asynchronous on `stream`; results are bit-identical
// to mxmoe::ref (the raw, unchecked launchers are in src/quant/cuda/quant_cuda.hpp).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "mxmoe/error.hpp"
#include "mxmoe/quant.hpp"

// Evaluates a CUDA runtime call and throws mxmoe::Error (with file:line) when it fails.
#define MXMOE_CUDA_CHECK(expr)                                                                         \
  do {                                                                                                 \
    const cudaError_t mxmoe_cuda_err_ = (expr);                                                        \
    if (mxmoe_cuda_err_ != cudaSuccess)                                                                \
      MXMOE_THROW("CUDA error {}: {} (in {})", cudaGetErrorName(mxmoe_cuda_err_),                     \
                  cudaGetErrorString(mxmoe_cuda_err_), #expr);                                         \
  } while (0)

namespace mxmoe::cuda {

// True when a CUDA device can be used; otherwise false and, if `why` is given, the reason
// (no device, no driver, ...). Never throws.
bool cuda_available(std::string* why = nullptr);

// Block quantization along rows of `k` elements (k a multiple of the scheme's block), the layout of
// mxmoe::ref::quantize_rows: codes rows of packed_row_bytes(scheme, k) bytes, scales rows of
// k / block bytes. x / y are F32, BF16 or F16; ldx / ldy in elements, ldc / lds in bytes.
void quantize(const void* x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p,
              uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds, cudaStream_t stream = nullptr);
void dequantize(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows, int64_t k,
                const QuantParams& p, void* y, DType y_dtype, int64_t ldy, cudaStream_t stream = nullptr);
// Quantize-dequantize in one pass. y may be x when dtype and stride are the same.
void qdq(const void* x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, void* y,
         DType y_dtype, int64_t ldy, cudaStream_t stream = nullptr);

}  // namespace mxmoe::cuda
