// Unchecked launchers of quant_cuda.hpp: pick the scheme's instantiation (one .cu file per format).
#include "quant/cuda/quant_kernels.cuh"

namespace mxmoe::cuda {
namespace {

cudaError_t launch(detail::QuantOp op, Scheme s, DType in, DType out, const detail::QuantArgs& a,
                   cudaStream_t stream) {
  using detail::launch_scheme;
  switch (s) {
#define MXMOE_CASE(NAME) \
  case Scheme::NAME: return launch_scheme<Scheme::NAME>(op, in, out, a, stream);
    MXMOE_QUANT_SCHEMES(MXMOE_CASE)
#undef MXMOE_CASE
  }
  return cudaErrorInvalidValue;
}

detail::QuantArgs args_of(const QuantConfig& cfg, int64_t rows, int64_t k) {
  detail::QuantArgs a;
  a.rows = rows, a.k = k;
  a.global_scale = cfg.global_scale, a.rule = cfg.rule, a.rounding = cfg.rounding;
  return a;
}

}  // namespace

namespace kernels {

cudaError_t quantize_rows(const void* x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, const QuantConfig& cfg,
                          uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds, cudaStream_t stream) {
  auto a = args_of(cfg, rows, k);
  a.x = x, a.ldx = ldx, a.codes = codes, a.ldc = ldc, a.scales = scales, a.lds = lds;
  return launch(detail::QuantOp::Quantize, cfg.scheme, x_dtype, DType::F32, a, stream);
}

cudaError_t dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                            int64_t k, const QuantConfig& cfg, void* y, DType y_dtype, int64_t ldy,
                            cudaStream_t stream) {
  auto a = args_of(cfg, rows, k);
  // The kernel only reads codes and scales on this path.
  a.codes = const_cast<uint8_t*>(codes), a.ldc = ldc, a.scales = const_cast<uint8_t*>(scales), a.lds = lds;
  a.y = y, a.ldy = ldy;
  return launch(detail::QuantOp::Dequantize, cfg.scheme, DType::F32, y_dtype, a, stream);
}

cudaError_t qdq_rows(const void* x, DType x_dtype, int64_t rows, int64_t k, int64_t ldx, const QuantConfig& cfg,
                     void* y, DType y_dtype, int64_t ldy, cudaStream_t stream) {
  auto a = args_of(cfg, rows, k);
  a.x = x, a.ldx = ldx, a.y = y, a.ldy = ldy;
  return launch(detail::QuantOp::Qdq, cfg.scheme, x_dtype, y_dtype, a, stream);
}

}  // namespace kernels
}  // namespace mxmoe::cuda
