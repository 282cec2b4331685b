// The tensor-level API: qdq into a reused output.
#include <gtest/gtest.h>

#include "mxmoe/quant.hpp"
#include "test_util.hpp"

using namespace mxmoe;

TEST(QuantApi, QdqIntoReusesTheOutputAndMatchesQdq) {
  const QuantParams p{Scheme::MXFP4, ScaleRule::Even, Rounding::RNE};
  const Tensor a = test::random_tensor(DType::BF16, {33, 64}, 1), b = test::random_tensor(DType::BF16, {33, 64}, 2);
  Tensor y;
  qdq(a, p, y);
  EXPECT_EQ(test::count_bit_mismatches(y, qdq(a, p), "a"), 0);
  const uint8_t* buf = y.data.data();
  qdq(b, p, y);
  EXPECT_EQ(y.data.data(), buf) << "same-sized output must be reused";
  EXPECT_EQ(test::count_bit_mismatches(y, qdq(b, p), "b"), 0);
  // A different shape and dtype resizes the output.
  const Tensor c = test::random_tensor(DType::F32, {5, 96}, 3);
  qdq(c, p, y);
  EXPECT_EQ(y.dtype, DType::F32);
  EXPECT_EQ(y.shape, c.shape);
  EXPECT_EQ(test::count_bit_mismatches(y, qdq(c, p), "c"), 0);
  Tensor self = c;
  test::expect_error([&] { qdq(self, p, self, "self"); }, "its own input");
  test::expect_error([&] { qdq(test::random_tensor(DType::F32, {2, 20}, 4), p, y, "odd"); }, "not a multiple");
}
