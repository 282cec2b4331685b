// MoE routers: logits [T, E] -> top-k expert ids and weights per token (scalar reference code).
//
// Every router orders its k outputs by descending selection score; equal scores go to the lower expert
// index first. A NaN logit (or NaN correction bias) throws mxmoe::Error naming the token row.
// docs/routing.md describes each router and the exact float32 operation order.
#pragma once
#include <cstdint>
#include <string_view>

namespace mxmoe::moe {

enum class RouterKind {
  SoftmaxTopK,         // Qwen3-MoE, Mixtral: softmax over E (float32) -> top-k -> optional renormalize
  SigmoidGroupedTopK,  // DeepSeek-V3: sigmoid, correction bias for selection, grouped top-k
  TopKThenSoftmax,     // gpt-oss: top-k on the raw logits, softmax over those k
};

struct RouterConfig {
  RouterKind kind;
  int num_experts;   // E
  int top_k;         // k
  bool renormalize;  // divide the k weights by their sum (SoftmaxTopK, SigmoidGroupedTopK)
  int n_group = 1;     // SigmoidGroupedTopK: number of expert groups (E / n_group experts each)
  int topk_group = 1;  // SigmoidGroupedTopK: groups kept per token
  float routed_scaling_factor = 1.0f;  // multiplies the final weights (every router; DeepSeek-V3: 2.5)
};

// "softmax_topk", "sigmoid_grouped_topk", "topk_then_softmax".
std::string_view router_kind_name(RouterKind kind);
// Accepts the names above (case-insensitive); throws mxmoe::Error listing the valid names.
RouterKind parse_router_kind(std::string_view name);

// Throws mxmoe::Error naming the offending field: E >= 1, 1 <= k <= E, n_group >= 1 divides E,
// 1 <= topk_group <= n_group, k <= topk_group * E / n_group, n_group == topk_group == 1 for the
// ungrouped routers, routed_scaling_factor finite and > 0.
void validate(const RouterConfig& cfg);

// logits: [T, E] row-major float32. correction_bias: [E] or nullptr (SigmoidGroupedTopK only; must
// be nullptr for the other routers). Writes topk_ids [T, k] and topk_weights [T, k].
// Validates cfg and the pointers, then runs the scalar reference kernel for cfg.kind.
void route(const RouterConfig& cfg, const float* logits, int64_t T, const float* correction_bias,
           int32_t* topk_ids, float* topk_weights);

}  // namespace mxmoe::moe
