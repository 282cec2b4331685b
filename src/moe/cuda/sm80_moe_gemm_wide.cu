// The fused grouped expert GEMM for 6-, 8- and 16-bit expert weights (MXFP6, MXFP8, dense BF16).
#include "moe/cuda/sm80_moe_gemm.cuh"

namespace mxmoe::moe::cuda::gemm {
template cudaError_t launch<WKind::MXFP6_E2M3>(const GemmArgs&, cudaStream_t);
template cudaError_t launch<WKind::MXFP6_E3M2>(const GemmArgs&, cudaStream_t);
template cudaError_t launch<WKind::MXFP8_E4M3>(const GemmArgs&, cudaStream_t);
template cudaError_t launch<WKind::BF16>(const GemmArgs&, cudaStream_t);
}  // namespace mxmoe::moe::cuda::gemm
