// tile128 (sm80_moe_gemm_tile128.cuh) for FP4 weights (NVFP4, MXFP4) and the dispatch over weight kinds.
#include "moe/cuda/sm80_moe_gemm_tile128.cuh"

namespace mxmoe::moe::cuda {
namespace tile128 {
template cudaError_t launch_kind<WKind::NVFP4>(const GemmArgs&, cudaStream_t);
template cudaError_t launch_kind<WKind::MXFP4>(const GemmArgs&, cudaStream_t);
extern template cudaError_t launch_kind<WKind::MXFP6_E2M3>(const GemmArgs&, cudaStream_t);
extern template cudaError_t launch_kind<WKind::MXFP6_E3M2>(const GemmArgs&, cudaStream_t);
extern template cudaError_t launch_kind<WKind::MXFP8_E4M3>(const GemmArgs&, cudaStream_t);
extern template cudaError_t launch_kind<WKind::BF16>(const GemmArgs&, cudaStream_t);
}  // namespace tile128

cudaError_t grouped_gemm_tile128(const GemmArgs& a, cudaStream_t s) {
  if (a.max_tiles == 0) return cudaSuccess;
  if (a.b16 == nullptr || a.b32 != nullptr || a.nt != 16 || a.b_terms < 1) return cudaErrorInvalidValue;
  return visit_wkind(a.wk, [&](auto w) { return tile128::launch_kind<decltype(w)::value>(a, s); });
}

}  // namespace mxmoe::moe::cuda
