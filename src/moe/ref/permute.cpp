// Scalar reference "prepare" (group/gather) and "finalize" (weighted scatter-reduce) stages.
#include "mxmoe/moe/permute.hpp"

#include <algorithm>

#include "mxmoe/error.hpp"

namespace mxmoe::moe {

namespace {

template <class U>
void gather_rows_impl(const U* x, int64_t ld, int64_t H, const ExpertGroups& g, U* out) {
  MXMOE_CHECK(H >= 0 && ld >= H, "gather_rows: need 0 <= H <= ld, got H={} ld={}", H, ld);
  const int64_t P = g.num_rows();
  if (P == 0 || H == 0) return;
  MXMOE_CHECK(x && out, "gather_rows: null x/out pointer");
  for (int64_t p = 0; p < P; ++p) {
    const int64_t t = g.permuted_token[size_t(p)];
    MXMOE_CHECK(t >= 0 && t < g.num_tokens, "gather_rows: permuted row {} names token {} outside [0, {})", p, t,
                g.num_tokens);
    std::copy(x + t * ld, x + t * ld + H, out + p * H);
  }
}

}  // namespace

ExpertGroups group_by_expert(const int32_t* topk_ids, int64_t T, int k, int num_experts,
                             const int32_t* expert_map) {
  MXMOE_CHECK(T >= 0, "group_by_expert: number of tokens must be >= 0, got {}", T);
  MXMOE_CHECK(k >= 1, "group_by_expert: top_k must be >= 1, got {}", k);
  MXMOE_CHECK(num_experts >= 1, "group_by_expert: num_experts must be >= 1, got {}", num_experts);
  MXMOE_CHECK(T * k <= INT32_MAX, "group_by_expert: T*k = {} slots do not fit int32", T * k);
  MXMOE_CHECK(T == 0 || topk_ids, "group_by_expert: null topk_ids");

  // Local ids: identity, or expert_map with the local ids exactly 0..L-1, each once.
  int L = num_experts;
  if (expert_map) {
    std::vector<int> owner;  // local id -> global id
    L = 0;
    for (int e = 0; e < num_experts; ++e) {
      const int32_t l = expert_map[e];
      MXMOE_CHECK(l >= -1 && l < num_experts, "group_by_expert: expert_map[{}] = {} is not -1 or in [0, {})", e, l,
                  num_experts);
      if (l < 0) continue;
      if (int(owner.size()) <= l) owner.resize(size_t(l) + 1, -1);
      MXMOE_CHECK(owner[size_t(l)] < 0, "group_by_expert: experts {} and {} both map to local id {}", owner[size_t(l)],
                  e, l);
      owner[size_t(l)] = e;
      ++L;
    }
    for (size_t l = 0; l < owner.size(); ++l)
      MXMOE_CHECK(owner[l] >= 0, "group_by_expert: expert_map uses local ids up to {} but none maps to {}",
                  owner.size() - 1, l);
  }
  auto local_of = [&](int32_t e) { return expert_map ? expert_map[e] : e; };

  ExpertGroups g;
  g.num_local_experts = L;
  g.num_tokens = T;
  g.top_k = k;
  const int64_t S = T * k;
  // Pass 1: validate and count rows per local expert.
  g.expert_offsets.assign(size_t(L) + 1, 0);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t e = topk_ids[s];
    MXMOE_CHECK(e >= 0 && e < num_experts, "group_by_expert: token {} slot {} has expert id {} outside [0, {})",
                s / k, s % k, e, num_experts);
    const int32_t l = local_of(e);
    if (l >= 0) ++g.expert_offsets[size_t(l) + 1];
  }
  for (int l = 0; l < L; ++l) g.expert_offsets[size_t(l) + 1] += g.expert_offsets[size_t(l)];
  const int64_t P = g.expert_offsets[size_t(L)];
  // Pass 2: place the slots in increasing slot order (counting sort, hence stable).
  g.permuted_token.assign(size_t(P), -1);
  g.permuted_slot.assign(size_t(P), -1);
  g.slot_to_permuted.assign(size_t(S), -1);
  std::vector<int64_t> next(g.expert_offsets.begin(), g.expert_offsets.end() - 1);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t l = local_of(topk_ids[s]);
    if (l < 0) continue;
    const int64_t p = next[size_t(l)]++;
    g.permuted_token[size_t(p)] = int32_t(s / k);
    g.permuted_slot[size_t(p)] = int32_t(s);
    g.slot_to_permuted[size_t(s)] = int32_t(p);
  }
  return g;
}

void gather_rows(const float* x, int64_t ld, int64_t H, const ExpertGroups& g, float* out) {
  gather_rows_impl(x, ld, H, g, out);
}
void gather_rows(const uint16_t* x, int64_t ld, int64_t H, const ExpertGroups& g, uint16_t* out) {
  gather_rows_impl(x, ld, H, g, out);
}

void finalize(const ExpertGroups& g, const float* expert_out, int64_t H, const float* topk_weights, int64_t T,
              int k, bool weights_applied_on_input, float* out) {
  MXMOE_CHECK(T == g.num_tokens && k == g.top_k,
              "finalize: T={} k={} do not match the expert groups (built for T={} k={})", T, k, g.num_tokens,
              g.top_k);
  MXMOE_CHECK(H >= 0, "finalize: H must be >= 0, got {}", H);
  MXMOE_CHECK(int64_t(g.slot_to_permuted.size()) == T * k, "finalize: expert groups hold {} slots, expected T*k={}",
              g.slot_to_permuted.size(), T * k);
  if (T == 0 || H == 0) return;
  MXMOE_CHECK(out, "finalize: null out pointer");
  MXMOE_CHECK(g.num_rows() == 0 || expert_out, "finalize: null expert_out pointer");
  MXMOE_CHECK(weights_applied_on_input || topk_weights, "finalize: null topk_weights pointer");
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * H;
    std::fill(o, o + H, 0.0f);
    for (int j = 0; j < k; ++j) {
      const int32_t p = g.slot_to_permuted[size_t(t * k + j)];
      if (p < 0) continue;  // expert owned by another rank
      const float w = weights_applied_on_input ? 1.0f : topk_weights[t * k + j];
      const float* y = expert_out + int64_t(p) * H;
      for (int64_t h = 0; h < H; ++h) {
        const float prod = w * y[h];
        o[h] = o[h] + prod;
      }
    }
  }
}

void apply_router_weight_on_input(float* x, int64_t ld, int64_t T, int64_t H, const float* topk_weights, int k) {
  MXMOE_CHECK(k == 1, "apply_router_weight_on_input: only supported for top_k == 1, got top_k={}", k);
  MXMOE_CHECK(T >= 0 && H >= 0 && ld >= H, "apply_router_weight_on_input: need T >= 0 and 0 <= H <= ld, got T={} H={} ld={}",
              T, H, ld);
  if (T == 0 || H == 0) return;
  MXMOE_CHECK(x && topk_weights, "apply_router_weight_on_input: null x/topk_weights pointer");
  for (int64_t t = 0; t < T; ++t) {
    const float w = topk_weights[t];
    for (int64_t h = 0; h < H; ++h) x[t * ld + h] = x[t * ld + h] * w;
  }
}

}  // namespace mxmoe::moe
