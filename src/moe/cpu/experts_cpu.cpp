// CPU grouped GEMM: only experts with tokens are touched; each weight tile (kTileRows rows) is decoded
// into a cache-sized float buffer and multiplied with OpenBLAS. Threads take (expert, tile) items.
#include <cblas.h>
#include <omp.h>

#include <vector>

#include "moe/cpu/simd_kernels.hpp"
#include "moe/experts.hpp"

extern "C" void openblas_set_num_threads(int);

namespace mxmoe::moe {
namespace {

constexpr int64_t kTileRows = 64;
constexpr int64_t kGemvRows = 4;   // up to this many tokens per expert: GEMV path
constexpr int64_t kGemvTile = 16;  // weight rows decoded per step of the GEMV path (L1/L2 sized)

class CpuExperts final : public ExpertsBackend {
 public:
  CpuExperts() { openblas_set_num_threads(1); }  // parallelism comes from our OpenMP loop
  std::string name() const override { return "cpu"; }
  std::string unsupported(const MoeLayer&, Emulation) const override { return {}; }

  void grouped_gemm(const std::vector<GemmTask>& tasks, Emulation e) const override {
    struct Item {
      size_t task;
      int64_t r0;
    };
    std::vector<Item> items;
    for (size_t t = 0; t < tasks.size(); ++t)
      for (int64_t r = 0; r < tasks[t].w->out_features(); r += kTileRows) items.push_back({t, r});
#pragma omp parallel
    {
      std::vector<float> wbuf;
#pragma omp for schedule(dynamic, 1)
      for (size_t i = 0; i < items.size(); ++i) {
        const GemmTask& t = tasks[items[i].task];
        const int64_t N = t.w->out_features(), K = t.w->in_features(), r0 = items[i].r0;
        const int64_t nr = std::min(kTileRows, N - r0);
        if (t.n <= kGemvRows) {
          // Decode-shaped: one weight row at a time into L1, dotted with each token row. Packing a
          // tile for sgemm would read the weights twice.
          wbuf.resize(size_t(kGemvTile * K));
          for (int64_t j0 = r0; j0 < r0 + nr; j0 += kGemvTile) {
            const int64_t nj = std::min(kGemvTile, r0 + nr - j0);
            const float alpha = t.a_alpha * detail::decode_weight_rows(*t.w, j0, j0 + nj, e, wbuf.data());
            for (int64_t j = 0; j < nj; ++j)
              for (int64_t m = 0; m < t.n; ++m)
                t.y[m * N + j0 + j] =
                    cpu::dot(t.a + m * K, wbuf.data() + j * K, K) * alpha + (t.bias ? t.bias[j0 + j] : 0.0f);
          }
          continue;
        }
        wbuf.resize(size_t(nr * K));
        const float alpha = t.a_alpha * detail::decode_weight_rows(*t.w, r0, r0 + nr, e, wbuf.data());
        // y[:, r0:r0+nr] = alpha * a . wtile^T (+ bias)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(t.n), int(nr), int(K), alpha, t.a, int(K),
                    wbuf.data(), int(K), 0.0f, t.y + r0, int(N));
        if (t.bias)
          for (int64_t m = 0; m < t.n; ++m)
            for (int64_t j = 0; j < nr; ++j) t.y[m * N + r0 + j] += t.bias[r0 + j];
      }
    }
  }
};

}  // namespace

const ExpertsBackend& cpu_experts() {
  static const CpuExperts be;
  return be;
}

}  // namespace mxmoe::moe
