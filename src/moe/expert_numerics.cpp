// Numerics shared by every CPU experts implementation: weight decoding and activation quantization
// for both emulation modes (REFERENCE.md section 5).
#include <algorithm>
#include <cmath>
#include <vector>

#include "moe/cpu/simd_kernels.hpp"
#include "moe/experts.hpp"
#include "quant/cpu/quant_cpu.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::moe::detail {
float decode_weight_rows(const ExpertLinear& w, int64_t r0, int64_t r1, Emulation e, float* out) {
  const int64_t K = w.in_features();
  if (!w.packed) {
    const int64_t es = dtype_size(w.dense.dtype);
    to_f32(w.dense.data.data() + r0 * K * es, w.dense.dtype, (r1 - r0) * K, out);
    return 1.0f;
  }
  const QuantizedTensor& q = *w.packed;
  const auto& st = traits(q.params.scheme);
  const int64_t rb = packed_row_bytes(q.params.scheme, K), nb = K / st.block;
  const float* elem = decode_table(st.element);
  const float* scale_tab = decode_table(st.scale);
  const bool nv = st.tensor_scale, vllm = e == Emulation::VLLM;
  // VLLM: dequantize_to_dtype, q * (scale / gs) rounded to bf16 (a no-op for MX: power-of-two
  // scales). Exact: q * scale, exact in float32; the NVFP4 tensor scale goes on the accumulator.
  thread_local std::vector<float> mult;  // no allocation per call once warm (hot GEMV path)
  mult.resize(static_cast<size_t>(nb));
  const int bits = element_bits(q.params.scheme);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* srow = q.scales.ptr<uint8_t>() + r * nb;
    for (int64_t b = 0; b < nb; ++b) mult[size_t(b)] = (vllm && nv) ? scale_tab[srow[b]] / q.params.global_scale : scale_tab[srow[b]];
    float* o = out + (r - r0) * K;
    const uint8_t* prow = q.codes.ptr<uint8_t>() + r * rb;
    if (bits == 4) cpu::decode_fp4_row(prow, mult.data(), K, st.block, vllm && nv, elem, o);
    else cpu::decode_wide_row(prow, mult.data(), K, st.block, bits, st.element, vllm && nv, o);
  }
  return (e == Emulation::Exact && nv) ? 1.0f / q.params.global_scale : 1.0f;
}

float amax(const float* v, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(v[i]));
  return m;
}

float quantize_activation_rows(const MoeLayer& l, Emulation e, float gs, float fp8_scale, float* rows, int64_t n,
                               int64_t K) {
  const MoeScheme& s = *l.scheme;
  if (s.act == ActQuant::None || n == 0) return 1.0f;
  if (s.act == ActQuant::FP8Tensor) {
    // Per-tensor E4M3: q = e4m3(x / scale) saturated; VLLM dequantizes (q * scale), Exact keeps q and
    // moves the scale onto the accumulator.
    for (int64_t i = 0; i < n * K; ++i) {
      const float q = decode(Encoding::E4M3, encode(Encoding::E4M3, rows[i] / fp8_scale, Rounding::RNE));
      rows[i] = e == Emulation::VLLM ? round_bf16(q * fp8_scale) : q;
    }
    return e == Emulation::VLLM ? 1.0f : fp8_scale;
  }
  QuantParams p{s.act_scheme, l.act_rule, l.act_rounding, gs};
  if (e == Emulation::VLLM) {
    mxmoe::cpu::qdq_rows(rows, DType::F32, n, K, K, p, rows, DType::F32, K);
    for (int64_t i = 0; i < n * K; ++i) rows[i] = round_bf16(rows[i]);
    return 1.0f;
  }
  // Exact: keep element * block scale (exact in float32): dequantize with a unit tensor scale; the
  // NVFP4 tensor scale goes on the accumulator instead.
  const auto& st = traits(p.scheme);
  const int64_t rb = packed_row_bytes(p.scheme, K), nb = K / st.block;
  std::vector<uint8_t> codes(static_cast<size_t>(n * rb)), scales(static_cast<size_t>(n * nb));
  mxmoe::cpu::quantize_rows(rows, DType::F32, n, K, K, p, codes.data(), rb, scales.data(), nb);
  QuantParams unit = p;
  unit.global_scale = 1.0f;
  mxmoe::cpu::dequantize_rows(codes.data(), rb, scales.data(), nb, n, K, unit, rows, DType::F32, K);
  return st.tensor_scale ? 1.0f / gs : 1.0f;
}

}  // namespace mxmoe::moe::detail
