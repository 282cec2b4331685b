// Block quantization along the last dimension: quantize -> packed codes + block scales (the on-disk
// layout of REFERENCE.md section 2), dequantize, and qdq (quantize-dequantize in one pass).
#pragma once
#include <cstdint>
#include <string>

#include "mxmoe/scheme.hpp"
#include "mxmoe/tensor.hpp"

namespace mxmoe {

struct QuantParams {
  Scheme scheme = Scheme::MXFP4;
  ScaleRule rule = ScaleRule::Floor;  // MX shared-exponent rule (ignored by NVFP4)
  Rounding rounding = Rounding::RNE;  // element rounding (NVFP4 follows vLLM: always RNE)
  float global_scale = 1.0f;          // NVFP4 encode scale, 448*6/amax convention (ignored by MX)
};

// Shared-exponent byte (UE8M0) of an MX block with absolute maximum `amax`, for element encoding
// `elem`. NaN or Inf amax gives 0xFF (NaN scale).
uint8_t mx_scale_byte(float amax, Encoding elem, ScaleRule rule);
// vLLM's NVFP4 block scale: e4m3(clamp(gs * (amax * (1/6)), 448)), as a UE4M3 byte.
uint8_t nvfp4_scale_byte(float amax, float global_scale);
// NVFP4 encode global scale 448*6/amax (1 when amax is 0), the convention of vLLM and the CLI.
float nvfp4_default_global_scale(float amax);

// Packs one code per byte into the element bit width (FP4 low nibble first; FP6 as 24-bit LE words).
void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* out);
void unpack_codes(const uint8_t* packed, int64_t n, int bits, uint8_t* codes);

// Raw kernels over float32 rows (k a multiple of the block size; ld* in elements or bytes).
// `codes` rows are packed_row_bytes(scheme, k) long; `scales` rows k/block bytes.
namespace ref {
void quantize_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, uint8_t* codes,
                   int64_t ldc, uint8_t* scales, int64_t lds);
void dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                     int64_t k, const QuantParams& p, float* y, int64_t ldy);
void qdq_rows(const float* x, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, float* y, int64_t ldy);
}  // namespace ref

// A quantized tensor in checkpoint layout.
struct QuantizedTensor {
  QuantParams params;
  std::vector<int64_t> shape;  // logical shape of the unpacked tensor
  Tensor codes;                // U8 [..., packed_row_bytes]
  Tensor scales;               // F8_E4M3 (NVFP4) or U8 (MX, E8M0 bytes) [..., k / block]
};

// API layer: checks shapes and dtypes (F32/BF16/F16 inputs), names `what` in errors.
QuantizedTensor quantize(const Tensor& x, const QuantParams& p, const std::string& what = "tensor");
Tensor dequantize(const QuantizedTensor& q, DType out_dtype = DType::F32);
// Quantize-dequantize; the result has x's dtype and shape.
Tensor qdq(const Tensor& x, const QuantParams& p, const std::string& what = "tensor");
// The same into `out` (resized to x's dtype and shape; its buffer is reused when the size matches, so
// a loop over same-shaped tensors allocates once).
void qdq(const Tensor& x, const QuantParams& p, Tensor& out, const std::string& what = "tensor");
// max |x| over a float tensor (NaN propagates).
float tensor_amax(const Tensor& x);

}  // namespace mxmoe
