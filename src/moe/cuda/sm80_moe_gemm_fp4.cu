// The fused grouped expert GEMM for FP4 weights (NVFP4, MXFP4) and the dispatch over weight kinds.
#include "moe/cuda/sm80_moe_gemm.cuh"

namespace mxmoe::moe::cuda {
namespace gemm {
template cudaError_t launch<WKind::NVFP4>(const GemmArgs&, cudaStream_t);
template cudaError_t launch<WKind::MXFP4>(const GemmArgs&, cudaStream_t);
extern template cudaError_t launch<WKind::MXFP6_E2M3>(const GemmArgs&, cudaStream_t);
extern template cudaError_t launch<WKind::MXFP6_E3M2>(const GemmArgs&, cudaStream_t);
extern template cudaError_t launch<WKind::MXFP8_E4M3>(const GemmArgs&, cudaStream_t);
extern template cudaError_t launch<WKind::BF16>(const GemmArgs&, cudaStream_t);
}  // namespace gemm

cudaError_t grouped_gemm(const GemmArgs& a, cudaStream_t s) {
  return visit_wkind(a.wk, [&](auto w) { return gemm::launch<decltype(w)::value>(a, s); });
}

}  // namespace mxmoe::moe::cuda
