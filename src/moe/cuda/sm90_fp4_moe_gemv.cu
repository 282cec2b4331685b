// The decode-shaped ("GEMV") grouped expert GEMM for FP4 weights (NVFP4, MXFP4): for experts with few
// tokens (one tile of at most 8 tokens), where the layer is a stream of packed weights.
//
// Same tile list, arguments and numerics as the tiled kernel (sm80_moe_gemm.cuh), organized for
// bandwidth instead of reuse (the per-warp pieces are in sm90_fp4_gemv.cuh):
//  - CTA = 4 warps; each warp owns one m-tile of 16 weight rows (KSPLIT = 1) or the warps split the K
//    chunks of one or two m-tiles (KSPLIT = 4 / 2, partial sums added in a fixed order through shared
//    memory: deterministic); grid = (tiles, m-tile groups), so all SMs stream weights even at T = 1.
//  - The weight stream is issued before the scale tables are built and the tile's activations staged.
//  - Epilogue from the accumulators: alpha, bias, vllm bf16 rounding, and for GEMM1 the gated
//    activation (the m-tile's rows g / g+8 are the gate / up rows of one output column), amax atomics.
#include "moe/cuda/sm90_fp4_gemv.cuh"

namespace mxmoe::moe::cuda {
namespace gemv {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;

template <WKind W, bool GATED, int kDepth>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemmArgs a, int ksplit, int rs_bytes) {
  extern __shared__ __align__(16) uint8_t smem[];
  uint4* lut = reinterpret_cast<uint4*>(smem);
  uint8_t* act = smem + kLutBytes;
  const int tile = blockIdx.x;
  if (tile >= *a.num_tiles) return;
  const int4 td = a.tiles[tile];
  const int e = td.x, p0 = td.y, n = td.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int mpc = kWarps / ksplit;  // m-tiles per CTA
  const int mt = blockIdx.y * mpc + warp % mpc, kg = warp / mpc;
  const bool mt_ok = mt < a.N / 16;
  const int mode = row_mode(a, GATED);

  WeightStream<W, kDepth> ws;
  ws.start(a, e, mode, mt, mt_ok, kg, ksplit);
  build_luts<W>(lut, a, e);
  const int units = a.K / 8;
  for (int i = threadIdx.x; i < n * units; i += kThreads) {
    const int j = i / units, k = (i - j * units) * 8;
    const int64_t row = a.b_row ? a.b_row[p0 + j] : p0 + j;
    *reinterpret_cast<uint4*>(act + frag_offset(j, k, rs_bytes)) =
        __ldg(reinterpret_cast<const uint4*>(a.b16 + row * a.ldb + k));
  }
  __syncthreads();

  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  ws.run(lut, act + (g < n ? g : 0) * rs_bytes + t * 16, acc);  // rows >= n: any valid data (discarded)
  if (ksplit > 1) {
    __syncthreads();  // everyone is done reading the activations
    if (!reduce_ksplit(reinterpret_cast<float4*>(act), ksplit, mpc, acc)) return;
  }
  if (!mt_ok) return;
  const float alpha = cc::mul_rn(gemm::act_alpha(a, e), a.w_alpha[e]);
  store_mtile<GATED>(a, e, alpha, mode, mt, acc, n, p0);
}

template <WKind W, bool GATED, int kDepth>
cudaError_t launch(const GemmArgs& a, int ksplit, cudaStream_t s) {
  const int mpc = kWarps / ksplit;
  const dim3 grid(unsigned(a.max_tiles), unsigned((a.N / 16 + mpc - 1) / mpc));
  const int smem = gemv_smem_bytes(a.K);
  const cudaError_t err = ensure_smem<gemv_kernel<W, GATED, kDepth>>(smem);
  if (err != cudaSuccess) return err;
  gemv_kernel<W, GATED, kDepth><<<grid, kThreads, size_t(smem), s>>>(a, ksplit, gemv_row_stride(a.K));
  return cudaGetLastError();
}

template <WKind W>
cudaError_t launch(const GemmArgs& a, int ksplit, int depth, cudaStream_t s) {
  if (depth == 8) return a.act >= 0 ? launch<W, true, 8>(a, ksplit, s) : launch<W, false, 8>(a, ksplit, s);
  return a.act >= 0 ? launch<W, true, 4>(a, ksplit, s) : launch<W, false, 4>(a, ksplit, s);
}

}  // namespace
}  // namespace gemv

int gemv_row_stride(int64_t K) { return gemv::row_stride(K); }
int gemv_smem_bytes(int64_t K) { return gemv::kLutBytes + gemv::kTok * gemv_row_stride(K); }

cudaError_t grouped_gemv(const GemmArgs& a, int ksplit, int depth, cudaStream_t s) {
  if (a.max_tiles == 0) return cudaSuccess;
  if (a.nt != 1 || a.b16 == nullptr || a.b32 != nullptr || (ksplit != 1 && ksplit != 2 && ksplit != 4))
    return cudaErrorInvalidValue;
  switch (a.wk) {
    case WKind::NVFP4: return gemv::launch<WKind::NVFP4>(a, ksplit, depth, s);
    case WKind::MXFP4: return gemv::launch<WKind::MXFP4>(a, ksplit, depth, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace mxmoe::moe::cuda
