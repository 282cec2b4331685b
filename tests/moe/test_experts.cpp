// The experts stage and the whole layer: every scheme in both modes, cpu vs ref, exact mode vs a
// float64 model of block-scaled tensor-core semantics, expert parallelism, bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "mxmoe/error.hpp"
#include "mxmoe/moe/layer.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;

namespace {

using test::rel_l2;

const SyntheticShape kSmall{"small", 64, 32, 6, 2};

MoeLayer small_layer(const MoeScheme& s, uint32_t seed, bool static_scales) {
  MoeLayer l = synthetic_layer(kSmall, s, seed);
  if (static_scales)  // ModelOpt-style calibrated scales (decode direction), different per expert
    for (int e = 0; e < l.num_experts; ++e) {
      l.w13[size_t(e)].input_scale = (3.0f + 0.25f * e) / (6 * 448);
      l.w2[size_t(e)].input_scale = (0.5f + 0.05f * e) / (6 * 448);
    }
  return l;
}

class EveryScheme : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryScheme, CpuMatchesRefInBothModes) {
  const MoeScheme& s = parse_moe_scheme(GetParam());
  const MoeLayer l = small_layer(s, 11, s.act == ActQuant::Block && traits(s.act_scheme).tensor_scale);
  const Tensor x = test::random_tensor(DType::BF16, {19, kSmall.hidden}, 5);
  for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
    MoeOptions o;
    o.emulation = e;
    o.backend = Backend::Ref;
    const MoeResult ref = run_moe(l, x, o);
    o.backend = Backend::Cpu;
    MoeResult cpu = run_moe(l, x, o);
    const double err = rel_l2(cpu.out.ptr<float>(), ref.out.ptr<float>(), ref.out.numel());
    EXPECT_LT(err, 2e-3) << s.name << " " << emulation_name(e);
    for (int64_t i = 0; i < cpu.out.numel(); ++i) ASSERT_TRUE(std::isfinite(cpu.out.ptr<float>()[i]));
  }
}

INSTANTIATE_TEST_SUITE_P(Schemes, EveryScheme, ::testing::ValuesIn([] {
                           std::vector<std::string> v;
                           for (const auto& s : moe_schemes()) v.emplace_back(s.name);
                           return v;
                         }()));

// float64 model of `exact`: exact element*scale products, tensor scales on the accumulator,
// per-expert NVFP4 activation scales (static from the checkpoint, or dynamic: 448*6 / amax over the
// rows that expert receives), activation quantized straight from the float32 value.
std::vector<double> exact_model(const MoeLayer& l, const Tensor& x, const MoeResult& r) {
  const int64_t T = x.shape[0], H = l.hidden, I = l.inter;
  const int k = l.router.top_k, E = l.num_experts;
  std::vector<double> out(size_t(T * H), 0.0);
  auto weight = [&](const ExpertLinear& w, int64_t row, int64_t col) -> double {
    if (!w.packed) return load_as_f32(w.dense.data.data(), w.dense.dtype, row * w.in_features() + col);
    const auto& q = *w.packed;
    const auto& st = traits(q.params.scheme);
    const int64_t K = w.in_features();
    std::vector<uint8_t> codes(static_cast<size_t>(K));
    unpack_codes(q.codes.ptr<uint8_t>() + row * packed_row_bytes(q.params.scheme, K), K, element_bits(q.params.scheme), codes.data());
    double v = double(decode(st.element, codes[size_t(col)])) * decode(st.scale, q.scales.ptr<uint8_t>()[row * (K / st.block) + col / st.block]);
    return st.tensor_scale ? v / q.params.global_scale : v;
  };
  auto act_q = [&](std::vector<float> v, float gs) {  // returns the dequantized activation
    const MoeScheme& s = *l.scheme;
    if (s.act != ActQuant::Block) return std::vector<double>(v.begin(), v.end());
    QuantParams p{s.act_scheme, l.act_rule, l.act_rounding, gs};
    std::vector<float> y(v.size());
    ref::qdq_rows(v.data(), 1, int64_t(v.size()), 0, p, y.data(), 0);
    return std::vector<double>(y.begin(), y.end());
  };
  auto scale_of = [](const ExpertLinear& w, float amax) {
    return w.input_scale > 0 ? 1.0f / w.input_scale : nvfp4_default_global_scale(amax);
  };
  auto expert_of = [&](int64_t t, int j) { return r.topk_ids.ptr<int32_t>()[t * k + j]; };
  auto x_row = [&](int64_t t) {
    std::vector<float> v(static_cast<size_t>(H));
    for (int64_t c = 0; c < H; ++c) v[size_t(c)] = load_as_f32(x.data.data(), x.dtype, t * H + c);
    return v;
  };
  auto gemm1 = [&](const std::vector<double>& a, const ExpertLinear& w13) {
    std::vector<float> h(static_cast<size_t>(I));
    for (int64_t i = 0; i < I; ++i) {
      double g = 0, u = 0;
      for (int64_t c = 0; c < H; ++c) g += a[size_t(c)] * weight(w13, i, c), u += a[size_t(c)] * weight(w13, I + i, c);
      h[size_t(i)] = float(g / (1 + std::exp(-g)) * u);
    }
    return h;
  };
  // Pass 1: each expert's activation amax over the rows routed to it (GEMM1 input, then GEMM2 input).
  std::vector<float> amax1(size_t(E), 0.0f), amax2(size_t(E), 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j)
      for (float v : x_row(t)) amax1[size_t(expert_of(t, j))] = std::max(amax1[size_t(expert_of(t, j))], std::fabs(v));
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      const int e = expert_of(t, j);
      for (float v : gemm1(act_q(x_row(t), scale_of(l.w13[size_t(e)], amax1[size_t(e)])), l.w13[size_t(e)]))
        amax2[size_t(e)] = std::max(amax2[size_t(e)], std::fabs(v));
    }
  // Pass 2: the layer output.
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      const int e = expert_of(t, j);
      const ExpertLinear &w13 = l.w13[size_t(e)], &w2 = l.w2[size_t(e)];
      const auto h = gemm1(act_q(x_row(t), scale_of(w13, amax1[size_t(e)])), w13);
      const auto a2 = act_q(h, scale_of(w2, amax2[size_t(e)]));
      for (int64_t c = 0; c < H; ++c) {
        double y = 0;
        for (int64_t i = 0; i < I; ++i) y += a2[size_t(i)] * weight(w2, c, i);
        out[size_t(t * H + c)] += r.topk_weights.ptr<float>()[t * k + j] * y;
      }
    }
  return out;
}

TEST_P(EveryScheme, ExactModeMatchesFloat64Model) {
  const MoeScheme& s = parse_moe_scheme(GetParam());
  if (s.act == ActQuant::FP8Tensor) GTEST_SKIP() << "per-tensor FP8 scales depend on all rows; covered by cpu vs ref";
  // Static (checkpoint) activation scales and dynamic ones (quantize-on-load layers have none).
  for (bool static_scales : {true, false}) {
    const MoeLayer l = small_layer(s, 23, static_scales);
    const Tensor x = test::random_tensor(DType::BF16, {9, kSmall.hidden}, 77);
    MoeOptions o;
    o.emulation = Emulation::Exact;
    const MoeResult r = run_moe(l, x, o);
    const auto want = exact_model(l, x, r);
    std::vector<float> wantf(want.begin(), want.end());
    // Bound: float32 accumulation (~1e-6) plus rare one-step flips of a re-quantized activation whose
    // float32 and float64 values straddle a rounding threshold.
    EXPECT_LT(rel_l2(r.out.ptr<float>(), wantf.data(), r.out.numel()), 5e-3)
        << s.name << (static_scales ? " static" : " dynamic") << " activation scales";
  }
}

TEST(MoeLayer, ExpertParallelSlicesSumToTheFullLayer) {
  const MoeLayer l = small_layer(parse_moe_scheme("w_mxfp4_a_mxfp4"), 3, false);
  const Tensor x = test::random_tensor(DType::BF16, {13, kSmall.hidden}, 8);
  MoeOptions o;
  o.emulation = Emulation::Exact;
  const MoeResult full = run_moe(l, x, o);
  std::vector<float> sum(size_t(full.out.numel()), 0.0f);
  for (int rank = 0; rank < 2; ++rank) {
    o.expert_map.assign(size_t(l.num_experts), -1);
    int next = 0;
    for (int e = 0; e < l.num_experts; ++e)
      if (e % 2 == rank) o.expert_map[size_t(e)] = next++;
    const MoeResult part = run_moe(l, x, o);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += part.out.ptr<float>()[i];
  }
  EXPECT_LT(rel_l2(sum.data(), full.out.ptr<float>(), full.out.numel()), 1e-6);
}

TEST(MoeLayer, BadInputGetsClearErrors) {
  const MoeLayer l = small_layer(parse_moe_scheme("w_nvfp4_a16"), 1, false);
  Tensor bad_shape = test::random_tensor(DType::BF16, {4, 48}, 1);
  try {
    run_moe(l, bad_shape, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected [T, 64]"), std::string::npos) << e.what();
  }
  Tensor nan = test::random_tensor(DType::F32, {3, 64}, 1);
  nan.ptr<float>()[70] = NAN;
  try {
    run_moe(l, nan, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_moe_scheme("w_fp3"), Error);
  MoeOptions o;
  o.expert_map = {0, 1};
  EXPECT_THROW(run_moe(l, test::random_tensor(DType::F32, {3, 64}, 1), o), Error);
}

}  // namespace
