// Fast decoding of packed weight rows to float32: FP4 (nvfp4, mxfp4) with a 16-entry permute table,
// 6- and 8-bit elements (mxfp6, mxfp8, mxint8) by exact bit arithmetic; AVX-512 chosen at run time,
// the scalar path is the fallback and the reference for tests.
#include "moe/cpu/simd_kernels.hpp"

// GCC 12 reports its own _mm512_undefined_* placeholders as maybe-uninitialized in target() functions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "mxmoe/quant.hpp"

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

std::atomic<bool> g_force_scalar{false};

bool cpu_has_avx512() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return ok;
}

bool have_avx512() { return !g_force_scalar.load(std::memory_order_relaxed) && cpu_has_avx512(); }

// ---- 6- and 8-bit elements ---------------------------------------------------------------------

void decode_wide_scalar(const uint8_t* packed, const float* block_mult, int64_t K, int block, int bits,
                        Encoding element, bool to_bf16, float* out) {
  const float* lut = decode_table(element);
  std::vector<uint8_t> codes(static_cast<size_t>(K));
  unpack_codes(packed, K, bits, codes.data());
  for (int64_t c = 0; c < K; ++c) {
    const float v = lut[codes[size_t(c)]] * block_mult[c / block];
    out[c] = to_bf16 ? rne_bf16(v) : v;
  }
}

// 16 codes of `bits` bits (6: 12 bytes, 4 codes per little-endian 24-bit group) as int32 lanes.
template <int bits>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512i unpack16(const uint8_t* in) {
  if constexpr (bits == 8) return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)));
  const __m128i b = _mm_maskz_loadu_epi8(0x0fff, in);
  const __m128i g = _mm_shuffle_epi8(b, _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1));
  const __m512i x = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                             _mm512_castsi128_si512(g));
  const __m512i sh = _mm512_setr_epi32(0, 6, 12, 18, 0, 6, 12, 18, 0, 6, 12, 18, 0, 6, 12, 18);
  return _mm512_and_si512(_mm512_srlv_epi32(x, sh), _mm512_set1_epi32(0x3f));
}

// Exact decode of 16 codes: a minifloat's magnitude bits placed under the float32 exponent field
// are the value times 2^(bias - 127) (subnormal codes land on float32 subnormals), fixed by one
// multiply; E4M3's S.1111.111 is NaN, E5M2's all-ones exponent Inf/NaN; INT8 is k / 64.
template <Encoding e>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512 decode16(__m512i c) {
  if constexpr (e == Encoding::INT8)
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(c, 24), 24)), _mm512_set1_ps(1.0f / 64));
  constexpr auto t = traits(e);
  const __m512i mag = _mm512_and_si512(c, _mm512_set1_epi32((1 << (t.bits - 1)) - 1));
  const __m512i sign = _mm512_slli_epi32(_mm512_srli_epi32(c, t.bits - 1), 31);
  __m512 v = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(mag, 23 - t.mbits)),
                           _mm512_castsi512_ps(_mm512_set1_epi32((254 - t.bias) << 23)));
  if constexpr (t.special == Special::FnNaN)
    v = _mm512_mask_mov_ps(v, _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f)),
                           _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
  if constexpr (t.special == Special::IEEE) {
    const __m512i inf_code = _mm512_set1_epi32(((1 << t.ebits) - 1) << t.mbits);
    v = _mm512_mask_mov_ps(v, _mm512_cmpeq_epi32_mask(mag, inf_code), _mm512_set1_ps(INFINITY));
    v = _mm512_mask_mov_ps(v, _mm512_cmpgt_epi32_mask(mag, inf_code),
                           _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
  }
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), sign));
}

template <int bits, Encoding element>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void decode_wide_avx512(const uint8_t* packed,
                                                                               const float* block_mult, int64_t K,
                                                                               int block, bool to_bf16, float* out) {
  for (int64_t c = 0; c < K; c += 16) {
    // Rows are short (K * bits / 8 bytes): fetch 4 KiB ahead so the next rows are in flight.
    if (c % 512 == 0) _mm_prefetch(reinterpret_cast<const char*>(packed + c * bits / 8 + 4096), _MM_HINT_T0);
    __m512 v = decode16<element>(unpack16<bits>(packed + c * bits / 8));
    v = _mm512_mul_ps(v, _mm512_set1_ps(block_mult[c / block]));
    if (to_bf16) {
      __m512i u = _mm512_castps_si512(v);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
      v = _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32(int(0xffff0000u))));
    }
    _mm512_storeu_ps(out + c, v);
  }
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

void force_scalar(bool on) { g_force_scalar.store(on, std::memory_order_relaxed); }
bool simd_active() { return have_avx512(); }

void decode_wide_row(const uint8_t* packed, const float* block_mult, int64_t K, int block, int bits,
                     Encoding element, bool to_bf16, float* out, bool allow_simd) {
  const bool daz = (_mm_getcsr() & 0x0040) != 0;  // the exact decode needs float32 subnormals
  if (allow_simd && have_avx512() && !daz && K % 16 == 0 && block % 16 == 0 && bits == traits(element).bits)
    switch (element) {
      case Encoding::E2M3: return decode_wide_avx512<6, Encoding::E2M3>(packed, block_mult, K, block, to_bf16, out);
      case Encoding::E3M2: return decode_wide_avx512<6, Encoding::E3M2>(packed, block_mult, K, block, to_bf16, out);
      case Encoding::E4M3: return decode_wide_avx512<8, Encoding::E4M3>(packed, block_mult, K, block, to_bf16, out);
      case Encoding::E5M2: return decode_wide_avx512<8, Encoding::E5M2>(packed, block_mult, K, block, to_bf16, out);
      case Encoding::INT8: return decode_wide_avx512<8, Encoding::INT8>(packed, block_mult, K, block, to_bf16, out);
      default: break;
    }
  decode_wide_scalar(packed, block_mult, K, block, bits, element, to_bf16, out);
}

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
