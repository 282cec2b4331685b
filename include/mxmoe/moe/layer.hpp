// One MoE layer: weights in memory and the forward pass route -> prepare -> experts -> finalize.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "mxmoe/moe/activation.hpp"
#include "mxmoe/moe/moe_scheme.hpp"
#include "mxmoe/moe/routing.hpp"
#include "mxmoe/quant.hpp"

namespace mxmoe::moe {

// One projection [out, in] of one expert: packed (quantized checkpoints) or dense (BF16/F32).
struct ExpertLinear {
  std::optional<QuantizedTensor> packed;  // params.global_scale is the NVFP4 *encode* scale
  Tensor dense;
  float input_scale = 0.0f;  // NVFP4 static activation scale, decode direction (ModelOpt); 0 = none

  int64_t out_features() const { return packed ? packed->shape[0] : dense.shape[0]; }
  int64_t in_features() const { return packed ? packed->shape[1] : dense.shape[1]; }
};

struct MoeLayer {
  int64_t hidden = 0, inter = 0;
  int num_experts = 0;
  const MoeScheme* scheme = nullptr;
  ScaleRule act_rule = ScaleRule::Even;  // MX activation scale rule (Quark's default)
  Rounding act_rounding = Rounding::RNE;
  RouterConfig router{RouterKind::SoftmaxTopK, 0, 0, true};
  Tensor gate;             // router weight [E, H], BF16 or F32
  Tensor gate_bias;        // [E] or empty (gpt-oss)
  Tensor correction_bias;  // [E] or empty (DeepSeek-V3 e_score_correction_bias)
  ActivationConfig activation{Activation::SiLU};
  std::vector<ExpertLinear> w13;  // per expert [2I, H]: concat(gate, up), or interleaved (swigluoai)
  std::vector<ExpertLinear> w2;   // per expert [H, I]
  Tensor b13, b2;                 // F32 [E, 2I] / [E, H] or empty
  // Shared experts (DeepSeek-V3): one gated MLP every token goes through, its output added to the
  // routed experts' (the n_shared_experts are concatenated along the intermediate dimension).
  // Empty vectors when absent; otherwise one [2*shared_inter, H] and one [H, shared_inter] projection.
  std::vector<ExpertLinear> shared_w13, shared_w2;
  int64_t shared_inter = 0;

  // Throws mxmoe::Error naming the first inconsistent tensor (shapes, counts, scheme vs storage).
  void validate() const;
};

enum class Backend : uint8_t { Auto, Ref, Cpu, Cuda };
Backend parse_backend(std::string_view name);

struct MoeOptions {
  Emulation emulation = Emulation::VLLM;
  Backend backend = Backend::Auto;
  std::vector<int32_t> expert_map;  // [E] global -> local id or -1; empty = every expert local
  bool apply_router_weight_on_input = false;
};

struct MoeResult {
  Tensor out;           // F32 [T, H]
  Tensor topk_ids;      // I32 [T, k]
  Tensor topk_weights;  // F32 [T, k]
  std::string backend;  // which experts implementation ran, and why it was chosen
  std::vector<std::string> warnings;
};

// hidden_states: [T, H] BF16 or F32.
MoeResult run_moe(const MoeLayer& layer, const Tensor& hidden_states, const MoeOptions& opts);

// Quantizes every expert of a dense (BF16/F32) layer into `scheme` (quantize-on-load). NVFP4 global
// scales are 448*6/amax per projection; activation scales stay dynamic (input_scale 0).
MoeLayer quantize_layer(const MoeLayer& dense, const MoeScheme& scheme, ScaleRule rule = ScaleRule::Even);

// Moves the layer's expert weights (routed and shared: codes and scales, or dense) into one HugeArena,
// expert by expert in the order a forward reads them. The loader, quantize_layer and synthetic_layer
// call it; a layer assembled by hand may.
void pack_expert_weights(MoeLayer& l);

// A random layer for tests, demos and benchmarks (weights ~ N(0, 1/sqrt(in)), BF16, then quantized).
struct SyntheticShape {
  std::string name;
  int64_t hidden, inter;
  int num_experts, top_k;
};
SyntheticShape synthetic_shape(std::string_view name);  // qwen3-30b-a3b, gpt-oss-20b, mixtral-8x7b, ...
MoeLayer synthetic_layer(const SyntheticShape& s, const MoeScheme& scheme, uint32_t seed);
// Bytes a forward must read at least: the stored weights (codes + scales, or dense) of every expert
// that received a token (topk_ids from a MoeResult), plus the shared experts.
double touched_weight_bytes(const MoeLayer& l, const Tensor& topk_ids);
// Deterministic pseudo-normal BF16 activations [T, H] for demos and benchmarks.
Tensor synthetic_tokens(int64_t T, int64_t H, uint32_t seed);

}  // namespace mxmoe::moe
