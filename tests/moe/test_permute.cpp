// Prepare (group_by_expert, gather_rows) and finalize: hand cases, round trips, expert maps, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "mxmoe/error.hpp"
#include "test_util.hpp"
#include "mxmoe/moe/permute.hpp"
#include "mxmoe/moe/routing.hpp"

using namespace mxmoe::moe;

namespace {

using mxmoe::test::expect_error;

// Structural invariants every ExpertGroups must satisfy.
void check_invariants(const ExpertGroups& g, const std::vector<int32_t>& ids, int64_t T, int k, int E,
                      const int32_t* map) {
  const int L = g.num_local_experts;
  ASSERT_EQ(g.expert_offsets.size(), size_t(L) + 1);
  EXPECT_EQ(g.expert_offsets[0], 0);
  const int64_t P = g.expert_offsets[size_t(L)];
  ASSERT_EQ(g.num_rows(), P);
  ASSERT_EQ(int64_t(g.permuted_slot.size()), P);
  ASSERT_EQ(int64_t(g.slot_to_permuted.size()), T * k);
  int64_t local_slots = 0;
  for (int64_t s = 0; s < T * k; ++s) {
    const int32_t l = map ? map[ids[size_t(s)]] : ids[size_t(s)];
    const int32_t p = g.slot_to_permuted[size_t(s)];
    if (l < 0) {
      EXPECT_EQ(p, -1) << "slot " << s;
      continue;
    }
    ++local_slots;
    ASSERT_GE(p, 0);
    ASSERT_LT(p, P);
    EXPECT_EQ(g.permuted_slot[size_t(p)], s);  // slot -> permuted -> slot
    EXPECT_GE(p, g.expert_offsets[size_t(l)]);
    EXPECT_LT(p, g.expert_offsets[size_t(l) + 1]);
  }
  EXPECT_EQ(local_slots, P);
  for (int l = 0; l < L; ++l) {
    EXPECT_LE(g.expert_offsets[size_t(l)], g.expert_offsets[size_t(l) + 1]);
    for (int64_t p = g.expert_offsets[size_t(l)]; p < g.expert_offsets[size_t(l) + 1]; ++p) {
      const int32_t s = g.permuted_slot[size_t(p)];
      EXPECT_EQ(g.slot_to_permuted[size_t(s)], p);  // permuted -> slot -> permuted
      EXPECT_EQ(g.permuted_token[size_t(p)], s / k);
      if (p > g.expert_offsets[size_t(l)]) EXPECT_LT(g.permuted_slot[size_t(p) - 1], s);  // stable
    }
  }
  (void)E;
}

}  // namespace

TEST(Permute, HandComputedOffsets) {
  // T=3, k=2, E=4: token 0 -> {2, 0}, token 1 -> {0, 3}, token 2 -> {3, 2}; expert 1 gets nothing.
  const std::vector<int32_t> ids = {2, 0, 0, 3, 3, 2};
  const ExpertGroups g = group_by_expert(ids.data(), 3, 2, 4, nullptr);
  EXPECT_EQ(g.num_local_experts, 4);
  EXPECT_EQ(g.expert_offsets, (std::vector<int64_t>{0, 2, 2, 4, 6}));
  EXPECT_EQ(g.permuted_slot, (std::vector<int32_t>{1, 2, 0, 5, 3, 4}));
  EXPECT_EQ(g.permuted_token, (std::vector<int32_t>{0, 1, 0, 2, 1, 2}));
  EXPECT_EQ(g.slot_to_permuted, (std::vector<int32_t>{2, 0, 1, 4, 5, 3}));
  EXPECT_EQ(g.rows_of(1), 0);
  EXPECT_EQ(g.rows_of(3), 2);
  check_invariants(g, ids, 3, 2, 4, nullptr);
}

TEST(Permute, ExpertMapWithNonLocalExperts) {
  // Global experts 1 and 3 live here as local 0 and 1; 0 and 2 belong to another rank.
  const std::vector<int32_t> ids = {2, 0, 0, 3, 3, 2};
  const std::vector<int32_t> map = {-1, 0, -1, 1};
  const ExpertGroups g = group_by_expert(ids.data(), 3, 2, 4, map.data());
  EXPECT_EQ(g.num_local_experts, 2);
  EXPECT_EQ(g.expert_offsets, (std::vector<int64_t>{0, 0, 2}));  // local 0 (global 1) has zero tokens
  EXPECT_EQ(g.permuted_slot, (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(g.permuted_token, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(g.slot_to_permuted, (std::vector<int32_t>{-1, -1, -1, 0, 1, -1}));
  check_invariants(g, ids, 3, 2, 4, map.data());
  // A map that makes nothing local gives P = 0.
  const std::vector<int32_t> none = {-1, -1, -1, -1};
  const ExpertGroups e = group_by_expert(ids.data(), 3, 2, 4, none.data());
  EXPECT_EQ(e.num_local_experts, 0);
  EXPECT_EQ(e.expert_offsets, (std::vector<int64_t>{0}));
  EXPECT_EQ(e.num_rows(), 0);
}

TEST(Permute, RandomRoundTrip) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const int E = 1 + int(rng() % 40), k = 1 + int(rng() % std::min(E, 8));
    const int64_t T = int64_t(rng() % 50);
    std::vector<int32_t> ids(static_cast<size_t>(T * k));
    for (auto& v : ids) v = int32_t(rng() % uint32_t(E));
    // Random expert map: a random subset of the experts, numbered in a shuffled order.
    std::vector<int32_t> perm(static_cast<size_t>(E)), map(size_t(E), -1);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const int L = int(rng() % uint32_t(E + 1));
    for (int l = 0; l < L; ++l) map[size_t(perm[size_t(l)])] = l;
    const ExpertGroups gi = group_by_expert(ids.data(), T, k, E, nullptr);
    EXPECT_EQ(gi.num_rows(), T * k);
    check_invariants(gi, ids, T, k, E, nullptr);
    const ExpertGroups gm = group_by_expert(ids.data(), T, k, E, map.data());
    EXPECT_EQ(gm.num_local_experts, L);
    check_invariants(gm, ids, T, k, E, map.data());
  }
}

TEST(Permute, DuplicateIdsInARowAreSeparateRows) {
  const std::vector<int32_t> ids = {1, 1};
  const ExpertGroups g = group_by_expert(ids.data(), 1, 2, 2, nullptr);
  EXPECT_EQ(g.expert_offsets, (std::vector<int64_t>{0, 0, 2}));
  EXPECT_EQ(g.permuted_slot, (std::vector<int32_t>{0, 1}));
}

TEST(Permute, Errors) {
  const std::vector<int32_t> ids = {0, 1, 4, 2};
  expect_error([&] { group_by_expert(ids.data(), 2, 2, 4, nullptr); },
               "token 1 slot 0 has expert id 4 outside [0, 4)");
  const std::vector<int32_t> neg = {0, -1};
  expect_error([&] { group_by_expert(neg.data(), 1, 2, 4, nullptr); }, "token 0 slot 1 has expert id -1");
  const std::vector<int32_t> ok = {0, 1};
  const std::vector<int32_t> dup = {0, 0, -1, 1};
  expect_error([&] { group_by_expert(ok.data(), 1, 2, 4, dup.data()); }, "experts 0 and 1 both map to local id 0");
  const std::vector<int32_t> gap = {0, 2, -1, -1};
  expect_error([&] { group_by_expert(ok.data(), 1, 2, 4, gap.data()); }, "none maps to 1");
  const std::vector<int32_t> big = {0, 9, -1, -1};
  expect_error([&] { group_by_expert(ok.data(), 1, 2, 4, big.data()); }, "expert_map[1] = 9");
  expect_error([&] { group_by_expert(ok.data(), 1, 0, 4, nullptr); }, "top_k must be >= 1");
  expect_error([&] { group_by_expert(ok.data(), -1, 2, 4, nullptr); }, "number of tokens");
}

TEST(Permute, GatherRowsFloatAndBf16) {
  const std::vector<int32_t> ids = {2, 0, 0, 3, 3, 2};
  const ExpertGroups g = group_by_expert(ids.data(), 3, 2, 4, nullptr);
  const int64_t H = 3, ld = 5;
  std::vector<float> x(static_cast<size_t>(3 * ld));
  std::vector<uint16_t> xb(static_cast<size_t>(3 * ld));
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = float(i) + 0.25f;
    xb[i] = uint16_t(0x3f80 + i);
  }
  std::vector<float> out(static_cast<size_t>(g.num_rows() * H));
  std::vector<uint16_t> outb(static_cast<size_t>(g.num_rows() * H));
  gather_rows(x.data(), ld, H, g, out.data());
  gather_rows(xb.data(), ld, H, g, outb.data());
  for (int64_t p = 0; p < g.num_rows(); ++p)
    for (int64_t h = 0; h < H; ++h) {
      const size_t src = size_t(g.permuted_token[size_t(p)] * ld + h);
      EXPECT_EQ(out[size_t(p * H + h)], x[src]);
      EXPECT_EQ(outb[size_t(p * H + h)], xb[src]);
    }
  expect_error([&] { gather_rows(x.data(), 2, H, g, out.data()); }, "need 0 <= H <= ld");
}

TEST(Finalize, MatchesDirectLoop) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  const int64_t T = 33, H = 17;
  const int E = 10, k = 3;
  std::vector<int32_t> ids(static_cast<size_t>(T * k));
  std::vector<float> w(static_cast<size_t>(T * k));
  for (auto& v : ids) v = int32_t(rng() % E);
  for (auto& v : w) v = nd(rng);
  std::vector<int32_t> map(size_t(E), -1);
  for (int e = 0; e < E; e += 2) map[size_t(e)] = e / 2;  // even experts local
  for (const int32_t* m : {static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(map.data())}) {
    const ExpertGroups g = group_by_expert(ids.data(), T, k, E, m);
    std::vector<float> eo(static_cast<size_t>(g.num_rows() * H));
    for (auto& v : eo) v = nd(rng);
    for (bool on_input : {false, true}) {
      std::vector<float> out(size_t(T * H), -99.0f);
      finalize(g, eo.data(), H, on_input ? nullptr : w.data(), T, k, on_input, out.data());
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
          float acc = 0.0f;
          double acc64 = 0.0;
          for (int j = 0; j < k; ++j) {
            const int32_t e = ids[size_t(t * k + j)];
            if (m && m[e] < 0) continue;
            const int32_t p = g.slot_to_permuted[size_t(t * k + j)];
            const float wj = on_input ? 1.0f : w[size_t(t * k + j)];
            const float prod = wj * eo[size_t(p * H + h)];
            acc = acc + prod;
            acc64 += double(wj) * double(eo[size_t(p * H + h)]);
          }
          EXPECT_EQ(out[size_t(t * H + h)], acc) << "t=" << t << " h=" << h;
          EXPECT_NEAR(out[size_t(t * H + h)], acc64, 1e-5);
        }
    }
  }
}

TEST(Finalize, ErrorsAndEmptyRows) {
  const std::vector<int32_t> ids = {1, 1};
  const std::vector<int32_t> map = {0, -1};
  const ExpertGroups g = group_by_expert(ids.data(), 2, 1, 2, map.data());
  std::vector<float> out(4, 5.0f), w = {0.5f, 0.5f};
  finalize(g, nullptr, 2, w.data(), 2, 1, false, out.data());  // no local slots: all zero
  EXPECT_EQ(out, (std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f}));
  expect_error([&] { finalize(g, nullptr, 2, w.data(), 3, 1, false, out.data()); }, "do not match the expert groups");
  expect_error([&] { finalize(g, nullptr, 2, nullptr, 2, 1, false, out.data()); }, "null topk_weights");
}

TEST(Finalize, ApplyRouterWeightOnInput) {
  std::vector<float> x = {1.0f, 2.0f, 9.0f, 3.0f, 4.0f, 9.0f};  // T=2, H=2, ld=3
  const std::vector<float> w = {0.5f, -2.0f};
  apply_router_weight_on_input(x.data(), 3, 2, 2, w.data(), 1);
  EXPECT_EQ(x, (std::vector<float>{0.5f, 1.0f, 9.0f, -6.0f, -8.0f, 9.0f}));
  expect_error([&] { apply_router_weight_on_input(x.data(), 3, 1, 2, w.data(), 2); },
               "only supported for top_k == 1, got top_k=2");
}

TEST(Finalize, PipelineWithScaledIdentityExperts) {
  // route -> group -> gather -> "expert e multiplies by (e + 1)" -> finalize == sum_j w_j (e_j + 1) x.
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int64_t T = 9, H = 5;
  const RouterConfig cfg{RouterKind::SoftmaxTopK, 6, 2, true};
  std::vector<float> logits(static_cast<size_t>(T * 6)), x(static_cast<size_t>(T * H));
  for (auto& v : logits) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  std::vector<int32_t> ids(static_cast<size_t>(T * 2));
  std::vector<float> w(static_cast<size_t>(T * 2));
  route(cfg, logits.data(), T, nullptr, ids.data(), w.data());
  const ExpertGroups g = group_by_expert(ids.data(), T, 2, 6, nullptr);
  std::vector<float> a(static_cast<size_t>(g.num_rows() * H)), out(static_cast<size_t>(T * H));
  gather_rows(x.data(), H, H, g, a.data());
  for (int l = 0; l < g.num_local_experts; ++l)
    for (int64_t p = g.expert_offsets[size_t(l)]; p < g.expert_offsets[size_t(l) + 1]; ++p)
      for (int64_t h = 0; h < H; ++h) a[size_t(p * H + h)] *= float(l + 1);
  finalize(g, a.data(), H, w.data(), T, 2, false, out.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      double ref = 0;
      for (int j = 0; j < 2; ++j) ref += double(w[size_t(t * 2 + j)]) * (ids[size_t(t * 2 + j)] + 1) * x[size_t(t * H + h)];
      EXPECT_NEAR(out[size_t(t * H + h)], ref, 1e-5);
    }
}
