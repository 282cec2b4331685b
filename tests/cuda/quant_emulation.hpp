// Host emulation of the CUDA quantization kernels: runs their per-group code (Group::load/finish in
// src/quant/cuda/quant_kernels.cuh) on host memory, one scale block at a time, so the kernels' numerics,
// packing, vector paths and indexing are checked against mxmoe::ref on machines without a GPU.
// fmt-free (the implementation is compiled by nvcc).
#pragma once
#include <cstdint>

#include "quant/cuda/quant_cuda.hpp"

namespace mxmoe::cuda::test {

enum class Op : uint8_t { Quantize, Dequantize, Qdq };

// Same pointer/stride contract as mxmoe::cuda::kernels::*_rows, on host pointers. `allow_vec` false
// forces the element-by-element path even where the pointers would allow the vector one.
void emulate(Op op, const QuantConfig& cfg, DType in, DType out, bool allow_vec, int64_t rows, int64_t k,
             const void* x, int64_t ldx, uint8_t* codes, int64_t ldc, uint8_t* scales, int64_t lds, void* y,
             int64_t ldy);

// Element codecs of the kernels (src/quant/cuda/codec.cuh, host build) against mxmoe::encode/decode:
// every float32 bit pattern whose low 13 bits are zero (all exponents, every tie of a <= 10-bit
// mantissa) plus a strided sweep of all patterns; and all 256 codes through decode. Returns the number
// of mismatches; *first (when given) gets the first mismatching input bits.
int64_t codec_mismatches(Encoding e, Rounding r, uint32_t* first = nullptr);

}  // namespace mxmoe::cuda::test
