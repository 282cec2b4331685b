// The experts stage: activation quantization and the two grouped GEMMs. The orchestration (which
// tensors get quantized with which scale, bf16 rounding points) is shared in src/moe/experts.cpp;
// implementations differ in the grouped GEMM and register what they support.
#pragma once
#include <string>
#include <vector>

#include "mxmoe/moe/layer.hpp"
#include "mxmoe/moe/permute.hpp"

namespace mxmoe::moe {

// y[n, N] = (a[n, K] . W^T) * (a_alpha * w_alpha) + bias, W one expert projection [N, K], float32
// accumulation. w_alpha is the weight's remaining tensor scale (see decode_weight_rows).
struct GemmTask {
  const ExpertLinear* w;
  const float* a;
  int64_t n;
  float a_alpha;
  const float* bias;  // [N] or nullptr
  float* y;
};

class ExpertsBackend {
 public:
  virtual ~ExpertsBackend() = default;
  virtual std::string name() const = 0;
  // Empty when supported, else why not (listed by `--backend auto` errors).
  virtual std::string unsupported(const MoeLayer& layer, Emulation e) const = 0;
  virtual void grouped_gemm(const std::vector<GemmTask>& tasks, Emulation e) const = 0;
};

const ExpertsBackend& ref_experts();
const ExpertsBackend& cpu_experts();

// The experts one run_experts call computes: the routed experts of a layer, or its shared experts.
struct ExpertSet {
  const std::vector<ExpertLinear>* w13;
  const std::vector<ExpertLinear>* w2;
  const Tensor* b13;  // F32 [n, 2I] or empty
  const Tensor* b2;   // F32 [n, H] or empty
  int64_t inter;
};
inline ExpertSet routed_experts(const MoeLayer& l) { return {&l.w13, &l.w2, &l.b13, &l.b2, l.inter}; }
inline ExpertSet shared_experts(const MoeLayer& l) {
  static const Tensor none;
  return {&l.shared_w13, &l.shared_w2, &none, &none, l.shared_inter};
}

// Runs GEMM1 -> activation -> GEMM2 for every local expert of `set` (scheme, activation and hidden
// size from `l`). x: [P, H] permuted rows of the layer input (vllm mode: the GEMM1 qdq happens here,
// with the scale shared by all experts of the set). out: [P, H].
void run_experts(const ExpertsBackend& be, const MoeLayer& l, const ExpertSet& set, Emulation e, const ExpertGroups& g,
                 const std::vector<int>& local_to_global, const float* x, float* out,
                 std::vector<std::string>& warnings);

namespace detail {
// Scratch buffers that kernels fill completely: no zero fill (page faults dominated large T).
using Floats = std::vector<float, DefaultInitAllocator<float>>;
// Decodes rows [r0, r1) of a projection into float32 [r1 - r0, in]: exact element*block-scale products
// (Exact) or vLLM's bf16 dequantization with the tensor scale folded in (VLLM). Returns the factor
// still to apply to the accumulator (Exact NVFP4: 1/global_scale, else 1).
float decode_weight_rows(const ExpertLinear& w, int64_t r0, int64_t r1, Emulation e, float* out);
// Quantizes activation rows [n, K] in place for a GEMM input; returns the accumulator factor.
// NVFP4 uses encode scale `gs`; FP8 the per-tensor `fp8_scale`; MX is dynamic per block.
float quantize_activation_rows(const MoeLayer& l, Emulation e, float gs, float fp8_scale, float* rows, int64_t n,
                               int64_t K);
float amax(const float* v, int64_t n);
inline float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }
}  // namespace detail

}  // namespace mxmoe::moe
