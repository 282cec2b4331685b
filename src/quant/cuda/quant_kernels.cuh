// The block-quantizer kernel template behind quant_cuda.hpp (sm_80+, no Hopper-only instructions).
//
// Work unit: a "group" of 8 consecutive elements of one row, one thread each. A scale block (16 for
// NVFP4, 32 for MX) is 2 or 4 adjacent lanes of one warp, which combine their amax with shuffles.
// With aligned pointers and strides (checked on the host) a group moves with 16-byte loads/stores
// (two for float32) and its packed codes with one 4/6/8-byte access; otherwise element by element.
//
// The per-group work (Group::load / Group::finish) is __host__ __device__ so that a host emulation
// (tests/cuda) runs exactly this code on the CPU against mxmoe::ref; only the kernel's loop and the
// shuffles are device-only.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "quant/cuda/codec.cuh"
#include "quant/cuda/quant_cuda.hpp"

namespace mxmoe::cuda::detail {

enum class QuantOp : uint8_t { Quantize, Dequantize, Qdq };

// Everything a launch needs, by value. Element strides for x / y, byte strides for codes / scales.
struct QuantArgs {
  int64_t rows = 0, k = 0;
  const void* x = nullptr;
  int64_t ldx = 0;
  uint8_t* codes = nullptr;  // written by Quantize, read by Dequantize
  int64_t ldc = 0;
  uint8_t* scales = nullptr;
  int64_t lds = 0;
  void* y = nullptr;
  int64_t ldy = 0;
  float global_scale = 1.0f;
  ScaleRule rule = ScaleRule::Floor;
  Rounding rounding = Rounding::RNE;
};

inline constexpr int kGroup = 8;  // elements per thread

// ---- 8-element loads and stores ---------------------------------------------------------------------

template <DType D, bool VEC>
MXMOE_HD void load8(const void* base, int64_t idx, float v[kGroup]) {
  using S = codec::Storage<D>;
  using T = typename S::T;
  const T* p = static_cast<const T*>(base) + idx;
  if constexpr (VEC && sizeof(T) == 2) {
    const uint4 w = *reinterpret_cast<const uint4*>(p);
    const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) v[2 * i] = S::load(T(ws[i] & 0xffffu)), v[2 * i + 1] = S::load(T(ws[i] >> 16));
  } else if constexpr (VEC && sizeof(T) == 4) {
    const uint4 w0 = reinterpret_cast<const uint4*>(p)[0], w1 = reinterpret_cast<const uint4*>(p)[1];
    const uint32_t ws[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = S::load(ws[i]);
  } else {
#pragma unroll
    for (int i = 0; i < kGroup; ++i) v[i] = S::load(p[i]);
  }
}

template <DType D, bool VEC>
MXMOE_HD void store8(void* base, int64_t idx, const float v[kGroup]) {
  using S = codec::Storage<D>;
  using T = typename S::T;
  T* p = static_cast<T*>(base) + idx;
  if constexpr (VEC && sizeof(T) == 2) {
    uint32_t ws[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) ws[i] = uint32_t(S::store(v[2 * i])) | uint32_t(S::store(v[2 * i + 1])) << 16;
    *reinterpret_cast<uint4*>(p) = make_uint4(ws[0], ws[1], ws[2], ws[3]);
  } else if constexpr (VEC && sizeof(T) == 4) {
    uint32_t ws[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) ws[i] = S::store(v[i]);
    reinterpret_cast<uint4*>(p)[0] = make_uint4(ws[0], ws[1], ws[2], ws[3]);
    reinterpret_cast<uint4*>(p)[1] = make_uint4(ws[4], ws[5], ws[6], ws[7]);
  } else {
#pragma unroll
    for (int i = 0; i < kGroup; ++i) p[i] = S::store(v[i]);
  }
}

// Packed codes of one group: BITS bytes (FP4: 4, FP6: 6 = two 24-bit words, 8-bit: 8).
// Aligned access widths: FP4 one 4-byte word, FP6 three 2-byte words, 8-bit one 8-byte word.
template <int BITS>
MXMOE_HD constexpr int code_align() {
  return BITS == 4 ? 4 : BITS == 6 ? 2 : 8;
}

template <int BITS, bool VEC>
MXMOE_HD void store_codes8(uint8_t* p, const uint32_t c[kGroup]) {
  if constexpr (BITS == 4) {
    uint32_t w = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) w |= (c[i] & 0xfu) << (4 * i);
    if constexpr (VEC) {
      *reinterpret_cast<uint32_t*>(p) = w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) p[i] = uint8_t(w >> (8 * i));
    }
  } else if constexpr (BITS == 6) {
    const uint32_t w0 = (c[0] & 0x3fu) | (c[1] & 0x3fu) << 6 | (c[2] & 0x3fu) << 12 | (c[3] & 0x3fu) << 18;
    const uint32_t w1 = (c[4] & 0x3fu) | (c[5] & 0x3fu) << 6 | (c[6] & 0x3fu) << 12 | (c[7] & 0x3fu) << 18;
    if constexpr (VEC) {
      uint16_t* q = reinterpret_cast<uint16_t*>(p);
      q[0] = uint16_t(w0), q[1] = uint16_t((w0 >> 16) | (w1 << 8)), q[2] = uint16_t(w1 >> 8);
    } else {
      p[0] = uint8_t(w0), p[1] = uint8_t(w0 >> 8), p[2] = uint8_t(w0 >> 16);
      p[3] = uint8_t(w1), p[4] = uint8_t(w1 >> 8), p[5] = uint8_t(w1 >> 16);
    }
  } else {
    static_assert(BITS == 8);
    if constexpr (VEC) {
      uint2 w;
      w.x = (c[0] & 0xffu) | (c[1] & 0xffu) << 8 | (c[2] & 0xffu) << 16 | (c[3] & 0xffu) << 24;
      w.y = (c[4] & 0xffu) | (c[5] & 0xffu) << 8 | (c[6] & 0xffu) << 16 | (c[7] & 0xffu) << 24;
      *reinterpret_cast<uint2*>(p) = w;
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) p[i] = uint8_t(c[i]);
    }
  }
}

template <int BITS, bool VEC>
MXMOE_HD void load_codes8(const uint8_t* p, uint32_t c[kGroup]) {
  if constexpr (BITS == 4) {
    uint32_t w;
    if constexpr (VEC) {
      w = *reinterpret_cast<const uint32_t*>(p);
    } else {
      w = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) c[i] = (w >> (4 * i)) & 0xfu;
  } else if constexpr (BITS == 6) {
    uint32_t w0, w1;
    if constexpr (VEC) {
      const uint16_t* q = reinterpret_cast<const uint16_t*>(p);
      const uint32_t a = q[0], b = q[1], d = q[2];
      w0 = a | (b & 0xffu) << 16;
      w1 = (b >> 8) | d << 8;
    } else {
      w0 = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16;
      w1 = uint32_t(p[3]) | uint32_t(p[4]) << 8 | uint32_t(p[5]) << 16;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) c[i] = (w0 >> (6 * i)) & 0x3fu, c[4 + i] = (w1 >> (6 * i)) & 0x3fu;
  } else {
    static_assert(BITS == 8);
    if constexpr (VEC) {
      const uint2 w = *reinterpret_cast<const uint2*>(p);
#pragma unroll
      for (int i = 0; i < 4; ++i) c[i] = (w.x >> (8 * i)) & 0xffu, c[4 + i] = (w.y >> (8 * i)) & 0xffu;
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) c[i] = p[i];
    }
  }
}

// ---- one group -----------------------------------------------------------------------------------

template <Scheme S, QuantOp OP, DType IN, DType OUT, bool VEC>
struct Group {
  static constexpr Encoding kElem = traits(S).element;
  static constexpr Encoding kScale = traits(S).scale;
  static constexpr bool kNv = traits(S).tensor_scale;  // NVFP4
  static constexpr int kBlock = traits(S).block;
  static constexpr int kLanes = kBlock / kGroup;       // threads per scale block
  static constexpr int kBits = codec::Enc<kElem>::bits;  // bytes of packed codes per group
  static_assert(kBlock % kGroup == 0 && (kLanes & (kLanes - 1)) == 0);

  int64_t row = 0, c8 = 0;  // row, and group index within the row
  float v[kGroup];          // input values (Quantize / Qdq)
  uint32_t code[kGroup];    // codes (Dequantize input)
  uint32_t sbyte = 0;       // scale byte (Dequantize input)
  float amax = 0.0f;        // partial amax of this group
  uint32_t bad = 0;         // MX: a non-finite value; NVFP4: a NaN

  MXMOE_HD void load(const QuantArgs& a, int64_t g) {
    const int64_t gpr = a.k / kGroup;
    row = g / gpr, c8 = g - row * gpr;  // nvcc takes a 32-bit division when both operands fit
    if constexpr (OP == QuantOp::Dequantize) {
      load_codes8<kBits, VEC>(a.codes + row * a.ldc + c8 * kBits, code);
      sbyte = a.scales[row * a.lds + c8 / kLanes];
    } else {
      load8<IN, VEC>(a.x, row * a.ldx + c8 * kGroup, v);
      float m = 0.0f;
      uint32_t b = 0;
#pragma unroll
      for (int i = 0; i < kGroup; ++i) {
        const uint32_t u = codec::fbits(v[i]);
        b |= kNv ? uint32_t(codec::is_nan_bits(u)) : uint32_t(!codec::is_finite_bits(u));
        const float f = codec::bitsf(u & 0x7fffffffu);
        m = f > m ? f : m;  // NaN never wins; flagged in `bad` instead
      }
      amax = m, bad = b;
    }
  }

  // block_amax / block_bad: this group's values combined over the kLanes groups of its block.
  MXMOE_HD void finish(const QuantArgs& a, float block_amax, uint32_t block_bad) {
    if constexpr (OP != QuantOp::Dequantize) {
      if constexpr (kNv) {
        const float gs = a.global_scale;
        const float am = block_bad ? codec::quiet_nan(false) : block_amax;
        sbyte = codec::nvfp4_scale_byte(am, gs);
        const float scale = codec::decode<Encoding::UE4M3>(sbyte);
        const float oscale = codec::vllm_rcp(codec::mul_rn(scale, codec::vllm_rcp(gs)));
#pragma unroll
        for (int i = 0; i < kGroup; ++i) {
          float t = codec::mul_rn(v[i], oscale);
          t = t < -6.0f ? -6.0f : (6.0f < t ? 6.0f : t);  // std::clamp: keeps NaN
          code[i] = codec::encode<kElem>(t, Rounding::RNE);
        }
      } else if (block_bad) {
        // A block with a non-finite value becomes NaN as a whole (microxcaling).
        sbyte = 0xffu;
#pragma unroll
        for (int i = 0; i < kGroup; ++i) code[i] = 0;
      } else {
        sbyte = codec::mx_scale_byte<kElem>(block_amax, a.rule);
        const float inv = codec::pow2f(127 - int(sbyte));  // 2^-e, exact; x * 2^-e rounds once
#pragma unroll
        for (int i = 0; i < kGroup; ++i) code[i] = codec::encode<kElem>(codec::mul_rn(v[i], inv), a.rounding);
      }
    }
    if constexpr (OP == QuantOp::Quantize) {
      store_codes8<kBits, VEC>(a.codes + row * a.ldc + c8 * kBits, code);
      if (c8 % kLanes == 0) a.scales[row * a.lds + c8 / kLanes] = uint8_t(sbyte);
    } else {
      const float s = codec::decode<kScale>(sbyte);
      const float mult = kNv ? codec::div_rn(s, a.global_scale) : s;
      float y[kGroup];
#pragma unroll
      for (int i = 0; i < kGroup; ++i) y[i] = codec::mul_rn(codec::decode<kElem>(code[i]), mult);
      store8<OUT, VEC>(a.y, row * a.ldy + c8 * kGroup, y);
    }
  }
};

// ---- the kernel ------------------------------------------------------------------------------------

inline constexpr int kThreads = 256;
inline constexpr int kUnroll = 2;  // groups per thread per iteration, loaded before any is processed

template <Scheme S, QuantOp OP, DType IN, DType OUT, bool VEC>
__global__ void __launch_bounds__(kThreads) quant_rows_kernel(const QuantArgs a, const int64_t total) {
  using G = Group<S, OP, IN, OUT, VEC>;
  constexpr int64_t kTile = int64_t(kThreads) * kUnroll;
  const int64_t stride = int64_t(gridDim.x) * kTile;
  // `base < total` is uniform over the block, so every lane reaches the shuffles; a scale block's
  // lanes are kLanes aligned lanes of one warp (base is a multiple of kThreads, k of the block).
  for (int64_t base = int64_t(blockIdx.x) * kTile; base < total; base += stride) {
    G grp[kUnroll];
    bool valid[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      const int64_t g = base + j * kThreads + threadIdx.x;
      valid[j] = g < total;
      if (valid[j]) grp[j].load(a, g);
    }
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      float amax = grp[j].amax;
      uint32_t bad = grp[j].bad;
      if constexpr (OP != QuantOp::Dequantize) {
#pragma unroll
        for (int o = 1; o < G::kLanes; o <<= 1) {
          const float m = __shfl_xor_sync(0xffffffffu, amax, o);
          amax = m > amax ? m : amax;
          bad |= __shfl_xor_sync(0xffffffffu, bad, o);
        }
      }
      if (valid[j]) grp[j].finish(a, amax, bad);
    }
  }
}

// ---- runners: the device launch, and a host emulation for tests -----------------------------------

struct DeviceRunner {
  cudaStream_t stream;
  template <Scheme S, QuantOp OP, DType IN, DType OUT, bool VEC>
  cudaError_t run(const QuantArgs& a) const {
    const int64_t total = a.rows * (a.k / kGroup);
    if (total == 0) return cudaSuccess;
    const int64_t want = (total + int64_t(kThreads) * kUnroll - 1) / (int64_t(kThreads) * kUnroll);
    const unsigned blocks = unsigned(want < (int64_t(1) << 20) ? want : (int64_t(1) << 20));
    quant_rows_kernel<S, OP, IN, OUT, VEC><<<blocks, kThreads, 0, stream>>>(a, total);
    return cudaGetLastError();
  }
};

// Runs Group exactly as the kernel would, one scale block at a time, on host memory.
struct HostRunner {
  template <Scheme S, QuantOp OP, DType IN, DType OUT, bool VEC>
  cudaError_t run(const QuantArgs& a) const {
    using G = Group<S, OP, IN, OUT, VEC>;
    const int64_t total = a.rows * (a.k / kGroup);
    for (int64_t g0 = 0; g0 < total; g0 += G::kLanes) {
      G grp[G::kLanes];
      float amax = 0.0f;
      uint32_t bad = 0;
      for (int l = 0; l < G::kLanes; ++l) {
        grp[l].load(a, g0 + l);
        amax = grp[l].amax > amax ? grp[l].amax : amax;
        bad |= grp[l].bad;
      }
      for (int l = 0; l < G::kLanes; ++l) grp[l].finish(a, amax, bad);
    }
    return cudaSuccess;
  }
};

// ---- dispatch from run-time dtypes / alignment to the template --------------------------------------

template <class F>
cudaError_t with_float_dtype(DType d, F&& f) {
  switch (d) {
    case DType::F32: return f(std::integral_constant<DType, DType::F32>{});
    case DType::BF16: return f(std::integral_constant<DType, DType::BF16>{});
    case DType::F16: return f(std::integral_constant<DType, DType::F16>{});
    default: return cudaErrorInvalidValue;
  }
}

inline bool aligned(const void* p, int64_t ld_bytes, int64_t align) {
  return reinterpret_cast<uintptr_t>(p) % uintptr_t(align) == 0 && ld_bytes % align == 0;
}

// Whether every pointer/stride the op touches allows the vector path.
template <Scheme S>
bool vector_ok(QuantOp op, DType in, DType out, const QuantArgs& a) {
  constexpr int bits = codec::Enc<traits(S).element>::bits;
  bool ok = true;
  if (op != QuantOp::Dequantize) ok = ok && aligned(a.x, a.ldx * dtype_size(in), 16);
  if (op != QuantOp::Quantize) ok = ok && aligned(a.y, a.ldy * dtype_size(out), 16);
  if (op != QuantOp::Qdq) ok = ok && aligned(a.codes, a.ldc, code_align<bits>());
  return ok;
}

template <Scheme S, class Runner>
cudaError_t run_scheme(QuantOp op, DType in, DType out, bool vec, const QuantArgs& a, const Runner& r) {
  auto go = [&](auto V) -> cudaError_t {
    constexpr bool kVec = decltype(V)::value;
    switch (op) {
      case QuantOp::Quantize:
        return with_float_dtype(in, [&](auto I) {
          return r.template run<S, QuantOp::Quantize, decltype(I)::value, DType::F32, kVec>(a);
        });
      case QuantOp::Dequantize:
        return with_float_dtype(out, [&](auto O) {
          return r.template run<S, QuantOp::Dequantize, DType::F32, decltype(O)::value, kVec>(a);
        });
      case QuantOp::Qdq:
        return with_float_dtype(in, [&](auto I) {
          return with_float_dtype(out, [&](auto O) {
            return r.template run<S, QuantOp::Qdq, decltype(I)::value, decltype(O)::value, kVec>(a);
          });
        });
    }
    return cudaErrorInvalidValue;
  };
  return vec ? go(std::true_type{}) : go(std::false_type{});
}

// One explicit instantiation per scheme lives in its own .cu file (nvfp4_quant.cu, mxfp4_quant.cu, ...).
template <Scheme S>
cudaError_t launch_scheme(QuantOp op, DType in, DType out, const QuantArgs& a, cudaStream_t stream) {
  return run_scheme<S>(op, in, out, vector_ok<S>(op, in, out, a), a, DeviceRunner{stream});
}

#define MXMOE_QUANT_SCHEMES(X) \
  X(NVFP4) X(MXFP4) X(MXFP6_E2M3) X(MXFP6_E3M2) X(MXFP8_E4M3) X(MXFP8_E5M2) X(MXINT8)

#define MXMOE_DECLARE_LAUNCH(NAME)                                                                  \
  extern template cudaError_t launch_scheme<Scheme::NAME>(QuantOp, DType, DType, const QuantArgs&, \
                                                          cudaStream_t);
MXMOE_QUANT_SCHEMES(MXMOE_DECLARE_LAUNCH)
#undef MXMOE_DECLARE_LAUNCH

// Dispatch over the scheme for either runner.
template <class Runner>
cudaError_t dispatch(Scheme s, QuantOp op, DType in, DType out, const QuantArgs& a, const Runner& r,
                     bool vec_allowed = true) {
  switch (s) {
#define MXMOE_CASE(NAME)                                                                                \
  case Scheme::NAME:                                                                                    \
    return run_scheme<Scheme::NAME>(op, in, out, vec_allowed && vector_ok<Scheme::NAME>(op, in, out, a), \
                                    a, r);
    MXMOE_QUANT_SCHEMES(MXMOE_CASE)
#undef MXMOE_CASE
  }
  return cudaErrorInvalidValue;
}

}  // namespace mxmoe::cuda::detail
