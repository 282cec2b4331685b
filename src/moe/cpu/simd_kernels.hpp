// SIMD kernels of the CPU experts (AVX-512, dispatched at run time, scalar fallback). Every kernel
// has a scalar counterpart used on CPUs without AVX-512, when force_scalar(true) is set, and by
// tests/moe/test_cpu_kernels.cpp as the reference.
#pragma once
#include <cstdint>

#include "mxmoe/dtype.hpp"
#include "mxmoe/format.hpp"

namespace mxmoe::moe::cpu {

// Forces the scalar paths of this file's kernels (tests, benchmarks); false restores the CPU's best.
void force_scalar(bool on);
bool simd_active();  // AVX-512 F/BW/VL present and not forced off

// out[c] = lut16[code c] * block_mult[c / block] for one packed FP4 row of K elements (K even),
// optionally rounded to bf16 precision (RNE). allow_simd = false forces the scalar path (tests).
void decode_fp4_row(const uint8_t* packed, const float* block_mult, int64_t K, int block, bool to_bf16,
                    const float* lut16, float* out, bool allow_simd = true);
// The same for 6- and 8-bit elements (bits 6 or 8; `element` E2M3, E3M2, E4M3, E5M2 or INT8):
// out[c] = decode(element, code c) * block_mult[c / block], optionally rounded to bf16. K % 16 == 0
// for the SIMD path.
void decode_wide_row(const uint8_t* packed, const float* block_mult, int64_t K, int block, int bits,
                     Encoding element, bool to_bf16, float* out, bool allow_simd = true);
// sum_c a[c] * b[c] in float32 (vector lanes, then a tree reduction).
float dot(const float* a, const float* b, int64_t n);

// ---- fused decode + GEMV for FP4 weights (nvfp4, mxfp4) ----------------------------------------
// One packed FP4 projection [N, K] as the fused kernel reads it.
struct Fp4Weight {
  const uint8_t* codes;   // [N, K/2], element 2i = low nibble of byte i
  const uint8_t* scales;  // [N, K/block]
  int64_t K;
  int block;              // 16 (UE4M3 scales) or 32 (UE8M0 scales)
  Encoding scale;         // UE4M3 or UE8M0
  // vllm NVFP4: weights are bf16(e2m1 * (scale / gs)) (vLLM's dequantize_to_dtype); gs = 0: the
  // weights are e2m1 * scale, exact in float32 (exact mode, and vllm MX where bf16 is a no-op).
  float gs;
};

// The activation layout of the fused kernel: rows padded to fp4_act_stride(K) (a multiple of 128)
// with zeros; inside each 128-column chunk, column 8*l + s is stored at 16*s + l (l < 16, s < 8),
// which matches the nibble order of 16 packed 32-bit lanes.
int64_t fp4_act_stride(int64_t K);
void fp4_pack_activations(const float* a, int64_t n, int64_t K, float* ap);

// y[m * ldy + j] = alpha * sum_c a[m, c] * w[j, c] + (bias ? bias[j] : 0) for rows j in [r0, r1)
// and n token rows (any n; register-blocked over up to 8 tokens and 4 weight rows). `ap` is the
// packed activation [n, fp4_act_stride(K)]. Weight values are those of decode_fp4_row; float32
// accumulation. SIMD: per 8-column group the products are summed, multiplied by the block scale
// (exact mode / MX: the scale is factored out of the 8 products), then accumulated in 16 lanes
// and reduced by a tree. Scalar path: element by element in column order (as the ref backend).
void fp4_gemv(const Fp4Weight& w, int64_t r0, int64_t r1, const float* ap, int64_t n, float alpha,
              const float* bias, float* y, int64_t ldy, bool allow_simd = true);

// ---- the same with AVX512_BF16 dot products (vdpbf16ps: 32 products per instruction) -------------
// For activations that are exactly bf16 values: vllm mode (rounded to bf16 by the recipe), exact
// mode with quantized activations (FP4/FP6/FP8/INT8 times a block scale has at most 8 significant
// bits), and GEMM1 of a16 (bf16 hidden states). Layout: rows padded to fp4_act_stride(K); inside
// each 128-column chunk, column 4w + s is stored at 32s + w (w < 32, s < 4). Returns false (ap then
// unspecified) when a value is not exactly a bf16 or a nonzero one lies outside [2^-64, 2^64]: the
// instruction flushes denormals, and this range keeps every product and partial sum normal.
bool fp4_pack_activations_bf16(const float* a, int64_t n, int64_t K, uint16_t* ap);
bool fp4_bf16_dot_active();  // AVX512_BF16 present and SIMD not forced off
// As fp4_gemv, activations in the bf16 layout. SIMD: per lane (8 consecutive columns of one block)
// the products are summed in float32 (exact when all 8 share one activation block scale: W4A4
// exact mode), times the block scale, then accumulated over chunks and reduced by a tree.
void fp4_gemv_bf16(const Fp4Weight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t n, float alpha,
                   const float* bias, float* y, int64_t ldy, bool allow_simd = true);


// ---- many token rows: decoded bf16 panel + register-blocked vdpbf16ps GEMM ----------------------
// The same contract as fp4_gemv_bf16 (same weight values, float32 accumulation, ap in the bf16
// layout), for many token rows: up to 64 weight rows are decoded once into a bf16 panel (L2) and
// multiplied with all n token rows by a 4-row x 6-token dot-product kernel, instead of re-decoding
// the weights for every 2 tokens. Per lane the products are accumulated by vdpbf16ps in column
// order of the layout, then reduced by a tree (a different rounding order from fp4_gemv_bf16; same
// accumulation bound). Returns false, having possibly written rows in [r0, r1), when it cannot run:
// no AVX512_BF16, forced scalar, DAZ, K % 16 != 0, or a nonzero block multiplier (scale, or
// scale / gs) outside [2^-35, 2^33] or not finite (see fused_gemv.cpp); the caller then runs
// fp4_gemv_bf16 on the same rows.
bool fp4_gemm_panel_bf16(const Fp4Weight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t n, float alpha,
                         const float* bias, float* y, int64_t ldy);

// ---- vllm NVFP4, few token rows: one bf16 weight table per projection (fused_gemv_vllm.cpp) ------
// vllm NVFP4 weights take 16 values per scale byte: w[s][q] = bf16 bits of bf16(e2m1(q) * (ue4m3(s) / gs)),
// the values of decode_fp4_row. With the table the fused kernel decodes 32 weights with one two-register
// permute (4 blocks' rows of the table) instead of two table lookups, two dot products and a
// per-chunk scale / gs division and bf16 rounding.
struct Nvfp4VllmTable {
  // Scale codes whose multiplier scale / gs is nonzero and outside [2^-35, 2^33] (the range of
  // fp4_gemm_panel_bf16, for the same reason), and NaN scales, hold NaN rows instead: rows using
  // them come out NaN from the table kernel and are recomputed by fp4_gemv_bf16.
  alignas(64) uint16_t w[256][16];
};
// Fills the table for encode scale gs > 0 (on any CPU; only the AVX512_BF16 kernel reads it).
void nvfp4_vllm_table(float gs, Nvfp4VllmTable* t);
// fp4_gemv_bf16 for vllm NVFP4 weights (w.gs > 0, UE4M3 scales, block 16) with `t` built for w.gs:
// same contract (ap in the bf16 layout, float32 accumulation, any n). SIMD: per float lane the
// products of 4 consecutive columns of one block are accumulated by vdpbf16ps over the chunks, then
// tree-reduced. Rows holding a scale code outside the table's range, and CPUs or inputs the SIMD
// path does not take (see fp4_gemv_bf16), run fp4_gemv_bf16.
void fp4_gemv_vllm_table(const Fp4Weight& w, const Nvfp4VllmTable& t, int64_t r0, int64_t r1, const uint16_t* ap,
                         int64_t n, float alpha, const float* bias, float* y, int64_t ldy);

// ---- fused decode + GEMV for MXFP6 / MXFP8 weights, few token rows (fused_gemv_mx.cpp) ----------
struct MxWeight {
  const uint8_t* codes;   // [N, K * bits / 8]; 6-bit: 4 codes per little-endian 24-bit group
  const uint8_t* scales;  // [N, K / 32], UE8M0
  int64_t K;
  Encoding element;       // E2M3, E3M2 (6-bit), E4M3 or E5M2 (8-bit)
};
// y[m * ldy + j] = alpha * sum_c a[m, c] * w[j, c] + (bias ? bias[j] : 0) for rows j in [r0, r1),
// any n token rows in the bf16 layout of fp4_pack_activations_bf16; weights element * scale (exact
// in float32, the values of decode_wide_row in both modes), float32 accumulation. SIMD (AVX512_BF16 +
// VBMI, no DAZ, K % 32 == 0): per float lane the products of 8 columns of one block are summed by
// vdpbf16ps, multiplied by the block scale, accumulated over chunks and tree-reduced. Scalar path:
// element by element in column order (as the ref backend).
void mx_gemv_bf16(const MxWeight& w, int64_t r0, int64_t r1, const uint16_t* ap, int64_t n, float alpha,
                  const float* bias, float* y, int64_t ldy, bool allow_simd = true);
// The same with float32 activations in the layout of fp4_pack_activations (any values): per lane two
// FMAs per 4 columns instead of one dot product, then the same scale and reduction steps.
void mx_gemv(const MxWeight& w, int64_t r0, int64_t r1, const float* ap, int64_t n, float alpha, const float* bias,
             float* y, int64_t ldy, bool allow_simd = true);

}  // namespace mxmoe::moe::cpu
