// Shared test helpers: locating ../shared, bitwise comparison, relative L2 error, random data.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>

#include "mxmoe/error.hpp"
#include "mxmoe/tensor.hpp"

namespace mxmoe::test {

// Path of a file under ../shared, or "" (and the caller skips) when the folder is absent.
inline std::string shared_path(const std::string& rel) {
  const std::string p = std::string(MXMOE_SHARED_DIR) + "/" + rel;
  return std::filesystem::exists(p) ? p : std::string();
}

#define MXMOE_SKIP_WITHOUT_SHARED(var, rel)                                                   \
  const std::string var = ::mxmoe::test::shared_path(rel);                                     \
  if (var.empty()) GTEST_SKIP() << "../shared/" << (rel) << " is absent: golden test skipped"

// Counts elements whose bits differ, treating +0 == -0 and NaN == NaN. Prints the first few.
inline int64_t count_bit_mismatches(const Tensor& got, const Tensor& want, const std::string& what, int show = 5) {
  EXPECT_EQ(got.dtype, want.dtype) << what;
  EXPECT_EQ(got.shape, want.shape) << what;
  if (got.dtype != want.dtype || got.shape != want.shape) return -1;
  int64_t bad = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const float a = load_as_f32(got.data.data(), got.dtype, i), b = load_as_f32(want.data.data(), want.dtype, i);
    const bool same = (std::isnan(a) && std::isnan(b)) || a == b;  // a == b holds for +0 / -0
    if (!same && bad++ < show) ADD_FAILURE() << what << " [" << i << "]: got " << a << " want " << b;
  }
  return bad;
}

// Heavy-tailed random rows: normal values with occasional large outliers, so blocks see a range.
inline Tensor random_tensor(DType dt, std::vector<int64_t> shape, uint32_t seed, float scale = 1.0f) {
  Tensor t(dt, std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, scale);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = n(rng);
    if (u(rng) < 0.02f) v *= 30.f;
    store_from_f32(t.data.data(), dt, i, v);
  }
  return t;
}

// ||got - want|| / ||want|| over n float32 values, summed in double.
inline double rel_l2(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(got[i]) - want[i];
    num += d * d, den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}
inline double rel_l2(const Tensor& got, const Tensor& want) {
  return rel_l2(got.ptr<float>(), want.ptr<float>(), want.numel());
}

// The float64 reference of one GEMV output, alpha * (a . w) + bias over K terms, and the float32
// accumulation bound around it: 2 K 2^-24 times the sum of the products' magnitudes (any summation
// order), plus slack for the epilogue. want is NaN when the dot product is.
struct GemvRef {
  double want, bound;
};
inline GemvRef gemv_ref(const float* a, const float* w, int64_t K, float alpha, double bias) {
  double exact = 0, mag = 0;
  for (int64_t c = 0; c < K; ++c) {
    exact += double(a[c]) * w[c];
    mag += std::fabs(double(a[c]) * w[c]);
  }
  const double want = exact * alpha + bias;
  return {want, 2.0 * double(K) * 0x1p-24 * mag * alpha + 1e-6 * std::fabs(want) + 1e-30};
}

// Index of the first NaN or Inf of a float32 tensor, or -1.
inline int64_t first_nonfinite(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(t.ptr<float>()[i])) return i;
  return -1;
}

// Runs f and expects an mxmoe::Error whose message contains `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an mxmoe::Error containing '" << needle << "'";
  } catch (const mxmoe::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace mxmoe::test
