// Kernel instantiations for nvfp4: quantize, dequantize and qdq, every float dtype
// in and out, vector and scalar paths. sm_80+ (plain CUDA, no Hopper-only instructions).
#include "quant/cuda/quant_kernels.cuh"

namespace mxmoe::cuda::detail {
template cudaError_t launch_scheme<Scheme::NVFP4>(QuantOp, DType, DType, const QuantArgs&, cudaStream_t);
}  // namespace mxmoe::cuda::detail
