// Fused decode + GEMV for packed FP4 expert weights (nvfp4, mxfp4): the weights are decoded in
// registers and multiplied with up to 8 token rows at once; no float32 weight buffer.
//
// Layout trick: a 64-byte chunk of a packed row holds 128 elements; read as 16 32-bit lanes, nibble s
// of lane l is element 8l + s. vpermps only looks at the low 4 bits of each index lane, so
// permutexvar(q >> 4s, lut) decodes elements {8l + s} of all 16 lanes with one shift and one permute,
// and the activations are stored in the matching order (fp4_pack_activations), once per expert.
// Lane l covers 8 consecutive columns of one scale block, so block scales are one vector per chunk.
// GCC 12 reports its own _mm512_undefined_* placeholders as maybe-uninitialized in target() functions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "moe/cpu/heuristics.hpp"
#include "moe/cpu/simd_kernels.hpp"

#define MXK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define MXK_INLINE MXK_TARGET inline __attribute__((always_inline))

namespace mxmoe::moe::cpu {

int64_t fp4_act_stride(int64_t K) { return (K + 127) / 128 * 128; }

void fp4_pack_activations(const float* a, int64_t n, int64_t K, float* ap) {
  const int64_t Kp = fp4_act_stride(K);
  for (int64_t m = 0; m < n; ++m) {
    const float* src = a + m * K;
    float* dst = ap + m * Kp;
    for (int64_t c0 = 0; c0 < Kp; c0 += 128) {
      if (c0 + 128 <= K) {
        for (int s = 0; s < 8; ++s)
          for (int l = 0; l < 16; ++l) dst[c0 + 16 * s + l] = src[c0 + 8 * l + s];
      } else {
        for (int s = 0; s < 8; ++s)
          for (int l = 0; l < 16; ++l) {
            const int64_t c = c0 + 8 * l + s;
            dst[c0 + 16 * s + l] = c < K ? src[c] : 0.0f;
          }
      }
    }
  }
}

namespace {

inline float rne_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// Column c of a row in the packed activation layout.
inline int64_t packed_pos(int64_t c) { return c / 128 * 128 + 16 * (c % 8) + (c % 128) / 8; }
// Column c of a row in the bf16 activation layout.
inline int64_t packed_pos16(int64_t c) { return c / 128 * 128 + 32 * (c % 4) + (c % 128) / 4; }

// The scalar fallback of both kernels: element by element in column order (as the ref backend); act(m, c)
// reads activation column c of token row m from its packed layout.
template <class Act>
void gemv_scalar(const Fp4Weight& w, int64_t r0, int64_t r1, int64_t n, float alpha, const float* bias, float* y,
                 int64_t ldy, Act act) {
  const float* lut = decode_table(Encoding::E2M1);
  const float* st = decode_table(w.scale);
  const int64_t rb = w.K / 2, nb = w.K / w.block;
  for (int64_t j = r0; j < r1; ++j)
    for (int64_t m = 0; m < n; ++m) {
      float acc = 0;
      for (int64_t c = 0; c < w.K; ++c) {
        const uint8_t b = w.codes[j * rb + c / 2];
        const uint8_t s = w.scales[j * nb + c / w.block];
        float v = lut[c % 2 ? b >> 4 : b & 0xf] * (w.gs > 0 ? st[s] / w.gs : st[s]);
        if (w.gs > 0) v = rne_bf16(v);
        acc += act(m, c) * v;
      }
      y[m * ldy + j] = acc * alpha + (bias ? bias[j] : 0.0f);
    }
}

// ---- AVX-512 -----------------------------------------------------------------------------------


struct Consts {
  __m512 lut, la, lb;  // e2m1 values; vllm NVFP4 split tables (see Fmt::kBf16)
  __m512i sidx;        // lane -> scale byte of the chunk
  __m512 gs;
};

// kBf16 (vllm NVFP4): w = bf16(e2m1 * m) with m = scale / gs. For |e2m1| in {0.5, 1, 2, 4} that is
// e2m1 * bf16(m) exactly; for {1.5, 3, 6} it is (e2m1 / 1.5) * bf16(1.5 * m). So
// w = la[q] * M1 + lb[q] * M3 with M1 = bf16(m), M3 = bf16(1.5 m): the same bits as decode_fp4_row
// (up to the sign of zero) without rounding every element.
template <int kBlock, bool kUe4m3, bool kBf16>
struct Fmt {
  static constexpr int block = kBlock;
  static constexpr bool ue4m3 = kUe4m3, bf16 = kBf16;
};

MXK_INLINE __m512 round_bf16_v(__m512 v) {
  __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  return _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32(int(0xffff0000u))));
}

// The 16-lane block-scale vector of chunk `ch` of one row (lane l: the scale of column 8l).
template <class F>
MXK_INLINE __m512 scale_vec(const uint8_t* srow, int64_t ch, int64_t nb, const Consts& k) {
  constexpr int per = 128 / F::block;  // scale bytes per chunk
  const int64_t b0 = ch * per, cnt = std::min<int64_t>(per, nb - b0);
  // A plain load of the chunk's 8 or 4 scale bytes except in a row's last chunk: the masked byte load
  // cost ~8% of the n = 1 kernel (bench/RESULTS.md, note on the scale decode).
  __m128i sb;
  if (cnt == 8) {
    sb = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(srow + b0));
  } else if (cnt == 4) {
    int32_t v;
    std::memcpy(&v, srow + b0, 4);
    sb = _mm_cvtsi32_si128(v);
  } else {
    sb = _mm_maskz_loadu_epi8(__mmask16((1u << cnt) - 1), srow + b0);
  }
  const __m512i si = _mm512_permutexvar_epi32(k.sidx, _mm512_cvtepu8_epi32(sb));
  if constexpr (F::ue4m3) {
    // UE4M3 (sign bit ignored): the code's bits placed as a float32 exponent/mantissa are the value
    // times 2^-120 (subnormal codes become float32 subnormals), so one multiply decodes it exactly.
    const __m512i u = _mm512_and_si512(si, _mm512_set1_epi32(0x7f));
    const __m512 f = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(u, 20)), _mm512_set1_ps(0x1p120f));
    return _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(u, _mm512_set1_epi32(0x7f)), f,
                                _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
  } else {
    // UE8M0: 2^(code - 127); code 0 is the float32 subnormal 2^-127, 0xFF is NaN.
    __m512i b = _mm512_slli_epi32(si, 23);
    b = _mm512_mask_mov_epi32(b, _mm512_cmpeq_epi32_mask(si, _mm512_setzero_si512()), _mm512_set1_epi32(0x00400000));
    b = _mm512_mask_mov_epi32(b, _mm512_cmpeq_epi32_mask(si, _mm512_set1_epi32(0xff)), _mm512_set1_epi32(0x7fc00000));
    return _mm512_castsi512_ps(b);
  }
}

// R weight rows x NT token rows starting at row j and token row 0 of `ap`, chunks [ch0, ch1):
// Chunk ch of weight row `row` for the GEMV kernels: its 64 code bytes (masked by bm past the row) and
// block multipliers s1 (the scales; vllm NVFP4: bf16(scale / gs), with s3 = bf16(1.5 * scale / gs) for
// the 1.5-multiples). The rows of a tile are one contiguous stream, but short rows defeat the hardware
// prefetcher: also fetch kFp4PrefetchBytes ahead (and the scales at the same relative distance).
template <class F>
MXK_INLINE void load_row_chunk(const Fp4Weight& w, int64_t row, int64_t ch, __mmask64 bm, const Consts& k, __m512i& q,
                               __m512& s1, __m512& s3) {
  const int64_t rb = w.K / 2, nb = w.K / F::block;
  const uint8_t* cp = w.codes + row * rb + ch * 64;
  _mm_prefetch(reinterpret_cast<const char*>(cp + kFp4PrefetchBytes), _MM_HINT_T0);
  const uint8_t* sp = w.scales + row * nb + ch * (128 / F::block);
  _mm_prefetch(reinterpret_cast<const char*>(sp + kFp4PrefetchBytes * 2 / F::block), _MM_HINT_T0);
  q = _mm512_maskz_loadu_epi8(bm, cp);
  const __m512 sc = scale_vec<F>(w.scales + row * nb, ch, nb, k);
  if constexpr (F::bf16) {
    const __m512 mlt = _mm512_div_ps(sc, k.gs);  // as decode: scale / gs, then bf16
    s1 = round_bf16_v(mlt);
    s3 = round_bf16_v(_mm512_mul_ps(mlt, _mm512_set1_ps(1.5f)));
  } else {
    s1 = sc;
  }
}

// part[r * 8 + m] += the lane-reduced partial dot product.
template <class F, int R, int NT>
MXK_INLINE void rows_kernel(const Fp4Weight& w, int64_t j, const float* ap, int64_t Kp, int64_t ch0, int64_t ch1,
                            float* part, const Consts& k) {
  const int64_t rb = w.K / 2;
  constexpr bool kSplit = R * NT <= 4;  // two partial-sum chains per accumulator (FMA latency)
  __m512 acc[R][NT];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t ch = ch0; ch < ch1; ++ch) {
    const int64_t cb = std::min<int64_t>(64, rb - ch * 64);
    const __mmask64 bm = cb == 64 ? ~__mmask64(0) : (__mmask64(1) << cb) - 1;
    __m512i q[R];
    __m512 s1[R], s3[R];
    for (int r = 0; r < R; ++r) load_row_chunk<F>(w, j + r, ch, bm, k, q[r], s1[r], s3[r]);
    const float* a = ap + ch * 128;
    if constexpr (F::bf16) {
      for (int s = 0; s < 8; ++s) {
        __m512 av[NT];
        for (int m = 0; m < NT; ++m) av[m] = _mm512_loadu_ps(a + m * Kp + 16 * s);
        for (int r = 0; r < R; ++r) {
          const __m512i qs = s == 0 ? q[r] : _mm512_srli_epi32(q[r], 4 * s);
          const __m512 wv = _mm512_fmadd_ps(_mm512_permutexvar_ps(qs, k.lb), s3[r],
                                            _mm512_mul_ps(_mm512_permutexvar_ps(qs, k.la), s1[r]));
          for (int m = 0; m < NT; ++m) acc[r][m] = _mm512_fmadd_ps(av[m], wv, acc[r][m]);
        }
      }
    } else {
      // Sum of the 8 products per lane (exact for W4A4: small integers times one activation
      // block scale), then times the weight block scale, then into the accumulator.
      __m512 p[R][NT][kSplit ? 2 : 1];
      for (int s = 0; s < 8; ++s) {
        __m512 av[NT];
        for (int m = 0; m < NT; ++m) av[m] = _mm512_loadu_ps(a + m * Kp + 16 * s);
        for (int r = 0; r < R; ++r) {
          const __m512i qs = s == 0 ? q[r] : _mm512_srli_epi32(q[r], 4 * s);
          const __m512 wv = _mm512_permutexvar_ps(qs, k.lut);
          const int h = kSplit ? s & 1 : 0;
          for (int m = 0; m < NT; ++m)
            p[r][m][h] = s < (kSplit ? 2 : 1) ? _mm512_mul_ps(av[m], wv) : _mm512_fmadd_ps(av[m], wv, p[r][m][h]);
        }
      }
      for (int r = 0; r < R; ++r)
        for (int m = 0; m < NT; ++m) {
          const __m512 ps = kSplit ? _mm512_add_ps(p[r][m][0], p[r][m][kSplit ? 1 : 0]) : p[r][m][0];
          acc[r][m] = _mm512_fmadd_ps(ps, s1[r], acc[r][m]);
        }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m) part[r * 8 + m] += _mm512_reduce_add_ps(acc[r][m]);
}

// Rows [r0, r1) (at most kRowStep) for NT token rows: the K dimension in slabs whose activations
// (NT rows) stay in L1 while every row of the block streams past; groups of R rows, then single rows.
// Token rows per pass over a row block (BM_Fp4GemvKernel, 1 core): the factored kernel peaks at
// 2 tokens x 4 rows (~150 GFLOP/s; 5-8 token kernels spill and run at a third of that), the bf16
// kernel at 4 tokens x 2 rows. Larger n re-decodes the L1-resident row block per group.
template <class F>
constexpr int64_t kTokenGroup = F::bf16 ? 4 : 2;

template <class F, int NT>
MXK_TARGET void rows_loop(const Fp4Weight& w, int64_t r0, int64_t r1, const float* ap, int64_t Kp, float alpha,
                          const float* bias, float* y, int64_t ldy, const Consts& k) {
  constexpr int R = NT <= 2 ? 4 : NT <= 4 ? 2 : 1;
  constexpr int64_t kSlabChunks = std::max<int64_t>(1, 16384 / (NT * 4 * 128));  // 16 KiB of activations
  float part[kRowStep * 8] = {};
  const int64_t nch = Kp / 128;
  for (int64_t c0 = 0; c0 < nch; c0 += kSlabChunks) {
    const int64_t c1 = std::min(nch, c0 + kSlabChunks);
    int64_t j = r0;
    for (; j + R <= r1; j += R) rows_kernel<F, R, NT>(w, j, ap, Kp, c0, c1, part + (j - r0) * 8, k);
    if constexpr (R > 1)
      for (; j < r1; ++j) rows_kernel<F, 1, NT>(w, j, ap, Kp, c0, c1, part + (j - r0) * 8, k);
  }
  for (int64_t j = r0; j < r1; ++j)
    for (int m = 0; m < NT; ++m) y[m * ldy + j] = part[(j - r0) * 8 + m] * alpha + (bias ? bias[j] : 0.0f);
}

template <class F>
MXK_TARGET void gemv_avx512(const Fp4Weight& w, int64_t r0, int64_t r1, const float* ap, int64_t n, float alpha,
                            const float* bias, float* y, int64_t ldy) {
  const float* lut = decode_table(Encoding::E2M1);
  Consts k;
  k.lut = _mm512_loadu_ps(lut);
  alignas(64) float la[16], lb[16];
  for (int c = 0; c < 16; ++c) {
    const float v = lut[c], mag = v < 0 ? -v : v;
    const bool three = mag == 1.5f || mag == 3.0f || mag == 6.0f;
    la[c] = three ? 0.0f : v;
    lb[c] = three ? v / 1.5f : 0.0f;
  }
  k.la = _mm512_load_ps(la), k.lb = _mm512_load_ps(lb);
  k.sidx = F::block == 16 ? _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)
                          : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  k.gs = _mm512_set1_ps(w.gs);
  const int64_t Kp = fp4_act_stride(w.K);
  // Weight row blocks outside, token groups of up to 8 inside: a row block's packed bytes stay in L1.
  for (int64_t j0 = r0; j0 < r1; j0 += kRowStep) {
    const int64_t j1 = std::min(r1, j0 + kRowStep);
    for (int64_t m0 = 0; m0 < n; m0 += kTokenGroup<F>) {
      with_token_group<kTokenGroup<F>>(std::min<int64_t>(kTokenGroup<F>, n - m0), [&](auto nt) {
        rows_loop<F, nt>(w, j0, j1, ap + m0 * Kp, Kp, alpha, bias, y + m0 * ldy, ldy, k);
      });
    }
  }
}

// ---- AVX512_BF16 dot-product variant -------------------------------------------------------------
// A 64-byte chunk read as 32 16-bit lanes: nibble s of lane w is element 4w + s. vpermw looks at the
// low 5 bits of each index, so with the 16-entry bf16 table repeated twice, permutexvar(q >> 4s)
// decodes elements {4w + s}, and vdpbf16ps pairs lanes 2i, 2i+1: float lane i sums elements 8i + s
// and 8i + 4 + s, i.e. (over s) the same 8 columns of one block as the float kernel's lane i.

#define MXK_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define MXK_BF16_INLINE MXK_BF16_TARGET inline __attribute__((always_inline))

struct Consts16 {
  Consts f;
  __m512i lut, la, lb;  // bf16 tables (16 entries, twice)
};

MXK_BF16_INLINE __m512 dp(__m512 acc, __m512i w, __m512i a) {
  return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)a);
}

template <class F, int R, int NT>
MXK_BF16_INLINE void rows_kernel16(const Fp4Weight& w, int64_t j, const uint16_t* ap, int64_t Kp, int64_t ch0,
                                   int64_t ch1, float* part, const Consts16& k) {
  const int64_t rb = w.K / 2;
  constexpr bool kSplit = !F::bf16 && R * NT <= 4;
  __m512 acc[R][NT];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t ch = ch0; ch < ch1; ++ch) {
    const int64_t cb = std::min<int64_t>(64, rb - ch * 64);
    const __mmask64 bm = cb == 64 ? ~__mmask64(0) : (__mmask64(1) << cb) - 1;
    __m512i q[R];
    __m512 s1[R], s3[R];
    for (int r = 0; r < R; ++r) load_row_chunk<F>(w, j + r, ch, bm, k.f, q[r], s1[r], s3[r]);
    const uint16_t* a = ap + ch * 128;
    constexpr int kH = kSplit ? 2 : 1;
    __m512 pa[R][NT][kH], pb[R][NT];
    for (int s = 0; s < 4; ++s) {
      __m512i av[NT];
      for (int m = 0; m < NT; ++m) av[m] = _mm512_loadu_si512(a + m * Kp + 32 * s);
      for (int r = 0; r < R; ++r) {
        const __m512i qs = s == 0 ? q[r] : _mm512_srli_epi16(q[r], 4 * s);
        const int h = kSplit ? s & 1 : 0;
        const bool first = s < kH;
        if constexpr (F::bf16) {
          const __m512i wa = _mm512_permutexvar_epi16(qs, k.la), wb = _mm512_permutexvar_epi16(qs, k.lb);
          for (int m = 0; m < NT; ++m) {
            pa[r][m][0] = dp(first ? _mm512_setzero_ps() : pa[r][m][0], wa, av[m]);
            pb[r][m] = dp(first ? _mm512_setzero_ps() : pb[r][m], wb, av[m]);
          }
        } else {
          const __m512i wv = _mm512_permutexvar_epi16(qs, k.lut);
          for (int m = 0; m < NT; ++m) pa[r][m][h] = dp(first ? _mm512_setzero_ps() : pa[r][m][h], wv, av[m]);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < NT; ++m) {
        if constexpr (F::bf16) {
          acc[r][m] = _mm512_fmadd_ps(pa[r][m][0], s1[r], _mm512_fmadd_ps(pb[r][m], s3[r], acc[r][m]));
        } else {
          const __m512 ps = kSplit ? _mm512_add_ps(pa[r][m][0], pa[r][m][kH - 1]) : pa[r][m][0];
          acc[r][m] = _mm512_fmadd_ps(ps, s1[r], acc[r][m]);
        }
      }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m) part[r * 8 + m] += _mm512_reduce_add_ps(acc[r][m]);
}

template <class F, int NT>
MXK_BF16_TARGET void rows_loop16(const Fp4Weight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t Kp,
                                 float alpha, const float* bias, float* y, int64_t ldy, const Consts16& k) {
  constexpr int R = (NT == 1 || !F::bf16) ? 4 : 2;
  constexpr int64_t kSlabChunks = std::max<int64_t>(1, 16384 / (NT * 2 * 128));
  float part[kRowStep * 8] = {};
  const int64_t nch = Kp / 128;
  for (int64_t c0 = 0; c0 < nch; c0 += kSlabChunks) {
    const int64_t c1 = std::min(nch, c0 + kSlabChunks);
    int64_t j = r0;
    for (; j + R <= r1; j += R) rows_kernel16<F, R, NT>(w, j, ap, Kp, c0, c1, part + (j - r0) * 8, k);
    for (; j < r1; ++j) rows_kernel16<F, 1, NT>(w, j, ap, Kp, c0, c1, part + (j - r0) * 8, k);
  }
  for (int64_t j = r0; j < r1; ++j)
    for (int m = 0; m < NT; ++m) y[m * ldy + j] = part[(j - r0) * 8 + m] * alpha + (bias ? bias[j] : 0.0f);
}

template <class F>
MXK_BF16_TARGET void gemv16_avx512(const Fp4Weight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t n,
                                   float alpha, const float* bias, float* y, int64_t ldy) {
  const float* lut = decode_table(Encoding::E2M1);
  Consts16 k;
  alignas(64) uint16_t t[3][32];
  for (int c = 0; c < 32; ++c) {
    const float v = lut[c % 16], mag = v < 0 ? -v : v;
    const bool three = mag == 1.5f || mag == 3.0f || mag == 6.0f;
    t[0][c] = f32_to_bf16(v);  // e2m1 values are exact in bf16
    t[1][c] = f32_to_bf16(three ? 0.0f : v);
    t[2][c] = f32_to_bf16(three ? v / 1.5f : 0.0f);
  }
  k.lut = _mm512_load_si512(t[0]), k.la = _mm512_load_si512(t[1]), k.lb = _mm512_load_si512(t[2]);
  k.f.sidx = F::block == 16 ? _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)
                            : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  k.f.gs = _mm512_set1_ps(w.gs);
  const int64_t Kp = fp4_act_stride(w.K);
  for (int64_t j0 = r0; j0 < r1; j0 += kRowStep) {
    const int64_t j1 = std::min(r1, j0 + kRowStep);
    for (int64_t m0 = 0; m0 < n; m0 += 2) {
      if (n - m0 >= 2) rows_loop16<F, 2>(w, j0, j1, ap + m0 * Kp, Kp, alpha, bias, y + m0 * ldy, ldy, k);
      else rows_loop16<F, 1>(w, j0, j1, ap + m0 * Kp, Kp, alpha, bias, y + m0 * ldy, ldy, k);
    }
  }
}

// ---- many tokens: decode a row panel to bf16 once, then a register-blocked dot-product GEMM --------
// The panel holds up to kPanelRows weight rows in the bf16 activation layout (column 4w + s of a
// 128-column chunk at 32s + w), values exactly those of decode_fp4_row: exact mode e2m1 * scale (at
// most 6 significant bits: exact in bf16), vllm NVFP4 bf16(e2m1 * (scale / gs)) rounded as there.
constexpr int64_t kPanelRows = 64;

// Decodes rows [j0, j0 + nr) into panel[nr][Kp]; false when a block multiplier (scale, or scale / gs)
// is nonzero and outside [2^-35, 2^33] or not finite. Then every nonzero weight (e2m1 0.5..6 times
// it) lies in [2^-36, 2^36] and is exactly a bf16 (exact mode: at most 2 + 4 significant bits; vllm:
// rounded), so with the activation range of fp4_pack_activations_bf16 every product is a normal
// float32 and a multiple of 2^-114: no partial sum of vdpbf16ps (which flushes denormals) is denormal.
template <class F>
MXK_BF16_TARGET bool decode_panel16(const Fp4Weight& w, int64_t j0, int64_t nr, int64_t Kp, uint16_t* panel,
                                    const Consts& k, __m512i lut16) {
  const int64_t rb = w.K / 2, nb = w.K / F::block, nch = Kp / 128;
  const __m512i lo = _mm512_set1_epi32(0x2e000000), span = _mm512_set1_epi32(0x50000000 - 0x2e000000);
  const __m512i hi16 = _mm512_set1_epi32(int(0xffff0000u)), abs = _mm512_set1_epi32(0x7fffffff);
  alignas(64) uint16_t ilv_idx[32];
  for (int i = 0; i < 16; ++i) ilv_idx[2 * i] = uint16_t(i), ilv_idx[2 * i + 1] = uint16_t(16 + i);
  const __m512i ilv = _mm512_load_si512(ilv_idx);
  __mmask16 bad = 0;
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* crow = w.codes + (j0 + r) * rb;
    const uint8_t* srow = w.scales + (j0 + r) * nb;
    for (int64_t ch = 0; ch < nch; ++ch) {
      const int64_t cb = std::min<int64_t>(64, rb - ch * 64);
      const __mmask64 bm = cb == 64 ? ~__mmask64(0) : (__mmask64(1) << cb) - 1;
      _mm_prefetch(reinterpret_cast<const char*>(crow + ch * 64 + kFp4PrefetchBytes), _MM_HINT_T0);
      const __m512i q = _mm512_maskz_loadu_epi8(bm, crow + ch * 64);
      const __m512 sc = scale_vec<F>(srow, ch, nb, k);
      const __m512 mlt = F::bf16 ? _mm512_div_ps(sc, k.gs) : sc;  // as decode: scale / gs
      const __m512i mm = _mm512_and_si512(_mm512_castps_si512(mlt), abs);
      // Lanes past K (tail chunk) hold no weights: UE8M0 code 0 there is 2^-127 times zero codes.
      const int64_t nl = std::min<int64_t>(16, (w.K - ch * 128) / 8);
      const __mmask16 lanes = nl == 16 ? __mmask16(0xffff) : __mmask16((1u << nl) - 1);
      bad |= _mm512_mask_cmpgt_epu32_mask(_mm512_mask_test_epi32_mask(lanes, mm, mm), _mm512_sub_epi32(mm, lo), span);
      for (int s = 0; s < 4; ++s) {
        const __m512i e = _mm512_permutexvar_epi16(s == 0 ? q : _mm512_srli_epi16(q, 4 * s), lut16);
        __m512 ve = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(e, 16)), mlt);  // even 16-bit lanes
        __m512 vo = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_and_si512(e, hi16)), mlt);  // odd ones
        __m512i out;
        if constexpr (F::bf16) {
          // vcvtne2ps2bf16 rounds to nearest even like round_bf16_v (it flushes denormals, and the
          // multiplier range check keeps every nonzero product normal); lanes 0-15 = ve, 16-31 = vo,
          // interleaved back to (even, odd) pairs.
          out = _mm512_permutexvar_epi16(ilv, (__m512i)_mm512_cvtne2ps_pbh(vo, ve));
        } else {  // exact products (at most 6 significant bits): take the top halves
          out = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(vo), hi16),
                                _mm512_srli_epi32(_mm512_castps_si512(ve), 16));
        }
        _mm512_storeu_si512(panel + r * Kp + ch * 128 + 32 * s, out);
      }
    }
  }
  return !bad;
}

// R panel rows x NT token rows over the whole (padded) K: out[r * NT + m] = the dot product.
template <int R, int NT>
MXK_BF16_INLINE void panel_kernel(const uint16_t* p, const uint16_t* a, int64_t Kp, float* out) {
  __m512 acc[R][NT];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t c = 0; c < Kp; c += 32) {
    __m512i wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm512_loadu_si512(p + r * Kp + c);
    for (int m = 0; m < NT; ++m) {
      const __m512i av = _mm512_loadu_si512(a + m * Kp + c);
      for (int r = 0; r < R; ++r) acc[r][m] = dp(acc[r][m], wv[r], av);
    }
  }
  if constexpr (R == 4) {
    // Four 16-lane sums at once (the reductions are ~1/3 of the work at K = 768): pairwise adds of
    // interleaved lanes, then of the four 128-bit quarters.
    for (int m = 0; m < NT; ++m) {
      const __m512 a01 = _mm512_add_ps(_mm512_unpacklo_ps(acc[0][m], acc[1][m]), _mm512_unpackhi_ps(acc[0][m], acc[1][m]));
      const __m512 a23 = _mm512_add_ps(_mm512_unpacklo_ps(acc[2][m], acc[3][m]), _mm512_unpackhi_ps(acc[2][m], acc[3][m]));
      // 128-bit quarter q: [r0, r1, r0, r1] and [r2, r3, r2, r3] partial sums -> [r0, r1, r2, r3]
      const __m512 b = _mm512_add_ps(_mm512_shuffle_ps(a01, a23, 0x44), _mm512_shuffle_ps(a01, a23, 0xee));
      const __m256 c = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
      const __m128 d = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
      alignas(16) float o[4];
      _mm_store_ps(o, d);
      for (int r = 0; r < 4; ++r) out[r * NT + m] = o[r];
    }
  } else {
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < NT; ++m) out[r * NT + m] = _mm512_reduce_add_ps(acc[r][m]);
  }
}

constexpr int kPanelTokens = 6;  // 4 rows x 6 tokens: 24 accumulators + 4 weight vectors + 1 activation

template <int R, int NT>
MXK_BF16_INLINE void panel_tile(const uint16_t* p, const uint16_t* a, int64_t Kp, int64_t j, float alpha,
                                const float* bias, float* y, int64_t ldy) {
  float out[R * NT];
  panel_kernel<R, NT>(p, a, Kp, out);
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m) y[m * ldy + j + r] = out[r * NT + m] * alpha + (bias ? bias[j + r] : 0.0f);
}

template <int R>
MXK_BF16_TARGET void panel_rows(const uint16_t* p, const uint16_t* ap, int64_t n, int64_t Kp, int64_t j,
                                float alpha, const float* bias, float* y, int64_t ldy) {
  for (int64_t m0 = 0; m0 < n; m0 += kPanelTokens) {
    const uint16_t* a = ap + m0 * Kp;
    float* yy = y + m0 * ldy;
    switch (std::min<int64_t>(kPanelTokens, n - m0)) {
      case 1: panel_tile<R, 1>(p, a, Kp, j, alpha, bias, yy, ldy); break;
      case 2: panel_tile<R, 2>(p, a, Kp, j, alpha, bias, yy, ldy); break;
      case 3: panel_tile<R, 3>(p, a, Kp, j, alpha, bias, yy, ldy); break;
      case 4: panel_tile<R, 4>(p, a, Kp, j, alpha, bias, yy, ldy); break;
      case 5: panel_tile<R, 5>(p, a, Kp, j, alpha, bias, yy, ldy); break;
      case 6: panel_tile<R, 6>(p, a, Kp, j, alpha, bias, yy, ldy); break;
      default: break;
    }
  }
}

template <class F>
MXK_BF16_TARGET bool panel16_avx512(const Fp4Weight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t n,
                                    float alpha, const float* bias, float* y, int64_t ldy) {
  const float* lut = decode_table(Encoding::E2M1);
  alignas(64) uint16_t t[32];
  for (int c = 0; c < 32; ++c) t[c] = f32_to_bf16(lut[c % 16]);  // e2m1 values are exact in bf16
  const __m512i lut16 = _mm512_load_si512(t);
  Consts k;
  k.sidx = F::block == 16 ? _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)
                          : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  k.gs = _mm512_set1_ps(w.gs);
  const int64_t Kp = fp4_act_stride(w.K);
  thread_local std::unique_ptr<uint16_t[]> buf;  // per thread, grows only
  thread_local int64_t cap = 0;
  if (kPanelRows * Kp > cap) buf.reset(new uint16_t[size_t(kPanelRows * Kp)]), cap = kPanelRows * Kp;
  uint16_t* const panel = buf.get();
  for (int64_t j0 = r0; j0 < r1; j0 += kPanelRows) {
    const int64_t nr = std::min(kPanelRows, r1 - j0);
    if (!decode_panel16<F>(w, j0, nr, Kp, panel, k, lut16)) return false;
    int64_t jj = 0;
    for (; jj + 4 <= nr; jj += 4) panel_rows<4>(panel + jj * Kp, ap, n, Kp, j0 + jj, alpha, bias, y, ldy);
    for (; jj < nr; ++jj) panel_rows<1>(panel + jj * Kp, ap, n, Kp, j0 + jj, alpha, bias, y, ldy);
  }
  return true;
}


// One 128-column chunk (n_valid columns) of a row into the bf16 layout; false when a value does
// not pass (see fp4_pack_activations_bf16).
MXK_TARGET bool pack16_chunk_avx512(const float* src, int64_t n_valid, uint16_t* dst) {
  __m512i v[8];
  __m512i low = _mm512_setzero_si512();
  __mmask16 bad = 0;
  const __m512i lo = _mm512_set1_epi32(0x1f800000), span = _mm512_set1_epi32(0x5f800000 - 0x1f800000);
  for (int i = 0; i < 8; ++i) {
    const int64_t left = n_valid - 16 * i;
    const __mmask16 m = left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
    v[i] = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, src + 16 * i));
    low = _mm512_or_si512(low, v[i]);
    const __m512i mag = _mm512_and_si512(v[i], _mm512_set1_epi32(0x7fffffff));
    bad |= _mm512_mask_cmpgt_epu32_mask(_mm512_test_epi32_mask(mag, mag), _mm512_sub_epi32(mag, lo), span);
  }
  if (bad || _mm512_test_epi32_mask(low, _mm512_set1_epi32(0xffff))) return false;
  // nat[k] word i = top half of column 32k + i.
  __m512i odd_idx = _mm512_setzero_si512();
  alignas(64) uint16_t idx[32];
  for (int i = 0; i < 32; ++i) idx[i] = uint16_t(2 * i + 1);
  odd_idx = _mm512_load_si512(idx);
  __m512i nat[4];
  for (int k = 0; k < 4; ++k) nat[k] = _mm512_permutex2var_epi16(v[2 * k], odd_idx, v[2 * k + 1]);
  for (int s = 0; s < 4; ++s) {
    for (int w = 0; w < 32; ++w) idx[w] = uint16_t((4 * w + s) & 63);
    const __m512i sel = _mm512_load_si512(idx);
    const __m512i a = _mm512_permutex2var_epi16(nat[0], sel, nat[1]);  // w < 16: columns 4w + s
    const __m512i b = _mm512_permutex2var_epi16(nat[2], sel, nat[3]);  // w < 16: columns 64 + 4w + s
    _mm512_storeu_si512(dst + 32 * s, _mm512_inserti64x4(a, _mm512_castsi512_si256(b), 1));
  }
  return true;
}

bool cpu_has_bf16() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return ok;
}

}  // namespace

void fp4_gemv(const Fp4Weight& w, int64_t r0, int64_t r1, const float* ap, int64_t n, float alpha,
              const float* bias, float* y, int64_t ldy, bool allow_simd) {
  if (r1 <= r0 || n <= 0) return;
  // The UE4M3 decode relies on float32 subnormal arithmetic: no SIMD under denormals-are-zero.
  const bool daz = (_mm_getcsr() & 0x0040) != 0;
  if (allow_simd && simd_active() && !daz && w.K % 16 == 0) {
    if (w.block == 16 && w.scale == Encoding::UE4M3) {
      if (w.gs > 0) return gemv_avx512<Fmt<16, true, true>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
      return gemv_avx512<Fmt<16, true, false>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
    }
    if (w.block == 32 && w.scale == Encoding::UE8M0 && w.gs <= 0)
      return gemv_avx512<Fmt<32, false, false>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
  }
  const int64_t Kp = fp4_act_stride(w.K);
  gemv_scalar(w, r0, r1, n, alpha, bias, y, ldy, [&](int64_t m, int64_t c) { return ap[m * Kp + packed_pos(c)]; });
}

bool fp4_bf16_dot_active() { return simd_active() && cpu_has_bf16(); }

bool fp4_pack_activations_bf16(const float* a, int64_t n, int64_t K, uint16_t* ap) {
  const int64_t Kp = fp4_act_stride(K);
  const bool simd = simd_active();
  for (int64_t m = 0; m < n; ++m) {
    const float* src = a + m * K;
    uint16_t* dst = ap + m * Kp;
    for (int64_t c0 = 0; c0 < Kp; c0 += 128) {
      if (simd) {
        if (!pack16_chunk_avx512(src + c0, std::min<int64_t>(128, K - c0), dst + c0)) return false;
        continue;
      }
      for (int s = 0; s < 4; ++s)
        for (int wl = 0; wl < 32; ++wl) {
          const int64_t c = c0 + 4 * wl + s;
          const float v = c < K ? src[c] : 0.0f;
          uint32_t u;
          std::memcpy(&u, &v, 4);
          const float mag = v < 0 ? -v : v;
          if ((u & 0xffffu) != 0 || (v != 0 && !(mag >= 0x1p-64f && mag <= 0x1p64f))) return false;
          dst[c0 + 32 * s + wl] = uint16_t(u >> 16);
        }
    }
  }
  return true;
}

void fp4_gemv_bf16(const Fp4Weight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t n, float alpha,
                   const float* bias, float* y, int64_t ldy, bool allow_simd) {
  if (r1 <= r0 || n <= 0) return;
  const bool daz = (_mm_getcsr() & 0x0040) != 0;
  if (allow_simd && fp4_bf16_dot_active() && !daz && w.K % 16 == 0) {
    if (w.block == 16 && w.scale == Encoding::UE4M3) {
      if (w.gs > 0) return gemv16_avx512<Fmt<16, true, true>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
      return gemv16_avx512<Fmt<16, true, false>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
    }
    if (w.block == 32 && w.scale == Encoding::UE8M0 && w.gs <= 0)
      return gemv16_avx512<Fmt<32, false, false>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
  }
  const int64_t Kp = fp4_act_stride(w.K);
  gemv_scalar(w, r0, r1, n, alpha, bias, y, ldy,
              [&](int64_t m, int64_t c) { return bf16_to_f32(ap[m * Kp + packed_pos16(c)]); });
}

bool fp4_gemm_panel_bf16(const Fp4Weight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t n, float alpha,
                         const float* bias, float* y, int64_t ldy) {
  if (r1 <= r0 || n <= 0) return true;
  const bool daz = (_mm_getcsr() & 0x0040) != 0;
  if (!fp4_bf16_dot_active() || daz || w.K % 16 != 0) return false;
  if (w.block == 16 && w.scale == Encoding::UE4M3) {
    if (w.gs > 0) return panel16_avx512<Fmt<16, true, true>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
    return panel16_avx512<Fmt<16, true, false>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
  }
  if (w.block == 32 && w.scale == Encoding::UE8M0 && w.gs <= 0)
    return panel16_avx512<Fmt<32, false, false>>(w, r0, r1, ap, n, alpha, bias, y, ldy);
  return false;
}

}  // namespace mxmoe::moe::cpu
