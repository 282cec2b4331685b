// The vllm NVFP4 weight-table kernel (src/moe/cpu/fused_gemv_vllm.cpp) on fresh random inputs: the
// table holds decode_fp4_row's weights bit for bit; the GEMV is held to the float32 accumulation
// bound |d| <= 2 K u sum_c |a_c w_c| (u = 2^-24) against a float64 dot of those weights, with
// poisoned outputs, odd K / row / token counts and scale codes outside the table's range; and the
// cpu backend's grouped GEMM in vllm mode against the ref backend for every FP4 scheme.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "moe/cpu/simd_kernels.hpp"
#include "moe/experts.hpp"
#include "mxmoe/moe/layer.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;

namespace {

uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

// Weight row j of an NVFP4 projection as decode_weight_rows gives it in vllm mode.
std::vector<float> vllm_row(const uint8_t* codes, const uint8_t* scales, int64_t K, float gs, int64_t j) {
  const int64_t nb = K / 16;
  std::vector<float> mult(static_cast<size_t>(nb)), row(static_cast<size_t>(K));
  for (int64_t b = 0; b < nb; ++b) mult[size_t(b)] = decode_table(Encoding::UE4M3)[scales[j * nb + b]] / gs;
  cpu::decode_fp4_row(codes + j * K / 2, mult.data(), K, 16, true, decode_table(Encoding::E2M1), row.data(), false);
  return row;
}

// Encode scales: the usual 448 * 6 / amax range, and extremes where part of the UE4M3 codes (or all
// nonzero ones) fall outside the table's multiplier range [2^-35, 2^33]; 2^126 makes weights and
// products float32 denormals, which vdpbf16ps would flush (those rows must run fp4_gemv_bf16).
const float kScales[] = {2688.0f / 0.41f, 448.0f * 6.0f / 3.7f, 0x1p30f, 0x1p-30f, 0x1p60f, 0x1p126f};

TEST(VllmTable, HoldsRowDecodeWeightsBitwiseInsideItsRange) {
  if (!cpu::fp4_bf16_dot_active()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  const float* st = decode_table(Encoding::UE4M3);
  const float* e2m1 = decode_table(Encoding::E2M1);
  for (float gs : kScales) {
    cpu::Nvfp4VllmTable t;
    cpu::nvfp4_vllm_table(gs, &t);
    int admitted = 0;
    for (int s = 0; s < 256; ++s) {
      const float m = st[s] / gs;
      const bool in = m == 0.0f || (m >= 0x1p-35f && m <= 0x1p33f);
      admitted += in && m != 0.0f;
      for (int q = 0; q < 16; ++q) {
        // decode_fp4_row's scalar path: e2m1 * (scale / gs), rounded to bf16; out of range: NaN.
        if (in) ASSERT_EQ(t.w[s][q], f32_to_bf16(e2m1[q] * m)) << "gs " << gs << " code " << s << " q " << q;
        else ASSERT_TRUE(std::isnan(bf16_to_f32(t.w[s][q]))) << "gs " << gs << " code " << s << " q " << q;
      }
    }
    if (gs == kScales[0]) EXPECT_EQ(admitted, 2 * 126);  // every finite nonzero code, both sign bits
    if (gs >= kScales[4]) EXPECT_EQ(admitted, 0);      // every nonzero multiplier is below 2^-35
  }
}

struct Proj {
  int64_t K, N;
  float gs;
  std::vector<uint8_t> codes, scales;
};

// Rows below 32 draw scale codes from 0x20..0x6f (either sign bit), inside the table's range for
// the first three encode scales; later rows any code, and with `nan_row` a NaN block in row 33. The
// kernel takes 16-row blocks from r0, so a run over rows 0..40 mixes table and fallback blocks.
Proj random_proj(int64_t K, int64_t N, float gs, std::mt19937& g, bool nan_row) {
  const int64_t nb = K / 16;
  Proj p{K, N, gs, std::vector<uint8_t>(size_t(N * K / 2)), std::vector<uint8_t>(size_t(N * nb))};
  for (auto& c : p.codes) c = uint8_t(g());
  for (int64_t j = 0; j < N; ++j)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t c = uint8_t(g());
      if (j < 32) c = uint8_t((c & 0x80) | (0x20 + (c & 0x7f) % 0x50));
      else if ((c & 0x7f) == 0x7f) c = 0x35;
      p.scales[size_t(j * nb + b)] = c;
    }
  if (nan_row && N > 33) p.scales[size_t(33 * nb + nb / 2)] = 0x7f;
  return p;
}

// fp4_gemv_vllm_table on rows [r0, r1) of a [N, K] projection with n bf16 token rows: outputs
// outside those rows stay poisoned; inside, the accumulation bound against a float64 dot of the row
// decoder's weights (NaN where a row has a NaN block) and against the scalar column-order loop.
void check_table_gemv(const Proj& p, int64_t r0, int64_t r1, int64_t n, bool with_bias, std::mt19937& g) {
  const int64_t K = p.K, N = p.N, Kp = cpu::fp4_act_stride(K), ldy = N + 3;
  std::normal_distribution<float> nd;
  std::vector<float> a(size_t(n * K)), bias(static_cast<size_t>(N));
  for (auto& v : a) v = bf16_to_f32(f32_to_bf16(nd(g)));
  for (auto& v : bias) v = nd(g);
  std::vector<uint16_t> ap16(size_t(n * Kp));
  ASSERT_TRUE(cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
  const cpu::Fp4Weight w{p.codes.data(), p.scales.data(), K, 16, Encoding::UE4M3, p.gs};
  cpu::Nvfp4VllmTable t;
  cpu::nvfp4_vllm_table(p.gs, &t);
  const float alpha = 0.75f;
  const float* b = with_bias ? bias.data() : nullptr;
  std::vector<float> y(size_t(n * ldy), NAN), ys(size_t(n * ldy), NAN), yf(size_t(n * ldy), NAN);
  cpu::fp4_gemv_vllm_table(w, t, r0, r1, ap16.data(), n, alpha, b, y.data(), ldy);
  cpu::fp4_gemv_bf16(w, r0, r1, ap16.data(), n, alpha, b, ys.data(), ldy, false);
  const std::string what = "gs " + std::to_string(p.gs) + " K " + std::to_string(K) + " n " + std::to_string(n);
  if (p.gs >= kScales[4]) {  // no code in range: every row is fp4_gemv_bf16's, bit for bit
    cpu::fp4_gemv_bf16(w, r0, r1, ap16.data(), n, alpha, b, yf.data(), ldy);
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_TRUE(std::memcmp(&y[i], &yf[i], 4) == 0 || (std::isnan(y[i]) && std::isnan(yf[i])))
          << what << " at " << i << ": " << y[i] << " vs " << yf[i];
  }
  for (int64_t j = 0; j < ldy; ++j) {
    if (j < r0 || j >= r1) {
      for (int64_t m = 0; m < n; ++m) ASSERT_TRUE(std::isnan(y[size_t(m * ldy + j)])) << what << " wrote row " << j;
      continue;
    }
    const std::vector<float> row = vllm_row(p.codes.data(), p.scales.data(), K, p.gs, j);
    for (int64_t m = 0; m < n; ++m) {
      const size_t i = size_t(m * ldy + j);
      const test::GemvRef r =
          test::gemv_ref(a.data() + m * K, row.data(), K, alpha, with_bias ? bias[size_t(j)] : 0.0);
      if (std::isnan(r.want)) {
        EXPECT_TRUE(std::isnan(y[i])) << what << " row " << j;
        continue;
      }
      ASSERT_TRUE(std::isfinite(y[i])) << what << " row " << j;
      EXPECT_LE(std::fabs(y[i] - r.want), r.bound) << what << " row " << j << " token " << m;
      EXPECT_LE(std::fabs(double(y[i]) - ys[i]), 2 * r.bound) << what << " vs scalar, row " << j << " token " << m;
    }
  }
}

TEST(VllmTable, GemvMatchesRowDecodeWithinAccumulationBound) {
  std::mt19937 g(21);
  for (float gs : kScales)
    for (int64_t K : {int64_t(16 * 3), int64_t(16 * 37), int64_t(2048), int64_t(2880)})
      for (auto [N, r0, r1] : {std::tuple<int64_t, int64_t, int64_t>{23, 3, 22}, {40, 0, 40}, {7, 2, 3}}) {
        const Proj p = random_proj(K, N, gs, g, K == 2048);
        for (int64_t n : {1, 2, 3, 4, 5, 8, 9, 13}) check_table_gemv(p, r0, r1, n, n % 2 == 1, g);
      }
}

// One-hot activation rows: each output is the single product 1 * w[j, c], so the kernel's weights
// must be decode_fp4_row's bit for bit (zero's sign aside).
TEST(VllmTable, GemvWeightsMatchRowDecodeBitwise) {
  std::mt19937 g(22);
  for (float gs : {kScales[0], kScales[1]}) {
    const Proj p = random_proj(16 * 21, 19, gs, g, false);
    const int64_t K = p.K, N = p.N, n = K, Kp = cpu::fp4_act_stride(K);
    std::vector<float> a(size_t(n * K), 0.0f);
    for (int64_t c = 0; c < K; ++c) a[size_t(c * K + c)] = 1.0f;
    std::vector<uint16_t> ap16(size_t(n * Kp));
    ASSERT_TRUE(cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
    const cpu::Fp4Weight w{p.codes.data(), p.scales.data(), K, 16, Encoding::UE4M3, gs};
    cpu::Nvfp4VllmTable t;
    cpu::nvfp4_vllm_table(gs, &t);
    std::vector<float> y(size_t(n * N), NAN);
    cpu::fp4_gemv_vllm_table(w, t, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N);
    for (int64_t j = 0; j < N; ++j) {
      const std::vector<float> row = vllm_row(p.codes.data(), p.scales.data(), K, gs, j);
      for (int64_t c = 0; c < K; ++c) {
        const float got = y[size_t(c * N + j)], want = row[size_t(c)];
        ASSERT_EQ(got, want) << "gs " << gs << " row " << j << " col " << c;
        if (want != 0.0f) ASSERT_EQ(bf16_bits(got), bf16_bits(want)) << "row " << j << " col " << c;
      }
    }
  }
}

// The cpu backend's grouped GEMM in vllm mode (few token rows per expert: the weight-table kernel for
// NVFP4, the fused kernel for MXFP4; from 16 rows the decoded panel) against the ref backend on the
// same tasks: every output within twice the accumulation bound of the ref's float32 column-order
// sum, nothing written past the task outputs (poisoned guard rows).
TEST(VllmTable, GroupedGemmMatchesRefForEveryFp4Scheme) {
  std::mt19937 g(23);
  for (const auto& s : moe_schemes()) {
    if (!s.weight_quantized || element_bits(s.weight) != 4) continue;
    const MoeLayer l = synthetic_layer({"small", 320, 96, 4, 2}, s, 31);
    const int64_t counts[] = {1, 2, 3, 8, 5, 13, 16, 21};
    for (const auto* ws : {&l.w13, &l.w2}) {
      const int64_t K = (*ws)[0].in_features(), N = (*ws)[0].out_features();
      std::vector<GemmTask> tasks;
      std::vector<std::vector<float>> as, bias;
      for (size_t i = 0; i < std::size(counts); ++i) {
        std::normal_distribution<float> nd(0.0f, 1.0f + float(i));
        as.emplace_back(size_t(counts[i] * K));
        for (auto& v : as.back()) v = bf16_to_f32(f32_to_bf16(nd(g)));  // vllm activations are bf16
        bias.emplace_back(static_cast<size_t>(N));
        for (auto& v : bias.back()) v = nd(g);
      }
      const int64_t guard = N;  // poisoned row after each task's output
      std::vector<std::vector<float>> yc, yr;
      for (size_t i = 0; i < std::size(counts); ++i) {
        yc.emplace_back(size_t((counts[i] * N) + guard), NAN);
        yr.emplace_back(size_t(counts[i] * N), NAN);
      }
      auto make_tasks = [&](std::vector<std::vector<float>>& ys) {
        std::vector<GemmTask> ts;
        for (size_t i = 0; i < std::size(counts); ++i)
          ts.push_back({&(*ws)[i % ws->size()], as[i].data(), counts[i], 1.0f, i % 2 ? bias[i].data() : nullptr,
                        ys[i].data()});
        return ts;
      };
      cpu_experts().grouped_gemm(make_tasks(yc), Emulation::VLLM);
      ref_experts().grouped_gemm(make_tasks(yr), Emulation::VLLM);
      for (size_t i = 0; i < std::size(counts); ++i) {
        const ExpertLinear& w = (*ws)[i % ws->size()];
        std::vector<float> dec(size_t(N * K));
        detail::decode_weight_rows(w, 0, N, Emulation::VLLM, dec.data());
        for (int64_t m = 0; m < counts[i]; ++m)
          for (int64_t j = 0; j < N; ++j) {
            double mag = 0;
            for (int64_t c = 0; c < K; ++c) mag += std::fabs(double(as[i][size_t(m * K + c)]) * dec[size_t(j * K + c)]);
            const float got = yc[i][size_t(m * N + j)], want = yr[i][size_t(m * N + j)];
            const double bound = 4.0 * double(K) * 0x1p-24 * mag + 1e-6 * std::fabs(want) + 1e-30;
            ASSERT_TRUE(std::isfinite(got)) << s.name << " task " << i << " row " << j;
            EXPECT_LE(std::fabs(double(got) - want), bound) << s.name << " n " << counts[i] << " row " << j;
          }
        for (int64_t k = counts[i] * N; k < int64_t(yc[i].size()); ++k)
          ASSERT_TRUE(std::isnan(yc[i][size_t(k)])) << s.name << " task " << i << " wrote past its output";
      }
    }
  }
}

// The whole layer in vllm mode at few tokens (1-8 tokens over 6 experts: the weight-table kernel for
// NVFP4 weights), cpu vs ref, fresh inputs per T.
TEST(VllmTable, LayerMatchesRefAtFewTokens) {
  for (const char* name : {"w_nvfp4_a_nvfp4", "w_nvfp4_a16"}) {
    const MoeLayer l = synthetic_layer({"small", 256, 128, 6, 2}, parse_moe_scheme(name), 41);
    for (int64_t T : {1, 2, 3, 8, 40}) {
      const Tensor x = test::random_tensor(DType::BF16, {T, 256}, uint32_t(100 + T));
      MoeOptions o;
      o.emulation = Emulation::VLLM;
      o.backend = Backend::Ref;
      const MoeResult ref = run_moe(l, x, o);
      o.backend = Backend::Cpu;
      const MoeResult cpu = run_moe(l, x, o);
      ASSERT_EQ(test::first_nonfinite(cpu.out), -1) << name << " T " << T;
      // Outputs are bf16: summation-order differences flip an occasional bf16 rounding.
      EXPECT_LT(test::rel_l2(cpu.out, ref.out), 2e-3) << name << " T " << T;
    }
  }
}

}  // namespace
