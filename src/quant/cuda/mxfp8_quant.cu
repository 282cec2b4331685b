// Kernel instantiations for mxfp8_e4m3 and mxfp8_e5m2: quantize, dequantize and qdq, every float dtype
// in and out, vector and scalar paths. sm_80+ (plain CUDA, no Hopper-only instructions).
#include "quant/cuda/quant_kernels.cuh"

namespace mxmoe::cuda::detail {
template cudaError_t launch_scheme<Scheme::MXFP8_E4M3>(QuantOp, DType, DType, const QuantArgs&, cudaStream_t);
template cudaError_t launch_scheme<Scheme::MXFP8_E5M2>(QuantOp, DType, DType, const QuantArgs&, cudaStream_t);
}  // namespace mxmoe::cuda::detail
