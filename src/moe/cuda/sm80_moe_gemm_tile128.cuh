// The grouped expert GEMM for many tokens per expert (prefill): CTA tile = 128 weight rows x 128 tokens
// of one expert, K in chunks of 64, bf16 mma.sync m16n8k16 from shared memory (ldmatrix); two CTAs per SM
// (<= 128 registers, 70 KB of shared memory), so one CTA's decode and barriers overlap the other's
// products (one CTA of 8 warps with 128-wide chunks kept the tensor pipe under 28% busy: RESULTS.md v6).
//
// The swap-AB kernel (sm80_moe_gemm.cuh) decodes a weight row once per 32 tokens and re-reads the
// activations per 32 weight rows; here each chunk of the weight tile is decoded once per 128 tokens into
// shared memory and every activation row is read once per 128 weight rows:
//  - per chunk, each thread loads 32 packed elements of one weight row (one chunk ahead, in registers)
//    and decodes them (FP4: the GEMV kernel's per-scale tables; else the tiled kernel's decode; the same
//    bf16 operand values either way) right after issuing the previous chunk's products, into a 128 x 64
//    bf16 tile (rows of 128 bytes, 16-byte units XOR-swizzled by row % 8 so ldmatrix is conflict-free);
//  - the tokens' bf16 rows (gathered through b_row) arrive by cp.async (zero-filled past K and past the
//    tile's tokens), issued right after the barrier for the next chunk: two buffers of each operand;
//    float32 rows (exact-mode a16 GEMM2) come as three bf16 planes, walked as three passes over K that
//    re-decode the weights (the products triple anyway);
//  - 8 warps = 2 (weight rows) x 4 (tokens), a 64 x 32 warp tile: 16 accumulators of 16 x 8;
//  - tile rows follow the GEMV kernel's m-tile rows (gemv::tile_row), so for GEMM1 a thread's rows g and
//    g + 8 are the gate and up rows of one output column; the epilogue is the GEMV kernel's, or for GEMM1
//    with static GEMM2-input scales (GemmArgs::yq) the activations of the CTA's 64 output columns staged
//    in shared memory and quantized there into GEMM2's bf16 input (no float32 round trip through memory).
//
// On sm_90a the products run on wgmma instead (WG = true): each warpgroup multiplies its 64 weight rows by
// all the tile's tokens (m64n128k16, or n64 when the tile has at most 64 tokens) straight from the same
// swizzled tiles, which are exactly wgmma's 128-byte-swizzle K-major layout, so the ldmatrix and mma.sync
// instructions that made the loop issue-bound leave the SMs' instruction stream. The products are issued
// before the next chunk's decode and waited for after it. What bounds it now is each warp's own chain of
// ~350 instructions per chunk between barriers (decode, copies, descriptors; RESULTS.md v7).
//
// Instantiated per weight kind in three translation units that compile in parallel:
// sm80_moe_gemm_tile128_fp4.cu (NVFP4, MXFP4, and the dispatch), _fp6.cu (MXFP6), _fp8_bf16.cu (MXFP8, BF16).
#pragma once
#include <type_traits>

#include "moe/cuda/moe_act_quant.cuh"
#include "moe/cuda/moe_heuristics.hpp"
#include "moe/cuda/sm90_fp4_gemv.cuh"
#include "moe/cuda/sm90_wgmma.cuh"

namespace mxmoe::moe::cuda {
namespace tile128 {

using gemm::Raw;
constexpr int kBN = 128, kKc = 64, kThreads = 256;
constexpr int kTileBytes = 128 * kKc * 2;  // one operand tile of one chunk

// Layout: A and B double buffered, the token rows' indices, the FP4 scale tables; + 1024 to align the
// tiles to wgmma's swizzle pattern. (Deeper pipelines did not pay on wgmma: three token stages were level,
// weights two chunks ahead in registers 7% slower; RESULTS.md v7.)
constexpr int kRowsOffset = 4 * kTileBytes;
constexpr int kLutOffset = kRowsOffset + kBN * 8;
constexpr int kSmemBytes = kLutOffset + gemv::kLutBytes + 1024;

// The fused GEMM2-input quantization's staging: 128 tokens x 64 columns of float32 (row stride 68: the
// writes of a warp's 8 columns x 4 token pairs hit 32 banks; 34 KB, inside the operand tiles).
constexpr int kStageLd = 68;
static_assert(128 * kStageLd * 4 <= 4 * kTileBytes, "staging fits in the operand tiles");

// The staged rows -> GEMM2's bf16 input (quant_rows' values, with yq's static scales). Lane l of warp w
// takes columns 4 (l % 16) .. + 3 of tokens 2 w + l / 16, + 16, ...: a scale block spans 4 (NVFP4) or 8
// (MX) lanes, which share its maximum by shuffles; cols: the CTA's columns inside I (a multiple of 32).
template <AQ Q>
__device__ __forceinline__ void quant_staged_q(const GemmArgs& a, int e, const float* st, int n, int64_t p0, int cols) {
  constexpr int L = QTraits<Q>::block / 4;
  const RowQuant rq = row_quant<Q>(a.yq_sc, a.vllm, a.yq_rule, a.yq_rounding, e);
  const int lane = threadIdx.x & 31, half = lane >> 4, c = 4 * (lane & 15);
  for (int t0 = 2 * (threadIdx.x >> 5); t0 < n; t0 += 2 * (kThreads / 32)) {  // warp-uniform
    const int tok = t0 + half;
    const bool ok = tok < n && c < cols;
    const float4 v4 = *reinterpret_cast<const float4*>(st + (ok ? tok : 0) * kStageLd + c);
    const float v[4] = {v4.x, v4.y, v4.z, v4.w};
    float amax = 0.0f;
    bool bad = false;
    if constexpr (aq_blocked(Q)) {
      scan_block<Q, 4>(v, amax, bad);
#pragma unroll
      for (int o = 1; o < L; o <<= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));  // never NaN: the comparisons skip it
        bad = __shfl_xor_sync(0xffffffffu, int(bad), o) | bad;
      }
    }
    const BlockQ p = block_params<Q>(amax, bad, rq);
    if (!ok) continue;
    uint32_t w[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) w[i] = quant_pair<Q>(v[2 * i], v[2 * i + 1], p, rq);
    *reinterpret_cast<uint2*>(a.yq + (p0 + tok) * a.ldy + 64 * int64_t(blockIdx.y) + c) = make_uint2(w[0], w[1]);
  }
}

__device__ __forceinline__ void quant_staged(const GemmArgs& a, int e, const float* st, int n, int64_t p0, int cols) {
  visit_aq(a.yq_aq, [&](auto q) { quant_staged_q<decltype(q)::value>(a, e, st, n, p0, cols); });
}

__device__ __forceinline__ uint32_t swz(int row, int unit) { return uint32_t(row * 128 + ((unit ^ (row & 7)) << 4)); }

template <WKind W, bool GATED, bool WG>
__global__ void __launch_bounds__(kThreads, 2) tile128_kernel(const GemmArgs a) {
  pdl_wait();
  extern __shared__ __align__(128) uint8_t smem_raw[];
  uint8_t* const smem = smem_raw + ((1024 - (sm80::smem_addr(smem_raw) & 1023)) & 1023);
  const int tile = blockIdx.x;
  if (tile >= *a.num_tiles) return;
  const int4 td = a.tiles[tile];
  const int e = td.x, p0 = td.y, n = td.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 2, wn = warp & 3;
  const int mode = gemv::row_mode(a, GATED), I = a.N / 2, M16 = a.N / 16;
  const uint32_t sbase = sm80::smem_addr(smem);
  const uint16_t** brows = reinterpret_cast<const uint16_t**>(smem + kRowsOffset);

  // This thread's weight row (tile row tid / 2, elements 32 * (tid % 2) .. + 31 of each chunk).
  const int tr = tid >> 1, th = tid & 1, mt = blockIdx.y * 8 + tr / 16;
  const bool row_ok = mt < M16;
  const int64_t wrow = int64_t(e) * a.N + (row_ok ? gemv::tile_row(mode, mt, tr % 16, I) : 0);
  constexpr int bits = gemm::WT<W>::bits;
  // FP4: the GEMV kernel's scale tables (same values as gemm::decode, a fifth of the instructions) and its
  // weight streams (either layout: a 64-wide chunk is half of one of theirs, lane quarter 2 (wk % 2) + th).
  constexpr bool kLut = W == WKind::NVFP4 || W == WKind::MXFP4;
  const wtiles::Stream ws = kLut ? gemv::weight_stream<W>(a, mode, e, row_ok ? mt : 0, tr % 16, th) : wtiles::Stream{};
  const wtiles::Strides wst = wtiles::strides(a.w_tiles, gemm::WT<W>::block);
  const uint8_t* rc = kLut ? ws.c : a.codes + wrow * (bits == 16 ? int64_t(a.K) * 2 : a.row_bytes);
  const uint8_t* rs = kLut ? ws.s : W == WKind::BF16 ? nullptr : a.scales + wrow * (a.K / gemm::WT<W>::block);
  const float vllm_gs = (W == WKind::NVFP4 && a.vllm) ? a.w_gs[e] : 0.0f;
  const uint4* lut = reinterpret_cast<const uint4*>(smem + kLutOffset);
  if constexpr (kLut) gemv::build_luts<W>(reinterpret_cast<uint4*>(smem + kLutOffset), a, e);
  std::conditional_t<kLut, gemv::Raw, Raw<W>> raw;
  // Step c multiplies chunk c % nch of B plane c / nch; the loads track (chunk, plane) with counters
  // (the loop is issue-bound: three integer divisions per step cost ~10% at T = 4096).
  const int nch = (a.K + kKc - 1) / kKc, nsteps = nch * a.b_terms;
  int wk = 0, bk = 0, bt = 0;  // chunk of the next weight load; chunk and plane of the next B load
  auto load_w = [&]() {
    const int64_t k0 = int64_t(wk) * kKc + 32 * th;
    if constexpr (kLut) {
      const int h = wk & 1, c = wk >> 1;
      gemv::load_raw<W>(rc + c * wst.cs + 32 * h, rs + c * wst.ss + 2 * h * wtiles::scale_bytes(gemm::WT<W>::block),
                        row_ok && k0 < a.K, raw);
    } else {
      gemm::load_raw<W>(a, rc, rs, k0, row_ok && k0 < a.K, raw);
    }
    if (++wk == nch) wk = 0;
  };
  // Units 4 th + u of row tr: swz(tr, 4 th + u) == swz(tr, 4 th) ^ (u << 4) (u < 4 flips only the unit's
  // low two bits), one value kept instead of rebuilding the swizzle from tid per chunk.
  const uint32_t wbase = swz(tr, 4 * th);
  auto store_w = [&](int buf) {
    uint32_t w[16];
    if constexpr (kLut) gemv::decode_raw<W>(raw, lut, w);
    else gemm::decode<W>(raw, vllm_gs, w);
#pragma unroll
    for (int u = 0; u < 4; ++u)
      *reinterpret_cast<uint4*>(smem + buf * kTileBytes + (wbase ^ (uint32_t(u) << 4))) =
          make_uint4(w[4 * u], w[4 * u + 1], w[4 * u + 2], w[4 * u + 3]);
  };
  // Token rows: thread tid copies unit tid % 8 of rows tid / 8 + 32 * i, i < 4 (128 rows x 8 units per
  // chunk). The rows' source addresses are fixed per tile: they wait in shared memory (nullptr past the
  // tile's tokens) and are re-read per chunk, since registers are short (acc takes 64 of 128) and the
  // compiler otherwise rebuilt them from the row indices every chunk (~60 instructions).
  if (tid < kBN) brows[tid] = tid < n ? a.b16 + (a.b_row ? a.b_row[p0 + tid] : p0 + tid) * a.ldb : nullptr;
  __syncthreads();
  const int unit = tid & 7;
  const uint32_t bdst = swz(tid >> 3, unit);  // + 32 * 128 * i for row tid / 8 + 32 i (same row % 8)
  auto load_b = [&](int buf) {
    const uint32_t base = sbase + uint32_t((2 + buf) * kTileBytes) + bdst;
    const bool kv = int64_t(bk) * kKc + 8 * unit < a.K;
    // Zero-filled copies (past K, or rows past the tile's tokens) read nothing, from an address inside
    // row 0 all the same.
    const int64_t off = int64_t(bt) * a.b_term_stride + (kv ? int64_t(bk) * kKc : 0) + 8 * unit;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint16_t* row = brows[(tid >> 3) + 32 * i];
      sm80::cp_async16(base + 32 * 128 * i, (row ? row : a.b16) + off, kv && row);
    }
    sm80::cp_async_commit();
    if (++bk == nch) bk = 0, ++bt;
  };

  // 16 accumulators of 16 x 8: mma.sync, acc + 4 (4 i + j) holds m-tile i, tokens 32 wn + 8 j; wgmma,
  // acc + 4 q holds this warp's m-tile, tokens 8 q.
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  load_w();
  load_b(0);
  store_w(0);
  if (nsteps > 1) load_w();
  // wgmma descriptors differ only in their start-address field (descriptor bits 0-13): this warpgroup's
  // A rows and the B tile of buffer 0, + kTileBytes / 16 for buffer 1, + 2 per k16 step.
  const uint32_t a_lo = sm90::desc_lo(sbase + uint32_t(wm * 64 * 128)), b_lo = sm90::desc_lo(sbase + 2 * kTileBytes);
  // NW: the wgmma width, fixed per tile (a tile of at most 64 tokens takes n64) so that the loop holds
  // one uniform sequence of products.
  auto mainloop = [&](auto nw) {
    [[maybe_unused]] constexpr int NW = decltype(nw)::value;  // unused by the mma.sync instantiations
    for (int c = 0; c < nsteps; ++c) {
      const int buf = c & 1;
      sm80::cp_async_wait<0>();
      if constexpr (WG) sm90::fence_proxy_async();  // this thread's tile stores and copies, for the tensor cores
      __syncthreads();  // A[buf] written, B[buf] landed; everyone is done with the other buffers
      if (c + 1 < nsteps) load_b(buf ^ 1);
      if constexpr (WG) {
        const uint32_t al = a_lo + uint32_t(buf * (kTileBytes >> 4)), bl = b_lo + uint32_t(buf * (kTileBytes >> 4));
        sm90::wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < kKc / 16; ++ks)
          sm90::wgmma_bf16<NW>(acc, sm90::desc_sw128_lo(al + 2 * ks), sm90::desc_sw128_lo(bl + 2 * ks));
        sm90::wgmma_commit();
      } else if (32 * wn < n) {  // a warp whose 32 tokens are all past the tile's n has only zero rows
        const uint32_t A = sbase + uint32_t(buf * kTileBytes), B = sbase + uint32_t((2 + buf) * kTileBytes);
#pragma unroll
        for (int ks = 0; ks < kKc / 16; ++ks) {
          uint32_t af[4][4], bf[4][2];
#pragma unroll
          for (int i = 0; i < 4; ++i)
            sm80::ldsm_x4(A + swz(64 * wm + 16 * i + (lane & 15), 2 * ks + (lane >> 4)), af[i][0], af[i][1], af[i][2],
                          af[i][3]);
#pragma unroll
          for (int j = 0; j < 2; ++j)
            sm80::ldsm_x4(B + swz(32 * wn + 16 * j + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1)),
                          bf[2 * j][0], bf[2 * j][1], bf[2 * j + 1][0], bf[2 * j + 1][1]);
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
              sm80::mma_bf16(acc + 4 * (4 * i + j), af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
        }
      }
      // The next chunk's weights: decoded while this chunk's products drain through the tensor cores.
      if (c + 1 < nsteps) {
        store_w(buf ^ 1);
        if (c + 2 < nsteps) load_w();
      }
      if constexpr (WG) sm90::wgmma_wait<0>();  // before the next barrier frees this chunk's tiles
    }
  };
  if (WG && n <= 64) mainloop(std::integral_constant<int, 64>{});
  else mainloop(std::integral_constant<int, 128>{});

  // Epilogue per (m-tile, 8-token group): the GEMV kernel's, on rows p0 + tok0 ...
  const float alpha = cc::mul_rn(gemm::act_alpha(a, e), a.w_alpha[e]);
  auto m_of = [&](int q) { return int(blockIdx.y) * 8 + 4 * wm + (WG ? warp & 3 : q / 4); };
  auto tok_of = [&](int q) { return WG ? 8 * q : 32 * wn + 8 * (q % 4); };
  if (GATED && a.yq) {
    // ... or GEMM2's input straight away: the activations of the CTA's 64 output columns go to shared
    // memory (the operand tiles are free now), then whole scale blocks of them are quantized as
    // quant_rows would from y.
    float* st = reinterpret_cast<float*>(smem);
    __syncthreads();  // every warp is done with the operand tiles
#pragma unroll
    for (int q = 0; q < 16; ++q) {
      const int m = m_of(q), tok0 = tok_of(q);
      if (m >= M16 || tok0 >= n) continue;
      float v[2];
      gemv::mtile_act(a, e, alpha, mode, m, acc + 4 * q, v);
      const int col = 8 * (m - int(blockIdx.y) * 8) + (lane >> 2), tok = tok0 + 2 * (lane & 3);
      st[tok * kStageLd + col] = v[0], st[(tok + 1) * kStageLd + col] = v[1];
    }
    __syncthreads();
    quant_staged(a, e, st, n, p0, I - 64 * int(blockIdx.y));
    return;
  }
#pragma unroll
  for (int q = 0; q < 16; ++q) {
    const int m = m_of(q), tok0 = tok_of(q);
    if (m < M16 && tok0 < n) gemv::store_mtile<GATED>(a, e, alpha, mode, m, acc + 4 * q, n - tok0, int64_t(p0) + tok0);
  }
}

// wgmma runs where the kernel's loaded binary is sm_90a code (an sm_80-only build, or PTX compiled for
// another GPU, runs the mma.sync kernel), unless MXMOE_CUDA_WGMMA=0.
template <typename K>
bool wgmma_usable(K kernel) {
  cudaFuncAttributes fa{};
  return cudaFuncGetAttributes(&fa, kernel) == cudaSuccess && fa.binaryVersion == 90;
}

template <WKind W, bool GATED, bool WG>
cudaError_t launch(const GemmArgs& a, cudaStream_t s) {
  const cudaError_t err = ensure_smem<tile128_kernel<W, GATED, WG>>(kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(a.max_tiles), unsigned((a.N / 16 + 7) / 8));
  return launch_kernel(tile128_kernel<W, GATED, WG>, grid, kThreads, size_t(kSmemBytes), s, true, a);
}

template <WKind W, bool GATED>
cudaError_t launch(const GemmArgs& a, cudaStream_t s) {
  static const bool wg = wgmma_usable(tile128_kernel<W, GATED, true>);
  return (wg && tile128_wgmma_enabled()) ? launch<W, GATED, true>(a, s) : launch<W, GATED, false>(a, s);
}

template <WKind W>
cudaError_t launch_kind(const GemmArgs& a, cudaStream_t s) {
  return a.act >= 0 ? launch<W, true>(a, s) : launch<W, false>(a, s);
}

}  // namespace tile128
}  // namespace mxmoe::moe::cuda
