// The fused grouped expert GEMM (sm_80+ bf16 tensor cores, mma.sync m16n8k16), "swap AB": the
// expert weight rows are the MMA's M side, the tokens of one expert its N side (8 per n-tile).
//
// CTA = 8 warps = 32 weight rows (two m-tiles) x 8*NT tokens of one expert; the warps split K in
// chunks of 128 (warp w takes chunks w, w+8, ...; NT = 1 prefetches its next chunk). Per chunk a thread (g = lane/4, t = lane%4) loads
// 32 consecutive elements (k = 32t..32t+31) of four weight rows (g, g+8 of each m-tile) straight
// from the packed codes (16 bytes of FP4) plus their block scales, decodes them in registers to bf16
// (element * scale multiplier, see below), and 32 consecutive bf16 activations of token g of each
// n-tile. The K order inside the chunk is permuted consistently for both operands (MMA k index
// 2t+j <-> element 32t+4s+j, 2t+8+j <-> 32t+4s+2+j in step s), which is legal because a dot product
// does not depend on the order of its terms; it lets every thread use wide contiguous loads. The eight
// warps' partial sums are added in a fixed order through shared memory (deterministic), then the
// epilogue applies alpha, bias, the bf16 rounding of vllm mode, and (GEMM1) the gated activation.
//
// Weight values: exact mode element * block scale, exact in bf16; vllm mode NVFP4
// bf16(element * (scale / gs)), the same float32 operations as the CPU path; the multiplier of each
// scale byte is computed in registers (scale_mult), no dependent table load.
#pragma once
#include "moe/cuda/fp4_weight_tiles.hpp"
#include "moe/cuda/moe_device.cuh"
#include "moe/cuda/sm80_mma.cuh"

namespace mxmoe::moe::cuda::gemm {

template <WKind W>
struct WT;
template <>
struct WT<WKind::NVFP4> {
  static constexpr int bits = 4, block = 16;
  static constexpr Encoding elem = Encoding::E2M1;
};
template <>
struct WT<WKind::MXFP4> {
  static constexpr int bits = 4, block = 32;
  static constexpr Encoding elem = Encoding::E2M1;
};
template <>
struct WT<WKind::MXFP6_E2M3> {
  static constexpr int bits = 6, block = 32;
  static constexpr Encoding elem = Encoding::E2M3;
};
template <>
struct WT<WKind::MXFP6_E3M2> {
  static constexpr int bits = 6, block = 32;
  static constexpr Encoding elem = Encoding::E3M2;
};
template <>
struct WT<WKind::MXFP8_E4M3> {
  static constexpr int bits = 8, block = 32;
  static constexpr Encoding elem = Encoding::E4M3;
};
template <>
struct WT<WKind::BF16> {
  static constexpr int bits = 16, block = 32;
  static constexpr Encoding elem = Encoding::E4M3;  // unused
};

// Raw bytes of one thread's 32 elements of one row: bits * 4 bytes (16 / 24 / 32 / 64).
template <WKind W>
struct Raw {
  static constexpr int words = WT<W>::bits;  // 32-bit words
  uint32_t w[words];
  uint32_t s;  // scale bytes (NVFP4: two, MX: one)
};

template <WKind W>
__device__ __forceinline__ void load_raw(const GemmArgs& a, const uint8_t* row_codes, const uint8_t* row_scales,
                                         int64_t k0, bool valid, Raw<W>& r) {
  constexpr int bits = WT<W>::bits;
  if (!valid) {
#pragma unroll
    for (int i = 0; i < Raw<W>::words; ++i) r.w[i] = 0;
    r.s = 0;
    return;
  }
  const uint8_t* p = row_codes + k0 * bits / 8;
  if constexpr (bits == 6) {
    const uint2* q = reinterpret_cast<const uint2*>(p);
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const uint2 v = __ldg(q + i);
      r.w[2 * i] = v.x, r.w[2 * i + 1] = v.y;
    }
  } else {
    const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int i = 0; i < Raw<W>::words / 4; ++i) {
      const uint4 v = __ldg(q + i);
      r.w[4 * i] = v.x, r.w[4 * i + 1] = v.y, r.w[4 * i + 2] = v.z, r.w[4 * i + 3] = v.w;
    }
  }
  if constexpr (W == WKind::NVFP4) r.s = __ldg(reinterpret_cast<const uint16_t*>(row_scales + k0 / 16));
  else if constexpr (W != WKind::BF16) r.s = __ldg(row_scales + k0 / 32);
}

// FP4 from a wtiles::Stream position (either layout): cp / sp the chunk's 16 code bytes and scale bytes.
template <WKind W>
__device__ __forceinline__ void load_raw_fp4(const uint8_t* cp, const uint8_t* sp, bool valid, Raw<W>& r) {
  static_assert(WT<W>::bits == 4, "FP4 weights only");
  const uint4 v = valid ? __ldg(reinterpret_cast<const uint4*>(cp)) : make_uint4(0, 0, 0, 0);
  r.w[0] = v.x, r.w[1] = v.y, r.w[2] = v.z, r.w[3] = v.w;
  if constexpr (W == WKind::NVFP4) r.s = valid ? __ldg(reinterpret_cast<const uint16_t*>(sp)) : 0u;
  else r.s = valid ? __ldg(sp) : 0u;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  return uint32_t(cc::f32_to_bf16(lo)) | uint32_t(cc::f32_to_bf16(hi)) << 16;
}

// 8 E2M1 codes (nibble i = code i) -> the bf16 bit patterns of their values, pairs (2i, 2i+1) per word.
__device__ __forceinline__ void e2m1x8_bf16(uint32_t w, uint32_t out[4]) {
  // bf16 of {0, .5, 1, 1.5, 2, 3, 4, 6}: high bytes 00 3F 3F 3F 40 40 40 40, low 00 00 80 C0 00 40 80 C0.
  const uint32_t m = w & 0x77777777u;
  const uint32_t hb0 = __byte_perm(0x3F3F3F00u, 0x40404040u, m & 0xffffu);
  const uint32_t lb0 = __byte_perm(0xC0800000u, 0xC0804000u, m & 0xffffu);
  const uint32_t hb1 = __byte_perm(0x3F3F3F00u, 0x40404040u, m >> 16);
  const uint32_t lb1 = __byte_perm(0xC0800000u, 0xC0804000u, m >> 16);
  out[0] = __byte_perm(lb0, hb0, 0x5140) | ((w << 12) & 0x8000u) | ((w << 24) & 0x80000000u);
  out[1] = __byte_perm(lb0, hb0, 0x7362) | ((w << 4) & 0x8000u) | ((w << 16) & 0x80000000u);
  out[2] = __byte_perm(lb1, hb1, 0x5140) | ((w >> 4) & 0x8000u) | ((w << 8) & 0x80000000u);
  out[3] = __byte_perm(lb1, hb1, 0x7362) | ((w >> 12) & 0x8000u) | (w & 0x80000000u);
}

// Decoded bf16 pairs (16 words) of one thread's 32 elements.
// The multiplier of one scale byte: exact mode the decoded scale; vllm mode NVFP4 scale / gs (the CPU's
// float32 division), MX the decoded power of two.
template <WKind W>
__device__ __forceinline__ float scale_mult(uint32_t byte, float vllm_gs) {
  if constexpr (W == WKind::NVFP4) {
    const float s = cc::decode<Encoding::UE4M3>(byte);
    return vllm_gs > 0.0f ? cc::div_rn(s, vllm_gs) : s;
  } else {
    return cc::decode_ue8m0(byte);
  }
}

template <WKind W>
__device__ __forceinline__ void decode(const Raw<W>& r, float vllm_gs, uint32_t out[16]) {
  constexpr int bits = WT<W>::bits;
  if constexpr (W == WKind::BF16) {
#pragma unroll
    for (int i = 0; i < 16; ++i) out[i] = r.w[i];
  } else if constexpr (bits == 4) {
    const float m0 = scale_mult<W>(r.s & 0xffu, vllm_gs);
    const float m1 = W == WKind::NVFP4 ? scale_mult<W>(r.s >> 8, vllm_gs) : m0;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      uint32_t e[4];
      e2m1x8_bf16(r.w[q], e);
      const float m = q < 2 ? m0 : m1;
#pragma unroll
      for (int i = 0; i < 4; ++i)
        out[4 * q + i] = pack_bf16x2(cc::mul_rn(cc::bitsf(e[i] << 16), m), cc::mul_rn(cc::bitsf(e[i] & 0xffff0000u), m));
    }
  } else {
    const float m = scale_mult<W>(r.s & 0xffu, vllm_gs);
    uint32_t c[32];
    if constexpr (bits == 8) {
#pragma unroll
      for (int i = 0; i < 32; ++i) c[i] = (r.w[i / 4] >> (8 * (i % 4))) & 0xffu;
    } else {  // 6-bit: 24-bit little-endian words of 4 codes
      const uint8_t* b = reinterpret_cast<const uint8_t*>(r.w);
#pragma unroll
      for (int g = 0; g < 8; ++g) {
        const uint32_t v = uint32_t(b[3 * g]) | uint32_t(b[3 * g + 1]) << 8 | uint32_t(b[3 * g + 2]) << 16;
#pragma unroll
        for (int j = 0; j < 4; ++j) c[4 * g + j] = (v >> (6 * j)) & 0x3fu;
      }
    }
#pragma unroll
    for (int i = 0; i < 16; ++i)
      out[i] = pack_bf16x2(cc::mul_rn(cc::decode<WT<W>::elem>(c[2 * i]), m),
                           cc::mul_rn(cc::decode<WT<W>::elem>(c[2 * i + 1]), m));
  }
}

using sm80::mma_bf16;

// B operand: 32 consecutive activations of one row -> 16 bf16 pairs per split term.
template <int SPLIT>
__device__ __forceinline__ void load_b(const GemmArgs& a, int64_t row, int64_t k0, bool valid,
                                       uint32_t b[SPLIT][16]) {
  if (!valid) {
#pragma unroll
    for (int s = 0; s < SPLIT; ++s)
#pragma unroll
      for (int i = 0; i < 16; ++i) b[s][i] = 0;
    return;
  }
  if constexpr (SPLIT == 1) {
    const uint4* p = reinterpret_cast<const uint4*>(a.b16 + row * a.ldb + k0);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint4 v = __ldg(p + i);
      b[0][4 * i] = v.x, b[0][4 * i + 1] = v.y, b[0][4 * i + 2] = v.z, b[0][4 * i + 3] = v.w;
    }
  } else {
    // float32 = hi + mid + lo, each a bf16 (round to nearest; the residuals are exact in float32).
    const float4* p = reinterpret_cast<const float4*>(a.b32 + row * a.ldb + k0);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float4 v = __ldg(p + i);
      const float f[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float x0 = f[2 * h], x1 = f[2 * h + 1];
#pragma unroll
        for (int s = 0; s < SPLIT; ++s) {
          const uint32_t w = pack_bf16x2(x0, x1);
          b[s][2 * i + h] = w;
          x0 = cc::sub_rn(x0, cc::bitsf(w << 16));
          x1 = cc::sub_rn(x1, cc::bitsf(w & 0xffff0000u));
        }
      }
    }
  }
}

// The activation-side accumulator factor of expert e.
__device__ __forceinline__ float act_alpha(int kind, const ActScale& sc, int e) {
  if (kind == 1) return cc::div_rn(1.0f, nvfp4_gs(sc, e));
  if (kind == 2) return fp8_scale(sc);
  return 1.0f;
}
__device__ __forceinline__ float act_alpha(const GemmArgs& a, int e) { return act_alpha(a.a_alpha_kind, a.a_sc, e); }

constexpr int kWarps = 8;

template <WKind W, int NT, int SPLIT, bool GATED>
__global__ void __launch_bounds__(kWarps * 32) moe_gemm_kernel(const GemmArgs a) {
  pdl_wait();
  constexpr int kTok = 8 * NT, kLd = kTok + 1;
  __shared__ float red[kWarps][32][kLd];
  const int tile = blockIdx.x;
  if (tile >= *a.num_tiles) return;
  const int4 td = a.tiles[tile];
  const int e = td.x, p0 = td.y, n = td.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const bool oai = GATED && a.act == 3;
  const int I = a.N / 2;
  int rbase[2];
  if (GATED && !oai) rbase[0] = 16 * blockIdx.y, rbase[1] = I + 16 * blockIdx.y;
  else rbase[0] = 32 * blockIdx.y, rbase[1] = 32 * blockIdx.y + 16;
  constexpr int bits = WT<W>::bits;
  const int64_t nbk = a.K / (W == WKind::BF16 ? 32 : WT<W>::block);
  // FP4: chunk c of row i at rc[i] + c * fst.cs (either layout, fp4_weight_tiles.hpp); else by rows.
  const wtiles::Strides fst = wtiles::strides(a.w_tiles, WT<W>::block);
  const uint8_t* rc[4];
  const uint8_t* rs[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int lrow = rbase[i >> 1] + g + 8 * (i & 1);
    if constexpr (bits == 4) {
      int mt, r;
      const int mode = wtiles::row_mode(GATED, a.act);
      wtiles::locate(mode, lrow, I, mt, r);
      const wtiles::Stream p = wtiles::stream(a.codes, a.scales, a.w_tiles, WT<W>::block, a.N, a.K, mode, e, mt, r, t);
      rc[i] = p.c, rs[i] = p.s;
    } else {
      const int64_t row = int64_t(e) * a.N + lrow;
      rc[i] = a.codes + row * (bits == 16 ? a.K * 2 : a.row_bytes);
      rs[i] = W == WKind::BF16 ? nullptr : a.scales + row * nbk;
    }
  }
  const float vllm_gs = (W == WKind::NVFP4 && a.vllm) ? a.w_gs[e] : 0.0f;
  int64_t brow[NT];
  bool bval[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    bval[j] = 8 * j + g < n;
    const int p = p0 + (bval[j] ? 8 * j + g : 0);
    brow[j] = a.b_row ? a.b_row[p] : p;
  }
  float acc[2][NT][4];
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[m][j][i] = 0.0f;

  const int nchunks = (a.K + 127) / 128;
  constexpr int kBuf = NT == 1 ? 2 : 1;  // NT == 1: the next chunk's loads are in flight during this one's math
  Raw<W> raw[kBuf][4];
  uint32_t bw[kBuf][NT][SPLIT][16];
  auto load_chunk = [&](int c, int buf) {
    const int64_t k0 = int64_t(c) * 128 + 32 * t;
    const bool kv = k0 < a.K;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (bits == 4) load_raw_fp4<W>(rc[i] + c * fst.cs, rs[i] + c * fst.ss, kv, raw[buf][i]);
      else load_raw<W>(a, rc[i], rs[i], k0, kv, raw[buf][i]);
    }
#pragma unroll
    for (int j = 0; j < NT; ++j) load_b<SPLIT>(a, brow[j], k0, kv && bval[j], bw[buf][j]);
  };
  if (warp < nchunks) load_chunk(warp, 0);
  int cur = 0;
  for (int c = warp; c < nchunks; c += kWarps) {
    if constexpr (kBuf == 2) {
      if (c + kWarps < nchunks) load_chunk(c + kWarps, cur ^ 1);
    }
    const bool kv = int64_t(c) * 128 + 32 * t < a.K;
    uint32_t aw[4][16];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      decode<W>(raw[cur][i], vllm_gs, aw[i]);
      if (!kv)
#pragma unroll
        for (int q = 0; q < 16; ++q) aw[i][q] = 0;
    }
#pragma unroll
    for (int s = 0; s < 8; ++s)
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int sp = 0; sp < SPLIT; ++sp)
            mma_bf16(acc[m][j], aw[2 * m][2 * s], aw[2 * m + 1][2 * s], aw[2 * m][2 * s + 1], aw[2 * m + 1][2 * s + 1],
                     bw[cur][j][sp][2 * s], bw[cur][j][sp][2 * s + 1]);
    if constexpr (kBuf == 2) {
      cur ^= 1;
    } else {
      if (c + kWarps < nchunks) load_chunk(c + kWarps, 0);
    }
  }
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      red[warp][16 * m + g][8 * j + 2 * t] = acc[m][j][0];
      red[warp][16 * m + g][8 * j + 2 * t + 1] = acc[m][j][1];
      red[warp][16 * m + g + 8][8 * j + 2 * t] = acc[m][j][2];
      red[warp][16 * m + g + 8][8 * j + 2 * t + 1] = acc[m][j][3];
    }
  __syncthreads();
  const float alpha = cc::mul_rn(act_alpha(a, e), a.w_alpha[e]);
  auto sum_at = [&](int lr, int col) {
    float s = red[0][lr][col];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) s += red[w][lr][col];
    return s;
  };
  if constexpr (GATED) {
    float amax = 0.0f;
    for (int i = threadIdx.x; i < 16 * kTok; i += blockDim.x) {
      const int jc = i % 16, col = i / 16;
      if (col >= n) continue;
      const int glr = oai ? 2 * jc : jc, ulr = oai ? 2 * jc + 1 : 16 + jc;
      const int grow = oai ? rbase[0] + 2 * jc : rbase[0] + jc, urow = oai ? grow + 1 : rbase[1] + jc;
      const float gate = finish_acc(a, e, alpha, sum_at(glr, col), grow);
      const float up = finish_acc(a, e, alpha, sum_at(ulr, col), urow);
      float v = gated_act(a.act, gate, up, a.act_alpha, a.act_limit);
      if (a.vllm) v = round_bf16(v);
      a.y[int64_t(p0 + col) * a.ldy + 16 * blockIdx.y + jc] = v;
      amax = fmaxf(amax, fabsf(v));
    }
    amax_outputs(a, e, amax);
  } else {
    for (int i = threadIdx.x; i < 32 * kTok; i += blockDim.x) {
      const int lr = i % 32, col = i / 32;
      if (col >= n) continue;
      const int row = 32 * blockIdx.y + lr;
      store_y(a, int64_t(p0 + col) * a.ldy + row, finish_acc(a, e, alpha, sum_at(lr, col), row));
    }
  }
}

// Launch for one weight kind (instantiated in sm80_moe_gemm_<kind>.cu).
template <WKind W>
cudaError_t launch(const GemmArgs& a, cudaStream_t s) {
  const bool gated = a.act >= 0, split = a.b32 != nullptr;
  const dim3 grid(unsigned(a.max_tiles), unsigned(gated ? a.N / 32 : a.N / 32));
  auto go = [&](auto nt) {
    constexpr int NT = decltype(nt)::value;
    const auto k = gated ? moe_gemm_kernel<W, NT, 1, true>
                         : (split ? moe_gemm_kernel<W, NT, 3, false> : moe_gemm_kernel<W, NT, 1, false>);
    return launch_kernel(k, grid, kWarps * 32, 0, s, true, a);
  };
  if (a.max_tiles == 0) return cudaSuccess;
  if (a.nt == 1) return go(std::integral_constant<int, 1>{});
  if (a.nt == 2) return go(std::integral_constant<int, 2>{});
  return go(std::integral_constant<int, 4>{});
}

}  // namespace mxmoe::moe::cuda::gemm
