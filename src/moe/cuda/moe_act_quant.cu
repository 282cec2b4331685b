// The activation-quantization kernel (one thread per scale block, moe_act_quant.cuh), the three-term
// bf16 split of float32 rows, the router weight on the input rows, and the finalize stage.
#include "moe/cuda/moe_act_quant.cuh"

namespace mxmoe::moe::cuda {
namespace {

template <AQ Q>
__global__ void __launch_bounds__(256) quant_kernel(const QuantRowsArgs a) {
  pdl_wait();
  constexpr int B = QTraits<Q>::block;
  const int64_t nb = a.K / B;
  const int64_t gid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= (a.nrows_dev ? *a.nrows_dev : a.rows) * nb) return;
  const int64_t r = gid / nb, b = gid - r * nb;
  const int64_t sr = a.src_row ? a.src_row[r] : r;
  float v[B];
  const size_t esz = a.x_bf16 ? 2 : 4;
  load_block<B>(static_cast<const uint8_t*>(a.x) + (sr * a.ldx + b * B) * esz, a.x_bf16, v);
  const RowQuant rq = row_quant<Q>(a.sc, a.vllm, a.scale_rule, a.rounding, Q == AQ::NVFP4 && a.row_expert ? a.row_expert[r] : 0);
  uint32_t w[B / 2];
  quant_block<Q>(v, rq, w);
  uint4* o = reinterpret_cast<uint4*>(a.y + r * a.K + b * B);
#pragma unroll
  for (int i = 0; i < B / 8; ++i) o[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
}

__global__ void __launch_bounds__(256) split3_kernel(const float* x, int64_t n, uint16_t* y) {
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i];
#pragma unroll
  for (int t = 0; t < 3; ++t) {
    const uint16_t b = cc::f32_to_bf16(v);
    y[t * n + i] = b;
    v = cc::sub_rn(v, cc::bf16_to_f32(b));
  }
}

__global__ void __launch_bounds__(256) scale_rows_kernel(const uint16_t* x, int64_t n, int64_t H, const float* w,
                                                          int k, float* xs) {
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) xs[i] = cc::mul_rn(cc::bf16_to_f32(x[i]), w[i / H * k]);
}

// The shared experts' output is added after the routed sum, each rounded to bf16 in vllm mode (the
// layer adds its two bf16 outputs, as run_moe).
__global__ void __launch_bounds__(256) finalize_kernel(const FinalizeArgs a) {
  pdl_wait();
  const int64_t gid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (gid >= a.T * (a.H / 4)) return;
  finalize_vec4(a, gid);
  if (a.shared == nullptr) return;
  float4* o = reinterpret_cast<float4*>(a.out) + gid;
  const float4 r = *o, s = __ldg(reinterpret_cast<const float4*>(a.shared) + gid);
  float v[4] = {cc::add_rn(r.x, s.x), cc::add_rn(r.y, s.y), cc::add_rn(r.z, s.z), cc::add_rn(r.w, s.w)};
  if (a.vllm)
    for (float& f : v) f = round_bf16(f);
  *o = make_float4(v[0], v[1], v[2], v[3]);
}

}  // namespace

cudaError_t quant_rows(const QuantRowsArgs& a, cudaStream_t s) {
  if (a.rows == 0) return cudaSuccess;
  return visit_aq(a.aq, [&](auto q) {
    constexpr AQ Q = decltype(q)::value;
    const int64_t n = a.rows * (a.K / QTraits<Q>::block);
    return launch_kernel(quant_kernel<Q>, unsigned((n + 255) / 256), 256, 0, s, true, a);
  });
}

cudaError_t split_bf16x3(const float* x, int64_t n, uint16_t* y, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  return launch_kernel(split3_kernel, unsigned((n + 255) / 256), 256, 0, s, true, x, n, y);
}

cudaError_t scale_rows(const uint16_t* x, int64_t T, int64_t H, const float* w, int k, float* xs, cudaStream_t s) {
  const int64_t n = T * H;
  if (n == 0) return cudaSuccess;
  return launch_kernel(scale_rows_kernel, unsigned((n + 255) / 256), 256, 0, s, true, x, n, H, w, k, xs);
}

cudaError_t finalize(const FinalizeArgs& a, cudaStream_t s) {
  const int64_t n = a.T * (a.H / 4);
  if (n == 0) return cudaSuccess;
  return launch_kernel(finalize_kernel, unsigned((n + 255) / 256), 256, 0, s, true, a);
}

}  // namespace mxmoe::moe::cuda
