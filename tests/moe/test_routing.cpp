// Routers: hand-computed cases, tie-breaking, config validation and random tests against a float64
// brute-force re-implementation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "mxmoe/error.hpp"
#include "test_util.hpp"
#include "mxmoe/moe/routing.hpp"

using namespace mxmoe::moe;

namespace {

using mxmoe::test::expect_error;

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> w;
};

Routed run(const RouterConfig& cfg, const std::vector<float>& logits, const float* bias = nullptr) {
  const int64_t T = int64_t(logits.size()) / cfg.num_experts;
  Routed r{std::vector<int32_t>(size_t(T * cfg.top_k)), std::vector<float>(size_t(T * cfg.top_k))};
  route(cfg, logits.data(), T, bias, r.ids.data(), r.w.data());
  return r;
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---- float64 brute force -------------------------------------------------------------------------
// Returns the indices of `cand` sorted by (score desc, index asc) and the smallest gap between
// consecutive scores among the first n+1 (how safe the comparison with float32 is).
std::vector<int> rank(const std::vector<double>& score, std::vector<int> cand, int n, double* min_gap) {
  std::sort(cand.begin(), cand.end(), [&](int a, int b) {
    return score[size_t(a)] > score[size_t(b)] || (score[size_t(a)] == score[size_t(b)] && a < b);
  });
  for (int i = 0; i < n && i + 1 < int(cand.size()); ++i)
    *min_gap = std::min(*min_gap, score[size_t(cand[size_t(i)])] - score[size_t(cand[size_t(i) + 1])]);
  cand.resize(size_t(n));
  return cand;
}

void brute_force_row(const RouterConfig& cfg, const float* x, const float* bias, std::vector<int>& ids,
                     std::vector<double>& w, double* gap) {
  const int E = cfg.num_experts, k = cfg.top_k;
  std::vector<int> all(static_cast<size_t>(E));
  std::iota(all.begin(), all.end(), 0);
  std::vector<double> p(static_cast<size_t>(E));
  if (cfg.kind == RouterKind::SoftmaxTopK) {
    double m = *std::max_element(x, x + E), sum = 0;
    for (int e = 0; e < E; ++e) sum += p[size_t(e)] = std::exp(double(x[e]) - m);
    for (auto& v : p) v /= sum;
    ids = rank(p, all, k, gap);
    w.clear();
    for (int id : ids) w.push_back(p[size_t(id)]);
    if (cfg.renormalize) {
      double s = std::accumulate(w.begin(), w.end(), 0.0);
      for (auto& v : w) v /= s;
    }
  } else if (cfg.kind == RouterKind::TopKThenSoftmax) {
    for (int e = 0; e < E; ++e) p[size_t(e)] = x[e];
    ids = rank(p, all, k, gap);
    double s = 0;
    w.clear();
    for (int id : ids) w.push_back(std::exp(p[size_t(id)] - p[size_t(ids[0])]));
    for (double v : w) s += v;
    for (auto& v : w) v /= s;
  } else {
    const int G = cfg.n_group, gs = E / G;
    std::vector<double> sel(static_cast<size_t>(E)), gscore(static_cast<size_t>(G));
    for (int e = 0; e < E; ++e) {
      p[size_t(e)] = sig(x[e]);
      sel[size_t(e)] = p[size_t(e)] + (bias ? double(bias[e]) : 0.0);
    }
    for (int g = 0; g < G; ++g) {
      std::vector<double> v(sel.begin() + g * gs, sel.begin() + (g + 1) * gs);
      std::sort(v.rbegin(), v.rend());
      gscore[size_t(g)] = v[0] + (gs > 1 ? v[1] : 0.0);
    }
    std::vector<int> gall(static_cast<size_t>(G));
    std::iota(gall.begin(), gall.end(), 0);
    auto kept = rank(gscore, gall, cfg.topk_group, gap);
    std::vector<int> cand;
    for (int g : kept)
      for (int e = g * gs; e < (g + 1) * gs; ++e) cand.push_back(e);
    ids = rank(sel, cand, k, gap);
    w.clear();
    for (int id : ids) w.push_back(p[size_t(id)]);
    if (cfg.renormalize) {
      double s = std::accumulate(w.begin(), w.end(), 0.0);
      for (auto& v : w) v /= (s + 1e-20);
    }
  }
  for (auto& v : w) v *= cfg.routed_scaling_factor;
}

void random_check(const RouterConfig& cfg, bool with_bias, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  const int64_t T = 64;
  const int E = cfg.num_experts, k = cfg.top_k;
  std::vector<float> logits(static_cast<size_t>(T * E)), bias(static_cast<size_t>(E));
  for (auto& v : logits) v = nd(rng);
  for (auto& v : bias) v = 0.1f * nd(rng);
  const Routed r = run(cfg, logits, with_bias ? bias.data() : nullptr);
  int skipped = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int> ids;
    std::vector<double> w;
    double gap = 1e300;
    brute_force_row(cfg, logits.data() + t * E, with_bias ? bias.data() : nullptr, ids, w, &gap);
    if (gap < 1e-5) {  // a near tie that float32 may legitimately resolve the other way
      ++skipped;
      continue;
    }
    for (int j = 0; j < k; ++j) {
      ASSERT_EQ(r.ids[size_t(t * k + j)], ids[size_t(j)]) << "token " << t << " slot " << j;
      EXPECT_NEAR(r.w[size_t(t * k + j)], w[size_t(j)], 2e-6 * std::abs(w[size_t(j)]) + 1e-12)
          << "token " << t << " slot " << j;
    }
  }
  EXPECT_LE(skipped, 3);
}

}  // namespace

// ---- SoftmaxTopK --------------------------------------------------------------------------------

TEST(Routing, SoftmaxTopKHandComputed) {
  RouterConfig cfg{RouterKind::SoftmaxTopK, 4, 2, false};
  const Routed r = run(cfg, {1.0f, 2.0f, 3.0f, 0.0f});
  const double z = std::exp(-2.0) + std::exp(-1.0) + 1.0 + std::exp(-3.0);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 1}));
  EXPECT_NEAR(r.w[0], 1.0 / z, 1e-7);
  EXPECT_NEAR(r.w[1], std::exp(-1.0) / z, 1e-7);

  cfg.renormalize = true;
  const Routed n = run(cfg, {1.0f, 2.0f, 3.0f, 0.0f});
  EXPECT_EQ(n.ids, (std::vector<int32_t>{2, 1}));
  EXPECT_NEAR(n.w[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
  EXPECT_NEAR(n.w[1], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-7);
  EXPECT_NEAR(n.w[0] + n.w[1], 1.0f, 1e-7);
}

TEST(Routing, SoftmaxTopKTiesGoToLowerIndex) {
  RouterConfig cfg{RouterKind::SoftmaxTopK, 4, 2, true};
  Routed r = run(cfg, {1.0f, 1.0f, 1.0f, 1.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_FLOAT_EQ(r.w[0], 0.5f);
  cfg.top_k = 3;
  r = run(cfg, {2.0f, 5.0f, 1.0f, 5.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3, 0}));
  EXPECT_EQ(r.w[0], r.w[1]);
}

TEST(Routing, SoftmaxTopKMultipleTokensAndScaling) {
  RouterConfig cfg{RouterKind::SoftmaxTopK, 3, 1, false};
  cfg.routed_scaling_factor = 2.0f;
  const Routed r = run(cfg, {0.0f, 0.0f, 0.0f, -1.0f, 4.0f, -1.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_FLOAT_EQ(r.w[0], 2.0f / 3.0f);
  EXPECT_NEAR(r.w[1], 2.0 / (1.0 + 2.0 * std::exp(-5.0)), 1e-6);
}

TEST(Routing, SoftmaxTopKAcceptsMinusInfinity) {
  RouterConfig cfg{RouterKind::SoftmaxTopK, 3, 2, false};
  const float ninf = -std::numeric_limits<float>::infinity();
  const Routed r = run(cfg, {ninf, 0.0f, ninf});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(r.w[0], 1.0f);
  EXPECT_EQ(r.w[1], 0.0f);
}

// ---- SigmoidGroupedTopK -------------------------------------------------------------------------

TEST(Routing, GroupedBestExpertInDroppedGroup) {
  // 4 groups of 2. Group 0 holds the single best expert (logit 5) but its partner is poor (-5), so the
  // group score (top-2 sum ~1.0) loses to groups 1 (~1.74) and 2 (~1.62).
  RouterConfig cfg{RouterKind::SigmoidGroupedTopK, 8, 2, true, 4, 2, 2.5f};
  const std::vector<float> x = {5.0f, -5.0f, 2.0f, 1.8f, 1.5f, 1.4f, 0.0f, 0.0f};
  const Routed r = run(cfg, x);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 3}));
  const double s2 = sig(2.0), s3 = sig(1.8);
  EXPECT_NEAR(r.w[0], 2.5 * s2 / (s2 + s3), 1e-6);
  EXPECT_NEAR(r.w[1], 2.5 * s3 / (s2 + s3), 1e-6);

  // Keeping 3 groups brings group 0 back, and expert 0 wins.
  cfg.topk_group = 3;
  const Routed r3 = run(cfg, x);
  EXPECT_EQ(r3.ids, (std::vector<int32_t>{0, 2}));
  // One group with all experts: plain sigmoid top-k.
  cfg = RouterConfig{RouterKind::SigmoidGroupedTopK, 8, 3, false};
  const Routed r1 = run(cfg, x);
  EXPECT_EQ(r1.ids, (std::vector<int32_t>{0, 2, 3}));
  EXPECT_NEAR(r1.w[0], sig(5.0), 1e-7);
  EXPECT_NEAR(r1.w[2], sig(1.8), 1e-7);
}

TEST(Routing, GroupedBiasSelectsButDoesNotWeight) {
  RouterConfig cfg{RouterKind::SigmoidGroupedTopK, 4, 1, false};
  const std::vector<float> bias = {0.0f, 1.0f, 0.0f, 0.0f};
  Routed r = run(cfg, {1.0f, 0.0f, 0.0f, 0.0f}, bias.data());
  EXPECT_EQ(r.ids[0], 1);            // 0.5 + 1 beats sigmoid(1) = 0.73
  EXPECT_FLOAT_EQ(r.w[0], 0.5f);     // the uncorrected sigmoid
  cfg.renormalize = true;            // k = 1: w / (w + 1e-20) == 1
  r = run(cfg, {1.0f, 0.0f, 0.0f, 0.0f}, bias.data());
  EXPECT_EQ(r.w[0], 1.0f);
  r = run(cfg, {1.0f, 0.0f, 0.0f, 0.0f});  // without the bias expert 0 wins
  EXPECT_EQ(r.ids[0], 0);

  // The bias also steers the group choice: 2 groups of 2, keep 1.
  cfg = RouterConfig{RouterKind::SigmoidGroupedTopK, 4, 2, false, 2, 1};
  const std::vector<float> gbias = {0.0f, 0.0f, 0.3f, 0.3f};
  r = run(cfg, {0.5f, 0.5f, 0.0f, 0.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  r = run(cfg, {0.5f, 0.5f, 0.0f, 0.0f}, gbias.data());
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 3}));
  EXPECT_FLOAT_EQ(r.w[0], 0.5f);
}

TEST(Routing, GroupedTiesAndRenormalizeEpsilon) {
  // Equal group scores -> lower group; equal experts -> lower index.
  RouterConfig cfg{RouterKind::SigmoidGroupedTopK, 4, 1, false, 2, 1};
  Routed r = run(cfg, {1.0f, 1.0f, 1.0f, 1.0f});
  EXPECT_EQ(r.ids[0], 0);
  // Tiny weights: the 1e-20 epsilon leaves ordinary sums unchanged; all -inf logits give 0 / 1e-20 = 0.
  cfg = RouterConfig{RouterKind::SigmoidGroupedTopK, 2, 2, true};
  const float ninf = -std::numeric_limits<float>::infinity();
  r = run(cfg, {ninf, ninf});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(r.w[0], 0.0f);
  EXPECT_EQ(r.w[1], 0.0f);
}

TEST(Routing, GroupedScalingFactor) {
  RouterConfig cfg{RouterKind::SigmoidGroupedTopK, 4, 2, false, 1, 1, 2.5f};
  const Routed r = run(cfg, {0.0f, 1.0f, -1.0f, 2.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 1}));
  EXPECT_NEAR(r.w[0], 2.5 * sig(2.0), 1e-6);
  EXPECT_NEAR(r.w[1], 2.5 * sig(1.0), 1e-6);
}

// ---- TopKThenSoftmax ----------------------------------------------------------------------------

TEST(Routing, TopKThenSoftmaxOverK) {
  RouterConfig cfg{RouterKind::TopKThenSoftmax, 4, 2, false};
  const Routed r = run(cfg, {1.0f, 3.0f, 2.0f, -1.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(r.w[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
  EXPECT_NEAR(r.w[1], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-7);
  // Differs from softmax over all E: the weights of the k sum to 1 whatever the other logits are.
  const Routed r2 = run(cfg, {100.0f, 3.0f, 2.0f, 100.0f});
  EXPECT_EQ(r2.ids, (std::vector<int32_t>{0, 3}));
  EXPECT_FLOAT_EQ(r2.w[0], 0.5f);
  // k = 1 gives weight 1.
  cfg.top_k = 1;
  EXPECT_EQ(run(cfg, {0.3f, -2.0f, 7.0f, 1.0f}).w[0], 1.0f);
}

// ---- errors -------------------------------------------------------------------------------------

TEST(Routing, InvalidConfigs) {
  auto bad = [](RouterConfig c, const std::string& needle) { expect_error([&] { validate(c); }, needle); };
  bad({RouterKind::SoftmaxTopK, 0, 1, false}, "num_experts");
  bad({RouterKind::SoftmaxTopK, 4, 5, false}, "top_k must be in [1, num_experts=4], got 5");
  bad({RouterKind::SoftmaxTopK, 4, 0, false}, "top_k");
  bad({RouterKind::SoftmaxTopK, 4, 2, false, 2, 1}, "only apply to sigmoid_grouped_topk");
  bad({RouterKind::SoftmaxTopK, 4, 2, false, 1, 1, 0.0f}, "routed_scaling_factor");
  bad({RouterKind::SigmoidGroupedTopK, 6, 2, false, 4, 1}, "n_group=4 does not divide num_experts=6");
  bad({RouterKind::SigmoidGroupedTopK, 8, 2, false, 4, 5}, "topk_group must be in [1, n_group=4], got 5");
  bad({RouterKind::SigmoidGroupedTopK, 8, 2, false, 0, 1}, "n_group must be >= 1");
  bad({RouterKind::SigmoidGroupedTopK, 8, 5, false, 4, 2}, "top_k=5 exceeds the experts in the kept groups");
  bad({static_cast<RouterKind>(7), 8, 1, false}, "unknown kind");
  EXPECT_NO_THROW(validate({RouterKind::SigmoidGroupedTopK, 256, 8, true, 8, 4, 2.5f}));  // DeepSeek-V3

  // route() validates too, and rejects a bias for the ungrouped routers.
  std::vector<float> x(8, 0.0f), bias(4, 0.0f), w(4);
  std::vector<int32_t> ids(4);
  expect_error([&] { route({RouterKind::SoftmaxTopK, 4, 5, false}, x.data(), 2, nullptr, ids.data(), w.data()); },
               "top_k");
  expect_error(
      [&] { route({RouterKind::SoftmaxTopK, 4, 2, false}, x.data(), 2, bias.data(), ids.data(), w.data()); },
      "correction_bias is only used by sigmoid_grouped_topk");
  expect_error([&] { route({RouterKind::SoftmaxTopK, 4, 2, false}, x.data(), -1, nullptr, ids.data(), w.data()); },
               "number of tokens");
}

TEST(Routing, NaNNamesTheTokenRow) {
  for (auto kind : {RouterKind::SoftmaxTopK, RouterKind::SigmoidGroupedTopK, RouterKind::TopKThenSoftmax}) {
    std::vector<float> x(12, 0.5f);
    x[2 * 4 + 3] = std::nanf("");
    std::vector<float> w(6);
    std::vector<int32_t> ids(6);
    expect_error([&] { route({kind, 4, 2, true}, x.data(), 3, nullptr, ids.data(), w.data()); },
                 "NaN logit in token row 2 (expert 3)");
  }
  std::vector<float> x(4, 0.0f), bias = {0.0f, std::nanf(""), 0.0f, 0.0f}, w(1);
  std::vector<int32_t> ids(1);
  expect_error([&] { route({RouterKind::SigmoidGroupedTopK, 4, 1, false}, x.data(), 1, bias.data(), ids.data(), w.data()); },
               "NaN correction_bias for expert 1");
  // +inf makes softmax undefined (inf - inf): an error naming the row, not NaN weights.
  std::vector<float> y = {0.0f, 0.0f, 1.0f, std::numeric_limits<float>::infinity()};
  std::vector<float> w2(2);
  std::vector<int32_t> ids2(2);
  expect_error([&] { route({RouterKind::SoftmaxTopK, 2, 1, false}, y.data(), 2, nullptr, ids2.data(), w2.data()); },
               "token row 1 has max logit inf");
}

TEST(Routing, ZeroTokensIsANoOp) {
  EXPECT_NO_THROW(route({RouterKind::SoftmaxTopK, 4, 2, false}, nullptr, 0, nullptr, nullptr, nullptr));
}

TEST(Routing, KindNames) {
  for (auto kind : {RouterKind::SoftmaxTopK, RouterKind::SigmoidGroupedTopK, RouterKind::TopKThenSoftmax})
    EXPECT_EQ(parse_router_kind(router_kind_name(kind)), kind);
  EXPECT_EQ(parse_router_kind("Softmax_TopK"), RouterKind::SoftmaxTopK);
  expect_error([] { parse_router_kind("sparsemixer"); }, "valid: softmax_topk, sigmoid_grouped_topk");
}

// ---- random vs float64 --------------------------------------------------------------------------

TEST(Routing, RandomSoftmaxTopKVsFloat64) {
  uint32_t seed = 1;
  for (int E : {8, 64, 128})
    for (int k : {1, 2, 8})
      for (bool renorm : {false, true}) random_check({RouterKind::SoftmaxTopK, E, k, renorm}, false, seed++);
}

TEST(Routing, RandomTopKThenSoftmaxVsFloat64) {
  uint32_t seed = 100;
  for (int E : {8, 32, 128})
    for (int k : {1, 4, 8}) random_check({RouterKind::TopKThenSoftmax, E, k, false}, false, seed++);
}

TEST(Routing, RandomSigmoidGroupedTopKVsFloat64) {
  uint32_t seed = 200;
  for (bool bias : {false, true})
    for (bool renorm : {false, true}) {
      random_check({RouterKind::SigmoidGroupedTopK, 256, 8, renorm, 8, 4, 2.5f}, bias, seed++);
      random_check({RouterKind::SigmoidGroupedTopK, 64, 6, renorm, 8, 3, 1.0f}, bias, seed++);
      random_check({RouterKind::SigmoidGroupedTopK, 16, 4, renorm, 1, 1, 1.0f}, bias, seed++);
      random_check({RouterKind::SigmoidGroupedTopK, 8, 2, renorm, 8, 2, 1.0f}, bias, seed++);  // 1-expert groups
    }
}
