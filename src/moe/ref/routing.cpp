// Scalar reference routers (see include/mxmoe/moe/routing.hpp and docs/routing.md).
#include "mxmoe/moe/routing.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "mxmoe/error.hpp"

namespace mxmoe::moe {

namespace {

struct KindName {
  RouterKind kind;
  std::string_view name;
};
constexpr KindName kKindNames[] = {
    {RouterKind::SoftmaxTopK, "softmax_topk"},
    {RouterKind::SigmoidGroupedTopK, "sigmoid_grouped_topk"},
    {RouterKind::TopKThenSoftmax, "topk_then_softmax"},
};

// The one ordering every router uses: higher score first, equal scores -> lower index first.
// It is a strict total order on (score, index) for non-NaN scores, so any sort gives the same result.
inline bool ranks_before(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

// Sorts the candidate indices so that the first k are the top-k of score[] in output order.
void select_top_k(const float* score, std::vector<int>& cand, int k) {
  std::partial_sort(cand.begin(), cand.begin() + k, cand.end(),
                    [score](int a, int b) { return ranks_before(score[a], a, score[b], b); });
}

void check_no_nan(const float* row, int E, int64_t t) {
  for (int e = 0; e < E; ++e)
    MXMOE_CHECK(!std::isnan(row[e]), "router: NaN logit in token row {} (expert {})", t, e);
}

// out[j] /= (sum_j out[j] + eps), the sum taken in j order in float32.
void renormalize_weights(float* w, int k, float eps) {
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += w[j];
  const float denom = sum + eps;
  for (int j = 0; j < k; ++j) w[j] = w[j] / denom;
}

void softmax_top_k(const RouterConfig& cfg, const float* logits, int64_t T, int32_t* ids, float* wts) {
  const int E = cfg.num_experts, k = cfg.top_k;
  std::vector<float> p(static_cast<size_t>(E));
  std::vector<int> cand(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* x = logits + t * E;
    check_no_nan(x, E, t);
    // softmax in float32: m = max_e x[e]; p[e] = exp(x[e] - m); sum in index order; p[e] /= sum.
    float m = x[0];
    for (int e = 1; e < E; ++e) m = std::max(m, x[e]);
    MXMOE_CHECK(std::isfinite(m), "router: token row {} has max logit {}; softmax is undefined", t, m);
    float sum = 0.0f;
    for (int e = 0; e < E; ++e) {
      p[size_t(e)] = std::exp(x[e] - m);
      sum += p[size_t(e)];
    }
    for (int e = 0; e < E; ++e) p[size_t(e)] = p[size_t(e)] / sum;
    std::iota(cand.begin(), cand.end(), 0);
    select_top_k(p.data(), cand, k);
    int32_t* id = ids + t * k;
    float* w = wts + t * k;
    for (int j = 0; j < k; ++j) {
      id[j] = cand[size_t(j)];
      w[j] = p[size_t(cand[size_t(j)])];
    }
    if (cfg.renormalize) renormalize_weights(w, k, 0.0f);
    for (int j = 0; j < k; ++j) w[j] = w[j] * cfg.routed_scaling_factor;
  }
}

void sigmoid_grouped_top_k(const RouterConfig& cfg, const float* logits, int64_t T, const float* bias,
                           int32_t* ids, float* wts) {
  const int E = cfg.num_experts, k = cfg.top_k;
  const int G = cfg.n_group, gsize = E / G;
  std::vector<float> s(static_cast<size_t>(E)), sel(static_cast<size_t>(E)), gscore(static_cast<size_t>(G));
  std::vector<int> groups(static_cast<size_t>(G)), cand;
  cand.reserve(size_t(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* x = logits + t * E;
    check_no_nan(x, E, t);
    // s = 1 / (1 + exp(-x)); selection score = s + bias (bias only steers the choice).
    for (int e = 0; e < E; ++e) {
      s[size_t(e)] = 1.0f / (1.0f + std::exp(-x[e]));
      sel[size_t(e)] = bias ? s[size_t(e)] + bias[e] : s[size_t(e)];
    }
    // Group score: best + second best selection score of the group (just the best for 1-expert groups).
    for (int g = 0; g < G; ++g) {
      const int base = g * gsize;
      int b1 = base;
      for (int e = base + 1; e < base + gsize; ++e)
        if (ranks_before(sel[size_t(e)], e, sel[size_t(b1)], b1)) b1 = e;
      if (gsize == 1) {
        gscore[size_t(g)] = sel[size_t(b1)];
        continue;
      }
      int b2 = -1;
      for (int e = base; e < base + gsize; ++e) {
        if (e == b1) continue;
        if (b2 < 0 || ranks_before(sel[size_t(e)], e, sel[size_t(b2)], b2)) b2 = e;
      }
      gscore[size_t(g)] = sel[size_t(b1)] + sel[size_t(b2)];
    }
    // Keep the top topk_group groups (ties -> lower group index), then top-k experts inside them.
    std::iota(groups.begin(), groups.end(), 0);
    select_top_k(gscore.data(), groups, cfg.topk_group);
    std::sort(groups.begin(), groups.begin() + cfg.topk_group);  // candidate order does not matter
    cand.clear();
    for (int i = 0; i < cfg.topk_group; ++i)
      for (int e = groups[size_t(i)] * gsize; e < (groups[size_t(i)] + 1) * gsize; ++e) cand.push_back(e);
    select_top_k(sel.data(), cand, k);
    int32_t* id = ids + t * k;
    float* w = wts + t * k;
    for (int j = 0; j < k; ++j) {
      id[j] = cand[size_t(j)];
      w[j] = s[size_t(cand[size_t(j)])];  // uncorrected sigmoid score
    }
    if (cfg.renormalize) renormalize_weights(w, k, 1e-20f);  // DeepSeek-V3: sum + 1e-20
    for (int j = 0; j < k; ++j) w[j] = w[j] * cfg.routed_scaling_factor;
  }
}

void top_k_then_softmax(const RouterConfig& cfg, const float* logits, int64_t T, int32_t* ids, float* wts) {
  const int E = cfg.num_experts, k = cfg.top_k;
  std::vector<int> cand(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* x = logits + t * E;
    check_no_nan(x, E, t);
    std::iota(cand.begin(), cand.end(), 0);
    select_top_k(x, cand, k);
    int32_t* id = ids + t * k;
    float* w = wts + t * k;
    // softmax over the k chosen logits: m = x[id_0] (the largest); exp(x - m); sum in j order; divide.
    const float m = x[cand[0]];
    MXMOE_CHECK(std::isfinite(m), "router: token row {} has max logit {}; softmax is undefined", t, m);
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) {
      id[j] = cand[size_t(j)];
      w[j] = std::exp(x[id[j]] - m);
      sum += w[j];
    }
    for (int j = 0; j < k; ++j) w[j] = w[j] / sum * cfg.routed_scaling_factor;
  }
}

}  // namespace

std::string_view router_kind_name(RouterKind kind) {
  for (const auto& kn : kKindNames)
    if (kn.kind == kind) return kn.name;
  MXMOE_THROW("router_kind_name: unknown RouterKind value {}", static_cast<int>(kind));
}

RouterKind parse_router_kind(std::string_view name) {
  std::string lower(name);
  for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& kn : kKindNames)
    if (kn.name == lower) return kn.kind;
  MXMOE_THROW("unknown router kind '{}' (valid: softmax_topk, sigmoid_grouped_topk, topk_then_softmax)", name);
}

void validate(const RouterConfig& cfg) {
  const int E = cfg.num_experts, k = cfg.top_k;
  MXMOE_CHECK(cfg.kind == RouterKind::SoftmaxTopK || cfg.kind == RouterKind::SigmoidGroupedTopK ||
                  cfg.kind == RouterKind::TopKThenSoftmax,
              "router config: unknown kind {}", static_cast<int>(cfg.kind));
  MXMOE_CHECK(E >= 1, "router config: num_experts must be >= 1, got {}", E);
  MXMOE_CHECK(k >= 1 && k <= E, "router config: top_k must be in [1, num_experts={}], got {}", E, k);
  MXMOE_CHECK(std::isfinite(cfg.routed_scaling_factor) && cfg.routed_scaling_factor > 0.0f,
              "router config: routed_scaling_factor must be finite and > 0, got {}", cfg.routed_scaling_factor);
  if (cfg.kind != RouterKind::SigmoidGroupedTopK) {
    MXMOE_CHECK(cfg.n_group == 1 && cfg.topk_group == 1,
                "router config: n_group/topk_group ({}/{}) only apply to sigmoid_grouped_topk; {} needs 1/1",
                cfg.n_group, cfg.topk_group, router_kind_name(cfg.kind));
    return;
  }
  MXMOE_CHECK(cfg.n_group >= 1, "router config: n_group must be >= 1, got {}", cfg.n_group);
  MXMOE_CHECK(E % cfg.n_group == 0, "router config: n_group={} does not divide num_experts={}", cfg.n_group, E);
  MXMOE_CHECK(cfg.topk_group >= 1 && cfg.topk_group <= cfg.n_group,
              "router config: topk_group must be in [1, n_group={}], got {}", cfg.n_group, cfg.topk_group);
  const int reachable = cfg.topk_group * (E / cfg.n_group);
  MXMOE_CHECK(k <= reachable,
              "router config: top_k={} exceeds the experts in the kept groups (topk_group={} x {} experts per group = {})",
              k, cfg.topk_group, E / cfg.n_group, reachable);
}

void route(const RouterConfig& cfg, const float* logits, int64_t T, const float* correction_bias,
           int32_t* topk_ids, float* topk_weights) {
  validate(cfg);
  MXMOE_CHECK(T >= 0, "route: number of tokens must be >= 0, got {}", T);
  if (T == 0) return;
  MXMOE_CHECK(logits && topk_ids && topk_weights, "route: null logits/topk_ids/topk_weights pointer");
  MXMOE_CHECK(!correction_bias || cfg.kind == RouterKind::SigmoidGroupedTopK,
              "route: correction_bias is only used by sigmoid_grouped_topk, not {}", router_kind_name(cfg.kind));
  if (correction_bias)
    for (int e = 0; e < cfg.num_experts; ++e)
      MXMOE_CHECK(!std::isnan(correction_bias[e]), "route: NaN correction_bias for expert {}", e);
  switch (cfg.kind) {
    case RouterKind::SoftmaxTopK:
      softmax_top_k(cfg, logits, T, topk_ids, topk_weights);
      return;
    case RouterKind::SigmoidGroupedTopK:
      sigmoid_grouped_top_k(cfg, logits, T, correction_bias, topk_ids, topk_weights);
      return;
    case RouterKind::TopKThenSoftmax:
      top_k_then_softmax(cfg, logits, T, topk_ids, topk_weights);
      return;
  }
}

}  // namespace mxmoe::moe
