// A device-resident MoE layer for CUDA GPUs (sm_80+, tuned for Hopper): the packed expert weights
// (codes + block scales, tensor scales, biases) and the router are uploaded once; forward() runs
// route -> permute -> quantize -> fused grouped GEMM1 + activation -> quantize -> grouped GEMM2 ->
// finalize on one stream, with no allocation and no host synchronization (CUDA-graph capturable).
// Weights stay packed in GPU memory and are decoded in registers inside the GEMMs; only experts that
// received tokens are read. Numerics: the `vllm` and `exact` modes of docs/numerics.md (bf16 tensor-core
// products with float32 accumulation are exact for both, see docs/cuda.md).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>

#include "mxmoe/moe/layer.hpp"

namespace mxmoe::moe {

// Why `layer` cannot run on the CUDA backend in emulation `e` (empty when it can). Checks the layer,
// not the device (see cuda_moe_available).
std::string cuda_moe_unsupported(const MoeLayer& layer, Emulation e);
// cuda_moe_unsupported plus a usable device and the options run_moe passes (expert_map, ...).
bool cuda_moe_available(const MoeLayer& layer, const MoeOptions& o, std::string* why);

class CudaMoeLayer {
 public:
  // Uploads the layer (throws mxmoe::Error naming why when unsupported). max_tokens sizes the
  // workspace; forward() accepts any T in [0, max_tokens]. Of the options, the layer keeps what shapes
  // the forward pass: expert_map (this rank's experts; the others contribute zero) and
  // apply_router_weight_on_input; the emulation mode is forward()'s argument.
  CudaMoeLayer(const MoeLayer& layer, int64_t max_tokens, const MoeOptions& options = {});
  ~CudaMoeLayer();
  CudaMoeLayer(const CudaMoeLayer&) = delete;
  CudaMoeLayer& operator=(const CudaMoeLayer&) = delete;

  // x_dev: [T, H] bf16 (device). out_dev: [T, H] float32; topk_ids_dev / topk_w_dev: [T, k].
  // Asynchronous on `stream`; reuses one workspace, so calls on different streams must not overlap.
  // The hidden states must be finite (the host API run_moe checks; on the device NaN routes
  // arbitrarily but stays in bounds).
  void forward(const void* x_dev, int64_t T, Emulation e, float* out_dev, int32_t* topk_ids_dev, float* topk_w_dev,
               cudaStream_t stream = nullptr);

  int64_t hidden() const;
  int top_k() const;
  int64_t max_tokens() const;
  // Warnings of the vllm recipe the CPU backend also gives (e.g. experts disagreeing on input_scale).
  const std::vector<std::string>& warnings() const;
  size_t device_bytes() const;  // weights + workspace
  // forward(.., e, ..) runs the whole layer as one cooperative kernel for T <= fused_tokens(e) (0: never;
  // FP4 weights, bf16 GEMM inputs, the device and shape permitting; see moe_heuristics.hpp).
  int64_t fused_tokens(Emulation e) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// run_moe through the CUDA backend: uploads the layer, copies the input, runs forward and downloads the
// result. Fills r.out / r.topk_ids / r.topk_weights / r.warnings. The upload is repeated on every call
// (nothing is cached: a layer at a reused address could be a different one); for repeated forwards keep
// a CudaMoeLayer and call forward() on device buffers.
void run_moe_cuda(const MoeLayer& layer, const Tensor& hidden_states, const MoeOptions& o, MoeResult& r);

}  // namespace mxmoe::moe
