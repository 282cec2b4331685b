// tile128 (sm80_moe_gemm_tile128.cuh) for MXFP8 (E4M3) and dense BF16 weights.
#include "moe/cuda/sm80_moe_gemm_tile128.cuh"

namespace mxmoe::moe::cuda::tile128 {
template cudaError_t launch_kind<WKind::MXFP8_E4M3>(const GemmArgs&, cudaStream_t);
template cudaError_t launch_kind<WKind::BF16>(const GemmArgs&, cudaStream_t);
}  // namespace mxmoe::moe::cuda::tile128
