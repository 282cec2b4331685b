// Checked host API (include/mxmoe/cuda.hpp) over the raw launchers of quant_cuda.hpp.
#include <cmath>

#include "mxmoe/cuda.hpp"
#include "quant/cuda/quant_cuda.hpp"

namespace mxmoe::cuda {
namespace {

QuantConfig config_of(const QuantParams& p) { return {p.scheme, p.rule, p.rounding, p.global_scale}; }

bool float_io(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

void check_params(const char* what, const QuantParams& p, int64_t rows, int64_t k) {
  MXMOE_CHECK(unsigned(p.scheme) < unsigned(kNumSchemes), "{}: invalid scheme {}", what, int(p.scheme));
  MXMOE_CHECK(unsigned(p.rule) <= unsigned(ScaleRule::Ceil), "{}: invalid scale rule {}", what, int(p.rule));
  MXMOE_CHECK(p.rounding == Rounding::RNE || p.rounding == Rounding::Away, "{}: invalid rounding {}", what,
              int(p.rounding));
  const auto& st = traits(p.scheme);
  MXMOE_CHECK(rows >= 0 && k >= 0, "{}: negative shape [{}, {}]", what, rows, k);
  MXMOE_CHECK(k % st.block == 0, "{}: row length {} is not a multiple of the {} block size {}", what, k, st.name,
              st.block);
  MXMOE_CHECK(!st.tensor_scale || (std::isfinite(p.global_scale) && p.global_scale > 0),
              "{}: NVFP4 global scale must be a positive finite number, got {}", what, p.global_scale);
}

void check_dtype(const char* what, const char* name, DType d) {
  MXMOE_CHECK(float_io(d), "{}: {} dtype {} not supported (expected F32, BF16 or F16)", what, name, dtype_name(d));
}

void check_codes(const char* what, const QuantParams& p, int64_t k, const void* codes, int64_t ldc,
                 const void* scales, int64_t lds) {
  const int64_t rb = packed_row_bytes(p.scheme, k), nb = k / traits(p.scheme).block;
  MXMOE_CHECK(ldc >= rb, "{}: codes stride {} bytes is shorter than a packed row ({} bytes for k = {})", what, ldc,
              rb, k);
  MXMOE_CHECK(lds >= nb, "{}: scales stride {} bytes is shorter than a row of scales ({} for k = {})", what, lds,
              nb, k);
  MXMOE_CHECK(codes != nullptr && scales != nullptr, "{}: null codes or scales pointer", what);
}

}  // namespace

bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    (void)cudaGetLastError();  // reset the runtime's last-error state
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  return true;
}

void quantize(const void* x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p,
              uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds, cudaStream_t stream) {
  const char* what = "cuda::quantize";
  check_params(what, p, rows, k);
  check_dtype(what, "input", x_dtype);
  MXMOE_CHECK(ldx >= k, "{}: input stride {} is shorter than the row length {}", what, ldx, k);
  if (rows == 0 || k == 0) return;
  MXMOE_CHECK(x != nullptr, "{}: null input pointer", what);
  check_codes(what, p, k, codes, ldc, scales, lds);
  MXMOE_CUDA_CHECK(kernels::quantize_rows(x, x_dtype, rows, k, ldx, config_of(p), codes, ldc, scales, lds, stream));
}

void dequantize(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows, int64_t k,
                const QuantParams& p, void* y, DType y_dtype, int64_t ldy, cudaStream_t stream) {
  const char* what = "cuda::dequantize";
  check_params(what, p, rows, k);
  check_dtype(what, "output", y_dtype);
  MXMOE_CHECK(ldy >= k, "{}: output stride {} is shorter than the row length {}", what, ldy, k);
  if (rows == 0 || k == 0) return;
  MXMOE_CHECK(y != nullptr, "{}: null output pointer", what);
  check_codes(what, p, k, codes, ldc, scales, lds);
  MXMOE_CUDA_CHECK(
      kernels::dequantize_rows(codes, ldc, scales, lds, rows, k, config_of(p), y, y_dtype, ldy, stream));
}

void qdq(const void* x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, void* y,
         DType y_dtype, int64_t ldy, cudaStream_t stream) {
  const char* what = "cuda::qdq";
  check_params(what, p, rows, k);
  check_dtype(what, "input", x_dtype);
  check_dtype(what, "output", y_dtype);
  MXMOE_CHECK(ldx >= k && ldy >= k, "{}: strides {} (input) / {} (output) are shorter than the row length {}", what,
              ldx, ldy, k);
  if (rows == 0 || k == 0) return;
  MXMOE_CHECK(x != nullptr && y != nullptr, "{}: null input or output pointer", what);
  MXMOE_CHECK(x != y || (x_dtype == y_dtype && ldx == ldy),
              "{}: in-place qdq needs the same dtype and stride for input and output", what);
  MXMOE_CUDA_CHECK(kernels::qdq_rows(x, x_dtype, rows, k, ldx, config_of(p), y, y_dtype, ldy, stream));
}

}  // namespace mxmoe::cuda
