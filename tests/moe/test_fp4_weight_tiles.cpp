// The FP4 m-tile weight layout of the CUDA backend (src/moe/cuda/fp4_weight_tiles.hpp), on the host: every
// code and scale byte of the row layout lands where a kernel lane looks for it, through either layout's
// stream pointers, and nothing else is written.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "moe/cuda/fp4_weight_tiles.hpp"

namespace wt = mxmoe::moe::cuda::wtiles;

namespace {

struct Shape {
  int64_t N, K;
  int mode, block;
};

TEST(Fp4WeightTiles, RowOfEveryMtileSlotRoundTrips) {
  for (int mode : {0, 1, 2})
    for (int N : {32, 64, 320}) {
      const int I = N / 2;
      std::vector<int> seen(size_t(N), 0);
      for (int mt = 0; mt < N / 16; ++mt)
        for (int r = 0; r < 16; ++r) {
          const int row = wt::tile_row(mode, mt, r, I);
          ASSERT_GE(row, 0);
          ASSERT_LT(row, N);
          ++seen[size_t(row)];
          int m2 = -1, r2 = -1;
          wt::locate(mode, row, I, m2, r2);
          EXPECT_EQ(m2, mt) << "mode " << mode << " row " << row;
          EXPECT_EQ(r2, r) << "mode " << mode << " row " << row;
        }
      for (int row = 0; row < N; ++row) EXPECT_EQ(seen[size_t(row)], 1) << "mode " << mode << " row " << row;
    }
}

TEST(Fp4WeightTiles, PackPutsEveryByteWhereTheStreamsRead) {
  std::mt19937 rng(7);
  const Shape shapes[] = {{32, 256, 1, 16}, {48, 224, 0, 16}, {64, 352, 2, 32}, {352, 160, 0, 32}, {320, 96, 1, 32}};
  for (const Shape& sh : shapes) {
    const int64_t E = 3, rb = sh.K / 2, nb = sh.K / sh.block;
    std::vector<uint8_t> codes(size_t(E * sh.N * rb)), scales(size_t(E * sh.N * nb));
    for (uint8_t& b : codes) b = uint8_t(1 + rng() % 255);  // never 0, so the padding is what stays 0
    for (uint8_t& b : scales) b = uint8_t(1 + rng() % 255);
    const int64_t cb = wt::expert_code_bytes(sh.N, sh.K), sbytes = wt::expert_scale_bytes(sh.N, sh.K, sh.block);
    std::vector<uint8_t> tc(size_t(E * cb)), ts(size_t(E * sbytes));
    for (int64_t e = 0; e < E; ++e)
      wt::pack_expert(codes.data() + e * sh.N * rb, scales.data() + e * sh.N * nb, sh.N, sh.K, sh.block, sh.mode,
                      tc.data() + e * cb, ts.data() + e * sbytes);
    const std::string what = "N " + std::to_string(sh.N) + " K " + std::to_string(sh.K) + " mode " +
                             std::to_string(sh.mode) + " block " + std::to_string(sh.block);
    const wt::Strides rs = wt::strides(false, sh.block), ts_ = wt::strides(true, sh.block);
    size_t nonzero_c = 0, nonzero_s = 0;
    for (uint8_t b : tc) nonzero_c += b != 0;
    for (uint8_t b : ts) nonzero_s += b != 0;
    EXPECT_EQ(nonzero_c, codes.size()) << what << ": code bytes written besides the weights";
    EXPECT_EQ(nonzero_s, scales.size()) << what << ": scale bytes written besides the weights";
    for (int e = 0; e < int(E); ++e)
      for (int mt = 0; mt < int(sh.N / 16); ++mt)
        for (int r = 0; r < 16; ++r)
          for (int t = 0; t < 4; ++t) {
            const auto at = [&](const std::vector<uint8_t>& c, const std::vector<uint8_t>& s, bool tiles) {
              return wt::stream(c.data(), s.data(), tiles, sh.block, sh.N, sh.K, sh.mode, e, mt, r, t);
            };
            const wt::Stream a = at(codes, scales, false), b = at(tc, ts, true);
            for (int64_t c = 0; c < wt::chunks(sh.K); ++c) {
              const int64_t k0 = 128 * c + 32 * t;
              if (k0 >= sh.K) continue;
              const int n = int(sh.K - k0 < 32 ? sh.K - k0 : 32);
              for (int i = 0; i < n / 2; ++i)
                ASSERT_EQ(a.c[c * rs.cs + i], b.c[c * ts_.cs + i]) << what << " e " << e << " mt " << mt << " r " << r;
              for (int i = 0; i < n / sh.block; ++i)
                ASSERT_EQ(a.s[c * rs.ss + i], b.s[c * ts_.ss + i]) << what << " e " << e << " mt " << mt << " r " << r;
              // The row layout's pointer is the row's own bytes at k0.
              const int row = wt::tile_row(sh.mode, mt, r, int(sh.N / 2));
              ASSERT_EQ(a.c + c * rs.cs, codes.data() + (e * sh.N + row) * rb + k0 / 2) << what;
              ASSERT_EQ(a.s + c * rs.ss, scales.data() + (e * sh.N + row) * nb + k0 / sh.block) << what;
            }
          }
  }
}

}  // namespace
