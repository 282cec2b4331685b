// Exhaustive tests over every code of every element encoding.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "mxmoe/format.hpp"

using namespace mxmoe;

namespace {

std::vector<Encoding> all_encodings() {
  std::vector<Encoding> v;
  for (const auto& t : kEncodings) v.push_back(t.enc);
  return v;
}

// The codes whose round trip is not the identity, by design (see docs/numerics.md).
bool is_canonical(Encoding e, int c) {
  const float v = decode(e, uint8_t(c));
  if (std::isnan(v)) return c == traits(e).nan_code;
  if (e == Encoding::INT8) return c != 0x80;            // -128/64 is never produced (symmetric range)
  if (e == Encoding::UE4M3) return (c & 0x80) == 0;      // the sign bit is unused
  return true;
}

// Finite non-negative codes sorted by value, with their values.
std::vector<std::pair<int, double>> positive_codes(Encoding e) {
  std::vector<std::pair<int, double>> out;
  for (int c = 0; c < num_codes(e); ++c) {
    const float v = decode(e, uint8_t(c));
    if (std::isfinite(v) && v >= 0 && !std::signbit(v) && is_canonical(e, c)) out.push_back({c, v});
  }
  std::sort(out.begin(), out.end(), [](auto a, auto b) { return a.second < b.second; });
  return out;
}

}  // namespace

class EveryEncoding : public ::testing::TestWithParam<Encoding> {};

TEST_P(EveryEncoding, DecodeEncodeRoundTripEveryCode) {
  const Encoding e = GetParam();
  for (int c = 0; c < num_codes(e); ++c) {
    const float v = decode(e, uint8_t(c));
    for (Rounding r : {Rounding::RNE, Rounding::Away}) {
      const uint8_t back = encode(e, v, r);
      if (std::isnan(v)) {
        EXPECT_TRUE(std::isnan(decode(e, back))) << traits(e).name << " code " << c;
      } else if (is_canonical(e, c)) {
        EXPECT_EQ(back, c) << traits(e).name << " value " << v;
      } else {
        EXPECT_EQ(decode(e, back), e == Encoding::INT8 ? -127.0f / 64 : v) << traits(e).name << " code " << c;
      }
    }
  }
}

TEST_P(EveryEncoding, ValuesStrictlyIncreaseAndMaxMatchesTraits) {
  const Encoding e = GetParam();
  auto pos = positive_codes(e);
  ASSERT_GE(pos.size(), 2u);
  for (size_t i = 1; i < pos.size(); ++i) EXPECT_LT(pos[i - 1].second, pos[i].second);
  EXPECT_EQ(pos.back().second, traits(e).max_finite) << traits(e).name;
  if (traits(e).is_signed && e != Encoding::INT8) {
    // Sign-magnitude: the negative code mirrors the positive one.
    for (auto [c, v] : pos) EXPECT_EQ(decode(e, uint8_t(c | (1 << (traits(e).bits - 1)))), -v);
  }
}

TEST_P(EveryEncoding, EveryMidpointRoundsAsTheModeSays) {
  const Encoding e = GetParam();
  auto pos = positive_codes(e);
  for (size_t i = 1; i < pos.size(); ++i) {
    const auto [clo, lo] = pos[i - 1];
    const auto [chi, hi] = pos[i];
    const double mid = (lo + hi) / 2;
    ASSERT_EQ(double(float(mid)), mid) << "midpoint must be exact in float32";
    // RNE: the code with the even last mantissa bit (INT8: even integer; UE8M0: the larger power).
    int even = (e == Encoding::UE8M0) ? chi : ((clo & 1) == 0 ? clo : chi);
    EXPECT_EQ(encode(e, float(mid), Rounding::RNE), even) << traits(e).name << " tie " << mid;
    EXPECT_EQ(encode(e, float(mid), Rounding::Away), chi) << traits(e).name << " tie " << mid;
    // Off the tie both modes pick the nearer value.
    const float below = std::nextafter(float(mid), -1.0f), above = std::nextafter(float(mid), INFINITY);
    if (below > lo) EXPECT_EQ(encode(e, below, Rounding::Away), clo) << traits(e).name;
    if (above < hi) EXPECT_EQ(encode(e, above, Rounding::RNE), chi) << traits(e).name;
    if (traits(e).is_signed && e != Encoding::INT8) {
      EXPECT_EQ(encode(e, float(-mid), Rounding::Away), chi | (1 << (traits(e).bits - 1)));
    }
  }
}

TEST_P(EveryEncoding, SaturatesFiniteOverflowAndHandlesSpecials) {
  const Encoding e = GetParam();
  const auto& t = traits(e);
  const float big = float(t.max_finite) * 4;
  EXPECT_EQ(decode(e, encode(e, big, Rounding::RNE)), float(t.max_finite));
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (t.special == Special::IEEE) {
    EXPECT_TRUE(std::isinf(decode(e, encode(e, inf, Rounding::RNE))));
    EXPECT_TRUE(std::isnan(decode(e, encode(e, nan, Rounding::RNE))));
  } else {
    EXPECT_EQ(decode(e, encode(e, inf, Rounding::RNE)), float(t.max_finite));
  }
  if (t.special == Special::FnNaN || t.special == Special::ScaleNaN)
    EXPECT_TRUE(std::isnan(decode(e, encode(e, nan, Rounding::RNE))));
  if (t.special == Special::None) EXPECT_EQ(encode(e, nan, Rounding::RNE), 0) << "NaN maps to code 0";
  if (t.is_signed) {
    EXPECT_EQ(decode(e, encode(e, -big, Rounding::RNE)), -float(t.max_finite));
  } else {
    EXPECT_EQ(decode(e, encode(e, -1.0f, Rounding::RNE)), decode(e, 0)) << "negatives clamp to the smallest code";
  }
}

TEST_P(EveryEncoding, DecodeTableMatchesDecode) {
  const Encoding e = GetParam();
  const float* tab = decode_table(e);
  for (int c = 0; c < num_codes(e); ++c) {
    const float v = decode(e, uint8_t(c));
    if (std::isnan(v)) EXPECT_TRUE(std::isnan(tab[c]));
    else EXPECT_EQ(tab[c], v);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, EveryEncoding, ::testing::ValuesIn(all_encodings()),
                         [](const auto& info) { return std::string(traits(info.param).name); });

TEST(Encoding, KnownValueSets) {
  const float e2m1[] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  for (int c = 0; c < 8; ++c) EXPECT_EQ(decode(Encoding::E2M1, uint8_t(c)), e2m1[c]);
  EXPECT_EQ(decode(Encoding::E2M1, 0xf), -6.0f);
  EXPECT_EQ(decode(Encoding::E4M3, 0x7e), 448.0f);
  EXPECT_EQ(decode(Encoding::E4M3, 0x01), 0x1p-9f);
  EXPECT_TRUE(std::isnan(decode(Encoding::E4M3, 0xff)));
  EXPECT_EQ(decode(Encoding::E5M2, 0x7b), 57344.0f);
  EXPECT_EQ(decode(Encoding::E5M2, 0x01), 0x1p-16f);
  EXPECT_TRUE(std::isinf(decode(Encoding::E5M2, 0x7c)));
  EXPECT_EQ(decode(Encoding::E3M2, 0x1f), 28.0f);
  EXPECT_EQ(decode(Encoding::E3M2, 0x01), 0.0625f);
  EXPECT_EQ(decode(Encoding::E2M3, 0x1f), 7.5f);
  EXPECT_EQ(decode(Encoding::E2M3, 0x01), 0.125f);
  EXPECT_EQ(decode(Encoding::UE8M0, 127), 1.0f);
  EXPECT_EQ(decode(Encoding::UE8M0, 0), 0x1p-127f);
  EXPECT_EQ(decode(Encoding::UE8M0, 254), 0x1p127f);
  EXPECT_EQ(decode(Encoding::INT8, 0x7f), 127.0f / 64);
  EXPECT_EQ(decode(Encoding::INT8, 0x81), -127.0f / 64);
  // vLLM's E2M1 thresholds (REFERENCE.md section 3): ties .25->0 .75->1 1.25->1 1.75->2 2.5->2 3.5->4 5->4.
  const float ties[][2] = {{.25f, 0}, {.75f, 1}, {1.25f, 1}, {1.75f, 2}, {2.5f, 2}, {3.5f, 4}, {5, 4}};
  for (auto [x, y] : ties) EXPECT_EQ(decode(Encoding::E2M1, encode(Encoding::E2M1, x, Rounding::RNE)), y) << x;
}

TEST(Encoding, SubnormalInputsAndTinyValues) {
  EXPECT_EQ(encode(Encoding::E4M3, 1e-40f, Rounding::RNE), 0);
  EXPECT_EQ(encode(Encoding::E4M3, -1e-40f, Rounding::RNE), 0x80) << "sign of zero is kept";
  EXPECT_EQ(encode(Encoding::UE8M0, 1e-40f, Rounding::RNE), 0) << "below 2^-127 clamps to the smallest scale";
  EXPECT_EQ(encode(Encoding::UE8M0, 0x1p-127f, Rounding::RNE), 0);
}

TEST(Encoding, ParseNames) {
  EXPECT_EQ(parse_encoding("e3m2"), Encoding::E3M2);
  EXPECT_THROW(parse_encoding("e9m9"), std::exception);
  EXPECT_EQ(parse_rounding("away"), Rounding::Away);
  EXPECT_THROW(parse_rounding("up"), std::exception);
}
