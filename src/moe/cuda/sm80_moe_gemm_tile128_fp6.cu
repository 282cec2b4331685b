// tile128 (sm80_moe_gemm_tile128.cuh) for MXFP6 weights (E2M3, E3M2).
#include "moe/cuda/sm80_moe_gemm_tile128.cuh"

namespace mxmoe::moe::cuda::tile128 {
template cudaError_t launch_kind<WKind::MXFP6_E2M3>(const GemmArgs&, cudaStream_t);
template cudaError_t launch_kind<WKind::MXFP6_E3M2>(const GemmArgs&, cudaStream_t);
}  // namespace mxmoe::moe::cuda::tile128
