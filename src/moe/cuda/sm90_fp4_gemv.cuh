// Device pieces of the decode-shaped FP4 expert GEMM, shared by the grouped GEMV kernel
// (sm90_fp4_moe_gemv.cu) and the fused small-T layer kernel (sm90_fp4_moe_fused.cu): one warp computes
// one m-tile (16 weight rows) against at most 8 staged tokens.
//  - Weights: each thread reads 16 bytes of packed codes (32 FP4 elements) per row per 128-chunk with
//    ld.global.nc.L1::no_allocate, a ring of kDepth chunks in flight in registers; the block scales likewise.
//  - Decode: per scale byte a 16-byte lookup table in shared memory (the bf16 values of the 8 E2M1
//    magnitudes times the scale multiplier, split into high-byte and low-byte tables); 8 codes -> 4 bf16
//    pairs is 4 table prmt + 2 sign prmt + 4 combining prmt. The table holds exactly the values the tiled
//    kernel computes (bf16(|q| * m) with the CPU's float32 product; the sign is the bf16 sign bit), so the
//    kernels feed the tensor cores identical operands.
//  - Activations (bf16) in shared memory in the thread-fragment order (conflict-free 16-byte reads), see
//    frag_offset; products on bf16 mma.sync m16n8k16 with the tiled kernel's K permutation.
#pragma once
#include "moe/cuda/fp4_weight_tiles.hpp"
#include "moe/cuda/sm80_moe_gemm.cuh"

namespace mxmoe::moe::cuda::gemv {

using gemm::mma_bf16;
using gemm::pack_bf16x2;
using gemm::WT;

constexpr int kTok = 8;  // tokens per m-tile product (the mma's N)
constexpr int kLutBytes = 256 * 16;

// Row stride (bytes) of one staged token of K elements: 256 bytes per 128-chunk plus 64 bytes of pad.
__host__ __device__ constexpr int row_stride(int64_t K) { return int(((K + 127) / 128) * 256 + 64); }

// Byte offset of element k (a multiple of 8: one 16-byte unit) of staged token j.
__device__ __forceinline__ int frag_offset(int j, int k, int rs_bytes) {
  return j * rs_bytes + (k >> 7) * 256 + ((k >> 3) & 3) * 64 + ((k >> 5) & 3) * 16;
}

// One thread's raw data of one row and chunk: 16 bytes of codes (32 elements) and its scale bytes.
struct Raw {
  uint4 c;
  uint32_t s;
};

__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// cp / sp: the 16 code bytes and the scale bytes of one lane's 32 elements (wtiles::Stream, either layout).
template <WKind W>
__device__ __forceinline__ void load_raw(const uint8_t* cp, const uint8_t* sp, bool valid, Raw& r) {
  if (!valid) {
    r.c = make_uint4(0, 0, 0, 0), r.s = 0;
    return;
  }
  r.c = ldg_stream(cp);
  if constexpr (W == WKind::NVFP4) r.s = __ldg(reinterpret_cast<const uint16_t*>(sp));
  else r.s = __ldg(sp);
}

// The 16-byte table of one scale multiplier m: bf16(v * m) for v = 0, .5, 1, 1.5, 2, 3, 4, 6; words
// {high bytes 0-3, high bytes 4-7, low bytes 0-3, low bytes 4-7}.
__device__ __forceinline__ uint4 make_lut(float m) {
  const uint32_t p01 = pack_bf16x2(cc::mul_rn(0.0f, m), cc::mul_rn(0.5f, m));
  const uint32_t p23 = pack_bf16x2(cc::mul_rn(1.0f, m), cc::mul_rn(1.5f, m));
  const uint32_t p45 = pack_bf16x2(cc::mul_rn(2.0f, m), cc::mul_rn(3.0f, m));
  const uint32_t p67 = pack_bf16x2(cc::mul_rn(4.0f, m), cc::mul_rn(6.0f, m));
  return make_uint4(__byte_perm(p01, p23, 0x7531), __byte_perm(p45, p67, 0x7531), __byte_perm(p01, p23, 0x6420),
                    __byte_perm(p45, p67, 0x6420));
}

// The 256 tables of expert e (threads of the CTA share the work; the caller synchronizes).
template <WKind W>
__device__ __forceinline__ void build_luts(uint4* lut, const GemmArgs& a, int e) {
  const float vllm_gs = (W == WKind::NVFP4 && a.vllm) ? a.w_gs[e] : 0.0f;
  for (int b = threadIdx.x; b < 256; b += blockDim.x) lut[b] = make_lut(gemm::scale_mult<W>(uint32_t(b), vllm_gs));
}

// 8 E2M1 codes (nibble i = code i) -> 4 bf16 pairs (codes 2i, 2i+1) of the scaled values.
__device__ __forceinline__ void decode8(uint32_t w, const uint4& L, uint32_t* out) {
  const uint32_t m = w & 0x77777777u, w4 = w << 4;
  uint32_t hb0 = __byte_perm(L.x, L.y, m & 0xffffu), lb0 = __byte_perm(L.z, L.w, m & 0xffffu);
  uint32_t hb1 = __byte_perm(L.x, L.y, m >> 16), lb1 = __byte_perm(L.z, L.w, m >> 16);
  hb0 |= __byte_perm(w, w4, 0x1504) & 0x80808080u;  // sign of code i -> bit 7 of high byte i
  hb1 |= __byte_perm(w, w4, 0x3726) & 0x80808080u;
  out[0] = __byte_perm(lb0, hb0, 0x5140), out[1] = __byte_perm(lb0, hb0, 0x7362);
  out[2] = __byte_perm(lb1, hb1, 0x5140), out[3] = __byte_perm(lb1, hb1, 0x7362);
}

// The table of half h (codes 0-15 / 16-31) of a lane's chunk part: NVFP4 has a scale byte per half,
// MXFP4 one for both.
template <WKind W>
__device__ __forceinline__ uint4 half_table(const Raw& r, const uint4* lut, int h) {
  return lut[(W == WKind::NVFP4 && h == 1 ? r.s >> 8 : r.s) & 0xffu];
}

template <WKind W>
__device__ __forceinline__ void decode_raw(const Raw& r, const uint4* lut, uint32_t out[16]) {
  const uint4 L0 = half_table<W>(r, lut, 0);
  const uint4 L1 = W == WKind::NVFP4 ? half_table<W>(r, lut, 1) : L0;
  decode8(r.c.x, L0, out), decode8(r.c.y, L0, out + 4);
  decode8(r.c.z, L1, out + 8), decode8(r.c.w, L1, out + 12);
}

// Rows of an m-tile and the row modes: fp4_weight_tiles.hpp.
using wtiles::tile_row;
__device__ __forceinline__ int row_mode(const GemmArgs& a, bool gated) { return wtiles::row_mode(gated, a.act); }

// Where lane quarter t of local row r of m-tile mt of expert e reads its FP4 weights (either layout).
template <WKind W>
__device__ __forceinline__ wtiles::Stream weight_stream(const GemmArgs& a, int mode, int e, int mt, int r, int t) {
  return wtiles::stream(a.codes, a.scales, a.w_tiles, WT<W>::block, a.N, a.K, mode, e, mt, r, t);
}

// One warp's weight stream over the K chunks kg, kg + ksplit, ... of 16-row m-tiles, kDepth chunks in
// flight in registers (~37 KB per SM in the fused kernel's 8 warps, ~74 KB in the GEMV's 16); an L2
// prefetch of the codes a.l2_ahead chunks further adds more without registers (measured worth ~1 us at
// T = 1, bench/RESULTS.md v6). Two ways to drive it:
//  - per item (the fused kernel): start() issues the first kDepth chunks of one m-tile (call it before
//    staging, so the loads overlap it); run() multiplies them all.
//  - across items (the GEMV kernel, stream_items): a CTA works through a run of items and each warp
//    multiplies its m-tile of each in rounds of kDepth chunks; while round r is multiplied, each slot is
//    refilled with the next round's chunk, which after an item's last round is the first round of the
//    next item (aim() points the loads there). So the chunks in flight cover the epilogue, restaging
//    and barriers between items instead of restarting from DRAM latency each item.
// The fused kernel keeps the per-item way: on the H200 the across-items code made its T = 1 layer
// ~2.5 us slower (bench/RESULTS.md v9: it has one item per CTA there, so nothing to gain).
template <WKind W, int kDepth>
struct WeightStream {
  const uint8_t* rc[2];
  const uint8_t* rsc[2];
  Raw buf[kDepth][2];
  int64_t cs, ss;  // bytes per chunk of the codes and scales (wtiles::strides)
  int kg, ksplit, nch, K, ahead;
  bool ok;  // the aimed m-tile exists

  __device__ __forceinline__ void init(const GemmArgs& a, int kg_, int ksplit_) {
    kg = kg_, ksplit = ksplit_, K = a.K, nch = (a.K + 127) / 128, ahead = a.l2_ahead;
    const wtiles::Strides st = wtiles::strides(a.w_tiles, WT<W>::block);
    cs = st.cs, ss = st.ss;
  }

  // Points the loads at m-tile mt of expert e (mt_ok false: loads of zeros).
  __device__ __forceinline__ void aim(const GemmArgs& a, int e, int mode, int mt, bool mt_ok) {
    const int lane = threadIdx.x & 31;
    ok = mt_ok;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const wtiles::Stream p = weight_stream<W>(a, mode, e, mt_ok ? mt : 0, (lane >> 2) + 8 * h, lane & 3);
      rc[h] = p.c, rsc[h] = p.s;
    }
  }

  // Chunk c of the aimed m-tile into slot d (nothing past the end); prefetch: with the L2 prefetch
  // a.l2_ahead chunks further.
  template <bool kPrefetch>
  __device__ __forceinline__ void load(int d, int c) {
    const int t = threadIdx.x & 3;
    const bool v = ok && c < nch && int64_t(c) * 128 + 32 * t < K;
#pragma unroll
    for (int h = 0; h < 2; ++h) load_raw<W>(rc[h] + c * cs, rsc[h] + c * ss, v, buf[d][h]);
    const int cp = c + ahead * ksplit;  // the code bytes of chunk cp of rows g, g + 8 (lane quarter 0)
    if (kPrefetch && ahead > 0 && t == 0 && ok && cp < nch)
#pragma unroll
      for (int h = 0; h < 2; ++h) asm volatile("prefetch.global.L2 [%0];" ::"l"(rc[h] + cp * cs));
  }

  // This lane's part of chunk c lies inside K. mma.sync is warp-wide: lanes past K (last chunk when
  // K % 128 != 0) multiply zeros.
  __device__ __forceinline__ bool in_k(int c) const { return int64_t(c) * 128 + 32 * (threadIdx.x & 3) < K; }

  // The products of chunk c: decoded weights aw times the staged activations at brow (zeros where !kv),
  // the even k16 steps into acc0 and the odd ones into acc1 (the same array: one chain).
  __device__ __forceinline__ void products(const uint32_t (&aw)[2][16], const uint8_t* brow, int c, bool kv,
                                           float acc0[4], float acc1[4]) const {
    uint32_t bw[16];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint4 v = kv ? *reinterpret_cast<const uint4*>(brow + c * 256 + q * 64) : make_uint4(0, 0, 0, 0);
      bw[4 * q] = v.x, bw[4 * q + 1] = v.y, bw[4 * q + 2] = v.z, bw[4 * q + 3] = v.w;
    }
#pragma unroll
    for (int s = 0; s < 8; ++s)
      mma_bf16((s & 1) ? acc1 : acc0, aw[0][2 * s], aw[1][2 * s], aw[0][2 * s + 1], aw[1][2 * s + 1], bw[2 * s],
               bw[2 * s + 1]);
  }

  // ---- per item ----
  __device__ __forceinline__ void start(const GemmArgs& a, int e, int mode, int mt, bool mt_ok, int kg_, int ksplit_) {
    init(a, kg_, ksplit_);
    aim(a, e, mode, mt, mt_ok);
#pragma unroll
    for (int d = 0; d < kDepth; ++d) load<false>(d, kg + d * ksplit);
  }

  // brow: this lane's token row in the staged activations (frag order) + 16 * (lane % 4).
  __device__ __forceinline__ void run(const uint4* lut, const uint8_t* brow, float acc[4]) {
    for (int c0 = kg; c0 < nch; c0 += kDepth * ksplit) {
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        const int c = c0 + d * ksplit;
        if (c < nch) {
          const bool kv = in_k(c);
          uint32_t aw[2][16];
          decode_raw<W>(buf[d][0], lut, aw[0]);
          decode_raw<W>(buf[d][1], lut, aw[1]);
          load<true>(d, c + kDepth * ksplit);
          products(aw, brow, c, kv, acc, acc);
        }
      }
    }
  }

  // ---- across items ----
  // Rounds of one item: every warp of the CTA makes the same number (the K groups' chunk counts differ
  // by one where ksplit does not divide the chunks; the missing slots are skipped).
  __device__ __forceinline__ int rounds() const { return ((nch + ksplit - 1) / ksplit + kDepth - 1) / kDepth; }
  // Chunk of slot d in round r (round rounds(): past the end).
  __device__ __forceinline__ int chunk(int r, int d) const { return kg + (r * kDepth + d) * ksplit; }

  // Multiplies round r (in the slots) and refills each slot with round rn of the aimed m-tile. Two
  // accumulator sets (the even and the odd k16 steps, added at the item's end) halve the chain of
  // dependent mma.sync.
  __device__ __forceinline__ void mma_round(const uint4* lut, const uint8_t* brow, int r, int rn, float acc[2][4]) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      const int c = chunk(r, d);
      if (c < nch) {  // warp-uniform
        const bool kv = in_k(c);
        // The slot's raw data and tables are taken first, so the refill can be issued at once; then each
        // quarter (8 codes of both rows) is decoded right before its two k16 steps: 8 live weight words
        // instead of 32 (122 instead of 128 registers; ~2% at T = 8-64, bench/RESULTS.md v10).
        const Raw r0 = buf[d][0], r1 = buf[d][1];
        load<true>(d, chunk(rn, d));
        const uint32_t w0[4] = {r0.c.x, r0.c.y, r0.c.z, r0.c.w}, w1[4] = {r1.c.x, r1.c.y, r1.c.z, r1.c.w};
        uint4 L0 = half_table<W>(r0, lut, 0), L1 = half_table<W>(r1, lut, 0);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          if (W == WKind::NVFP4 && q == 2) L0 = half_table<W>(r0, lut, 1), L1 = half_table<W>(r1, lut, 1);
          uint32_t a0[4], a1[4];
          decode8(w0[q], L0, a0);
          decode8(w1[q], L1, a1);
          const uint4 v = kv ? *reinterpret_cast<const uint4*>(brow + c * 256 + q * 64) : make_uint4(0, 0, 0, 0);
          mma_bf16(acc[0], a0[0], a1[0], a0[1], a1[1], v.x, v.y);
          mma_bf16(acc[1], a0[2], a1[2], a0[3], a1[3], v.z, v.w);
        }
      } else {
        load<true>(d, chunk(rn, d));
      }
    }
  }
};

// Adds the K groups' partial sums through shared memory `red` (one float4 per thread) in group order
// (deterministic). Warps w and w + mpc * q share an m-tile. Returns false for the warps that are done.
// Every thread of the CTA must call it (it synchronizes).
__device__ __forceinline__ bool reduce_ksplit(float4* red, int ksplit, int mpc, float acc[4]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, kg = warp / mpc;
  red[warp * 32 + lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
  __syncthreads();
  if (kg != 0) return false;
#pragma unroll 1
  for (int q = 1; q < ksplit; ++q) {
    const float4 v = red[(q * mpc + warp) * 32 + lane];
    acc[0] += v.x, acc[1] += v.y, acc[2] += v.z, acc[3] += v.w;
  }
  return true;
}

// GEMM1's output of m-tile mt of expert e in this lane: column 8 mt + lane / 4 for tokens 2 (lane % 4)
// and + 1 (finish_acc of the gate and up rows, the gated activation, vllm mode's bf16 rounding).
__device__ __forceinline__ void mtile_act(const GemmArgs& a, int e, float alpha, int mode, int mt, const float acc[4],
                                          float v[2]) {
  const int g = (threadIdx.x & 31) >> 2, I = a.N / 2;
  const int r0 = tile_row(mode, mt, g, I), r1 = tile_row(mode, mt, g + 8, I);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    v[j] = gated_act(a.act, finish_acc(a, e, alpha, acc[j], r0), finish_acc(a, e, alpha, acc[2 + j], r1), a.act_alpha,
                     a.act_limit);
    if (a.vllm) v[j] = round_bf16(v[j]);
  }
}

// Epilogue of one m-tile of expert e for its n tokens (rows p0 .. p0 + n - 1 of y): alpha, bias, vllm
// bf16 rounding, and for GEMM1 (GATED) the gated activation and the amax atomics.
template <bool GATED>
__device__ __forceinline__ void store_mtile(const GemmArgs& a, int e, float alpha, int mode, int mt, const float acc[4],
                                            int n, int64_t p0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, I = a.N / 2;
  if constexpr (GATED) {
    float amax = 0.0f, v[2];
    mtile_act(a, e, alpha, mode, mt, acc, v);
    const int col = 8 * mt + g;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int tok = 2 * t + j;
      if (tok >= n) continue;
      a.y[(p0 + tok) * a.ldy + col] = v[j];
      amax = fmaxf(amax, fabsf(v[j]));
    }
    amax_outputs(a, e, amax);
  } else {
    const int r0 = tile_row(mode, mt, g, I), r1 = tile_row(mode, mt, g + 8, I);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int tok = 2 * t + j;
      if (tok >= n) continue;
      store_y(a, (p0 + tok) * a.ldy + r0, finish_acc(a, e, alpha, acc[j], r0));
      store_y(a, (p0 + tok) * a.ldy + r1, finish_acc(a, e, alpha, acc[2 + j], r1));
    }
  }
}

// Shared memory of stream_items' K-split sums: two buffers of one float4 per thread, so that an item's
// writes never meet the previous item's reads (a barrier lies between them).
__host__ __device__ constexpr int red_bytes(int threads) { return 2 * threads * 16; }

// A CTA's run of items [first, last) of one grouped GEMM: item i is m-tile group i % groups (mpc =
// kWarps / ksplit m-tiles, one per warp, with ksplit warps each) of tile i / groups. `items` gives
//   int4 tile(int ti)  {expert, first row, rows (at most kTok), -}
//   void stage(int ti, int e, int p0, int n)  the tile's n rows into `act` (frag order, row stride rs);
//                                              called by every thread
//   float alpha(int e)  the accumulator factor of expert e
// The scale tables are built when the expert needs other ones (NVFP4 vllm: per expert), the rows are
// restaged when the tile changes; each warp's weight stream runs on across items (WeightStream). Every
// thread of the CTA calls it (it synchronizes); first < last.
template <WKind W, bool GATED, int kDepth, class Items>
__device__ __forceinline__ void stream_items(const GemmArgs& g, const Items& items, int groups, int ksplit, int first,
                                             int last, uint4* lut, uint8_t* act, int rs, float4* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g8 = lane >> 2, t = lane & 3;
  const int mpc = int(blockDim.x >> 5) / ksplit, M16 = g.N / 16, mode = row_mode(g, GATED);
  const bool lut_per_expert = W == WKind::NVFP4 && g.vllm;
  auto mtile = [&](int item) { return (item % groups) * mpc + warp % mpc; };
  WeightStream<W, kDepth> ws;
  ws.init(g, warp / mpc, ksplit);
  const int rounds = ws.rounds();
  ws.aim(g, items.tile(first / groups).x, mode, mtile(first), mtile(first) < M16);
#pragma unroll
  for (int d = 0; d < kDepth; ++d) ws.template load<true>(d, ws.chunk(0, d));
  int staged = -1, lut_e = -1;
  for (int item = first; item < last; ++item) {
    const int ti = item / groups, mt = mtile(item);
    const int4 td = items.tile(ti);
    const int e = td.x, p0 = td.y, n = td.z;
    if (ti != staged) {
      if (staged >= 0) __syncthreads();  // every warp is done with the previous rows and tables
      if (lut_e < 0 || (lut_per_expert && e != lut_e)) build_luts<W>(lut, g, e), lut_e = e;
      items.stage(ti, e, p0, n);
      __syncthreads();
      staged = ti;
    }
    const uint8_t* brow = act + (g8 < n ? g8 : 0) * rs + t * 16;  // rows >= n: any valid data (discarded)
    float part[2][4] = {};
    for (int r = 0; r < rounds; ++r) {
      int rn = r + 1;
      if (rn == rounds && item + 1 < last) {  // refill with the next item's first round
        rn = 0;
        ws.aim(g, items.tile((item + 1) / groups).x, mode, mtile(item + 1), mtile(item + 1) < M16);
      }
      ws.mma_round(lut, brow, r, rn, part);
    }
    float acc[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i] = part[0][i] + part[1][i];
    const bool lead = ksplit == 1 || reduce_ksplit(red + (item & 1) * blockDim.x, ksplit, mpc, acc);
    if (lead && mt < M16) store_mtile<GATED>(g, e, items.alpha(e), mode, mt, acc, n, p0);
  }
}

}  // namespace mxmoe::moe::cuda::gemv
