// The fused MXFP6 / MXFP8 kernel (src/moe/cpu/fused_gemv_mx.cpp), bf16 and float32 activations, on
// fresh random inputs: against a float64 dot of decode_wide_row's weights within the float32
// accumulation bound
// |d| <= 2 K u sum_c |a_c w_c| (u = 2^-24) and against its scalar column-order path, with poisoned
// outputs, odd K / row / token counts, NaN scales and (8-bit) special codes; and the cpu backend
// against ref on MXFP6 / MXFP8 layers at few tokens, both modes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "moe/cpu/simd_kernels.hpp"
#include "mxmoe/moe/layer.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;

namespace {

void check_mx_gemv(Encoding element, int64_t K, int64_t N, int64_t r0, int64_t r1, int64_t n, bool nan_scale,
                   std::mt19937& g) {
  const int bits = traits(element).bits;
  const int64_t nb = K / 32, rb = K * bits / 8, Kp = cpu::fp4_act_stride(K), ldy = N + 3;
  std::vector<uint8_t> codes(size_t(N * rb)), scales(size_t(N * nb));
  for (auto& c : codes) {
    c = uint8_t(g());
    if (bits == 8 && (c & 0x7f) >= 0x7c) c = uint8_t(c - 8);  // Inf / NaN codes: below, in row r0 only
  }
  if (bits == 8 && nan_scale) codes[size_t(r0 * rb + 5)] = element == Encoding::E4M3 ? 0xff : 0x7c;  // NaN / Inf
  for (auto& s : scales) s = uint8_t(100 + g() % 50);  // includes scales far from 1
  if (nan_scale) scales[size_t(r0 * nb + nb / 2)] = 0xff;  // a NaN block in row r0
  std::normal_distribution<float> nd;
  std::vector<float> a(size_t(n * K)), bias(static_cast<size_t>(N));
  for (auto& v : bias) v = nd(g);
  // Odd tokens: bf16 activations (the dot-product kernel); even: float32 ones (the FMA variant).
  const bool f32 = n % 2 == 0;
  for (auto& v : a) v = f32 ? nd(g) : bf16_to_f32(f32_to_bf16(nd(g)));
  std::vector<uint16_t> ap16(size_t(n * Kp));
  std::vector<float> apf(size_t(n * Kp));
  if (f32) cpu::fp4_pack_activations(a.data(), n, K, apf.data());
  else ASSERT_TRUE(cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
  const cpu::MxWeight w{codes.data(), scales.data(), K, element};
  const bool with_bias = n % 3 != 0;
  const float alpha = 0.75f, *b = with_bias ? bias.data() : nullptr;
  std::vector<float> y(size_t(n * ldy), NAN), ys(size_t(n * ldy), NAN);
  for (bool simd : {true, false}) {
    float* out = simd ? y.data() : ys.data();
    if (f32) cpu::mx_gemv(w, r0, r1, apf.data(), n, alpha, b, out, ldy, simd);
    else cpu::mx_gemv_bf16(w, r0, r1, ap16.data(), n, alpha, b, out, ldy, simd);
  }
  const std::string what = std::string(traits(element).name) + " K " + std::to_string(K) + " n " + std::to_string(n) +
                           (f32 ? " f32" : " bf16");
  std::vector<float> row(static_cast<size_t>(K)), mult(static_cast<size_t>(nb));
  for (int64_t j = 0; j < ldy; ++j) {
    if (j < r0 || j >= r1) {
      for (int64_t m = 0; m < n; ++m) ASSERT_TRUE(std::isnan(y[size_t(m * ldy + j)])) << what << " wrote row " << j;
      continue;
    }
    for (int64_t bi = 0; bi < nb; ++bi) mult[size_t(bi)] = decode_table(Encoding::UE8M0)[scales[size_t(j * nb + bi)]];
    cpu::decode_wide_row(codes.data() + j * rb, mult.data(), K, 32, bits, element, false, row.data(), false);
    for (int64_t m = 0; m < n; ++m) {
      const size_t i = size_t(m * ldy + j);
      const test::GemvRef r =
          test::gemv_ref(a.data() + m * K, row.data(), K, alpha, with_bias ? bias[size_t(j)] : 0.0);
      if (std::isnan(r.want)) {
        EXPECT_TRUE(std::isnan(y[i]) && std::isnan(ys[i])) << what << " row " << j;
        continue;
      }
      ASSERT_TRUE(std::isfinite(y[i])) << what << " row " << j;
      EXPECT_LE(std::fabs(y[i] - r.want), r.bound) << what << " row " << j << " token " << m;
      EXPECT_LE(std::fabs(ys[i] - r.want), r.bound) << what << " scalar, row " << j << " token " << m;
    }
  }
}

TEST(MxGemv, MatchesRowDecodeWithinAccumulationBound) {
  std::mt19937 g(51);
  for (Encoding e : {Encoding::E2M3, Encoding::E3M2, Encoding::E4M3, Encoding::E5M2})
    for (int64_t K : {int64_t(32 * 3), int64_t(32 * 37), int64_t(2048), int64_t(2880)})
      for (auto [N, r0, r1] : {std::tuple<int64_t, int64_t, int64_t>{23, 3, 22}, {40, 0, 40}, {7, 2, 3}})
        for (int64_t n : {1, 2, 3, 4, 5, 8, 9}) check_mx_gemv(e, K, N, r0, r1, n, n == 3 || n == 4, g);
}

// One-hot activation rows: each output is the single product 1 * w[j, c], so the kernel's weights
// must be decode_wide_row's bit for bit (zero's sign aside).
TEST(MxGemv, WeightsMatchRowDecodeBitwise) {
  std::mt19937 g(52);
  for (Encoding e : {Encoding::E2M3, Encoding::E3M2, Encoding::E4M3, Encoding::E5M2}) {
    const int bits = traits(e).bits;
    const int64_t K = 32 * 9, N = 13, n = K, nb = K / 32, rb = K * bits / 8, Kp = cpu::fp4_act_stride(K);
    std::vector<uint8_t> codes(size_t(N * rb)), scales(size_t(N * nb));
    for (auto& c : codes) c = uint8_t(bits == 8 ? g() % 0x7c | (g() & 0x80) : g());  // finite codes
    for (auto& s : scales) s = uint8_t(110 + g() % 30);
    std::vector<float> a(size_t(n * K), 0.0f);
    for (int64_t c = 0; c < K; ++c) a[size_t(c * K + c)] = 1.0f;
    std::vector<uint16_t> ap16(size_t(n * Kp));
    ASSERT_TRUE(cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
    std::vector<float> y(size_t(n * N), NAN);
    cpu::mx_gemv_bf16({codes.data(), scales.data(), K, e}, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N);
    std::vector<float> row(static_cast<size_t>(K)), mult(static_cast<size_t>(nb));
    for (int64_t j = 0; j < N; ++j) {
      for (int64_t bi = 0; bi < nb; ++bi) mult[size_t(bi)] = decode_table(Encoding::UE8M0)[scales[size_t(j * nb + bi)]];
      cpu::decode_wide_row(codes.data() + j * rb, mult.data(), K, 32, bits, e, false, row.data(), false);
      for (int64_t c = 0; c < K; ++c) ASSERT_EQ(y[size_t(c * N + j)], row[size_t(c)]) << "row " << j << " col " << c;
    }
  }
}

// Whole MXFP6 / MXFP8 layers at few tokens per expert (the fused kernel) against the ref backend,
// both modes, fresh inputs per T (w_mxfp8_e4m3_a16 exact: GEMM2's float32 activations take mx_gemv).
TEST(MxGemv, LayerMatchesRefAtFewTokens) {
  for (const char* name :
       {"w_mxfp6_e2m3_a_mxfp6_e2m3", "w_mxfp6_e3m2_a_mxfp6_e3m2", "w_mxfp6_e3m2_a_fp8", "w_mxfp8_e4m3_a16"}) {
    const MoeLayer l = synthetic_layer({"small", 256, 128, 6, 2}, parse_moe_scheme(name), 61);
    for (int64_t T : {1, 2, 3, 8, 40})
      for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
        const Tensor x = test::random_tensor(DType::BF16, {T, 256}, uint32_t(200 + T));
        MoeOptions o;
        o.emulation = e;
        o.backend = Backend::Ref;
        const MoeResult ref = run_moe(l, x, o);
        o.backend = Backend::Cpu;
        const MoeResult cpu = run_moe(l, x, o);
        ASSERT_EQ(test::first_nonfinite(cpu.out), -1) << name << " T " << T;
        EXPECT_LT(test::rel_l2(cpu.out, ref.out), 2e-3) << name << " " << emulation_name(e) << " T " << T;
      }
  }
}

}  // namespace
