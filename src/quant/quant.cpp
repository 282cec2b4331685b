// API layer of the block quantizers: shape/dtype checks and threading; the cpu:: kernels read and
// write the tensors' own dtypes.
#include <omp.h>

#include <cmath>

#include "mxmoe/error.hpp"
#include "mxmoe/quant.hpp"
#include "quant/cpu/quant_cpu.hpp"

namespace mxmoe {
namespace {

void check_input(const Tensor& x, const QuantParams& p, const std::string& what) {
  MXMOE_CHECK(x.dtype == DType::F32 || x.dtype == DType::BF16 || x.dtype == DType::F16,
              "{}: dtype {} cannot be quantized (expected F32, BF16 or F16)", what, dtype_name(x.dtype));
  MXMOE_CHECK(!x.shape.empty(), "{}: a 0-d tensor has no last dimension to quantize along", what);
  const int block = traits(p.scheme).block;
  MXMOE_CHECK(x.cols() % block == 0,
              "{}: last dimension {} (shape {}) is not a multiple of the {} block size {}", what, x.cols(),
              shape_str(x.shape), traits(p.scheme).name, block);
  MXMOE_CHECK(!traits(p.scheme).tensor_scale || (std::isfinite(p.global_scale) && p.global_scale > 0),
              "{}: NVFP4 global scale must be a positive finite number, got {}", what, p.global_scale);
}

// Rows per parallel chunk: enough work per chunk (~64K elements) to amortize scheduling.
int64_t chunk_rows(int64_t k) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(k, 1)); }

}  // namespace

QuantizedTensor quantize(const Tensor& x, const QuantParams& p, const std::string& what) {
  check_input(x, p, what);
  const auto& st = traits(p.scheme);
  const int64_t rows = x.rows(), k = x.cols(), rb = packed_row_bytes(p.scheme, k), nb = k / st.block;
  QuantizedTensor q{p, x.shape, {}, {}};
  auto cshape = x.shape, sshape = x.shape;
  cshape.back() = rb, sshape.back() = nb;
  q.codes = Tensor::uninitialized(DType::U8, cshape);
  q.scales = Tensor::uninitialized(st.scale_dtype, sshape);
  const int64_t step = chunk_rows(k);
#pragma omp parallel for schedule(static)
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t n = std::min(step, rows - r0);
    cpu::quantize_rows(x.data.data() + r0 * k * dtype_size(x.dtype), x.dtype, n, k, k, p,
                       q.codes.ptr<uint8_t>() + r0 * rb, rb, q.scales.ptr<uint8_t>() + r0 * nb, nb);
  }
  return q;
}

Tensor dequantize(const QuantizedTensor& q, DType out_dtype) {
  MXMOE_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16 || out_dtype == DType::F16,
              "dequantize: output dtype {} not supported (expected F32, BF16 or F16)", dtype_name(out_dtype));
  const auto& st = traits(q.params.scheme);
  MXMOE_CHECK(!q.shape.empty() && q.shape.back() % st.block == 0, "dequantize: shape {} is not a {} shape",
              shape_str(q.shape), st.name);
  Tensor y = Tensor::uninitialized(out_dtype, q.shape);
  const int64_t rows = y.rows(), k = y.cols(), rb = packed_row_bytes(q.params.scheme, k), nb = k / st.block;
  MXMOE_CHECK(q.codes.nbytes() == rows * rb && q.scales.nbytes() == rows * nb,
              "dequantize: codes ({} bytes) / scales ({} bytes) do not match shape {} for {} (expected {} / {})",
              q.codes.nbytes(), q.scales.nbytes(), shape_str(q.shape), st.name, rows * rb, rows * nb);
  const int64_t step = chunk_rows(k);
#pragma omp parallel for schedule(static)
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t n = std::min(step, rows - r0);
    cpu::dequantize_rows(q.codes.ptr<uint8_t>() + r0 * rb, rb, q.scales.ptr<uint8_t>() + r0 * nb, nb, n, k,
                         q.params, y.data.data() + r0 * k * dtype_size(out_dtype), out_dtype, k);
  }
  return y;
}

void qdq(const Tensor& x, const QuantParams& p, Tensor& y, const std::string& what) {
  check_input(x, p, what);
  MXMOE_CHECK(&x != &y, "{}: qdq into its own input is not supported (pass another tensor)", what);
  // Reuse y's buffer when it has the right size: a fresh output costs a page fault per 4 KiB.
  if (y.data.size() != x.data.size()) y.data = Bytes(x.data.size());
  y.dtype = x.dtype, y.shape = x.shape;
  const int64_t rows = x.rows(), k = x.cols(), es = dtype_size(x.dtype);
  const int64_t step = chunk_rows(k);
#pragma omp parallel for schedule(static)
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t n = std::min(step, rows - r0);
    cpu::qdq_rows(x.data.data() + r0 * k * es, x.dtype, n, k, k, p, y.data.data() + r0 * k * es, x.dtype, k);
  }
}

Tensor qdq(const Tensor& x, const QuantParams& p, const std::string& what) {
  Tensor y;
  qdq(x, p, y, what);
  return y;
}

float tensor_amax(const Tensor& x) {
  float m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = std::fabs(load_as_f32(x.data.data(), x.dtype, i));
    if (std::isnan(v)) return v;
    m = std::max(m, v);
  }
  return m;
}

}  // namespace mxmoe
