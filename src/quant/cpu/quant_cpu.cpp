// Runtime dispatch of the CPU block quantizers: AVX-512 kernels where the CPU has them, otherwise a
// portable scalar path (row-wise dtype conversion around mxmoe::ref, which defines the numerics).
#include "quant/cpu/quant_cpu.hpp"

#include <atomic>
#include <vector>

namespace mxmoe::cpu {
namespace {

std::atomic<bool> g_force_scalar{false};

bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }();
  return ok;
#else
  return false;
#endif
}

bool use_avx512() { return !g_force_scalar.load(std::memory_order_relaxed) && cpu_has_avx512(); }

const char* row_ptr(const void* base, DType d, int64_t r, int64_t ld) {
  return static_cast<const char*>(base) + r * ld * dtype_size(d);
}

}  // namespace

Isa active_isa() { return use_avx512() ? Isa::Avx512 : Isa::Scalar; }
const char* isa_name(Isa isa) { return isa == Isa::Avx512 ? "avx512" : "scalar"; }
void force_scalar(bool on) { g_force_scalar.store(on, std::memory_order_relaxed); }

void quantize_rows(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p,
                   uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds) {
  if (use_avx512()) return avx512::quantize_rows(x, xdt, rows, k, ldx, p, codes, ldc, scales, lds);
  std::vector<float> buf(static_cast<size_t>(k));
  for (int64_t r = 0; r < rows; ++r) {
    to_f32(row_ptr(x, xdt, r, ldx), xdt, k, buf.data());
    ref::quantize_rows(buf.data(), 1, k, k, p, codes + r * ldc, ldc, scales + r * lds, lds);
  }
}

void dequantize_rows(const uint8_t* codes, int64_t ldc, const uint8_t* scales, int64_t lds, int64_t rows,
                     int64_t k, const QuantParams& p, void* y, DType ydt, int64_t ldy) {
  if (use_avx512()) return avx512::dequantize_rows(codes, ldc, scales, lds, rows, k, p, y, ydt, ldy);
  std::vector<float> buf(static_cast<size_t>(k));
  for (int64_t r = 0; r < rows; ++r) {
    ref::dequantize_rows(codes + r * ldc, ldc, scales + r * lds, lds, 1, k, p, buf.data(), k);
    from_f32(buf.data(), k, ydt, const_cast<char*>(row_ptr(y, ydt, r, ldy)));
  }
}

void qdq_rows(const void* x, DType xdt, int64_t rows, int64_t k, int64_t ldx, const QuantParams& p, void* y,
              DType ydt, int64_t ldy) {
  if (use_avx512()) return avx512::qdq_rows(x, xdt, rows, k, ldx, p, y, ydt, ldy);
  std::vector<float> buf(static_cast<size_t>(k));
  for (int64_t r = 0; r < rows; ++r) {
    to_f32(row_ptr(x, xdt, r, ldx), xdt, k, buf.data());
    ref::qdq_rows(buf.data(), 1, k, k, p, buf.data(), k);
    from_f32(buf.data(), k, ydt, const_cast<char*>(row_ptr(y, ydt, r, ldy)));
  }
}

}  // namespace mxmoe::cpu
