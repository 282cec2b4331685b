#include "quant_emulation.hpp"

#include <cmath>

#include "quant/cuda/quant_kernels.cuh"

namespace mxmoe::cuda::test {

void emulate(Op op, const QuantConfig& cfg, DType in, DType out, bool allow_vec, int64_t rows, int64_t k,
             const void* x, int64_t ldx, uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds, void* y,
             int64_t ldy) {
  detail::QuantArgs a;
  a.rows = rows, a.k = k, a.x = x, a.ldx = ldx, a.codes = codes, a.ldc = ldc, a.scales = scales, a.lds = lds;
  a.y = y, a.ldy = ldy, a.global_scale = cfg.global_scale, a.rule = cfg.rule, a.rounding = cfg.rounding;
  const auto dop = op == Op::Quantize     ? detail::QuantOp::Quantize
                   : op == Op::Dequantize ? detail::QuantOp::Dequantize
                                          : detail::QuantOp::Qdq;
  (void)detail::dispatch(cfg.scheme, dop, in, out, a, detail::HostRunner{}, allow_vec);
}

namespace {

template <Encoding E>
int64_t codec_check(Rounding r, uint32_t* first) {
  int64_t bad = 0;
  auto note = [&](uint32_t u) {
    if (bad++ == 0 && first) *first = u;
  };
  auto check = [&](uint32_t u) {
    const float x = codec::bitsf(u);
    if (codec::encode<E>(x, r) != uint32_t(encode(E, x, r))) note(u);
  };
  for (uint32_t hi = 0; hi < (1u << 19); ++hi) check(hi << 13);
  for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 4093) check(uint32_t(u));
  for (uint32_t c = 0; c < 256; ++c) {
    const float got = codec::decode<E>(c), want = decode(E, uint8_t(c));
    if (!(std::isnan(got) && std::isnan(want)) && codec::fbits(got) != codec::fbits(want)) note(0xc0de0000u | c);
  }
  return bad;
}

}  // namespace

int64_t codec_mismatches(Encoding e, Rounding r, uint32_t* first) {
  switch (e) {
    case Encoding::E2M1: return codec_check<Encoding::E2M1>(r, first);
    case Encoding::E2M3: return codec_check<Encoding::E2M3>(r, first);
    case Encoding::E3M2: return codec_check<Encoding::E3M2>(r, first);
    case Encoding::E4M3: return codec_check<Encoding::E4M3>(r, first);
    case Encoding::E5M2: return codec_check<Encoding::E5M2>(r, first);
    case Encoding::UE4M3: return codec_check<Encoding::UE4M3>(r, first);
    case Encoding::INT8: return codec_check<Encoding::INT8>(r, first);
    default: return -1;
  }
}

}  // namespace mxmoe::cuda::test
