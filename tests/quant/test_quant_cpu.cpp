// The fast CPU quantizers (mxmoe::cpu, AVX-512 where the CPU has it) against the scalar reference
// (mxmoe::ref): codes, scales and qdq/dequantize outputs must agree bit for bit, for every scheme,
// scale rule, rounding and input/output dtype, on data built to hit the corner cases.
#include <gtest/gtest.h>

#include <span>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mxmoe/quant.hpp"
#include "quant/cpu/quant_cpu.hpp"
#include "test_util.hpp"

using namespace mxmoe;

namespace {

constexpr uint8_t kPoison = 0xAB;
constexpr Scheme kAllSchemes[] = {Scheme::NVFP4,      Scheme::MXFP4,      Scheme::MXFP6_E2M3, Scheme::MXFP6_E3M2,
                                  Scheme::MXFP8_E4M3, Scheme::MXFP8_E5M2, Scheme::MXINT8};
constexpr ScaleRule kAllRules[] = {ScaleRule::Floor, ScaleRule::Even, ScaleRule::RCeil, ScaleRule::Ceil};
constexpr Rounding kAllRoundings[] = {Rounding::RNE, Rounding::Away};
constexpr DType kFloatDTypes[] = {DType::F32, DType::BF16, DType::F16};

std::string name_of(const QuantParams& p, DType d) {
  return std::string(traits(p.scheme).name) + "/" + std::string(scale_rule_name(p.rule)) + "/" +
         std::string(rounding_name(p.rounding)) + "/" + std::string(dtype_name(d)) + "/gs=" + std::to_string(p.global_scale);
}

// Float32 rows whose blocks each take one flavour of trouble: heavy tails at scales from 1e-44 to
// 1e38, exact ties (small integers times powers of two), zero blocks (signed), NaN and Inf entries,
// power-of-two amaxes and their neighbours, FLT_MAX, and uniformly random finite bit patterns.
std::vector<float> make_rows(int block, int64_t rows, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  const float scales[] = {1.f, 1e-30f, 1e30f, 3e-39f, 1e-44f, 1e38f, 0.01f, 100.f, 448.f, 6.f};
  std::vector<float> x(size_t(rows * k));
  for (int64_t b = 0; b < rows * k / block; ++b) {
    float* xb = x.data() + b * block;
    const int kind = int(rng() % 13);
    const float sc = scales[rng() % std::size(scales)];
    for (int i = 0; i < block; ++i) {
      float v = nd(rng);
      if (ud(rng) < 0.05f) v *= 30.f;
      switch (kind) {
        case 0: case 1: case 2: v *= sc; break;
        case 3: v = float(int(rng() % 129) - 64) * std::ldexp(1.0f, int(rng() % 24) - 14); break;  // exact ties
        case 4: v = (rng() & 1) ? 0.f : -0.f; break;
        case 5: v *= sc; if (i == int(rng() % block)) v = std::numeric_limits<float>::quiet_NaN(); break;
        case 6: v *= sc; if (i == 3) v = (rng() & 1) ? INFINITY : -INFINITY; break;
        case 7: v = ((rng() & 1) ? 1.f : -1.f) * std::ldexp(1.0f, int(rng() % 250) - 140); break;
        case 8: v = std::nextafter(std::ldexp(1.0f, int(rng() % 40) - 20), (rng() & 1) ? 0.f : INFINITY) * ((rng() & 1) ? 1.f : -1.f); break;
        case 9: v = (ud(rng) < 0.3f ? std::numeric_limits<float>::max() : v * 1e37f) * ((rng() & 1) ? 1.f : -1.f); break;
        case 10: {  // random finite bit patterns
          uint32_t u;
          do u = uint32_t(rng()); while ((u & 0x7f800000u) == 0x7f800000u);
          v = bits_f32(u);
          break;
        }
        case 11: v = float(int(rng() % 17) - 8) * 0.25f * sc; break;  // multiples of element ties after scaling
        default: if (i == 5) v = -std::numeric_limits<float>::quiet_NaN(); break;
      }
      xb[i] = v;
    }
  }
  return x;
}

// Rows stored in `d` with row stride ldx; returns the raw bytes and the float32 view the ref sees.
struct Input {
  std::vector<uint8_t> raw;
  std::vector<float> f32;  // dense rows x k
};

Input store_rows(const std::vector<float>& x, DType d, int64_t rows, int64_t k, int64_t ldx) {
  Input in;
  in.raw.assign(size_t(rows * ldx * dtype_size(d)), kPoison);
  in.f32.resize(size_t(rows * k));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i) {
      store_from_f32(in.raw.data(), d, r * ldx + i, x[size_t(r * k + i)]);
      in.f32[size_t(r * k + i)] = load_as_f32(in.raw.data(), d, r * ldx + i);
    }
  return in;
}

uint32_t elem_bits(const void* p, DType d, int64_t i) {
  if (dtype_size(d) == 4) return static_cast<const uint32_t*>(p)[i];
  return static_cast<const uint16_t*>(p)[i];
}

// Compares `rows` rows of `k` elements (stride ld) bit for bit; returns the mismatch count.
int64_t compare_rows(const void* got, const void* want, DType d, int64_t rows, int64_t k, int64_t ld,
                     const std::string& what, bool nan_equal = false) {
  int64_t bad = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = r * ld + i;
      const uint32_t a = elem_bits(got, d, j), b = elem_bits(want, d, j);
      if (a == b) continue;
      if (nan_equal && std::isnan(load_as_f32(got, d, j)) && std::isnan(load_as_f32(want, d, j))) continue;
      if (bad++ < 5)
        ADD_FAILURE() << what << " row " << r << " col " << i << ": got 0x" << std::hex << a << " want 0x" << b
                      << std::dec << " (" << load_as_f32(got, d, j) << " vs " << load_as_f32(want, d, j) << ")";
    }
  return bad;
}

int64_t compare_bytes(std::span<const uint8_t> got, std::span<const uint8_t> want, const std::string& what) {
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ < 5)
      ADD_FAILURE() << what << " byte " << i << ": got 0x" << std::hex << int(got[i]) << " want 0x" << int(want[i]);
  return bad;
}

// Runs quantize, qdq (same dtype out, and F32 out) and dequantize of the cpu:: kernels against ref on
// one input, with padded strides and poisoned outputs: padding bytes must stay untouched.
void check_case(const std::vector<float>& x, int64_t rows, int64_t k, DType d, const QuantParams& p) {
  const std::string what = name_of(p, d) + " k=" + std::to_string(k);
  const auto& st = traits(p.scheme);
  const int64_t rb = packed_row_bytes(p.scheme, k), nb = k / st.block;
  const int64_t ldx = k + 16, ldc = rb + 5, lds = nb + 3, ldy = k + 7;
  const Input in = store_rows(x, d, rows, k, ldx);

  // Reference: quantize with the same padded strides into poisoned buffers.
  std::vector<uint8_t> want_c(size_t(rows * ldc), kPoison), want_s(size_t(rows * lds), kPoison);
  ref::quantize_rows(in.f32.data(), rows, k, k, p, want_c.data(), ldc, want_s.data(), lds);
  std::vector<float> want_y(size_t(rows * k));
  ref::qdq_rows(in.f32.data(), rows, k, k, p, want_y.data(), k);

  std::vector<uint8_t> got_c(want_c.size(), kPoison), got_s(want_s.size(), kPoison);
  cpu::quantize_rows(in.raw.data(), d, rows, k, ldx, p, got_c.data(), ldc, got_s.data(), lds);
  EXPECT_EQ(compare_bytes(got_c, want_c, what + " codes"), 0);
  EXPECT_EQ(compare_bytes(got_s, want_s, what + " scales"), 0);

  for (DType yd : {d, DType::F32}) {
    std::vector<uint8_t> want(size_t(rows * ldy * dtype_size(yd)), kPoison), got(want.size(), kPoison);
    for (int64_t r = 0; r < rows; ++r) from_f32(want_y.data() + r * k, k, yd, want.data() + r * ldy * dtype_size(yd));
    cpu::qdq_rows(in.raw.data(), d, rows, k, ldx, p, got.data(), yd, ldy);
    EXPECT_EQ(compare_bytes(got, want, what + " qdq->" + std::string(dtype_name(yd))), 0);
  }

  // Dequantize the reference codes to every output dtype.
  std::vector<float> deq(size_t(rows * k));
  ref::dequantize_rows(want_c.data(), ldc, want_s.data(), lds, rows, k, p, deq.data(), k);
  for (DType yd : kFloatDTypes) {
    std::vector<uint8_t> want(size_t(rows * ldy * dtype_size(yd)), kPoison), got(want.size(), kPoison);
    for (int64_t r = 0; r < rows; ++r) from_f32(deq.data() + r * k, k, yd, want.data() + r * ldy * dtype_size(yd));
    cpu::dequantize_rows(want_c.data(), ldc, want_s.data(), lds, rows, k, p, got.data(), yd, ldy);
    EXPECT_EQ(compare_bytes(got, want, what + " dequantize->" + std::string(dtype_name(yd))), 0);
  }
}

std::vector<float> nvfp4_global_scales(const std::vector<float>& x) {
  float amax = 0;
  for (float v : x)
    if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
  return {1.0f, nvfp4_default_global_scale(amax), 2688.0f / 7.3f, 1e-20f, 3e20f};
}

class QuantCpu : public ::testing::Test {
 protected:
  void TearDown() override { cpu::force_scalar(false); }
};

}  // namespace

TEST_F(QuantCpu, ReportsIsa) {
  std::printf("cpu quantizers: %s\n", cpu::isa_name(cpu::active_isa()));
  SUCCEED();
}

// Every scheme x rule x rounding x dtype; odd row counts, k a block multiple but not a multiple of
// the 16-block group (so the group tail runs), and a single-block row.
TEST_F(QuantCpu, MatchesRefEverywhere) {
  uint32_t seed = 1;
  for (Scheme s : kAllSchemes) {
    const int block = traits(s).block;
    for (int64_t nblk : {19, 1, 16, 37}) {
      const int64_t rows = nblk == 1 ? 3 : 7, k = nblk * block;
      for (DType d : kFloatDTypes) {
        const auto x = make_rows(block, rows, k, seed++);
        if (traits(s).tensor_scale) {
          for (float gs : nvfp4_global_scales(x)) check_case(x, rows, k, d, QuantParams{s, ScaleRule::Floor, Rounding::RNE, gs});
          continue;
        }
        for (ScaleRule rule : kAllRules)
          for (Rounding rnd : kAllRoundings) check_case(x, rows, k, d, QuantParams{s, rule, rnd});
      }
    }
  }
}

// Heavier randomized sweep of the pieces most likely to go wrong: ties and the subnormal ranges.
TEST_F(QuantCpu, RandomSweep) {
  for (uint32_t seed = 100; seed < 130; ++seed)
    for (Scheme s : kAllSchemes) {
      const int block = traits(s).block;
      const auto x = make_rows(block, 5, block * 21, seed * 7 + uint32_t(s));
      const ScaleRule rule = kAllRules[seed % 4];
      const Rounding rnd = kAllRoundings[(seed / 4) % 2];
      const DType d = kFloatDTypes[seed % 3];
      const float gs = traits(s).tensor_scale ? nvfp4_global_scales(x)[seed % 5] : 1.0f;
      check_case(x, 5, block * 21, d, QuantParams{s, rule, rnd, gs});
    }
}

// Arbitrary code and scale bytes (NaN scales, E4M3 NaN codes, every code) dequantize like ref;
// NaN payloads may differ only where both sides are NaN.
TEST_F(QuantCpu, DequantizeArbitraryBytes) {
  std::mt19937 rng(7);
  for (Scheme s : kAllSchemes) {
    const QuantParams p{s, ScaleRule::Floor, Rounding::RNE, 0.731f};
    const int64_t rows = 5, k = traits(s).block * 23, rb = packed_row_bytes(s, k), nb = k / traits(s).block;
    std::vector<uint8_t> c(size_t(rows * rb)), sc(size_t(rows * nb));
    for (auto& v : c) v = uint8_t(rng());
    for (auto& v : sc) v = uint8_t(rng());
    std::vector<float> want(size_t(rows * k));
    ref::dequantize_rows(c.data(), rb, sc.data(), nb, rows, k, p, want.data(), k);
    for (DType yd : kFloatDTypes) {
      std::vector<uint8_t> w(size_t(rows * k * dtype_size(yd))), g(w.size(), kPoison);
      from_f32(want.data(), rows * k, yd, w.data());
      cpu::dequantize_rows(c.data(), rb, sc.data(), nb, rows, k, p, g.data(), yd, k);
      EXPECT_EQ(compare_rows(g.data(), w.data(), yd, rows, k, k, std::string(traits(s).name) + " arbitrary", true), 0);
    }
  }
}

// qdq may run in place.
TEST_F(QuantCpu, QdqInPlace) {
  for (Scheme s : kAllSchemes)
    for (DType d : kFloatDTypes) {
      const int64_t rows = 3, k = traits(s).block * 18;
      const auto x = make_rows(traits(s).block, rows, k, 55);
      const QuantParams p{s, ScaleRule::Even, Rounding::RNE, 1.0f};
      Input in = store_rows(x, d, rows, k, k);
      std::vector<float> want(in.f32.size());
      ref::qdq_rows(in.f32.data(), rows, k, k, p, want.data(), k);
      std::vector<uint8_t> w(in.raw.size());
      from_f32(want.data(), rows * k, d, w.data());
      cpu::qdq_rows(in.raw.data(), d, rows, k, k, p, in.raw.data(), d, k);
      EXPECT_EQ(compare_bytes(in.raw, w, std::string(traits(s).name) + " in place"), 0);
    }
}

// The scalar fallback (what a CPU without AVX-512 runs) agrees with ref too.
TEST_F(QuantCpu, ScalarFallbackMatchesRef) {
  cpu::force_scalar(true);
  ASSERT_EQ(cpu::active_isa(), cpu::Isa::Scalar);
  for (Scheme s : {Scheme::NVFP4, Scheme::MXFP6_E3M2, Scheme::MXINT8})
    check_case(make_rows(traits(s).block, 3, traits(s).block * 17, 9), 3, traits(s).block * 17, DType::BF16,
               QuantParams{s, ScaleRule::RCeil, Rounding::Away, 3.5f});
}

// The API (OpenMP over row chunks, any thread count) equals single-threaded ref on the whole tensor.
TEST_F(QuantCpu, ApiThreadedMatchesRef) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3, 4}) {
    omp_set_num_threads(threads);
    for (Scheme s : kAllSchemes)
      for (DType d : kFloatDTypes) {
        const int64_t rows = 67, k = traits(s).block * 129;  // several row chunks, odd rows
        const auto x = make_rows(traits(s).block, rows, k, 1000 + uint32_t(threads));
        QuantParams p{s, ScaleRule::RCeil, Rounding::Away, 1.0f};
        if (traits(s).tensor_scale) p.global_scale = nvfp4_global_scales(x)[1];
        const Input in = store_rows(x, d, rows, k, k);
        Tensor t(d, {rows, k});
        std::memcpy(t.data.data(), in.raw.data(), in.raw.size());
        const std::string what = name_of(p, d) + " threads=" + std::to_string(threads);

        std::vector<uint8_t> wc(size_t(rows * packed_row_bytes(s, k))), ws(size_t(rows * k / traits(s).block));
        ref::quantize_rows(in.f32.data(), rows, k, k, p, wc.data(), packed_row_bytes(s, k), ws.data(), k / traits(s).block);
        const QuantizedTensor q = quantize(t, p, what);
        EXPECT_EQ(compare_bytes(q.codes.data, wc, what + " codes"), 0);
        EXPECT_EQ(compare_bytes(q.scales.data, ws, what + " scales"), 0);

        std::vector<float> wy(size_t(rows * k));
        ref::qdq_rows(in.f32.data(), rows, k, k, p, wy.data(), k);
        Tensor want(d, {rows, k});
        from_f32(wy.data(), rows * k, d, want.data.data());
        EXPECT_EQ(compare_bytes(qdq(t, p, what).data, want.data, what + " qdq"), 0);

        ref::dequantize_rows(wc.data(), packed_row_bytes(s, k), ws.data(), k / traits(s).block, rows, k, p, wy.data(), k);
        for (DType yd : kFloatDTypes) {
          Tensor wd(yd, {rows, k});
          from_f32(wy.data(), rows * k, yd, wd.data.data());
          EXPECT_EQ(compare_bytes(dequantize(q, yd).data, wd.data, what + " dequantize"), 0);
        }
      }
  }
  omp_set_num_threads(saved);
}
