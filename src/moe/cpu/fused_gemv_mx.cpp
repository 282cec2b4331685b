// Fused decode + GEMV for MXFP6 and MXFP8 expert weights (E2M3, E3M2, E4M3, E5M2; UE8M0 scales,
// block 32) with few token rows and bf16-exact activations: every element value is exact in bf16 and
// comes out of word permutes, so the weights are decoded in registers instead of to a float32 row.
//
// Layout: the activations are in the bf16 layout of fp4_pack_activations_bf16 (column 4w + s of a
// 128-column chunk at 32s + w). 6-bit: column 4w + s is code s of 24-bit group w of the chunk's 96
// bytes, so vector s is one vpermi2b (bytes 3w + {0, 0, 1, 2}[s] and the next one into word w), one
// shift by {0, 6, 4, 2}[s] and one vpermt2w over the 64 bf16 element values (it reads only index
// bits 0-5). 8-bit: byte 4w + s into word w (zero high byte), two vpermt2w over the 128 magnitudes
// chosen by bit 6, and the sign bit moved to bit 15. As in the FP4 kernels, float lane l of vdpbf16ps
// covers columns 8l..8l+7 of one block: the lane sums of a chunk are multiplied by the block scales
// once. Float32 activations (fp4_pack_activations: column 8l + s at 16s + l): the even 16-bit lanes
// of vector s widened to float32 are columns 8l + s, the odd ones 8l + 4 + s, so two FMAs with float
// vectors s and s + 4 replace the dot product and the lane / scale structure is unchanged.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <type_traits>

#include "moe/cpu/heuristics.hpp"
#include "moe/cpu/simd_kernels.hpp"

#define MXW_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi")))
#define MXW_INLINE MXW_TARGET inline __attribute__((always_inline))

namespace mxmoe::moe::cpu {
namespace {

constexpr int kBlock = 32;

MXW_INLINE __m512 dp(__m512 acc, __m512i w, __m512i a) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)a); }

struct Consts {
  __m512i byte_idx[4], tab[4], sidx;  // tab: bf16 element values (6-bit: codes 0-63; 8-bit: magnitudes 0-127)
};

// The 32 weights of vector s of a chunk (bytes lo = 0-63, hi = 64-) as bf16 element values.
template <int kBits>
MXW_INLINE __m512i decode32(__m512i lo, __m512i hi, int s, const Consts& k) {
  if constexpr (kBits == 6) {
    __m512i x = _mm512_permutex2var_epi8(lo, k.byte_idx[s], hi);
    if (s > 0) x = _mm512_srli_epi16(x, s == 1 ? 6 : s == 2 ? 4 : 2);
    return _mm512_permutex2var_epi16(k.tab[0], x, k.tab[1]);
  } else {
    const __m512i x = _mm512_maskz_permutex2var_epi8(0x5555555555555555ull, lo, k.byte_idx[s], hi);
    const __m512i v = _mm512_mask_mov_epi16(_mm512_permutex2var_epi16(k.tab[0], x, k.tab[1]),
                                            _mm512_test_epi16_mask(x, _mm512_set1_epi16(0x40)),
                                            _mm512_permutex2var_epi16(k.tab[2], x, k.tab[3]));
    return _mm512_ternarylogic_epi32(_mm512_slli_epi16(x, 8), _mm512_set1_epi16(int16_t(0x8000)), v, 0xEA);  // sign | v
  }
}

// The 16-lane block-scale vector of chunk `ch` (lane l: the scale of column 8l). UE8M0: 2^(code -
// 127); code 0 is the float32 subnormal 2^-127, 0xFF NaN.
MXW_INLINE __m512 scale_vec(const uint8_t* srow, int64_t ch, int64_t nb, const Consts& k) {
  const int64_t b0 = ch * (128 / kBlock), cnt = std::min<int64_t>(128 / kBlock, nb - b0);
  const __m128i sb = _mm_maskz_loadu_epi8(__mmask16((1u << cnt) - 1), srow + b0);
  const __m512i si = _mm512_permutexvar_epi32(k.sidx, _mm512_cvtepu8_epi32(sb));
  __m512i b = _mm512_slli_epi32(si, 23);
  b = _mm512_mask_mov_epi32(b, _mm512_cmpeq_epi32_mask(si, _mm512_setzero_si512()), _mm512_set1_epi32(0x00400000));
  b = _mm512_mask_mov_epi32(b, _mm512_cmpeq_epi32_mask(si, _mm512_set1_epi32(0xff)), _mm512_set1_epi32(0x7fc00000));
  return _mm512_castsi512_ps(b);
}

// R weight rows x NT token rows from row j, chunks [ch0, ch1): part[r * 8 + m] += the partial dot
// products.
template <int kBits, class A, int R, int NT>
MXW_INLINE void rows_kernel(const MxWeight& w, int64_t j, const A* ap, int64_t Kp, int64_t ch0, int64_t ch1,
                            float* part, const Consts& k) {
  constexpr int64_t kChunkBytes = 128 * kBits / 8;
  const int64_t rb = w.K * kBits / 8, nb = w.K / kBlock;
  constexpr bool kSplit = R * NT <= 4;  // two dot-product chains per accumulator (latency)
  constexpr int kH = kSplit ? 2 : 1;
  __m512 acc[R][NT];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t ch = ch0; ch < ch1; ++ch) {
    const int64_t cb = std::min<int64_t>(kChunkBytes, rb - ch * kChunkBytes);
    const __mmask64 m0 = cb >= 64 ? ~__mmask64(0) : (__mmask64(1) << cb) - 1;
    const __mmask64 m1 = cb <= 64 ? 0 : cb >= 128 ? ~__mmask64(0) : (__mmask64(1) << (cb - 64)) - 1;
    __m512i lo[R], hi[R];
    __m512 sc[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* cp = w.codes + (j + r) * rb + ch * kChunkBytes;
      _mm_prefetch(reinterpret_cast<const char*>(cp + kFp4PrefetchBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(cp + kFp4PrefetchBytes + 64), _MM_HINT_T0);  // 96-128 bytes
      lo[r] = _mm512_maskz_loadu_epi8(m0, cp);
      hi[r] = _mm512_maskz_loadu_epi8(m1, cp + 64);
      sc[r] = scale_vec(w.scales + (j + r) * nb, ch, nb, k);
    }
    const A* a = ap + ch * 128;
    __m512 p[R][NT][kH];
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512i wv = decode32<kBits>(lo[r], hi[r], s, k);
        const int h = kSplit ? s & 1 : 0;
        for (int m = 0; m < NT; ++m) {
          const __m512 p0 = s < kH ? _mm512_setzero_ps() : p[r][m][h];
          if constexpr (std::is_same_v<A, uint16_t>) {
            p[r][m][h] = dp(p0, wv, _mm512_loadu_si512(a + m * Kp + 32 * s));
          } else {
            const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(wv, 16));
            const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(wv, _mm512_set1_epi32(int(0xffff0000u))));
            p[r][m][h] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(a + m * Kp + 16 * (s + 4)),
                                         _mm512_fmadd_ps(we, _mm512_loadu_ps(a + m * Kp + 16 * s), p0));
          }
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < NT; ++m)
        acc[r][m] = _mm512_fmadd_ps(kSplit ? _mm512_add_ps(p[r][m][0], p[r][m][kH - 1]) : p[r][m][0], sc[r], acc[r][m]);
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m) part[r * 8 + m] += _mm512_reduce_add_ps(acc[r][m]);
}

constexpr int kTokenGroup = 4;

// Rows [r0, r1) (at most kRowStep) for NT token rows, K in slabs of 16 KiB of activations (L1).
template <int kBits, class A, int NT>
MXW_TARGET void rows_loop(const MxWeight& w, int64_t r0, int64_t r1, const A* ap, int64_t Kp, float alpha,
                          const float* bias, float* y, int64_t ldy, const Consts& k) {
  constexpr int R = NT == 1 ? 4 : 2;
  constexpr int64_t kSlabChunks = std::max<int64_t>(1, 16384 / (NT * int64_t(sizeof(A)) * 128));
  float part[kRowStep * 8] = {};
  const int64_t nch = Kp / 128;
  for (int64_t c0 = 0; c0 < nch; c0 += kSlabChunks) {
    const int64_t c1 = std::min(nch, c0 + kSlabChunks);
    int64_t j = r0;
    for (; j + R <= r1; j += R) rows_kernel<kBits, A, R, NT>(w, j, ap, Kp, c0, c1, part + (j - r0) * 8, k);
    for (; j < r1; ++j) rows_kernel<kBits, A, 1, NT>(w, j, ap, Kp, c0, c1, part + (j - r0) * 8, k);
  }
  for (int64_t j = r0; j < r1; ++j)
    for (int m = 0; m < NT; ++m) y[m * ldy + j] = part[(j - r0) * 8 + m] * alpha + (bias ? bias[j] : 0.0f);
}

template <int kBits, class A>
MXW_TARGET void gemv_avx512(const MxWeight& w, int64_t r0, int64_t r1, const A* ap, int64_t n, float alpha,
                            const float* bias, float* y, int64_t ldy) {
  Consts k;
  alignas(64) uint8_t idx[4][64];
  constexpr int kOff[4] = {0, 0, 1, 2};  // 6-bit: byte of group w holding the low bits of code s
  for (int s = 0; s < 4; ++s)
    for (int wl = 0; wl < 32; ++wl) {
      idx[s][2 * wl] = uint8_t(kBits == 6 ? 3 * wl + kOff[s] : 4 * wl + s);
      idx[s][2 * wl + 1] = uint8_t(kBits == 6 ? 3 * wl + kOff[s] + 1 : 0);  // 8-bit: masked to zero
    }
  for (int s = 0; s < 4; ++s) k.byte_idx[s] = _mm512_load_si512(idx[s]);
  // Finite element values have at most 4 significant bits and lie in [2^-16, 57344]: normal bf16.
  alignas(64) uint16_t tab[128];
  for (int c = 0; c < 128; ++c) tab[c] = f32_to_bf16(decode_table(w.element)[c % (1 << kBits)]);
  for (int i = 0; i < 4; ++i) k.tab[i] = _mm512_load_si512(tab + 32 * i);
  k.sidx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const int64_t Kp = fp4_act_stride(w.K);
  for (int64_t j0 = r0; j0 < r1; j0 += kRowStep) {
    const int64_t j1 = std::min(r1, j0 + kRowStep);
    for (int64_t m0 = 0; m0 < n; m0 += kTokenGroup) {
      with_token_group<kTokenGroup>(std::min<int64_t>(kTokenGroup, n - m0), [&](auto nt) {
        rows_loop<kBits, A, nt>(w, j0, j1, ap + m0 * Kp, Kp, alpha, bias, y + m0 * ldy, ldy, k);
      });
    }
  }
}

// Column c of a row in the bf16 activation layout (uint16_t) or the float32 one.
inline int64_t packed_pos(const uint16_t*, int64_t c) { return c / 128 * 128 + 32 * (c % 4) + (c % 128) / 4; }
inline int64_t packed_pos(const float*, int64_t c) { return c / 128 * 128 + 16 * (c % 8) + (c % 128) / 8; }
inline float act_value(uint16_t v) { return bf16_to_f32(v); }
inline float act_value(float v) { return v; }

// Element by element in column order, as the ref backend sums.
template <class A>
void gemv_scalar(const MxWeight& w, int64_t r0, int64_t r1, const A* ap, int64_t n, float alpha,
                 const float* bias, float* y, int64_t ldy) {
  const float* lut = decode_table(w.element);
  const float* st = decode_table(Encoding::UE8M0);
  const int bits = traits(w.element).bits;
  const int64_t rb = w.K * bits / 8, nb = w.K / kBlock, Kp = fp4_act_stride(w.K);
  for (int64_t j = r0; j < r1; ++j)
    for (int64_t m = 0; m < n; ++m) {
      float acc = 0;
      for (int64_t c = 0; c < w.K; ++c) {
        uint32_t code;
        if (bits == 6) {  // 4 codes per 3 bytes
          const uint8_t* g = w.codes + j * rb + c / 4 * 3;
          code = ((uint32_t(g[0]) | uint32_t(g[1]) << 8 | uint32_t(g[2]) << 16) >> (6 * (c % 4))) & 0x3f;
        } else {
          code = w.codes[j * rb + c];
        }
        const float v = lut[code] * st[w.scales[j * nb + c / kBlock]];
        acc += act_value(ap[m * Kp + packed_pos(ap, c)]) * v;
      }
      y[m * ldy + j] = acc * alpha + (bias ? bias[j] : 0.0f);
    }
}

bool cpu_has_vbmi() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi") != 0;
  }();
  return ok;
}

}  // namespace

namespace {

template <class A>
void mx_gemv_any(const MxWeight& w, int64_t r0, int64_t r1, const A* ap, int64_t n, float alpha, const float* bias,
                 float* y, int64_t ldy, bool allow_simd) {
  if (r1 <= r0 || n <= 0) return;
  const bool daz = (_mm_getcsr() & 0x0040) != 0;  // the scale decode relies on float32 subnormals
  if (allow_simd && fp4_bf16_dot_active() && cpu_has_vbmi() && !daz && w.K % kBlock == 0) {
    if (traits(w.element).bits == 6) return gemv_avx512<6>(w, r0, r1, ap, n, alpha, bias, y, ldy);
    return gemv_avx512<8>(w, r0, r1, ap, n, alpha, bias, y, ldy);
  }
  gemv_scalar(w, r0, r1, ap, n, alpha, bias, y, ldy);
}

}  // namespace

void mx_gemv_bf16(const MxWeight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t n, float alpha,
                  const float* bias, float* y, int64_t ldy, bool allow_simd) {
  mx_gemv_any(w, r0, r1, ap, n, alpha, bias, y, ldy, allow_simd);
}

void mx_gemv(const MxWeight& w, int64_t r0, int64_t r1, const float* ap, int64_t n, float alpha, const float* bias,
             float* y, int64_t ldy, bool allow_simd) {
  mx_gemv_any(w, r0, r1, ap, n, alpha, bias, y, ldy, allow_simd);
}

}  // namespace mxmoe::moe::cpu
