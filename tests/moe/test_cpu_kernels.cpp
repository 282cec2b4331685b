// SIMD kernels of the CPU experts (src/moe/cpu) against their scalar counterparts on fresh random
// inputs: poisoned outputs, odd sizes, every weight format. Decoders must agree bit for bit (same
// operations per element); the fused GEMV sums in a different order than the scalar column-order
// loop, so it is held to the float32 accumulation bound |d| <= 2 K u sum_c |a_c w_c| (u = 2^-24);
// on W4A4 inputs (exact lane sums) the float and bf16-dot kernels must agree bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "moe/cpu/simd_kernels.hpp"
#include "moe/cpu/work_pool.hpp"
#include "mxmoe/moe/layer.hpp"
#include "quant/cpu/quant_cpu.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;

namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Bitwise equality, any NaN equal to any NaN.
void expect_same(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    ASSERT_EQ(bits_of(a[i]), bits_of(b[i])) << what << " at " << i << ": " << a[i] << " vs " << b[i];
  }
}

std::vector<uint8_t> random_bytes(size_t n, std::mt19937& g) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(g());
  return v;
}

// Block multipliers as decode_weight_rows builds them: a scale-table value, optionally / gs.
std::vector<float> random_mults(int64_t nb, Encoding scale, float gs, std::mt19937& g) {
  const float* st = decode_table(scale);
  std::vector<float> m(static_cast<size_t>(nb));
  for (auto& v : m) {
    uint8_t c = uint8_t(g());
    if (scale == Encoding::UE8M0) c = uint8_t(100 + c % 50);  // keep products finite
    else if ((c & 0x7f) == 0x7f) c = 0x3c;                    // NaN scales are tested separately
    v = gs > 0 ? st[c] / gs : st[c];
  }
  return m;
}

TEST(CpuKernels, Fp4RowDecodeSimdMatchesScalarBitwise) {
  if (!moe::cpu::simd_active()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 g(1);
  for (int block : {16, 32})
    for (int64_t K : {16 * 3, 16 * 37, 2048, 2880})
      for (bool bf16 : {false, true}) {
        if (K % block) continue;
        const auto codes = random_bytes(size_t(K / 2), g);
        const auto mult = random_mults(K / block, block == 16 ? Encoding::UE4M3 : Encoding::UE8M0,
                                       bf16 ? 2688.0f / 0.37f : 0.0f, g);
        std::vector<float> simd(size_t(K), NAN), scalar(size_t(K), -NAN);
        const float* lut = decode_table(Encoding::E2M1);
        moe::cpu::decode_fp4_row(codes.data(), mult.data(), K, block, bf16, lut, simd.data(), true);
        moe::cpu::decode_fp4_row(codes.data(), mult.data(), K, block, bf16, lut, scalar.data(), false);
        expect_same(simd, scalar, "fp4 K " + std::to_string(K));
      }
}

TEST(CpuKernels, WideRowDecodeSimdMatchesScalarBitwiseForEveryFormat) {
  if (!moe::cpu::simd_active()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 g(2);
  for (Encoding e : {Encoding::E2M3, Encoding::E3M2, Encoding::E4M3, Encoding::E5M2, Encoding::INT8}) {
    const int bits = traits(e).bits;
    for (int64_t K : {32, 32 * 23, 2880})
      for (bool bf16 : {false, true}) {
        auto codes = random_bytes(size_t(K * bits / 8), g);
        if (bits == 8) codes[0] = 0x7f, codes[1] = 0xff, codes[2] = 0x7c, codes[3] = 0x80, codes[4] = 0x01;
        const auto mult = random_mults(K / 32, Encoding::UE8M0, 0.0f, g);
        std::vector<float> simd(size_t(K), NAN), scalar(size_t(K), -NAN);
        moe::cpu::decode_wide_row(codes.data(), mult.data(), K, 32, bits, e, bf16, simd.data(), true);
        moe::cpu::decode_wide_row(codes.data(), mult.data(), K, 32, bits, e, bf16, scalar.data(), false);
        expect_same(simd, scalar, std::string(traits(e).name) + " K " + std::to_string(K));
        // The scalar path is the decode table times the multiplier.
        std::vector<uint8_t> c(static_cast<size_t>(K));
        unpack_codes(codes.data(), K, bits, c.data());
        for (int64_t i = 0; i < K && !bf16; ++i) {
          const float want = decode_table(e)[c[size_t(i)]] * mult[size_t(i / 32)];
          if (!std::isnan(want)) ASSERT_EQ(bits_of(scalar[size_t(i)]), bits_of(want)) << traits(e).name << " " << i;
        }
      }
  }
}

TEST(CpuKernels, PackedActivationLayout) {
  const int64_t K = 16 * 37, Kp = moe::cpu::fp4_act_stride(K);
  ASSERT_EQ(Kp, 640);
  std::vector<float> a(size_t(2 * K)), ap(size_t(2 * Kp), NAN);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i + 1);
  moe::cpu::fp4_pack_activations(a.data(), 2, K, ap.data());
  for (int64_t m = 0; m < 2; ++m)
    for (int64_t c = 0; c < Kp; ++c) {
      const float got = ap[size_t(m * Kp + c / 128 * 128 + 16 * (c % 8) + (c % 128) / 8)];
      ASSERT_EQ(got, c < K ? a[size_t(m * K + c)] : 0.0f) << m << " " << c;
    }
}

TEST(CpuKernels, PackedBf16ActivationLayoutSimdAndScalar) {
  const int64_t K = 16 * 37, Kp = moe::cpu::fp4_act_stride(K);
  std::mt19937 g(6);
  std::normal_distribution<float> nd;
  std::vector<float> a(size_t(3 * K));
  for (auto& v : a) v = bf16_to_f32(f32_to_bf16(nd(g)));
  for (bool scalar : {false, true}) {
    moe::cpu::force_scalar(scalar);
    std::vector<uint16_t> ap(size_t(3 * Kp), 0xdead);
    ASSERT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), 3, K, ap.data()));
    for (int64_t m = 0; m < 3; ++m)
      for (int64_t c = 0; c < Kp; ++c) {
        const uint16_t got = ap[size_t(m * Kp + c / 128 * 128 + 32 * (c % 4) + (c % 128) / 4)];
        ASSERT_EQ(got, c < K ? f32_to_bf16(a[size_t(m * K + c)]) : 0) << scalar << " " << m << " " << c;
      }
    // The accepted range is [2^-64, 2^64] in magnitude (and zero), on both paths.
    std::vector<float> b(size_t(K), 1.0f);
    std::vector<uint16_t> bp(static_cast<size_t>(Kp));
    for (auto [v, ok] : {std::pair{0x1p64f, true}, {-0x1p-64f, true}, {0x1p65f, false}, {0x1p-65f, false}}) {
      b[size_t(K - 1)] = v;
      EXPECT_EQ(moe::cpu::fp4_pack_activations_bf16(b.data(), 1, K, bp.data()), ok) << scalar << " " << v;
    }
    moe::cpu::force_scalar(false);
  }
}

struct Fp4Case {
  int block;
  Encoding scale;
  float gs;  // > 0: vllm NVFP4 (bf16 weights)
};

// fp4_gemv (SIMD) vs its scalar path and vs decode + float64 dot, with the accumulation bound.
void check_fp4_gemv(const Fp4Case& fc, int64_t K, int64_t N, int64_t r0, int64_t r1, int64_t n, bool with_bias,
                    std::mt19937& g) {
  const int64_t nb = K / fc.block;
  auto codes = random_bytes(size_t(N * K / 2), g);
  std::vector<uint8_t> scales(size_t(N * nb));
  for (auto& s : scales) {
    uint8_t c = uint8_t(g());
    if (fc.scale == Encoding::UE8M0) c = uint8_t(110 + c % 30);
    else if ((c & 0x7f) == 0x7f) c = 0x35;
    s = c;
  }
  const moe::cpu::Fp4Weight w{codes.data(), scales.data(), K, fc.block, fc.scale, fc.gs};
  std::normal_distribution<float> nd;
  std::vector<float> a(size_t(n * K)), bias(static_cast<size_t>(N)), ap(static_cast<size_t>(n * moe::cpu::fp4_act_stride(K)));
  for (auto& v : a) v = bf16_to_f32(f32_to_bf16(nd(g)));  // bf16 values: both kernels apply
  for (auto& v : bias) v = nd(g);
  moe::cpu::fp4_pack_activations(a.data(), n, K, ap.data());
  std::vector<uint16_t> ap16(ap.size());
  ASSERT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
  const float alpha = 0.75f;
  const int64_t ldy = N + 3;
  std::vector<float> ys(size_t(n * ldy), NAN), yr(size_t(n * ldy), NAN);
  moe::cpu::fp4_gemv(w, r0, r1, ap.data(), n, alpha, with_bias ? bias.data() : nullptr, ys.data(), ldy, true);
  moe::cpu::fp4_gemv(w, r0, r1, ap.data(), n, alpha, with_bias ? bias.data() : nullptr, yr.data(), ldy, false);
  std::vector<float> y16(size_t(n * ldy), NAN), y16r(size_t(n * ldy), NAN);
  moe::cpu::fp4_gemv_bf16(w, r0, r1, ap16.data(), n, alpha, with_bias ? bias.data() : nullptr, y16.data(), ldy, true);
  moe::cpu::fp4_gemv_bf16(w, r0, r1, ap16.data(), n, alpha, with_bias ? bias.data() : nullptr, y16r.data(), ldy, false);
  expect_same(y16r, yr, "bf16 scalar path vs float scalar path");  // same column-order loop
  // Weight rows through the row decoder (the numerics contract of the weights).
  const float* st = decode_table(fc.scale);
  std::vector<float> wrow(static_cast<size_t>(K)), mult(static_cast<size_t>(nb));
  for (int64_t m = 0; m < n; ++m)
    for (int64_t j = 0; j < ldy; ++j) {
      const size_t i = size_t(m * ldy + j);
      if (j < r0 || j >= r1) {  // poisoned outputs outside the rows stay untouched
        ASSERT_TRUE(std::isnan(ys[i]) && std::isnan(yr[i]) && std::isnan(y16[i])) << "wrote outside rows at " << j;
        continue;
      }
      for (int64_t b = 0; b < nb; ++b) {
        const float sv = st[scales[size_t(j * nb + b)]];
        mult[size_t(b)] = fc.gs > 0 ? sv / fc.gs : sv;
      }
      moe::cpu::decode_fp4_row(codes.data() + j * K / 2, mult.data(), K, fc.block, fc.gs > 0,
                               decode_table(Encoding::E2M1), wrow.data(), false);
      double exact = 0, mag = 0;
      for (int64_t c = 0; c < K; ++c) {
        exact += double(a[size_t(m * K + c)]) * wrow[size_t(c)];
        mag += std::fabs(double(a[size_t(m * K + c)]) * wrow[size_t(c)]);
      }
      const double want = exact * alpha + (with_bias ? bias[size_t(j)] : 0.0);
      const double bound = 2.0 * double(K) * 0x1p-24 * mag * alpha + 1e-6 * std::fabs(want) + 1e-30;
      ASSERT_TRUE(std::isfinite(ys[i])) << j;
      EXPECT_LE(std::fabs(ys[i] - want), bound) << "simd K " << K << " n " << n << " row " << j;
      EXPECT_LE(std::fabs(yr[i] - want), bound) << "scalar K " << K << " n " << n << " row " << j;
      EXPECT_LE(std::fabs(double(ys[i]) - yr[i]), 2 * bound) << "simd vs scalar row " << j;
      ASSERT_TRUE(std::isfinite(y16[i])) << j;
      EXPECT_LE(std::fabs(y16[i] - want), bound) << "bf16 dot K " << K << " n " << n << " row " << j;
    }
}

TEST(CpuKernels, Fp4GemvMatchesScalarWithinAccumulationBound) {
  std::mt19937 g(3);
  const Fp4Case cases[] = {{16, Encoding::UE4M3, 0.0f}, {16, Encoding::UE4M3, 2688.0f / 0.41f}, {32, Encoding::UE8M0, 0.0f}};
  for (const auto& fc : cases)
    for (int64_t K : {int64_t(fc.block) * 3, int64_t(fc.block) * 37, int64_t(2048), int64_t(2880)})
      for (int64_t n : {1, 2, 3, 4, 5, 7, 9}) check_fp4_gemv(fc, K, 23, 3, 22, n, n % 2 == 1, g);
}

// W4A4 (exact mode): activations are e2m1 x block scale, so every 8-column lane sum is exact in both
// SIMD kernels and they accumulate the same lane partials in the same order: bitwise equal results.
TEST(CpuKernels, Fp4GemvFloatAndBf16DotAgreeBitwiseOnW4A4) {
  if (!moe::cpu::fp4_bf16_dot_active()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  std::mt19937 g(5);
  for (auto [block, enc] : {std::pair{16, Encoding::UE4M3}, std::pair{32, Encoding::UE8M0}})
    for (int64_t K : {int64_t(256), int64_t(16 * 37), int64_t(2048)})
      for (int64_t n : {1, 2, 3, 5}) {
        const int64_t N = 9, nb = K / block;
        auto codes = random_bytes(size_t(N * K / 2), g);
        std::vector<uint8_t> scales(size_t(N * nb));
        for (auto& s : scales) s = enc == Encoding::UE8M0 ? uint8_t(115 + g() % 20) : uint8_t(0x20 + g() % 0x50);
        const moe::cpu::Fp4Weight w{codes.data(), scales.data(), K, block, enc, 0.0f};
        std::vector<float> a(size_t(n * K));
        for (int64_t i = 0; i < n * K; ++i) {
          const float sa = enc == Encoding::UE8M0 ? std::ldexp(1.0f, int(g() % 9) - 4)
                                                  : decode_table(Encoding::UE4M3)[0x28 + (i / block * 7) % 0x40];
          a[size_t(i)] = decode_table(Encoding::E2M1)[g() % 16] * sa;
        }
        const int64_t Kp = moe::cpu::fp4_act_stride(K);
        std::vector<float> ap(size_t(n * Kp)), y(size_t(n * N), NAN), y16(size_t(n * N), NAN);
        std::vector<uint16_t> ap16(ap.size());
        moe::cpu::fp4_pack_activations(a.data(), n, K, ap.data());
        ASSERT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
        moe::cpu::fp4_gemv(w, 0, N, ap.data(), n, 0.5f, nullptr, y.data(), N);
        moe::cpu::fp4_gemv_bf16(w, 0, N, ap16.data(), n, 0.5f, nullptr, y16.data(), N);
        expect_same(y, y16, "K " + std::to_string(K) + " n " + std::to_string(n));
      }
}

// fp4_gemm_panel_bf16 (decoded bf16 panel + dot-product GEMM, the many-token path) vs the scalar
// GEMV and a float64 dot of decode_fp4_row weights: the accumulation bound, poisoned outputs outside
// [r0, r1), odd K / row / token counts (row ranges crossing the 64-row panel and the 4-row blocks,
// token counts around the 6-token blocks).
TEST(CpuKernels, Fp4PanelGemmMatchesScalarWithinAccumulationBound) {
  if (!moe::cpu::fp4_bf16_dot_active()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  std::mt19937 g(11);
  const Fp4Case cases[] = {{16, Encoding::UE4M3, 0.0f}, {16, Encoding::UE4M3, 2688.0f / 0.41f}, {32, Encoding::UE8M0, 0.0f}};
  for (const auto& fc : cases)
    for (int64_t K : {int64_t(fc.block) * 3, int64_t(fc.block) * 37, int64_t(2880)})
      for (auto [N, r0, r1, n] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{7, 0, 7, 1}, {23, 3, 22, 5},
                                  {23, 1, 23, 6}, {80, 3, 78, 7}, {70, 0, 69, 13}, {9, 2, 9, 17}}) {
        const int64_t nb = K / fc.block, Kp = moe::cpu::fp4_act_stride(K);
        auto codes = random_bytes(size_t(N * K / 2), g);
        std::vector<uint8_t> scales(size_t(N * nb));
        for (auto& sb : scales) {
          uint8_t c = uint8_t(g());
          if (fc.scale == Encoding::UE8M0) c = uint8_t(110 + c % 30);
          else if ((c & 0x7f) == 0x7f) c = 0x35;
          sb = c;
        }
        const moe::cpu::Fp4Weight w{codes.data(), scales.data(), K, fc.block, fc.scale, fc.gs};
        std::normal_distribution<float> nd;
        std::vector<float> a(size_t(n * K)), bias(static_cast<size_t>(N));
        for (auto& v : a) v = bf16_to_f32(f32_to_bf16(nd(g)));
        for (auto& v : bias) v = nd(g);
        std::vector<uint16_t> ap16(size_t(n * Kp));
        ASSERT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
        const int64_t ldy = N + 3;
        const bool with_bias = n % 2 == 1;
        std::vector<float> yp(size_t(n * ldy), NAN), yr(size_t(n * ldy), NAN);
        ASSERT_TRUE(moe::cpu::fp4_gemm_panel_bf16(w, r0, r1, ap16.data(), n, 0.75f, with_bias ? bias.data() : nullptr,
                                                  yp.data(), ldy));
        moe::cpu::fp4_gemv_bf16(w, r0, r1, ap16.data(), n, 0.75f, with_bias ? bias.data() : nullptr, yr.data(), ldy,
                                false);
        const float* st = decode_table(fc.scale);
        std::vector<float> wrow(static_cast<size_t>(K)), mult(static_cast<size_t>(nb));
        for (int64_t j = 0; j < ldy; ++j) {
          if (j >= r0 && j < r1) {
            for (int64_t b = 0; b < nb; ++b) {
              const float sv = st[scales[size_t(j * nb + b)]];
              mult[size_t(b)] = fc.gs > 0 ? sv / fc.gs : sv;
            }
            moe::cpu::decode_fp4_row(codes.data() + j * K / 2, mult.data(), K, fc.block, fc.gs > 0,
                                     decode_table(Encoding::E2M1), wrow.data(), false);
          }
          for (int64_t m = 0; m < n; ++m) {
            const size_t i = size_t(m * ldy + j);
            if (j < r0 || j >= r1) {
              ASSERT_TRUE(std::isnan(yp[i])) << "wrote outside rows at " << j;
              continue;
            }
            double exact = 0, mag = 0;
            for (int64_t c = 0; c < K; ++c) {
              exact += double(a[size_t(m * K + c)]) * wrow[size_t(c)];
              mag += std::fabs(double(a[size_t(m * K + c)]) * wrow[size_t(c)]);
            }
            const double want = exact * 0.75 + (with_bias ? bias[size_t(j)] : 0.0);
            const double bound = 2.0 * double(K) * 0x1p-24 * mag * 0.75 + 1e-6 * std::fabs(want) + 1e-30;
            ASSERT_TRUE(std::isfinite(yp[i])) << j;
            EXPECT_LE(std::fabs(yp[i] - want), bound) << "panel K " << K << " n " << n << " row " << j;
            EXPECT_LE(std::fabs(double(yp[i]) - yr[i]), 2 * bound) << "panel vs scalar row " << j;
          }
        }
      }
}

// The panel's weights are bitwise those of decode_fp4_row (vllm: bf16(e2m1 * (scale / gs))): with
// one-hot activation rows each output is a single product 1 * w[j, c], exact.
TEST(CpuKernels, Fp4PanelWeightsMatchRowDecodeBitwise) {
  if (!moe::cpu::fp4_bf16_dot_active()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  std::mt19937 g(12);
  const Fp4Case cases[] = {{16, Encoding::UE4M3, 0.0f}, {16, Encoding::UE4M3, 2688.0f / 0.41f},
                           {16, Encoding::UE4M3, 448.0f * 6.0f / 3.7f}, {32, Encoding::UE8M0, 0.0f}};
  for (const auto& fc : cases) {
    const int64_t K = fc.block * 21, N = 67, nb = K / fc.block, Kp = moe::cpu::fp4_act_stride(K);
    auto codes = random_bytes(size_t(N * K / 2), g);
    std::vector<uint8_t> scales(size_t(N * nb));
    for (auto& sb : scales) {
      uint8_t c = uint8_t(g());
      if (fc.scale == Encoding::UE8M0) c = uint8_t(110 + c % 30);
      else if ((c & 0x7f) == 0x7f) c = 0x35;
      sb = c;
    }
    const moe::cpu::Fp4Weight w{codes.data(), scales.data(), K, fc.block, fc.scale, fc.gs};
    const int64_t n = K;  // token row c is the unit vector e_c
    std::vector<float> a(size_t(n * K), 0.0f);
    for (int64_t c = 0; c < K; ++c) a[size_t(c * K + c)] = 1.0f;
    std::vector<uint16_t> ap16(size_t(n * Kp));
    ASSERT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
    std::vector<float> y(size_t(n * N), NAN);
    ASSERT_TRUE(moe::cpu::fp4_gemm_panel_bf16(w, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N));
    const float* st = decode_table(fc.scale);
    std::vector<float> wrow(static_cast<size_t>(K)), mult(static_cast<size_t>(nb));
    for (int64_t j = 0; j < N; ++j) {
      for (int64_t b = 0; b < nb; ++b) {
        const float sv = st[scales[size_t(j * nb + b)]];
        mult[size_t(b)] = fc.gs > 0 ? sv / fc.gs : sv;
      }
      moe::cpu::decode_fp4_row(codes.data() + j * K / 2, mult.data(), K, fc.block, fc.gs > 0,
                               decode_table(Encoding::E2M1), wrow.data(), false);
      for (int64_t c = 0; c < K; ++c) {
        const float got = y[size_t(c * N + j)], want = wrow[size_t(c)];
        ASSERT_EQ(got, want) << "row " << j << " col " << c;
        if (want != 0.0f) ASSERT_EQ(bits_of(got), bits_of(want)) << "row " << j << " col " << c;
      }
    }
  }
}

// The panel declines (returns false) what vdpbf16ps could not take exactly: NaN scales, UE8M0
// multipliers outside [2^-35, 2^33], forced scalar; the caller then runs fp4_gemv_bf16.
TEST(CpuKernels, Fp4PanelDeclinesOutOfRangeScales) {
  if (!moe::cpu::fp4_bf16_dot_active()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  const int64_t K = 64, N = 5, n = 3;
  std::vector<uint8_t> codes(size_t(N * K / 2), 0x21);
  std::vector<float> a(size_t(n * K), 1.0f), y(size_t(n * N));
  std::vector<uint16_t> ap16(size_t(n * moe::cpu::fp4_act_stride(K)));
  ASSERT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), n, K, ap16.data()));
  for (auto [code, ok] : {std::pair{127, true}, std::pair{127 - 35, true}, std::pair{127 - 36, false},
                          std::pair{127 + 33, true}, std::pair{127 + 34, false}, std::pair{255, false}}) {
    std::vector<uint8_t> scales(size_t(N * K / 32), 127);
    scales[3] = uint8_t(code);
    const moe::cpu::Fp4Weight w{codes.data(), scales.data(), K, 32, Encoding::UE8M0, 0.0f};
    EXPECT_EQ(moe::cpu::fp4_gemm_panel_bf16(w, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N), ok) << code;
  }
  std::vector<uint8_t> nan_scales(size_t(N * K / 16), 0x38);
  nan_scales[4] = 0x7f;
  const moe::cpu::Fp4Weight wn{codes.data(), nan_scales.data(), K, 16, Encoding::UE4M3, 0.0f};
  EXPECT_FALSE(moe::cpu::fp4_gemm_panel_bf16(wn, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N));
  moe::cpu::force_scalar(true);
  nan_scales[4] = 0x38;
  EXPECT_FALSE(moe::cpu::fp4_gemm_panel_bf16(wn, 0, N, ap16.data(), n, 1.0f, nullptr, y.data(), N));
  moe::cpu::force_scalar(false);
}

TEST(CpuKernels, Bf16PackRejectsValuesTheDotKernelCannotTakeExactly) {
  const int64_t K = 32;
  std::vector<float> a(static_cast<size_t>(K), 1.0f);
  std::vector<uint16_t> ap(size_t(moe::cpu::fp4_act_stride(K)));
  EXPECT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), 1, K, ap.data()));
  a[5] = 1.0f + 0x1p-10f;  // not a bf16
  EXPECT_FALSE(moe::cpu::fp4_pack_activations_bf16(a.data(), 1, K, ap.data()));
  a[5] = 0x1p-100f;  // bf16, but products could reach the flushed denormal range
  EXPECT_FALSE(moe::cpu::fp4_pack_activations_bf16(a.data(), 1, K, ap.data()));
  a[5] = -0.0f;
  EXPECT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), 1, K, ap.data()));
}

// NaN scale codes (UE4M3 0x7f and 0xff, UE8M0 0xff) give NaN rows, rows 1 and 37 here, and leave
// every other row exactly as the same call on NaN-free scales gives it.
TEST(CpuKernels, Fp4GemvNaNScalePropagates) {
  std::mt19937 g(4);
  const int64_t K = 256, N = 40;
  auto codes = random_bytes(size_t(N * K / 2), g);
  for (auto [block, enc, nan_code] : {std::tuple{16, Encoding::UE4M3, uint8_t(0x7f)}, {16, Encoding::UE4M3, uint8_t(0xff)},
                                      {32, Encoding::UE8M0, uint8_t(0xff)}}) {
    const int64_t nb = K / block;
    std::vector<uint8_t> clean(size_t(N * nb));
    for (auto& c : clean) c = enc == Encoding::UE8M0 ? uint8_t(120 + g() % 14) : uint8_t(0x30 + g() % 0x10);
    auto scales = clean;
    scales[size_t(1 * nb + 3)] = nan_code;
    scales[size_t(37 * nb + nb - 1)] = nan_code;
    const moe::cpu::Fp4Weight w{codes.data(), scales.data(), K, block, enc, 0.0f};
    const moe::cpu::Fp4Weight wc{codes.data(), clean.data(), K, block, enc, 0.0f};
    std::normal_distribution<float> nd;
    std::vector<float> a(static_cast<size_t>(K)), ap(size_t(moe::cpu::fp4_act_stride(K)));
    for (auto& v : a) v = bf16_to_f32(f32_to_bf16(nd(g)));
    moe::cpu::fp4_pack_activations(a.data(), 1, K, ap.data());
    std::vector<uint16_t> ap16(ap.size());
    ASSERT_TRUE(moe::cpu::fp4_pack_activations_bf16(a.data(), 1, K, ap16.data()));
    for (bool simd : {true, false})
      for (bool dot : {false, true}) {
        std::vector<float> y(size_t(N), 0.0f), yc(size_t(N), 0.0f);
        if (dot) {
          moe::cpu::fp4_gemv_bf16(w, 0, N, ap16.data(), 1, 1.0f, nullptr, y.data(), N, simd);
          moe::cpu::fp4_gemv_bf16(wc, 0, N, ap16.data(), 1, 1.0f, nullptr, yc.data(), N, simd);
        } else {
          moe::cpu::fp4_gemv(w, 0, N, ap.data(), 1, 1.0f, nullptr, y.data(), N, simd);
          moe::cpu::fp4_gemv(wc, 0, N, ap.data(), 1, 1.0f, nullptr, yc.data(), N, simd);
        }
        for (int64_t j = 0; j < N; ++j) {
          if (j == 1 || j == 37) {
            EXPECT_TRUE(std::isnan(y[size_t(j)])) << "row " << j << " simd " << simd << " dot " << dot;
          } else {
            ASSERT_TRUE(std::isfinite(y[size_t(j)])) << "row " << j << " simd " << simd << " dot " << dot;
            EXPECT_EQ(bits_of(y[size_t(j)]), bits_of(yc[size_t(j)])) << "row " << j << " simd " << simd << " dot " << dot;
          }
        }
      }
  }
}

// Every index exactly once, from the caller and helpers, across many back-to-back jobs (helpers
// that wake late must not touch a finished job), and from concurrent callers.
TEST(CpuKernels, WorkPoolRunsEveryItemOnce) {
  auto run_many = [](int seed) {
    for (int rep = 0; rep < 300; ++rep) {
      const int64_t n = 1 + (rep * 37 + seed) % 97;
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      moe::cpu::parallel_items(n, 1 + rep % 4, [&](int64_t i) { hits[size_t(i)].fetch_add(1); });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << rep << " " << i;
    }
  };
  std::thread other(run_many, 5);
  run_many(1);
  other.join();
}

// Ref, the CPU backend, and the CPU backend with its kernels forced scalar (and the quantizers too when
// `quant_too`: the portable path a CPU without AVX-512 takes) on one layer and input.
struct ThreeRuns {
  MoeResult ref, fast, slow;
};
ThreeRuns run_ref_simd_scalar(const MoeLayer& l, const Tensor& x, Emulation e, bool quant_too) {
  MoeOptions o;
  o.emulation = e;
  o.backend = Backend::Ref;
  ThreeRuns r;
  r.ref = run_moe(l, x, o);
  o.backend = Backend::Cpu;
  r.fast = run_moe(l, x, o);
  moe::cpu::force_scalar(true);
  if (quant_too) mxmoe::cpu::force_scalar(true);
  EXPECT_FALSE(moe::cpu::simd_active());
  r.slow = run_moe(l, x, o);
  moe::cpu::force_scalar(false);
  if (quant_too) mxmoe::cpu::force_scalar(false);
  return r;
}

// Enough tokens per expert (T = 96, 6 experts, top-2: ~32 each) that the CPU backend takes the
// decoded-panel GEMM for FP4 weights with bf16 activations (heuristics.hpp use_panel): cpu vs ref
// and vs the forced-scalar kernels, both modes.
TEST(CpuKernels, ManyTokensPerExpertLayerMatchesRef) {
  for (const char* name : {"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_nvfp4_a16"}) {
    const MoeLayer l = synthetic_layer({"small", 256, 96, 6, 2}, parse_moe_scheme(name), 4);
    const Tensor x = test::random_tensor(DType::BF16, {96, 256}, 8);
    for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
      const ThreeRuns r = run_ref_simd_scalar(l, x, e, false);
      EXPECT_EQ(test::first_nonfinite(r.fast.out), -1) << name;
      EXPECT_LT(test::rel_l2(r.fast.out, r.ref.out), 2e-3) << name << " " << emulation_name(e) << " vs ref";
      EXPECT_LT(test::rel_l2(r.fast.out, r.slow.out), 2e-3) << name << " " << emulation_name(e) << " vs scalar";
    }
  }
}

// The whole portable path (kernels and quantizers scalar) against ref, every weight family.
TEST(CpuKernels, ForceScalarLayerMatchesRef) {
  for (const char* name : {"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_mxfp6_e3m2_a_mxfp6_e3m2", "w_mxfp8_e4m3_a16"}) {
    const MoeLayer l = synthetic_layer({"small", 128, 64, 6, 2}, parse_moe_scheme(name), 9);
    const Tensor x = test::random_tensor(DType::BF16, {11, 128}, 3);
    for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
      const ThreeRuns r = run_ref_simd_scalar(l, x, e, true);
      EXPECT_LT(test::rel_l2(r.slow.out, r.ref.out), 2e-3) << name << " " << emulation_name(e) << " scalar";
      EXPECT_LT(test::rel_l2(r.fast.out, r.ref.out), 2e-3) << name << " " << emulation_name(e) << " simd";
    }
  }
}

}  // namespace
