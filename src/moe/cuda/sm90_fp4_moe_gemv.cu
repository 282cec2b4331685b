// The decode-shaped ("GEMV") grouped expert GEMM for FP4 weights (NVFP4, MXFP4): for experts with few
// tokens (one tile of at most 8 tokens), where the layer is a stream of packed weights.
//
// Same tile list, arguments and numerics as the tiled kernel (sm80_moe_gemm.cuh), organized for
// bandwidth instead of reuse (the per-warp pieces are in sm90_fp4_gemv.cuh):
//  - CTA = 4 warps; each warp owns one m-tile of 16 weight rows (KSPLIT = 1) or the warps split the K
//    chunks of one or two m-tiles (KSPLIT = 4 / 2, partial sums added in a fixed order through shared
//    memory: deterministic). Items = (tile, group of m-tiles); a persistent grid (all CTAs resident),
//    each CTA a contiguous run of items, so all SMs stream weights even at T = 1 and the streams do
//    not restart per item (stream_items in sm90_fp4_gemv.cuh).
//  - The weight stream is issued before the scale tables are built and the tile's activations staged.
//  - Epilogue from the accumulators: alpha, bias, vllm bf16 rounding, and for GEMM1 the gated
//    activation (the m-tile's rows g / g+8 are the gate / up rows of one output column), amax atomics.
#include <algorithm>

#include "moe/cuda/sm90_fp4_gemv.cuh"

namespace mxmoe::moe::cuda {
namespace gemv {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;

// The tiles of the GEMV's tile list, their bf16 rows copied into shared memory as they are.
struct TileItems {
  const GemmArgs& a;
  uint8_t* act;
  int rs;
  __device__ int4 tile(int ti) const { return a.tiles[ti]; }
  __device__ float alpha(int e) const { return cc::mul_rn(gemm::act_alpha(a, e), a.w_alpha[e]); }
  __device__ void stage(int, int, int p0, int n) const {
    const int units = a.K / 8;
    for (int i = threadIdx.x; i < n * units; i += blockDim.x) {
      const int j = i / units, k = (i - j * units) * 8;
      const int64_t row = a.b_row ? a.b_row[p0 + j] : p0 + j;
      *reinterpret_cast<uint4*>(act + frag_offset(j, k, rs)) = __ldg(reinterpret_cast<const uint4*>(a.b16 + row * a.ldb + k));
    }
  }
};

// Persistent: the grid is what fits on the GPU at once, and CTA b takes the b-th contiguous run of the
// items (tile, m-tile group), mostly of one tile, so its warps' weight streams run on across them.
// Four CTAs (16 warps) per SM at depth 4: 122 registers, no spills (depth 8, for experiments: two).
template <WKind W, bool GATED, int kDepth>
__global__ void __launch_bounds__(kThreads, kDepth == 4 ? 4 : 2) gemv_kernel(const GemmArgs a, int ksplit, int rs_bytes) {
  pdl_wait();
  extern __shared__ __align__(16) uint8_t smem[];
  const int groups = (a.N / 16 + kWarps / ksplit - 1) / (kWarps / ksplit);
  const int total = *a.num_tiles * groups, per = (total + gridDim.x - 1) / gridDim.x;
  const int first = blockIdx.x * per, last = min(total, first + per);
  if (first >= last) return;
  uint8_t* act = smem + kLutBytes + red_bytes(kThreads);
  stream_items<W, GATED, kDepth>(a, TileItems{a, act, rs_bytes}, groups, ksplit, first, last, reinterpret_cast<uint4*>(smem),
                                 act, rs_bytes, reinterpret_cast<float4*>(smem + kLutBytes));
}

template <WKind W, bool GATED, int kDepth>
cudaError_t launch(const GemmArgs& a, int ksplit, cudaStream_t s) {
  const int mpc = kWarps / ksplit;
  const int smem = gemv_smem_bytes(a.K);
  cudaError_t err = ensure_smem<gemv_kernel<W, GATED, kDepth>>(smem);
  int dev = 0;
  if (err == cudaSuccess) err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  // The occupancy query costs host microseconds per GEMM in eager mode: kept per thread for the last
  // (device, shared-memory size) this instantiation saw.
  thread_local struct { int dev = -1, smem = -1, ctas = 0; } fit;
  if (fit.dev != dev || fit.smem != smem) {
    int sms = 0, per_sm = 0;
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err == cudaSuccess)
      err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_kernel<W, GATED, kDepth>, kThreads, size_t(smem));
    if (err != cudaSuccess) return err;
    fit.dev = dev, fit.smem = smem, fit.ctas = sms * std::max(per_sm, 1);
  }
  const int64_t items = int64_t(a.max_tiles) * ((a.N / 16 + mpc - 1) / mpc);
  const int grid = int(std::min<int64_t>(items, fit.ctas));
  return launch_kernel(gemv_kernel<W, GATED, kDepth>, unsigned(grid), kThreads, size_t(smem), s, true, a, ksplit,
                       gemv_row_stride(a.K));
}

template <WKind W>
cudaError_t launch(const GemmArgs& a, int ksplit, int depth, cudaStream_t s) {
  if (depth == 8) return a.act >= 0 ? launch<W, true, 8>(a, ksplit, s) : launch<W, false, 8>(a, ksplit, s);
  return a.act >= 0 ? launch<W, true, 4>(a, ksplit, s) : launch<W, false, 4>(a, ksplit, s);
}

}  // namespace
}  // namespace gemv

int gemv_row_stride(int64_t K) { return gemv::row_stride(K); }
int gemv_smem_bytes(int64_t K) { return gemv::kLutBytes + gemv::red_bytes(gemv::kThreads) + gemv::kTok * gemv_row_stride(K); }

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
