// Fused decode + GEMV for vllm-mode NVFP4 weights at few token rows, from a per-projection table of
// bf16 weight values per scale byte (Nvfp4VllmTable): vllm rounds every weight q * (scale / gs) to
// bf16, so the fused kernel of fused_gemv.cpp splits each weight into two exact terms and needs two
// lookups and two dot products per 32 weights; here one two-register permute yields the rounded
// weights themselves.
//
// Layout: half h of a 64-byte chunk (bytes 32h..32h+31, columns 64h..64h+63, 4 scale blocks) is
// zero-extended to 32 16-bit lanes: lane i holds columns 64h + 2i (low nibble) and 64h + 2i + 1
// (high nibble), both in block i / 8 of the half. The four blocks' 16-entry table rows fill two
// registers, so vpermt2w with index nibble + 16 * (i / 8) decodes 32 weights. The activations are
// rearranged from the bf16 layout of fp4_pack_activations_bf16 into the matching "pair" order
// (vector 2h + p, lane i = column 64h + 2i + p) once per call.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "moe/cpu/heuristics.hpp"
#include "moe/cpu/simd_kernels.hpp"

#define VLK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define VLK_INLINE VLK_TARGET inline __attribute__((always_inline))

namespace mxmoe::moe::cpu {
namespace {

constexpr int kBlock = 16;                 // NVFP4
constexpr int kScalesPerChunk = 128 / kBlock;

VLK_INLINE __m512 dp(__m512 acc, __m512i w, __m512i a) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)a); }

// Multipliers the table holds (others, and NaN, get NaN rows): in range, every product with a packed
// activation ([2^-64, 2^64]) is a normal float32, which vdpbf16ps and vcvtneps2bf16 handle exactly.
bool in_table_range(float m) { return m == 0.0f || (m >= 0x1p-35f && m <= 0x1p33f); }

VLK_TARGET void fill_rows(float gs, Nvfp4VllmTable* t) {
  const __m512 e2m1 = _mm512_loadu_ps(decode_table(Encoding::E2M1));
  const float* st = decode_table(Encoding::UE4M3);
  for (int s = 0; s < 256; ++s) {
    const float m = st[s] / gs;
    __m256i row = _mm256_set1_epi16(0x7fc0);  // bf16 NaN: the row's outputs are recomputed
    // vcvtneps2bf16 rounds to nearest even exactly as f32_to_bf16 on normal inputs.
    if (in_table_range(m))
      row = (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(e2m1, _mm512_set1_ps(m)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(t->w[s]), row);
  }
}

// n token rows of the bf16 layout (column 4w + s of a chunk at 32s + w) into the pair layout.
VLK_TARGET void to_pair_layout(const uint16_t* ap, int64_t n, int64_t Kp, uint16_t* out) {
  alignas(64) uint16_t idx[2][32];
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 32; ++i) idx[h][i] = uint16_t((i % 2) * 32 + 16 * h + i / 2);
  const __m512i sel[2] = {_mm512_load_si512(idx[0]), _mm512_load_si512(idx[1])};
  for (int64_t c = 0; c < n * Kp; c += 128) {
    __m512i q[4];
    for (int s = 0; s < 4; ++s) q[s] = _mm512_loadu_si512(ap + c + 32 * s);
    for (int h = 0; h < 2; ++h)
      for (int p = 0; p < 2; ++p)
        _mm512_storeu_si512(out + c + 32 * (2 * h + p), _mm512_permutex2var_epi16(q[p], sel[h], q[2 + p]));
  }
}

// The table rows of two scale codes, in the low and high halves of one register.
VLK_INLINE __m512i table_rows(const Nvfp4VllmTable& t, uint8_t s0, uint8_t s1) {
  const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.w[s0]));
  const __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.w[s1]));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// One 128-column chunk `ch` of R weight rows from row j times NT token rows of the pair-layout
// activations `a` into acc (with kS = 2, even and odd columns apart: two dot-product chains per row
// and token, for few chains).
// kTail: the last chunk of a row that ends inside it (masked code loads, code 0 for absent blocks).
template <int R, int NT, int kS, bool kTail>
VLK_INLINE void chunk_step(const Fp4Weight& w, const Nvfp4VllmTable& t, int64_t j, const uint16_t* a, int64_t Kp,
                           int64_t ch, __m512 (&acc)[R][NT][kS]) {
  const int64_t rb = w.K / 2, nb = w.K / kBlock;
  alignas(64) static constexpr uint16_t kBlk[32] = {0,  0,  0,  0,  0,  0,  0,  0,  16, 16, 16, 16, 16, 16, 16, 16,
                                                    32, 32, 32, 32, 32, 32, 32, 32, 48, 48, 48, 48, 48, 48, 48, 48};
  const __m512i blk = _mm512_load_si512(kBlk), low4 = _mm512_set1_epi16(0x0f);  // lane i: 16 * (i / 8)
  const int64_t cb = kTail ? rb - ch * 64 : 64;  // code bytes in this chunk
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const uint8_t* cp = w.codes + (j + r) * rb + ch * 64;
    const uint8_t* sp = w.scales + (j + r) * nb + ch * kScalesPerChunk;
    _mm_prefetch(reinterpret_cast<const char*>(cp + kFp4PrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(sp + kFp4PrefetchBytes / 8), _MM_HINT_T0);
    uint64_t sc = 0;  // the chunk's 8 scale bytes; blocks past K read code 0, whose table row is zeros
    std::memcpy(&sc, sp, kTail ? size_t(nb - ch * kScalesPerChunk) : kScalesPerChunk);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256i bytes;
      if constexpr (kTail) {
        const int64_t left = std::clamp<int64_t>(cb - 32 * h, 0, 32);
        bytes = _mm256_maskz_loadu_epi8(__mmask32(left == 32 ? ~0u : (1u << left) - 1), cp + 32 * h);
      } else {
        bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp + 32 * h));
      }
      const __m512i x = _mm512_cvtepu8_epi16(bytes);
      const uint64_t s4 = sc >> (32 * h);
      const __m512i t01 = table_rows(t, uint8_t(s4), uint8_t(s4 >> 8));
      const __m512i t23 = table_rows(t, uint8_t(s4 >> 16), uint8_t(s4 >> 24));
      const __m512i ilo = _mm512_ternarylogic_epi32(x, low4, blk, 0xEA);  // (x & 15) | blk
      const __m512i ihi = _mm512_or_si512(_mm512_srli_epi16(x, 4), blk);
      const __m512i wlo = _mm512_permutex2var_epi16(t01, ilo, t23), whi = _mm512_permutex2var_epi16(t01, ihi, t23);
#pragma GCC unroll 4
      for (int m = 0; m < NT; ++m) {
        const uint16_t* am = a + m * Kp + ch * 128 + 64 * h;
        acc[r][m][0] = dp(acc[r][m][0], wlo, _mm512_loadu_si512(am));
        acc[r][m][kS - 1] = dp(acc[r][m][kS - 1], whi, _mm512_loadu_si512(am + 32));
      }
    }
  }
}

// R weight rows x NT token rows from row j, chunks [ch0, ch1): part[r * 8 + m] += the partial dot
// products.
template <int R, int NT>
VLK_INLINE void rows_kernel(const Fp4Weight& w, const Nvfp4VllmTable& t, int64_t j, const uint16_t* a, int64_t Kp,
                            int64_t ch0, int64_t ch1, float* part) {
  constexpr int kS = R * NT <= 8 ? 2 : 1;
  __m512 acc[R][NT][kS];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m)
      for (int h = 0; h < kS; ++h) acc[r][m][h] = _mm512_setzero_ps();
  const int64_t full_end = std::min(ch1, w.K / 128);
  for (int64_t ch = ch0; ch < full_end; ++ch) chunk_step<R, NT, kS, false>(w, t, j, a, Kp, ch, acc);
  if (ch1 > full_end) chunk_step<R, NT, kS, true>(w, t, j, a, Kp, full_end, acc);
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < NT; ++m)
      part[r * 8 + m] += _mm512_reduce_add_ps(kS == 2 ? _mm512_add_ps(acc[r][m][0], acc[r][m][kS - 1]) : acc[r][m][0]);
}

constexpr int kTokenGroup = 4;

// Rows [r0, r1) (at most kRowStep) for NT token rows, K in slabs of 16 KiB of activations (L1).
template <int NT>
VLK_TARGET void rows_loop(const Fp4Weight& w, const Nvfp4VllmTable& t, int64_t r0, int64_t r1, const uint16_t* a,
                          int64_t Kp, float alpha, const float* bias, float* y, int64_t ldy) {
  constexpr int R = 4;
  constexpr int64_t kSlabChunks = std::max<int64_t>(1, 16384 / (NT * 2 * 128));
  float part[kRowStep * 8] = {};
  const int64_t nch = Kp / 128;
  for (int64_t c0 = 0; c0 < nch; c0 += kSlabChunks) {
    const int64_t c1 = std::min(nch, c0 + kSlabChunks);
    int64_t j = r0;
    for (; j + R <= r1; j += R) rows_kernel<R, NT>(w, t, j, a, Kp, c0, c1, part + (j - r0) * 8);
    for (; j < r1; ++j) rows_kernel<1, NT>(w, t, j, a, Kp, c0, c1, part + (j - r0) * 8);
  }
  for (int64_t j = r0; j < r1; ++j)
    for (int m = 0; m < NT; ++m) y[m * ldy + j] = part[(j - r0) * 8 + m] * alpha + (bias ? bias[j] : 0.0f);
}

VLK_TARGET void gemv_avx512(const Fp4Weight& w, const Nvfp4VllmTable& t, int64_t r0, int64_t r1,
                            const uint16_t* ap, int64_t n, float alpha, const float* bias, float* y, int64_t ldy) {
  const int64_t Kp = fp4_act_stride(w.K);
  thread_local std::unique_ptr<uint16_t[]> buf;  // per thread, grows only
  thread_local int64_t cap = 0;
  if (n * Kp > cap) buf.reset(new uint16_t[size_t(n * Kp)]), cap = n * Kp;
  uint16_t* const pair = buf.get();
  to_pair_layout(ap, n, Kp, pair);
  for (int64_t j0 = r0; j0 < r1; j0 += kRowStep) {
    const int64_t j1 = std::min(r1, j0 + kRowStep);
    for (int64_t m0 = 0; m0 < n; m0 += kTokenGroup) {
      with_token_group<kTokenGroup>(std::min<int64_t>(kTokenGroup, n - m0), [&](auto nt) {
        rows_loop<nt>(w, t, j0, j1, pair + m0 * Kp, Kp, alpha, bias, y + m0 * ldy, ldy);
      });
    }
    // Activations are finite and no sum can overflow, so a NaN output means a NaN table row: the
    // row holds a scale code outside the table's range (or a NaN scale).
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t m = 0; m < n; ++m)
        if (std::isnan(y[m * ldy + j])) {
          fp4_gemv_bf16(w, j, j + 1, ap, n, alpha, bias, y, ldy);
          break;
        }
  }
}

}  // namespace

// Without AVX512_BF16 (where the table kernel never runs) the same values from the scalar rounding, so
// building a table is safe on every CPU.
void nvfp4_vllm_table(float gs, Nvfp4VllmTable* t) {
  if (fp4_bf16_dot_active()) return fill_rows(gs, t);
  const float* e2m1 = decode_table(Encoding::E2M1);
  const float* st = decode_table(Encoding::UE4M3);
  for (int s = 0; s < 256; ++s) {
    const float m = st[s] / gs;
    for (int i = 0; i < 16; ++i) t->w[s][i] = in_table_range(m) ? f32_to_bf16(e2m1[i] * m) : uint16_t(0x7fc0);
  }
}

void fp4_gemv_vllm_table(const Fp4Weight& w, const Nvfp4VllmTable& t, int64_t r0, int64_t r1, const uint16_t* ap,
                         int64_t n, float alpha, const float* bias, float* y, int64_t ldy) {
  if (r1 <= r0 || n <= 0) return;
  const bool daz = (_mm_getcsr() & 0x0040) != 0;
  if (fp4_bf16_dot_active() && !daz && w.K % kBlock == 0 && w.block == kBlock && w.scale == Encoding::UE4M3 &&
      w.gs > 0)
    return gemv_avx512(w, t, r0, r1, ap, n, alpha, bias, y, ldy);
  fp4_gemv_bf16(w, r0, r1, ap, n, alpha, bias, y, ldy);
}

}  // namespace mxmoe::moe::cpu
