// Router logits for many tokens on the tensor cores: logits[t, e] = x[t] . gate[e] + bias[e].
//
// The float32 gate is held as three bf16 terms (hi + mid + lo == gate exactly, split once at upload by
// truncation: 8 + 8 + 8 significand bits), so every product x * term is exact in float32 and the
// result differs from the SIMT kernel (logits4) only in the order of the float32 additions. Where the
// gate is bf16 already (checkpoints store it so), mid and lo are zero and only hi is multiplied
// (RouteArgs::gate_terms = 1): a third of the products and gate bytes, the same bits, since the skipped
// products are +-0 for finite x. The SIMT kernel re-reads each token row once per expert warp and runs
// ~380 us at T = 4096 on the Qwen3 layer; here a row is read once per 32 experts from shared memory.
// CTA = 4 warps = 64 tokens x 32 experts; warp w: tokens 16w .. 16w + 15 x 4 n8 tiles, per k16 step one
// A fragment (x) and one B fragment per gate term. K in chunks of 64 (rows of 128 bytes, 16-byte
// units XOR-swizzled by row % 8 so ldmatrix is conflict-free), four cp.async stages. A CTA walks all of
// H alone and took ~47 us on the H200 whatever T with three terms (two stages measured the same,
// bench/RESULTS.md v6; one term cut 11-31 us at T = 512-4096, v18: the chain of products is part of it),
// so route() uses this kernel only from kLogitsMmaMinTokens. The CTAs of the first expert block also
// take the tokens' |x| maxima (the dynamic activation scales), from shared memory, with the same fmaxf
// as logits4 (so the same bits).
#include "moe/cuda/moe_device.cuh"
#include "moe/cuda/sm80_mma.cuh"

namespace mxmoe::moe::cuda {
namespace {

constexpr int kTok = 64, kExp = 32, kKc = 64, kThreads = 128, kStages = 4;
constexpr int kXBytes = kTok * kKc * 2;
// A stage: the x chunk, then TERMS gate term chunks (rows term-major).
constexpr int stage_bytes(int terms) { return kXBytes + terms * kExp * kKc * 2; }

__device__ __forceinline__ uint32_t swz(int row, int unit) { return uint32_t(row * 128 + ((unit ^ (row & 7)) << 4)); }

template <int TERMS>
__global__ void __launch_bounds__(kThreads) logits_mma_kernel(const RouteArgs a) {
  constexpr int kStage = stage_bytes(TERMS);
  pdl_wait();
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t t0 = int64_t(blockIdx.x) * kTok;
  const int e0 = int(blockIdx.y) * kExp;
  const uint32_t sbase = sm80::smem_addr(smem);
  const int nch = int((a.H + kKc - 1) / kKc);
  auto load = [&](int c, int st) {
    const uint32_t xs = sbase + uint32_t(st * kStage), gs = xs + kXBytes;
    const int64_t k0 = int64_t(c) * kKc;
#pragma unroll
    for (int i = tid; i < kTok * 8; i += kThreads) {
      const int row = i >> 3, unit = i & 7;
      const int64_t t = t0 + row, k = k0 + 8 * unit;
      const bool v = t < a.T && k < a.H;
      sm80::cp_async16(xs + swz(row, unit), v ? a.x + t * a.H + k : a.x, v);
    }
#pragma unroll
    for (int i = tid; i < TERMS * kExp * 8; i += kThreads) {
      const int row = i >> 3, unit = i & 7, term = row / kExp, e = e0 + row % kExp;  // rows: term-major
      const int64_t k = k0 + 8 * unit;
      const bool v = e < a.E && k < a.H;
      sm80::cp_async16(gs + swz(row, unit), v ? a.gate3 + (int64_t(term) * a.E + e) * a.H + k : a.gate3, v);
    }
  };

  float acc[4][4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[j][r] = 0.0f;
  const bool do_amax = blockIdx.y == 0;
  float am = 0.0f;  // |x| maximum of token row tid / 2, units of half tid % 2 of each chunk
  // One commit group per chunk (empty past the end), so wait<kStages - 2> means chunk c has landed.
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < nch) load(c, c);
    sm80::cp_async_commit();
  }
  for (int c = 0; c < nch; ++c) {
    const int st = c % kStages;
    sm80::cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk c visible to all; everyone is done with chunk c - 1's stage, refilled here
    if (c + kStages - 1 < nch) load(c + kStages - 1, (c + kStages - 1) % kStages);
    sm80::cp_async_commit();
    const uint32_t xs = sbase + uint32_t(st * kStage), gs = xs + kXBytes;
#pragma unroll
    for (int ks = 0; ks < kKc / 16; ++ks) {
      uint32_t af[4];
      sm80::ldsm_x4(xs + swz(16 * warp + (lane & 15), 2 * ks + (lane >> 4)), af[0], af[1], af[2], af[3]);
#pragma unroll
      for (int term = 0; term < TERMS; ++term) {
        uint32_t bf[4][2];
#pragma unroll
        for (int j = 0; j < 2; ++j)
          sm80::ldsm_x4(gs + swz(kExp * term + 16 * j + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1)),
                        bf[2 * j][0], bf[2 * j][1], bf[2 * j + 1][0], bf[2 * j + 1][1]);
#pragma unroll
        for (int j = 0; j < 4; ++j) sm80::mma_bf16(acc[j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
      }
    }
    if (do_amax) {
      const uint8_t* row = smem + st * kStage + (tid >> 1) * 128;
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint4 v = *reinterpret_cast<const uint4*>(row + 16 * (4 * (tid & 1) + u));
        for (const uint32_t w : {v.x, v.y, v.z, v.w})
          am = fmaxf(am, fmaxf(fabsf(cc::bitsf(w << 16)), fabsf(cc::bitsf(w & 0xffff0000u))));
      }
    }
  }

  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t t = t0 + 16 * warp + g + 8 * (r >> 1);
      const int e = e0 + 8 * j + 2 * q + (r & 1);
      if (t < a.T && e < a.E) a.logits[t * a.E + e] = acc[j][r] + (a.gate_bias ? a.gate_bias[e] : 0.0f);
    }
  if (do_amax) {
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 1));
    const int64_t t = t0 + (tid >> 1);
    if ((tid & 1) == 0 && t < a.T) {
      a.rowamax[t] = am;
      atomic_max_pos(a.amax_x, am);
    }
  }
}

template <int TERMS>
cudaError_t launch(const RouteArgs& a, cudaStream_t s) {
  const int smem = kStages * stage_bytes(TERMS);
  const dim3 grid(unsigned((a.T + kTok - 1) / kTok), unsigned((a.E + kExp - 1) / kExp));
  const cudaError_t err = ensure_smem<logits_mma_kernel<TERMS>>(smem);
  if (err != cudaSuccess) return err;
  logits_mma_kernel<TERMS><<<grid, kThreads, smem, s>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t router_logits_mma(const RouteArgs& a, cudaStream_t s) {
  if (a.gate3 == nullptr || a.H % 8 != 0) return cudaErrorInvalidValue;
  if (a.gate_terms == 1) return launch<1>(a, s);
  return a.gate_terms == 3 ? launch<3>(a, s) : cudaErrorInvalidValue;
}

}  // namespace mxmoe::moe::cuda
