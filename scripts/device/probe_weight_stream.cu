// Probe (diagnostic, no decode, no products): how fast the FP4 expert weights of one Qwen3-30B-A3B GEMM1
// stream into the SMs under each read pattern, with the GEMV kernel's grid (4 CTAs of 4 warps per SM,
// persistent, contiguous runs of (expert, group of 4 m-tiles) items) and D chunks in flight per warp.
//   rows: the GEMV's pattern. Lane 4 g + t reads 16 bytes of rows g and g + 8 of its m-tile (gate rows
//         8 m .. + 7, up rows I + 8 m .. + 7) at byte 64 c + 16 t of chunk c, and the rows' scale pairs.
//   tiled: the same bytes stored m-tile-major (a chunk's 16 rows x 64 bytes contiguous, its scales
//          after it), the warp reading 1 KB of codes per chunk in two 512-byte instructions.
//   flat: one grid-stride pass of 16-byte loads over the codes and scales (the copy ceiling).
// If `rows` streams well below `tiled` and `flat`, the GEMV and fused kernels are bound by their read
// pattern, not by their decode. Build (repository root): nvcc -O3 -std=c++20 -arch=sm_90a -Isrc -Iinclude
// scripts/device/probe_weight_stream.cu -o probe
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "moe/cuda/sm90_fp4_gemv.cuh"

namespace {

constexpr int kE = 128, kN = 1536, kI = kN / 2, kRowB = 1024, kScaleB = 128, kChunks = kRowB / 64;
constexpr int kMt = kN / 16, kGroups = kMt / 4;
constexpr size_t kCodeBytes = size_t(kE) * kN * kRowB, kScaleBytes = size_t(kE) * kN * kScaleB;

using mxmoe::moe::cuda::gemv::ldg_stream;  // the kernels' own streaming load

struct Chunk {
  uint4 c[2];
  uint32_t s;
};

template <bool kTiled>
__device__ __forceinline__ Chunk load(const uint8_t* codes, const uint8_t* scales, int first, int step) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int item = first + step / kChunks, c = step % kChunks;
  const int e = item / kGroups, mt = (item % kGroups) * 4 + w;
  Chunk r;
  if (kTiled) {
    const size_t blk = (size_t(e) * kMt + mt) * kChunks + c;
    r.c[0] = ldg_stream(codes + blk * 1024 + 16 * lane);
    r.c[1] = ldg_stream(codes + blk * 1024 + 512 + 16 * lane);
    r.s = __ldg(reinterpret_cast<const uint32_t*>(scales + blk * 128) + lane);
  } else {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const size_t row = size_t(e) * kN + (h ? kI : 0) + 8 * mt + g;
      r.c[h] = ldg_stream(codes + row * kRowB + 64 * c + 16 * t);
      const uint32_t s = __ldg(reinterpret_cast<const uint16_t*>(scales + row * kScaleB + 8 * c + 2 * t));
      r.s = h ? (r.s | s << 16) : s;
    }
  }
  return r;
}

template <bool kTiled, int D>
__global__ void __launch_bounds__(128) stream_kernel(const uint8_t* codes, const uint8_t* scales, int items, uint32_t* out) {
  const int per = (items + gridDim.x - 1) / gridDim.x, first = blockIdx.x * per;
  const int last = min(items, first + per);
  uint32_t acc = 0;
  if (first < last) {
    const int steps = (last - first) * kChunks;
    Chunk ring[D];
#pragma unroll
    for (int d = 0; d < D; ++d) ring[d] = load<kTiled>(codes, scales, first, d < steps ? d : 0);
    for (int s0 = 0; s0 < steps; s0 += D) {
#pragma unroll
      for (int d = 0; d < D; ++d) {
        const Chunk r = ring[d];
        const int nx = s0 + d + D;
        if (nx < steps) ring[d] = load<kTiled>(codes, scales, first, nx);
        acc ^= r.c[0].x ^ r.c[0].y ^ r.c[0].z ^ r.c[0].w ^ r.c[1].x ^ r.c[1].y ^ r.c[1].z ^ r.c[1].w ^ r.s;
      }
    }
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

__global__ void flat_kernel(const uint4* p, size_t n, uint32_t* out) {
  uint32_t acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = ldg_stream(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

#define CHECK(x)                                                                   \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      return 1;                                                                    \
    }                                                                              \
  } while (0)

template <class F>
float time_us(F launch) {
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) launch();
  constexpr int kIters = 20;
  cudaEventRecord(a);
  for (int i = 0; i < kIters; ++i) launch();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  return ms * 1000 / kIters;
}

}  // namespace

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  uint8_t* buf = nullptr;
  uint32_t* out = nullptr;
  CHECK(cudaMalloc(&buf, kCodeBytes + kScaleBytes));
  CHECK(cudaMalloc(&out, size_t(sms) * 8 * 1024 * 4));
  CHECK(cudaMemset(buf, 0x5a, kCodeBytes + kScaleBytes));
  const uint8_t* codes = buf;
  const uint8_t* scales = buf + kCodeBytes;
  const int items = kE * kGroups, grid = 4 * sms;
  const double mb = double(kCodeBytes + kScaleBytes) / 1e6;
  std::printf("probe_weight_stream: %d experts x %d rows x %d B codes + scales = %.1f MB, grid %d x 128\n", kE, kN,
              kRowB, mb, grid);
  auto row = [&](const char* name, float us) { std::printf("  %-14s %8.1f us  %6.0f GB/s\n", name, us, mb * 1e3 / us); };
  row("rows D=4", time_us([&] { stream_kernel<false, 4><<<grid, 128>>>(codes, scales, items, out); }));
  row("rows D=8", time_us([&] { stream_kernel<false, 8><<<grid, 128>>>(codes, scales, items, out); }));
  row("tiled D=4", time_us([&] { stream_kernel<true, 4><<<grid, 128>>>(codes, scales, items, out); }));
  row("tiled D=8", time_us([&] { stream_kernel<true, 8><<<grid, 128>>>(codes, scales, items, out); }));
  row("flat", time_us([&] {
        flat_kernel<<<8 * sms, 256>>>(reinterpret_cast<const uint4*>(buf), (kCodeBytes + kScaleBytes) / 16, out);
      }));
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  return 0;
}
