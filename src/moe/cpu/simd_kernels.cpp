// Fast decoding of packed FP4 weight rows (nvfp4, mxfp4) to float32: AVX-512 with a 16-entry
// permute table, chosen at run time; the scalar path is the fallback and the reference for tests.
#include "moe/cpu/simd_kernels.hpp"

#include <immintrin.h>

#include <cstring>

namespace mxmoe::moe::cpu {
namespace {

inline float rne_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

void decode_scalar(const uint8_t* packed, const float* block_mult, int64_t K, int block, bool to_bf16,
                   const float* lut, float* out) {
  for (int64_t c = 0; c < K; c += 2) {
    const uint8_t b = packed[c / 2];
    const float m = block_mult[c / block];
    out[c] = lut[b & 0xf] * m, out[c + 1] = lut[b >> 4] * m;
    if (to_bf16) out[c] = rne_bf16(out[c]), out[c + 1] = rne_bf16(out[c + 1]);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void decode_avx512(const uint8_t* packed,
                                                                         const float* block_mult, int64_t K,
                                                                         int block, bool to_bf16, const float* lut,
                                                                         float* out) {
  const __m512 table = _mm512_loadu_ps(lut);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  for (int64_t c = 0; c < K; c += 16) {
    uint64_t w;
    std::memcpy(&w, packed + c / 2, 8);
    const __m128i b = _mm_cvtsi64_si128(int64_t(w));
    // Element 2i is the low nibble of byte i, 2i+1 the high one: interleave (lo, hi) per byte.
    const __m128i nib = _mm_unpacklo_epi8(_mm_and_si128(b, low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4));
    __m512 v = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(nib), table);
    v = _mm512_mul_ps(v, _mm512_set1_ps(block_mult[c / block]));
    if (to_bf16) {  // round to nearest even at bf16 precision, kept in float32
      __m512i u = _mm512_castps_si512(v);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
      v = _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32(int(0xffff0000u))));
    }
    _mm512_storeu_ps(out + c, v);
  }
}

bool have_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl");
  return ok;
}

__attribute__((target("avx512f"))) float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + c + 16), _mm512_loadu_ps(b + c + 16), acc1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; c < n; ++c) s += a[c] * b[c];
  return s;
}

}  // namespace

float dot(const float* a, const float* b, int64_t n) {
  if (have_avx512()) return dot_avx512(a, b, n);
  float s = 0;
  for (int64_t c = 0; c < n; ++c) s += a[c] * b[c];
  return s;
}

void decode_fp4_row(const uint8_t* packed, const float* block_mult, int64_t K, int block, bool to_bf16,
                    const float* lut16, float* out, bool allow_simd) {
  if (allow_simd && have_avx512() && K % 16 == 0) decode_avx512(packed, block_mult, K, block, to_bf16, lut16, out);
  else decode_scalar(packed, block_mult, K, block, to_bf16, lut16, out);
}

}  // namespace mxmoe::moe::cpu
