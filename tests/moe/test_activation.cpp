// Gated activations vs float64 formulas, layouts, clamps and name parsing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "mxmoe/error.hpp"
#include "test_util.hpp"
#include "mxmoe/moe/activation.hpp"

using namespace mxmoe::moe;

namespace {

using mxmoe::test::expect_error;

// float64 reference of one output element from the float32 gate and up values.
double ref64(Activation act, double g, double u, double alpha, double limit) {
  if (limit > 0) {
    g = std::min(g, limit);
    u = std::clamp(u, -limit, limit);
  }
  switch (act) {
    case Activation::SiLU: return g / (1.0 + std::exp(-g)) * u;
    case Activation::GELU: return 0.5 * g * (1.0 + std::erf(g / std::sqrt(2.0))) * u;
    case Activation::GELUTanh: {
      const double c = std::sqrt(2.0 / M_PI);
      return 0.5 * g * (1.0 + std::tanh(c * (g + 0.044715 * g * g * g))) * u;
    }
    case Activation::SwiGLUOAI: return (u + 1.0) * g / (1.0 + std::exp(-alpha * g));
  }
  return NAN;
}

// Runs apply_activation on random [rows, 2I] data in [-range, range] and compares with ref64 at relative
// tolerance 1e-6. GELU's 1 + erf(g / sqrt 2) (and 1 + tanh(...)) cancels for g << 0, where the float32
// erf/tanh absolute error (~1 ulp of 1) dominates, so for the GELUs the tolerance also allows
// 1e-7 * |g * up| (an error relative to the operands rather than to the tiny result).
// SwiGLUOAI: see `cond` below.
void random_vs_f64(const ActivationConfig& cfg, float range, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> ud(-range, range);
  const int64_t rows = 37, I = 29;
  std::vector<float> gu(static_cast<size_t>(rows * 2 * I)), out(static_cast<size_t>(rows * I));
  for (auto& v : gu) v = ud(rng);
  apply_activation(cfg, gu.data(), rows, I, out.data());
  const double limit = effective_limit(cfg);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < I; ++i) {
      const bool inter = cfg.act == Activation::SwiGLUOAI;
      const float g = inter ? gu[size_t(r * 2 * I + 2 * i)] : gu[size_t(r * 2 * I + i)];
      const float u = inter ? gu[size_t(r * 2 * I + 2 * i + 1)] : gu[size_t(r * 2 * I + I + i)];
      const double ref = ref64(cfg.act, g, u, cfg.alpha, limit);
      const bool gelu = cfg.act == Activation::GELU || cfg.act == Activation::GELUTanh;
      // SwiGLUOAI rounds alpha * gate to float32 before exp: exp's condition number |alpha * gate| scales
      // that rounding (up to ~34 ulp for gate = -20).
      const double cond = cfg.act == Activation::SwiGLUOAI ? 1.2e-7 * std::abs(cfg.alpha * g) : 0.0;
      const double tol = (1e-6 + cond) * std::abs(ref) + (gelu ? 1e-7 * std::abs(double(g) * u) : 0.0) + 1e-30;
      ASSERT_NEAR(out[size_t(r * I + i)], ref, tol)
          << activation_name(cfg.act) << " r=" << r << " i=" << i << " gate=" << g << " up=" << u;
    }
}

}  // namespace

TEST(Activation, RandomVsFloat64) {
  uint32_t seed = 1;
  for (auto act : {Activation::SiLU, Activation::GELU, Activation::GELUTanh, Activation::SwiGLUOAI})
    for (float range : {1.0f, 6.0f, 20.0f}) {
      random_vs_f64({act}, range, seed++);
      random_vs_f64({act, 1.702f, 3.0f}, range, seed++);  // explicit clamp
    }
  random_vs_f64({Activation::SwiGLUOAI, 1.0f, 10.0f}, 20.0f, 99);  // other alpha
}

TEST(Activation, SplitLayoutGateThenUp) {
  // I = 2: row = [g0, g1, u0, u1].
  const std::vector<float> gu = {1.0f, -2.0f, 3.0f, 0.5f};
  std::vector<float> out(2);
  apply_activation({Activation::SiLU}, gu.data(), 1, 2, out.data());
  EXPECT_NEAR(out[0], 1.0 / (1.0 + std::exp(-1.0)) * 3.0, 1e-6);
  EXPECT_NEAR(out[1], -2.0 / (1.0 + std::exp(2.0)) * 0.5, 1e-6);
  apply_activation({Activation::GELU}, gu.data(), 1, 2, out.data());
  EXPECT_NEAR(out[0], 0.5 * (1.0 + std::erf(1.0 / std::sqrt(2.0))) * 3.0, 1e-6);
}

TEST(Activation, SwiGLUOAIInterleavedAndClamped) {
  // I = 3: row = [g0, u0, g1, u1, g2, u2]; default limit 7: gate only clamped from above, up both sides.
  const std::vector<float> gu = {10.0f, 10.0f, -10.0f, -10.0f, 0.5f, -3.0f};
  std::vector<float> out(3);
  apply_activation({Activation::SwiGLUOAI}, gu.data(), 1, 3, out.data());
  auto oai = [](double g, double u) { return (u + 1.0) * g / (1.0 + std::exp(-1.702 * g)); };
  EXPECT_NEAR(out[0], oai(7.0, 7.0), 1e-5);
  EXPECT_NEAR(out[1], oai(-10.0, -7.0), 1e-6);
  EXPECT_NEAR(out[2], oai(0.5, -3.0), 1e-6);
  EXPECT_EQ(effective_limit({Activation::SwiGLUOAI}), 7.0f);
  // A different limit.
  apply_activation({Activation::SwiGLUOAI, 1.702f, 2.0f}, gu.data(), 1, 3, out.data());
  EXPECT_NEAR(out[0], oai(2.0, 2.0), 1e-6);
  EXPECT_NEAR(out[2], oai(0.5, -2.0), 1e-6);
}

TEST(Activation, SiLUClampOnlyWhenAsked) {
  const std::vector<float> gu = {10.0f, -3.0f, 10.0f, -10.0f};  // I = 2: gates {10, -3}, ups {10, -10}
  std::vector<float> out(2);
  auto silu = [](double g) { return g / (1.0 + std::exp(-g)); };
  apply_activation({Activation::SiLU}, gu.data(), 1, 2, out.data());  // default: no clamp
  EXPECT_EQ(effective_limit({Activation::SiLU}), 0.0f);
  EXPECT_NEAR(out[0], silu(10.0) * 10.0, 1e-5);
  EXPECT_NEAR(out[1], silu(-3.0) * -10.0, 1e-5);
  apply_activation({Activation::SiLU, 1.702f, 7.0f}, gu.data(), 1, 2, out.data());  // swiglu_limit = 7
  EXPECT_NEAR(out[0], silu(7.0) * 7.0, 1e-5);
  EXPECT_NEAR(out[1], silu(-3.0) * -7.0, 1e-5);
  apply_activation({Activation::SiLU, 1.702f, 0.0f}, gu.data(), 1, 2, out.data());  // 0: none
  EXPECT_NEAR(out[0], silu(10.0) * 10.0, 1e-5);
}

TEST(Activation, ExtremeInputsStayFinite) {
  const std::vector<float> gu = {-1e30f, 1e30f, 1.0f, 1.0f};  // I = 2
  std::vector<float> out(2);
  apply_activation({Activation::SiLU}, gu.data(), 1, 2, out.data());
  EXPECT_EQ(out[0], 0.0f);  // silu(-1e30) = -1e30 / inf = -0
  EXPECT_EQ(out[1], 1e30f);
}

TEST(Activation, ParseNames) {
  EXPECT_EQ(parse_activation("silu"), Activation::SiLU);
  EXPECT_EQ(parse_activation("swiglu"), Activation::SiLU);
  EXPECT_EQ(parse_activation("gelu"), Activation::GELU);
  EXPECT_EQ(parse_activation("gelu_tanh"), Activation::GELUTanh);
  EXPECT_EQ(parse_activation("SwiGLUOAI"), Activation::SwiGLUOAI);
  for (auto act : {Activation::SiLU, Activation::GELU, Activation::GELUTanh, Activation::SwiGLUOAI})
    EXPECT_EQ(parse_activation(activation_name(act)), act);
  expect_error([] { parse_activation("relu2"); }, "unknown activation 'relu2' (valid: silu, swiglu, gelu, gelu_tanh, swigluoai)");
}

TEST(Activation, ArgumentErrors) {
  std::vector<float> gu(4), out(2);
  expect_error([&] { apply_activation({Activation::SiLU}, gu.data(), -1, 2, out.data()); }, "rows >= 0");
  expect_error([&] { apply_activation({Activation::SiLU}, nullptr, 1, 2, out.data()); }, "null gate_up");
  expect_error([&] { apply_activation({Activation::SiLU, 1.0f, NAN}, gu.data(), 1, 2, out.data()); }, "NaN alpha");
  EXPECT_NO_THROW(apply_activation({Activation::SiLU}, nullptr, 0, 2, nullptr));
}
