// AVX-512 (F/BW/DQ/VL) block quantizers, bit-identical to mxmoe::ref (tests/quant/test_quant_cpu.cpp).
//
// Compiled with per-function target attributes rather than file-wide -m flags, so no AVX-512 code can
// leak into inline functions shared with other translation units; quant_cpu.cpp calls in only after a
// runtime CPU check.
//
// Layout of the work: a row is walked in groups of 16 blocks. Pass 1 takes each block's max |x| as the
// max of the float32 bit patterns with the sign cleared (integer order = float order for those, NaN
// sorts above Inf), and a transpose-reduce turns 16 such vectors into one vector of 16 block amaxes,
// so the scale rules run 16 blocks per instruction. Pass 2 re-reads the (L1-resident) group and
// encodes each element by exact integer rounding of its float32 significand at the element's
// quantum (see encode16), which yields both the code and its exact value, so qdq never materializes
// codes.
// GCC 12 reports its own _mm512_undefined_* placeholders as maybe-uninitialized in target() functions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "mxmoe/quant.hpp"
#include "quant/cpu/quant_cpu.hpp"

#define MXQ_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define MXQ_INLINE MXQ_TARGET inline __attribute__((always_inline))

namespace mxmoe::cpu::avx512 {
namespace {

// Element constants: mantissa bits, smallest normal exponent, code of max_finite (magnitude),
// storage bits, max_finite, and whether the code is a two's complement integer (MXINT8).
// MXINT8 is the minifloat with emin 0 and 6 mantissa bits: quantum 2^-6 below 2, saturated above.
struct ElemC {
  int mbits, emin, max_code, bits;
  float max_finite;
  bool int8;
};

constexpr ElemC elem_c(Encoding e) {
  switch (e) {
    case Encoding::E2M1: return {1, 0, 0x7, 4, 6.0f, false};
    case Encoding::E2M3: return {3, 0, 0x1f, 6, 7.5f, false};
    case Encoding::E3M2: return {2, -2, 0x1f, 6, 28.0f, false};
    case Encoding::E4M3: return {3, -6, 0x7e, 8, 448.0f, false};
    case Encoding::E5M2: return {2, -14, 0x7b, 8, 57344.0f, false};
    case Encoding::UE4M3: return {3, -6, 0x7e, 8, 448.0f, false};
    case Encoding::INT8: return {6, 0, 127, 8, 127.0f / 64.0f, true};
    default: return {0, 0, 0, 0, 0.0f, false};
  }
}

constexpr bool elem_c_matches_traits(Encoding e) {
  const auto c = elem_c(e);
  const auto& t = traits(e);
  return c.bits == t.bits && c.mbits == t.mbits && float(t.max_finite) == c.max_finite &&
         (e == Encoding::INT8 || c.emin == 1 - t.bias);
}
static_assert(elem_c_matches_traits(Encoding::E2M1) && elem_c_matches_traits(Encoding::E2M3) &&
              elem_c_matches_traits(Encoding::E3M2) && elem_c_matches_traits(Encoding::E4M3) &&
              elem_c_matches_traits(Encoding::E5M2) && elem_c_matches_traits(Encoding::UE4M3) &&
              elem_c_matches_traits(Encoding::INT8));

constexpr uint32_t kQNaN = 0x7fc00000u;  // the NaN the reference produces (quiet_NaN<float>)

MXQ_INLINE __m512i splat(uint32_t v) { return _mm512_set1_epi32(int(v)); }
MXQ_INLINE __m512 as_ps(__m512i v) { return _mm512_castsi512_ps(v); }
MXQ_INLINE __m512i as_si(__m512 v) { return _mm512_castps_si512(v); }

// ---- loads and stores of 16 elements of a row --------------------------------------------------------

template <DType D>
MXQ_INLINE __m512 load16(const void* base, int64_t i) {
  if constexpr (D == DType::F32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + i);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i));
    if constexpr (D == DType::BF16) return as_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else return _mm512_cvtph_ps(h);  // exact, subnormals included
  }
}

// Same rounding as mxmoe::f32_to_bf16 / f32_to_f16 (RNE; bf16 NaN keeps its top bits and is quieted).
template <DType D>
MXQ_INLINE void store16(void* base, int64_t i, __m512 y) {
  if constexpr (D == DType::F32) {
    _mm512_storeu_ps(static_cast<float*>(base) + i, y);
  } else {
    auto* o = reinterpret_cast<__m256i*>(static_cast<uint16_t*>(base) + i);
    if constexpr (D == DType::BF16) {
      // Not VCVTNEPS2BF16: that one flushes subnormals.
      const __m512i u = as_si(y);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, splat(0x7fffffffu)), splat(0x7f800000u));
      __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(splat(0x7fffu), _mm512_and_si512(_mm512_srli_epi32(u, 16), splat(1))));
      r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, splat(0x00400000u)));
      _mm256_storeu_si256(o, _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
    } else {
      _mm256_storeu_si256(o, _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
}

MXQ_INLINE __m512i abs_bits(__m512 v) { return _mm512_and_si512(as_si(v), splat(0x7fffffffu)); }

// r[j] = max over the 16 lanes of a[j] (unsigned): transpose-reduce, 15 shuffles + 15 maxes.
MXQ_INLINE __m512i hmax16(const __m512i* a) {
  __m512i b[8], c[4];
  for (int j = 0; j < 8; ++j)
    b[j] = _mm512_max_epu32(_mm512_shuffle_i64x2(a[2 * j], a[2 * j + 1], 0x44),
                            _mm512_shuffle_i64x2(a[2 * j], a[2 * j + 1], 0xEE));
  for (int j = 0; j < 4; ++j)
    c[j] = _mm512_max_epu32(_mm512_shuffle_i64x2(b[2 * j], b[2 * j + 1], 0x88),
                            _mm512_shuffle_i64x2(b[2 * j], b[2 * j + 1], 0xDD));
  const __m512i d0 = _mm512_max_epu32(_mm512_unpacklo_epi64(c[0], c[1]), _mm512_unpackhi_epi64(c[0], c[1]));
  const __m512i d1 = _mm512_max_epu32(_mm512_unpacklo_epi64(c[2], c[3]), _mm512_unpackhi_epi64(c[2], c[3]));
  const __m512i e = _mm512_max_epu32(as_si(_mm512_shuffle_ps(as_ps(d0), as_ps(d1), _MM_SHUFFLE(2, 0, 2, 0))),
                                     as_si(_mm512_shuffle_ps(as_ps(d0), as_ps(d1), _MM_SHUFFLE(3, 1, 3, 1))));
  // e[4l + i] holds vector 4i + l.
  return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), e);
}

MXQ_INLINE __m512 lane(__m512 v, int j) { return _mm512_permutexvar_ps(_mm512_set1_epi32(j), v); }

// ---- element encoding ------------------------------------------------------------------------------
// |v| = m * 2^(E-23) with m the 24-bit significand. The element quantum is 2^(max(E, emin) - mbits),
// so the number of quanta is m >> d, d = 23 - mbits + max(0, emin - E), rounded by integer
// arithmetic: RNE adds 2^(d-1) - 1 + lsb, Away adds 2^(d-1). d is capped at 26: any d >= 25 rounds to
// 0, which also covers zero and float32 subnormals (their quantum count is far below one half).
// The code is (max(E, emin) - emin) << mbits plus the quanta (a carry moves into the exponent field),
// saturated at max_code; the value is quanta * quantum, saturated at max_finite. Callers handle NaN.
struct Rnd {
  __m512i lsb, away;  // RNE: 1, 0. Away: 0, 1.
};

template <Encoding E, bool kCode, bool kVal>
MXQ_INLINE void encode16(__m512 v, Rnd r, __m512i* code, __m512* val) {
  constexpr ElemC c = elem_c(E);
  const __m512i u = as_si(v);
  const __m512i s = _mm512_and_si512(u, splat(0x80000000u));
  const __m512i a = _mm512_and_si512(u, splat(0x7fffffffu));
  const __m512i ex = _mm512_sub_epi32(_mm512_srli_epi32(a, 23), splat(127));
  const __m512i ec = _mm512_max_epi32(ex, splat(uint32_t(c.emin)));
  const __m512i d =
      _mm512_min_epi32(_mm512_add_epi32(_mm512_sub_epi32(ec, ex), splat(uint32_t(23 - c.mbits))), splat(26));
  const __m512i m = _mm512_or_si512(_mm512_and_si512(a, splat(0x7fffffu)), splat(0x800000u));
  const __m512i half_m1 = _mm512_srlv_epi32(splat(0x7fffffffu), _mm512_sub_epi32(splat(32), d));
  const __m512i bias = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi32(m, d), r.lsb), r.away);
  const __m512i n = _mm512_srlv_epi32(_mm512_add_epi32(_mm512_add_epi32(m, half_m1), bias), d);
  if constexpr (kCode) {
    __m512i q = _mm512_add_epi32(_mm512_slli_epi32(_mm512_sub_epi32(ec, splat(uint32_t(c.emin))), c.mbits), n);
    q = _mm512_min_epu32(q, splat(uint32_t(c.max_code)));
    if constexpr (c.int8) q = _mm512_mask_sub_epi32(q, _mm512_test_epi32_mask(s, s), _mm512_setzero_si512(), q);
    else q = _mm512_or_si512(q, _mm512_srli_epi32(s, 32 - c.bits));
    *code = q;
  }
  if constexpr (kVal) {
    const __m512 p2 = as_ps(_mm512_slli_epi32(_mm512_add_epi32(ec, splat(uint32_t(127 - c.mbits))), 23));
    const __m512 w = _mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(n), p2), _mm512_set1_ps(c.max_finite));
    // decode() gives -0 for a minifloat's negative zero code, +0 for MXINT8's 0.
    const __m512i sg = c.int8 ? _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(n, n), s) : s;
    *val = as_ps(_mm512_or_si512(as_si(w), sg));
  }
}

// ---- packing of 16 codes (int32 lanes) -------------------------------------------------------------

template <int kBits>
MXQ_INLINE void pack16(__m512i code, uint8_t* out) {
  const __m128i c = _mm512_cvtepi32_epi8(code);
  if constexpr (kBits == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), c);
  } else if constexpr (kBits == 4) {
    const __m128i p = _mm_maddubs_epi16(_mm_and_si128(c, _mm_set1_epi8(0xf)), _mm_set1_epi16(0x1001));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(p, p));
  } else {
    const __m128i p = _mm_maddubs_epi16(_mm_and_si128(c, _mm_set1_epi8(0x3f)), _mm_set1_epi16(0x4001));
    const __m128i w = _mm_madd_epi16(p, _mm_set1_epi32(0x10000001));
    const __m128i b = _mm_shuffle_epi8(w, _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
    _mm_mask_storeu_epi8(out, 0x0fff, b);
  }
}

// Unpacks 16 codes to int32 lanes (8-bit codes zero-extended).
template <int kBits>
MXQ_INLINE __m512i unpack16(const uint8_t* in) {
  if constexpr (kBits == 8) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)));
  } else if constexpr (kBits == 4) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in));
    const __m128i nib = _mm_unpacklo_epi8(b, _mm_srli_epi16(b, 4));
    return _mm512_and_si512(_mm512_cvtepu8_epi32(nib), splat(0xf));
  } else {
    const __m128i b = _mm_maskz_loadu_epi8(0x0fff, in);
    const __m128i w =
        _mm_shuffle_epi8(b, _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1));
    const __m512i x = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                               _mm512_castsi128_si512(w));
    const __m512i sh = _mm512_setr_epi32(0, 6, 12, 18, 0, 6, 12, 18, 0, 6, 12, 18, 0, 6, 12, 18);
    return _mm512_and_si512(_mm512_srlv_epi32(x, sh), splat(0x3f));
  }
}

// Code -> value, as mxmoe::decode.
template <Encoding E>
struct Decoder {
  __m512 t0, t1;
  const float* table;
  MXQ_INLINE explicit Decoder(const float* tab) : table(tab) {
    t0 = _mm512_loadu_ps(tab);
    t1 = _mm512_loadu_ps(tab + 16);
  }
  MXQ_INLINE __m512 operator()(__m512i code) const {
    constexpr ElemC c = elem_c(E);
    if constexpr (c.bits == 4) {
      return _mm512_permutexvar_ps(code, t0);
    } else if constexpr (c.bits == 6) {  // 32 magnitudes, sign in bit 5
      const __m512 mag = _mm512_permutex2var_ps(t0, code, t1);
      return as_ps(_mm512_or_si512(as_si(mag), _mm512_slli_epi32(_mm512_and_si512(code, splat(0x20)), 26)));
    } else if constexpr (c.int8) {
      return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(code, 24), 24)),
                           _mm512_set1_ps(1.0f / 64.0f));
    } else {
      return _mm512_i32gather_ps(code, table, 4);
    }
  }
};

// ---- MX shared exponent ----------------------------------------------------------------------------

// floor(log2 v) and "v is a power of two" for v > 0 given as bits (subnormals via a 2^32 rescale).
MXQ_INLINE __m512i ilogb_bits(__m512i v, __mmask16* pow2) {
  const __mmask16 sub = _mm512_cmplt_epu32_mask(v, splat(0x00800000u));
  const __m512i n = _mm512_mask_mov_epi32(v, sub, as_si(_mm512_mul_ps(as_ps(v), _mm512_set1_ps(0x1p32f))));
  *pow2 = _mm512_testn_epi32_mask(n, splat(0x7fffffu));
  const __m512i lg = _mm512_sub_epi32(_mm512_srli_epi32(n, 23), splat(127));
  return _mm512_mask_sub_epi32(lg, sub, lg, splat(32));
}

// Scale bytes of 16 blocks from their amax bits (finite lanes; the caller marks the others 0xFF).
template <Encoding E>
MXQ_INLINE __m512i mx_scale_bytes(__m512i amax, ScaleRule rule) {
  constexpr ElemC c = elem_c(E);
  constexpr int emax = traits(E).emax;
  const __m512i zero = _mm512_setzero_si512();
  switch (rule) {
    case ScaleRule::Floor:
      return _mm512_max_epi32(_mm512_sub_epi32(_mm512_srli_epi32(amax, 23), splat(emax)), zero);
    case ScaleRule::Even: {
      const __m512i ef = _mm512_srli_epi32(_mm512_add_epi32(amax, splat(1u << (23 - c.mbits - 1))), 23);
      const __m512i b = _mm512_max_epi32(_mm512_sub_epi32(ef, splat(emax)), zero);
      return _mm512_mask_mov_epi32(b, _mm512_cmpeq_epi32_mask(ef, splat(255)), splat(254));
    }
    case ScaleRule::Ceil:
    case ScaleRule::RCeil:
    default: {
      const __m512i v = rule == ScaleRule::Ceil ? amax : as_si(_mm512_div_ps(as_ps(amax), _mm512_set1_ps(c.max_finite)));
      __mmask16 pow2;
      const __m512i lg = ilogb_bits(v, &pow2);
      __m512i e = _mm512_mask_add_epi32(lg, ~pow2, lg, splat(1));
      if (rule == ScaleRule::Ceil) e = _mm512_sub_epi32(e, splat(emax));
      e = _mm512_min_epi32(_mm512_max_epi32(e, splat(uint32_t(-127))), splat(127));
      return _mm512_maskz_add_epi32(_mm512_test_epi32_mask(v, v), e, splat(127));  // v == 0: byte 0
    }
  }
}

// 2^e for a scale byte as float bits (byte 0: the subnormal 2^-127; 0xFF: NaN), as decode(UE8M0).
MXQ_INLINE __m512 mx_decode_scale(__m512i b) {
  __m512i r = _mm512_slli_epi32(b, 23);
  r = _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(b, _mm512_setzero_si512()), splat(0x00400000u));
  r = _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(b, splat(255)), splat(kQNaN));
  return as_ps(r);
}

// 2^-e for a finite scale byte: exact, so x * 2^-e rounds once, like the reference's double ldexp.
MXQ_INLINE __m512 mx_inverse_scale(__m512i b) {
  const __m512i r = _mm512_slli_epi32(_mm512_sub_epi32(splat(254), b), 23);
  return as_ps(_mm512_mask_mov_epi32(r, _mm512_cmpgt_epi32_mask(b, splat(253)), splat(0x00400000u)));
}

// ---- one row ----------------------------------------------------------------------------------------

struct Ctx {
  ScaleRule rule;
  Rnd rnd;
  float gs, rgs;
};

constexpr Encoding elem_of(Scheme s) { return traits(s).element; }

// kQdq: write y (dtype YD); else write packed codes and scale bytes.
template <Scheme S, DType XD, DType YD, bool kQdq>
MXQ_TARGET void quant_row(const void* x, int64_t k, const Ctx& cx, uint8_t* codes, uint8_t* scales, void* y) {
  constexpr Encoding E = elem_of(S);
  constexpr bool kNv = traits(S).tensor_scale;
  constexpr int kBlock = traits(S).block, kVB = kBlock / 16, kBits = elem_c(E).bits;
  constexpr int kBytes16 = 2 * kBits;  // packed bytes per 16 codes
  const int64_t nb = k / kBlock;
  const Rnd rne{splat(1), _mm512_setzero_si512()};
  for (int64_t b0 = 0; b0 < nb; b0 += 16) {
    const int g = int(nb - b0 < 16 ? nb - b0 : 16);
    const int64_t x0 = b0 * kBlock;
    __m512i am[16];
    for (int j = 0; j < 16; ++j) {
      if (j < g) {
        __m512i m = abs_bits(load16<XD>(x, x0 + j * kBlock));
        if constexpr (kVB == 2) m = _mm512_max_epu32(m, abs_bits(load16<XD>(x, x0 + j * kBlock + 16)));
        am[j] = m;
      } else {
        am[j] = _mm512_setzero_si512();
      }
    }
    const __m512i amax = hmax16(am);
    const __mmask16 gmask = __mmask16((1u << g) - 1);
    if constexpr (kNv) {
      // vLLM: scale = e4m3(min(gs * (amax * (1/6)), 448)); oscale = rcp(scale * rcp(gs)); y = q * (scale / gs).
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(amax, splat(0x7f800000u));
      const __m512 af = as_ps(_mm512_mask_mov_epi32(amax, nan, splat(kQNaN)));
      const __m512 s = _mm512_min_ps(_mm512_set1_ps(448.0f),
                                     _mm512_mul_ps(_mm512_set1_ps(cx.gs), _mm512_mul_ps(af, _mm512_set1_ps(1.0f / 6.0f))));
      __m512i sb;
      __m512 sv;
      encode16<Encoding::UE4M3, !kQdq, true>(s, rne, &sb, &sv);
      sv = as_ps(_mm512_mask_mov_epi32(as_si(sv), nan, splat(kQNaN)));
      const __m512 t = _mm512_mul_ps(sv, _mm512_set1_ps(cx.rgs));
      const __m512 os = _mm512_div_ps(
          _mm512_set1_ps(1.0f),
          _mm512_add_ps(t, _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_EQ_OQ), _mm512_set1_ps(1e8f))));
      if constexpr (!kQdq) {
        sb = _mm512_mask_mov_epi32(sb, nan, splat(0x7f));
        _mm_mask_storeu_epi8(scales + b0, gmask, _mm512_cvtepi32_epi8(sb));
      }
      __m512 dm;
      if constexpr (kQdq) dm = _mm512_div_ps(sv, _mm512_set1_ps(cx.gs));
      for (int j = 0; j < g; ++j) {
        const __m512 osj = lane(os, j);
        __m512 v = _mm512_mul_ps(load16<XD>(x, x0 + j * 16), osj);
        v = _mm512_min_ps(_mm512_set1_ps(6.0f), _mm512_max_ps(_mm512_set1_ps(-6.0f), v));
        const __mmask16 ok = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);  // NaN encodes to code 0
        __m512i code;
        __m512 val;
        encode16<E, !kQdq, kQdq>(v, rne, &code, &val);
        if constexpr (kQdq) {
          store16<YD>(y, x0 + j * 16, _mm512_mul_ps(_mm512_maskz_mov_ps(ok, val), lane(dm, j)));
        } else {
          pack16<kBits>(_mm512_maskz_mov_epi32(ok, code), codes + (b0 + j) * kBytes16);
        }
      }
    } else {
      const __mmask16 nonfinite = _mm512_cmpge_epu32_mask(amax, splat(0x7f800000u));
      const __m512i sb = _mm512_mask_mov_epi32(mx_scale_bytes<E>(amax, cx.rule), nonfinite, splat(255));
      if constexpr (!kQdq) _mm_mask_storeu_epi8(scales + b0, gmask, _mm512_cvtepi32_epi8(sb));
      const __m512 inv = mx_inverse_scale(sb);
      __m512 dm;
      if constexpr (kQdq) dm = mx_decode_scale(sb);
      for (int j = 0; j < g; ++j) {
        if ((nonfinite >> j) & 1) {  // microxcaling: the whole block is NaN (codes 0, scale 0xFF)
          for (int h = 0; h < kVB; ++h) {
            if constexpr (kQdq) store16<YD>(y, x0 + j * kBlock + h * 16, as_ps(splat(kQNaN)));
            else pack16<kBits>(_mm512_setzero_si512(), codes + ((b0 + j) * kVB + h) * kBytes16);
          }
          continue;
        }
        const __m512 invj = lane(inv, j);
        __m512 dmj;
        if constexpr (kQdq) dmj = lane(dm, j);
        for (int h = 0; h < kVB; ++h) {
          const int64_t i = x0 + j * kBlock + h * 16;
          __m512i code;
          __m512 val;
          encode16<E, !kQdq, kQdq>(_mm512_mul_ps(load16<XD>(x, i), invj), cx.rnd, &code, &val);
          if constexpr (kQdq) store16<YD>(y, i, _mm512_mul_ps(val, dmj));
          else pack16<kBits>(code, codes + ((b0 + j) * kVB + h) * kBytes16);
        }
      }
    }
  }
}

template <Scheme S, DType YD>
MXQ_TARGET void dequant_row(const uint8_t* codes, const uint8_t* scales, int64_t k, float gs, const Decoder<elem_of(S)>& dec,
                            const float* scale_table, void* y) {
  constexpr Encoding E = elem_of(S);
  constexpr bool kNv = traits(S).tensor_scale;
  constexpr int kBlock = traits(S).block, kVB = kBlock / 16, kBits = elem_c(E).bits, kBytes16 = 2 * kBits;
  const int64_t nb = k / kBlock;
  for (int64_t b0 = 0; b0 < nb; b0 += 16) {
    const int g = int(nb - b0 < 16 ? nb - b0 : 16);
    const __m512i sb = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(__mmask16((1u << g) - 1), scales + b0));
    __m512 dm;
    if constexpr (kNv) dm = _mm512_div_ps(_mm512_i32gather_ps(sb, scale_table, 4), _mm512_set1_ps(gs));
    else dm = mx_decode_scale(sb);
    for (int j = 0; j < g; ++j) {
      const __m512 dmj = lane(dm, j);
      for (int h = 0; h < kVB; ++h) {
        const int64_t v = (b0 + j) * kVB + h;
        store16<YD>(y, v * 16, _mm512_mul_ps(dec(unpack16<kBits>(codes + v * kBytes16)), dmj));
      }
    }
  }
}

// ---- dispatch ---------------------------------------------------------------------------------------

struct QArgs {
  const void* x;
  int64_t rows, k, ldx;
  uint8_t *codes, *scales;
  int64_t ldc, lds;
  void* y;
  int64_t ldy;
};

template <Scheme S, DType XD, DType YD, bool kQdq>
MXQ_TARGET void quant_rows_t(const QArgs& a, const Ctx& cx) {
  for (int64_t r = 0; r < a.rows; ++r) {
    const void* xr = static_cast<const char*>(a.x) + r * a.ldx * dtype_size(XD);
    if constexpr (kQdq) quant_row<S, XD, YD, true>(xr, a.k, cx, nullptr, nullptr, static_cast<char*>(a.y) + r * a.ldy * dtype_size(YD));
    else quant_row<S, XD, YD, false>(xr, a.k, cx, a.codes + r * a.ldc, a.scales + r * a.lds, nullptr);
  }
}

template <Scheme S, DType XD, bool kQdq>
MXQ_TARGET void by_ydt(DType yd, const QArgs& a, const Ctx& cx) {
  if constexpr (!kQdq) {
    quant_rows_t<S, XD, DType::F32, false>(a, cx);
  } else {
    switch (yd) {
      case DType::F32: return quant_rows_t<S, XD, DType::F32, true>(a, cx);
      case DType::BF16: return quant_rows_t<S, XD, DType::BF16, true>(a, cx);
      default: return quant_rows_t<S, XD, DType::F16, true>(a, cx);
    }
  }
}

template <Scheme S, bool kQdq>
MXQ_TARGET void by_xdt(DType xd, DType yd, const QArgs& a, const Ctx& cx) {
  switch (xd) {
    case DType::F32: return by_ydt<S, DType::F32, kQdq>(yd, a, cx);
    case DType::BF16: return by_ydt<S, DType::BF16, kQdq>(yd, a, cx);
    default: return by_ydt<S, DType::F16, kQdq>(yd, a, cx);
  }
}

template <bool kQdq>
MXQ_TARGET void run(DType xd, DType yd, const QArgs& a, const QuantParams& p) {
  Ctx cx;
  cx.rule = p.rule;
  const bool rne = p.rounding == Rounding::RNE;
  cx.rnd = Rnd{splat(rne ? 1 : 0), splat(rne ? 0 : 1)};
  cx.gs = p.global_scale;
  cx.rgs = 1.0f / p.global_scale;
  switch (p.scheme) {
    case Scheme::NVFP4: return by_xdt<Scheme::NVFP4, kQdq>(xd, yd, a, cx);
    case Scheme::MXFP4: return by_xdt<Scheme::MXFP4, kQdq>(xd, yd, a, cx);
    case Scheme::MXFP6_E2M3: return by_xdt<Scheme::MXFP6_E2M3, kQdq>(xd, yd, a, cx);
    case Scheme::MXFP6_E3M2: return by_xdt<Scheme::MXFP6_E3M2, kQdq>(xd, yd, a, cx);
    case Scheme::MXFP8_E4M3: return by_xdt<Scheme::MXFP8_E4M3, kQdq>(xd, yd, a, cx);
    case Scheme::MXFP8_E5M2: return by_xdt<Scheme::MXFP8_E5M2, kQdq>(xd, yd, a, cx);
    default: return by_xdt<Scheme::MXINT8, kQdq>(xd, yd, a, cx);
  }
}

template <Scheme S, DType YD>
MXQ_TARGET void dequant_rows_t(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                               int64_t k, float gs, void* y, int64_t ldy) {
  const Decoder<elem_of(S)> dec(decode_table(elem_of(S)));
  const float* st = decode_table(traits(S).scale);
  for (int64_t r = 0; r < rows; ++r)
    dequant_row<S, YD>(codes + r * ldc, scales + r * lds, k, gs, dec, st, static_cast<char*>(y) + r * ldy * dtype_size(YD));
}

template <Scheme S>
MXQ_TARGET void dequant_by_ydt(DType yd, const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                    int64_t k, float gs, void* y, int64_t ldy) {
  switch (yd) {
    case DType::F32: return dequant_rows_t<S, DType::F32>(codes, ldc, scales, lds, rows, k, gs, y, ldy);
    case DType::BF16: return dequant_rows_t<S, DType::BF16>(codes, ldc, scales, lds, rows, k, gs, y, ldy);
    default: return dequant_rows_t<S, DType::F16>(codes, ldc, scales, lds, rows, k, gs, y, ldy);
  }
}


MXQ_TARGET void quantize_impl(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p,
                   uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds) {
  run<false>(xdt, DType::F32, QArgs{x, rows, k, ldx, codes, scales, ldc, lds, nullptr, 0}, p);
}

MXQ_TARGET void qdq_impl(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, void* y,
              DType ydt, int64_t ldy) {
  run<true>(xdt, ydt, QArgs{x, rows, k, ldx, nullptr, nullptr, 0, 0, y, ldy}, p);
}

MXQ_TARGET void dequantize_impl(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows, int64_t k,
                     const QuantParams& p, void* y, DType ydt, int64_t ldy) {
  const float gs = p.global_scale;
  switch (p.scheme) {
    case Scheme::NVFP4: return dequant_by_ydt<Scheme::NVFP4>(ydt, codes, ldc, scales, lds, rows, k, gs, y, ldy);
    case Scheme::MXFP4: return dequant_by_ydt<Scheme::MXFP4>(ydt, codes, ldc, scales, lds, rows, k, gs, y, ldy);
    case Scheme::MXFP6_E2M3: return dequant_by_ydt<Scheme::MXFP6_E2M3>(ydt, codes, ldc, scales, lds, rows, k, gs, y, ldy);
    case Scheme::MXFP6_E3M2: return dequant_by_ydt<Scheme::MXFP6_E3M2>(ydt, codes, ldc, scales, lds, rows, k, gs, y, ldy);
    case Scheme::MXFP8_E4M3: return dequant_by_ydt<Scheme::MXFP8_E4M3>(ydt, codes, ldc, scales, lds, rows, k, gs, y, ldy);
    case Scheme::MXFP8_E5M2: return dequant_by_ydt<Scheme::MXFP8_E5M2>(ydt, codes, ldc, scales, lds, rows, k, gs, y, ldy);
    default: return dequant_by_ydt<Scheme::MXINT8>(ydt, codes, ldc, scales, lds, rows, k, gs, y, ldy);
  }
}

}  // namespace

// Entry points without the target attribute (GCC would take differing attributes for versions).
void quantize_rows(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p,
                   uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds) {
  quantize_impl(x, xdt, rows, k, ldx, p, codes, ldc, scales, lds);
}
void qdq_rows(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, void* y,
              DType ydt, int64_t ldy) {
  qdq_impl(x, xdt, rows, k, ldx, p, y, ydt, ldy);
}
void dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows, int64_t k,
                     const QuantParams& p, void* y, DType ydt, int64_t ldy) {
  dequantize_impl(codes, ldc, scales, lds, rows, k, p, y, ydt, ldy);
}

}  // namespace mxmoe::cpu::avx512
