// The model-independent "prepare" and "finalize" stages of the MoE pipeline (scalar reference code):
// group the T*k (token, slot) pairs by local expert, gather the token rows in that order, and after the
// experts ran, scatter-reduce the expert outputs back to the tokens with the router weights.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mxmoe::moe {

// The permutation: P = number of slots routed to a local expert. Rows of one expert are contiguous,
// experts in local-id order, and within one expert the rows are ordered by slot index s = t*k + j
// (stable: token order, then slot order).
struct ExpertGroups {
  int num_local_experts = 0;
  std::vector<int64_t> expert_offsets;    // [L + 1]: rows of local expert l are [off[l], off[l+1])
                                          // (vLLM's expert_first_token_offset); off[L] == P
  std::vector<int32_t> permuted_token;    // [P] source token row of each permuted row
  std::vector<int32_t> permuted_slot;     // [P] slot t*k + j of each permuted row
  std::vector<int32_t> slot_to_permuted;  // [T*k] permuted row of each slot; -1 when the expert is not local
  int64_t num_tokens = 0;                 // T
  int top_k = 0;                          // k

  int64_t num_rows() const { return int64_t(permuted_token.size()); }  // P
  int64_t rows_of(int local_expert) const {
    return expert_offsets[size_t(local_expert) + 1] - expert_offsets[size_t(local_expert)];
  }
};

// topk_ids: [T, k] global expert ids in [0, num_experts) (error naming token and slot otherwise).
// expert_map: [num_experts] global -> local id, or -1 for an expert another rank owns; nullptr means the
// identity (every expert local). The local ids must be exactly 0..L-1, each used once.
// Duplicate ids inside one token's row are accepted (each slot becomes its own row).
ExpertGroups group_by_expert(const int32_t* topk_ids, int64_t T, int k, int num_experts,
                             const int32_t* expert_map = nullptr);

// out[p, :] = x[permuted_token[p], 0:H] for p in [0, P); x has row stride ld >= H, out is [P, H]
// contiguous. The uint16_t overload copies raw 16-bit rows (bf16 or fp16) bit for bit.
void gather_rows(const float* x, int64_t ld, int64_t H, const ExpertGroups& g, float* out);
void gather_rows(const uint16_t* x, int64_t ld, int64_t H, const ExpertGroups& g, uint16_t* out);

// out[t, h] = sum over j = 0..k-1, in that order, of w[t, j] * expert_out[slot_to_permuted[t*k+j], h],
// in float32 starting from 0.0f: each product is rounded to float32 and then added. Slots of non-local
// experts contribute nothing (a row with no local slot is 0). With weights_applied_on_input the weight
// is taken as 1 (the caller already scaled the input, see apply_router_weight_on_input) and
// topk_weights may be nullptr. expert_out: [P, H], topk_weights: [T, k], out: [T, H]; T and k must
// match the ones g was built with.
void finalize(const ExpertGroups& g, const float* expert_out, int64_t H, const float* topk_weights, int64_t T,
              int k, bool weights_applied_on_input, float* out);

// vLLM's apply_router_weight_on_input: x[t, 0:H] *= topk_weights[t, 0] in place (x row stride ld >= H).
// Only defined for k == 1 (throws otherwise: with k > 1 one input row feeds k experts with different
// weights).
void apply_router_weight_on_input(float* x, int64_t ld, int64_t T, int64_t H, const float* topk_weights, int k);

}  // namespace mxmoe::moe
