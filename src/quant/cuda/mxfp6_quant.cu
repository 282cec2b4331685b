// Kernel instantiations for mxfp6_e2m3 and mxfp6_e3m2: quantize, dequantize and qdq, every float dtype
// in and out, vector and scalar paths. sm_80+ (plain CUDA, no Hopper-only instructions).
#include "quant/cuda/quant_kernels.cuh"

namespace mxmoe::cuda::detail {
template cudaError_t launch_scheme<Scheme::MXFP6_E2M3>(QuantOp, DType, DType, const QuantArgs&, cudaStream_t);
template cudaError_t launch_scheme<Scheme::MXFP6_E3M2>(QuantOp, DType, DType, const QuantArgs&, cudaStream_t);
}  // namespace mxmoe::cuda::detail
