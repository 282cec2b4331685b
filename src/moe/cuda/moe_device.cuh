// Device helpers shared by the CUDA MoE kernels: activation scales, bf16 rounding, activations.
// fmt-free (nvcc).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "moe/cuda/moe_heuristics.hpp"
#include "moe/cuda/moe_kernels.hpp"
#include "quant/cuda/codec.cuh"

namespace mxmoe::moe::cuda {

namespace cc = ::mxmoe::cuda::codec;

// Raises kernel K's dynamic shared-memory limit to `bytes` when needed (per kernel; only ever up, so
// layers of several shapes can share the kernels). Host side.
template <auto K>
cudaError_t ensure_smem(int bytes) {
  static int raised = 48 * 1024;
  if (bytes <= raised) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) raised = bytes;
  return e;
}

// Programmatic dependent launch (sm_90): a kernel launched by `launch_kernel` may start while the one before it
// in the stream drains, so its launch and prologue overlap that kernel's tail. Every such kernel calls
// pdl_wait() first, before any early return: it waits for the previous kernel's completion and memory,
// and a kernel that returned without waiting could complete before its predecessor, letting the next one
// run ahead of both. Elsewhere (sm_80, or launched plainly) it is a no-op.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Launches kernel k with PDL where pdl_enabled() (the first kernel after a memset or of a forward passes
// pdl = false: its predecessor is no kernel). Host side.
template <class... P, class... A>
cudaError_t launch_kernel(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, bool pdl, A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr, cfg.numAttrs = pdl && pdl_enabled() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, k, std::forward<A>(args)...);
}

__device__ __forceinline__ float round_bf16(float v) { return cc::bf16_to_f32(cc::f32_to_bf16(v)); }

// nvfp4_default_global_scale: 448*6/amax, 1 when amax is 0 or not finite.
__device__ __forceinline__ float default_gs(float amax) {
  return (amax > 0.0f && cc::is_finite_bits(cc::fbits(amax))) ? cc::div_rn(448.0f * 6.0f, amax) : 1.0f;
}

// The NVFP4 encode scale of expert e's GEMM input (see ActScale).
__device__ __forceinline__ float nvfp4_gs(const ActScale& s, int e) {
  if (s.static_gs > 0.0f) return s.static_gs;
  if (s.static_gs_e != nullptr && s.static_gs_e[e] > 0.0f) return s.static_gs_e[e];
  if (s.amax_e != nullptr) return default_gs(s.amax_e[e]);
  return default_gs(s.amax_all ? *s.amax_all : 0.0f);
}

// Per-tensor FP8 scale amax / 448 (1 when amax is 0).
__device__ __forceinline__ float fp8_scale(const ActScale& s) {
  const float m = s.amax_all ? *s.amax_all : 0.0f;
  return m > 0.0f ? cc::div_rn(m, 448.0f) : 1.0f;
}

// atomic max of a non-negative float (NaN stored as its bits: larger than every finite value).
__device__ __forceinline__ void atomic_max_pos(float* p, float v) {
  atomicMax(reinterpret_cast<int*>(p), __float_as_int(v));
}

// One accumulator of weight row `row` of expert e: alpha, the bias, vllm mode's bf16 rounding.
__device__ __forceinline__ float finish_acc(const GemmArgs& a, int e, float alpha, float x, int row) {
  x = cc::mul_rn(x, alpha);
  if (a.bias) x = cc::add_rn(x, a.bias[int64_t(e) * a.N + row]);
  return a.vllm ? round_bf16(x) : x;
}

// GEMM1's amax outputs (dynamic GEMM2-input scales): the warp's |y| maximum into the all-rows and the
// per-expert maxima where asked. The whole warp calls it.
__device__ __forceinline__ void amax_outputs(const GemmArgs& a, int e, float amax) {
  if (!a.amax_out && !a.amax_out_e) return;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if ((threadIdx.x & 31) == 0) {
    if (a.amax_out) atomic_max_pos(a.amax_out, amax);
    if (a.amax_out_e) atomic_max_pos(a.amax_out_e + e, amax);
  }
}

// GEMM2's output element idx: bf16 to y16 where the host asked for it (vllm mode, whose values are
// bf16 already), else float32 to y.
__device__ __forceinline__ void store_y(const GemmArgs& a, int64_t idx, float v) {
  if (a.y16) a.y16[idx] = cc::f32_to_bf16(v);
  else a.y[idx] = v;
}

// Gated activations (include/mxmoe/moe/activation.hpp), float32 like the reference.
__device__ __forceinline__ float gated_act(int act, float gate, float up, float alpha, float limit) {
  if (limit > 0.0f) {
    gate = fminf(gate, limit);
    up = fmaxf(-limit, fminf(up, limit));
  }
  switch (act) {
    case 0: return cc::mul_rn(cc::div_rn(gate, cc::add_rn(1.0f, expf(-gate))), up);  // SiLU
    case 1: {                                                                          // GELU (erf)
      const float g = cc::mul_rn(cc::mul_rn(0.5f, gate), cc::add_rn(1.0f, erff(cc::mul_rn(gate, 0.70710678118654752440f))));
      return cc::mul_rn(g, up);
    }
    case 2: {  // GELU tanh
      const float g3 = cc::mul_rn(cc::mul_rn(cc::mul_rn(0.044715f, gate), gate), gate);
      const float inner = cc::mul_rn(0.79788456080286535588f, cc::add_rn(gate, g3));
      return cc::mul_rn(cc::mul_rn(cc::mul_rn(0.5f, gate), cc::add_rn(1.0f, tanhf(inner))), up);
    }
    default: {  // SwiGLU-OAI: (up + 1) * gate * sigmoid(alpha * gate)
      const float sig = cc::div_rn(1.0f, cc::add_rn(1.0f, expf(-cc::mul_rn(alpha, gate))));
      return cc::mul_rn(cc::add_rn(up, 1.0f), cc::mul_rn(gate, sig));
    }
  }
}

// Finalize of 4 output columns (vector gid of T * H / 4): the weighted sum over the k slots in slot
// order, bf16-rounded in vllm mode.
__device__ __forceinline__ void finalize_vec4(const FinalizeArgs& a, int64_t gid) {
  const int64_t h4 = a.H / 4;
  const int64_t t = gid / h4, c = (gid - t * h4) * 4;
  float acc[4] = {0, 0, 0, 0};
  for (int j = 0; j < a.k; ++j) {
    const float w = a.weights[t * a.k + j];
    const int32_t p = a.slot_to_perm[t * a.k + j];
    float4 y;
    if (a.y16) {
      const uint2 b = __ldcg(reinterpret_cast<const uint2*>(a.y16 + int64_t(p) * a.H + c));
      y = make_float4(cc::bitsf(b.x << 16), cc::bitsf(b.x & 0xffff0000u), cc::bitsf(b.y << 16), cc::bitsf(b.y & 0xffff0000u));
    } else {
      y = __ldcg(reinterpret_cast<const float4*>(a.y + int64_t(p) * a.H + c));
    }
    acc[0] = cc::add_rn(acc[0], cc::mul_rn(w, y.x));
    acc[1] = cc::add_rn(acc[1], cc::mul_rn(w, y.y));
    acc[2] = cc::add_rn(acc[2], cc::mul_rn(w, y.z));
    acc[3] = cc::add_rn(acc[3], cc::mul_rn(w, y.w));
  }
  if (a.vllm)
    for (float& v : acc) v = round_bf16(v);
  *reinterpret_cast<float4*>(a.out + t * a.H + c) = make_float4(acc[0], acc[1], acc[2], acc[3]);
}

}  // namespace mxmoe::moe::cuda
