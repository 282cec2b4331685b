// The device layout of FP4 expert weights (NVFP4, MXFP4): the GEMV kernel's m-tiles stored contiguously.
//
// In the checkpoint's row layout a warp of the GEMV streams 64 bytes from each of 16 rows per 128-wide
// chunk (lane 4 g + t: 16 bytes of rows g and g + 8 of its m-tile), so every DRAM access is a 64-byte
// piece of a row 1 KB or more from the next. Here the 16 rows x 64 bytes of one (expert, m-tile, chunk)
// are one 1 KB block, in the order the lanes read them, and the blocks of an m-tile follow each other,
// so a warp's weight stream is one sequential run. The values and the K order are unchanged: every
// kernel decodes the same codes into the same operands (only its addresses change).
//
//   codes: block (e, mt, c) at ((e * M16 + mt) * chunks + c) * 1024; slot s = 32 h + 4 g + t of it, 16
//          bytes at 16 s, holds codes [128 c + 32 t, + 32) of row tile_row(mode, mt, g + 8 h)
//   scales: the same blocks and slots, scale_bytes(block) per slot (the 32 codes' scale bytes: NVFP4 two,
//           MXFP4 one)
// Rows past N and codes past K are zero. M16 = ceil(N / 16), chunks = ceil(K / 128).
// The layout follows the projection's row mode (tile_row): the GEMM1 weights are stored by gate / up
// pairs, as the kernels' m-tiles pair them. MXMOE_CUDA_WEIGHT_TILES=0 keeps the row layout.
#pragma once
#include <cstdint>
#include <cstring>

#include "core/host_device.hpp"

namespace mxmoe::moe::cuda::wtiles {

constexpr int kChunk = 128, kBlockBytes = 1024, kSlots = 64;

// 0 plain, 1 gated halves (gate rows [0, I), up rows [I, 2I)), 2 gpt-oss interleaved (gate 2u, up 2u + 1);
// act: the Activation value (3: SwiGLUOAI).
MXMOE_HD int row_mode(bool gated, int act) { return gated ? (act == 3 ? 2 : 1) : 0; }

// Row of local row r (0..15) of m-tile mt; gated m-tiles: rows g / g + 8 are the gate / up rows of output
// column 8 * mt + g.
MXMOE_HD int tile_row(int mode, int mt, int r, int I) {
  if (mode == 0) return 16 * mt + r;
  const int u = 8 * mt + (r & 7);
  return mode == 1 ? (r < 8 ? u : I + u) : 2 * u + (r >> 3);
}

// The m-tile and local row of row `row` of one expert (tile_row's inverse).
MXMOE_HD void locate(int mode, int row, int I, int& mt, int& r) {
  if (mode == 0) {
    mt = row >> 4, r = row & 15;
  } else if (mode == 1) {
    const int u = row < I ? row : row - I;
    mt = u >> 3, r = (u & 7) + (row < I ? 0 : 8);
  } else {
    mt = row >> 4, r = ((row >> 1) & 7) + 8 * (row & 1);
  }
}

MXMOE_HD int scale_bytes(int block) { return 32 / block; }  // per slot: NVFP4 (16) 2, MXFP4 (32) 1
MXMOE_HD int64_t mtiles(int64_t N) { return (N + 15) / 16; }
MXMOE_HD int64_t chunks(int64_t K) { return (K + kChunk - 1) / kChunk; }
MXMOE_HD int slot(int r, int t) { return 32 * (r >> 3) + 4 * (r & 7) + t; }

// Where one lane quarter t of local row r of m-tile mt reads its weights: chunk c's 16 code bytes at
// c + chunk * cs, its scale bytes at s + chunk * ss. The same for both layouts, so kernels step chunks
// alike; a 64-wide half chunk (tile128) is + 32 code bytes and + 2 scale_bytes further.
struct Stream {
  const uint8_t* c;
  const uint8_t* s;
};
struct Strides {
  int64_t cs, ss;
};

MXMOE_HD Strides strides(bool tiles, int block) {
  const int sb = scale_bytes(block);
  return tiles ? Strides{kBlockBytes, int64_t(kSlots) * sb} : Strides{kChunk / 2, int64_t(4) * sb};
}

// codes / scales: the projection's arrays; N x K per expert, row_bytes = K / 2, mode: its row mode.
MXMOE_HD Stream stream(const uint8_t* codes, const uint8_t* scales, bool tiles, int block, int64_t N, int64_t K,
                       int mode, int e, int mt, int r, int t) {
  const int sb = scale_bytes(block);
  if (tiles) {
    const int64_t b0 = (int64_t(e) * mtiles(N) + mt) * chunks(K);
    const int s = slot(r, t);
    return {codes + b0 * kBlockBytes + 16 * s, scales + b0 * kSlots * sb + int64_t(s) * sb};
  }
  const int64_t row = int64_t(e) * N + tile_row(mode, mt, r, int(N / 2));
  return {codes + row * (K / 2) + 16 * t, scales + row * (K / block) + int64_t(t) * sb};
}

// Host: one expert's bytes in the tiled layout, and its m-tile blocks from the row layout (codes
// [N][K / 2], scales [N][K / block]) into tc / ts (its first block; zeroed by the caller: rows past N and
// codes past K stay zero). Packing straight from each expert's tensors needs no row-layout staging copy.
inline int64_t expert_code_bytes(int64_t N, int64_t K) { return mtiles(N) * chunks(K) * kBlockBytes; }
inline int64_t expert_scale_bytes(int64_t N, int64_t K, int block) {
  return mtiles(N) * chunks(K) * kSlots * scale_bytes(block);
}
inline void pack_expert(const uint8_t* codes, const uint8_t* scales, int64_t N, int64_t K, int block, int mode,
                        uint8_t* tc, uint8_t* ts) {
  const int64_t M16 = mtiles(N), nch = chunks(K), rb = K / 2, nb = K / block;
  const int sb = scale_bytes(block);
  for (int64_t mt = 0; mt < M16; ++mt)
    for (int r = 0; r < 16; ++r) {
      if (16 * mt + r >= N) continue;  // a partial last m-tile (mode 0 only: gated N is a multiple of 16)
      const int64_t row = tile_row(mode, int(mt), r, int(N / 2));
      for (int64_t c = 0; c < nch; ++c)
        for (int t = 0; t < 4; ++t) {
          const int64_t k0 = kChunk * c + 32 * t;
          if (k0 >= K) break;
          const int64_t b = mt * nch + c, n = (K - k0 < 32 ? K - k0 : 32);
          const int s = slot(r, t);
          uint8_t* dc = tc + b * kBlockBytes + 16 * s;
          uint8_t* ds = ts + (b * kSlots + s) * sb;
          const uint8_t* sc = codes + row * rb + k0 / 2;
          const uint8_t* ss = scales + row * nb + k0 / block;
          if (n == 32) {  // whole slots: constant sizes, inlined copies
            std::memcpy(dc, sc, 16);
            if (sb == 2) std::memcpy(ds, ss, 2);
            else *ds = *ss;
          } else {
            std::memcpy(dc, sc, size_t(n / 2));
            std::memcpy(ds, ss, size_t(n / block));
          }
        }
    }
}

}  // namespace mxmoe::moe::cuda::wtiles
