// CPU grouped GEMM: only experts with tokens are touched. Each task takes one of four paths
// (heuristics.hpp): FP4 weights with few tokens per expert run the fused decode+FMA kernel
// (fp4_gemv; vllm NVFP4 through a bf16 weight table, fp4_gemv_vllm_table; from use_panel tokens, a
// bf16 panel decoded once per 64-row tile and a dot-product GEMM, fp4_gemm_panel_bf16); MXFP6 / MXFP8
// weights the fused mx_gemv_bf16 / mx_gemv; other few-token tasks decode 16 weight rows at a time
// into an L1 buffer and take dot products; many-token tasks decode a 64-row tile to float32 and call
// OpenBLAS sgemm. Threads (the caller and work_pool helpers; OMP_NUM_THREADS sets the count) take
// (expert, row tile) items from one shared list.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "moe/cpu/heuristics.hpp"
#include "moe/cpu/simd_kernels.hpp"
#include "moe/cpu/work_pool.hpp"
#include "moe/experts.hpp"

extern "C" void openblas_set_num_threads(int);

namespace mxmoe::moe {
namespace {

constexpr int64_t kGemvTile = 16;  // weight rows decoded per step of the DecodeDot path (L1 sized)

// Element bits of packed weights a fused kernel takes (FP4, MXFP6, MXFP8), else 0.
int fused_bits(const ExpertLinear& w) {
  if (!w.packed || traits(w.packed->params.scheme).element == Encoding::INT8) return 0;
  return element_bits(w.packed->params.scheme);
}

// vllm mode rounds NVFP4 weights q * (scale / gs) to bf16 (MX weights are exact either way).
bool vllm_nvfp4(const ExpertLinear& w, Emulation e) {
  return e == Emulation::VLLM && traits(w.packed->params.scheme).tensor_scale;
}

// The fused kernel's view of an FP4 projection, and the factor still owed to the accumulator.
cpu::Fp4Weight fp4_view(const ExpertLinear& w, Emulation e, float* alpha) {
  const QuantizedTensor& q = *w.packed;
  const auto& st = traits(q.params.scheme);
  *alpha = (e == Emulation::Exact && st.tensor_scale) ? 1.0f / q.params.global_scale : 1.0f;  // as decode_weight_rows
  return {q.codes.ptr<uint8_t>(), q.scales.ptr<uint8_t>(), w.in_features(), st.block, st.scale,
          vllm_nvfp4(w, e) ? q.params.global_scale : 0.0f};
}

double weight_bytes(const ExpertLinear& w) {
  return w.packed ? double(w.packed->codes.nbytes() + w.packed->scales.nbytes()) : double(w.dense.nbytes());
}

class CpuExperts final : public ExpertsBackend {
 public:
  CpuExperts() { openblas_set_num_threads(1); }  // parallelism comes from our OpenMP loop
  std::string name() const override { return "cpu"; }
  std::string unsupported(const MoeLayer&, Emulation) const override { return {}; }

  void grouped_gemm(const std::vector<GemmTask>& tasks, Emulation e) const override {
    struct Plan {
      cpu::GemmPath path;
      int64_t act_off;  // Fused: offset of the packed activations in `packed` / `packed16`
      bool bf16 = false;  // Fused: activations are exact bf16 values, packed16 holds them
      int64_t table = -1;  // Fused vllm NVFP4 below the panel threshold: its weight table in `tables`
    };
    struct Item {
      size_t task;
      int64_t r0;
    };
    std::vector<Plan> plans(tasks.size());
    std::vector<Item> items;
    int64_t packed_len = 0, n_tables = 0;
    double bytes = 0;
    const bool dot16 = cpu::fp4_bf16_dot_active();
    for (size_t t = 0; t < tasks.size(); ++t) {
      const GemmTask& g = tasks[t];
      plans[t] = {cpu::choose_path(fused_bits(*g.w), g.n), packed_len};
      if (plans[t].path == cpu::GemmPath::Fused || plans[t].path == cpu::GemmPath::FusedMx)
        packed_len += g.n * cpu::fp4_act_stride(g.w->in_features());
      if (plans[t].path == cpu::GemmPath::Fused && dot16 && cpu::use_vllm_table(vllm_nvfp4(*g.w, e), g.n))
        plans[t].table = n_tables++;
      bytes += weight_bytes(*g.w);
      for (int64_t r = 0; r < g.w->out_features(); r += cpu::kTileRows) items.push_back({t, r});
    }
    // Packed activations live in per-calling-thread buffers that only grow: no allocation (and no
    // page faults) per call once warm. Only the layout a task uses is written. vllm NVFP4 weight
    // tables are built with the activations, by the same thread.
    thread_local std::unique_ptr<float[]> packed_buf;
    thread_local std::unique_ptr<uint16_t[]> packed16_buf;
    thread_local std::unique_ptr<cpu::Nvfp4VllmTable[]> table_buf;
    thread_local int64_t packed_cap = 0, table_cap = 0;
    if (packed_len > packed_cap) {
      packed_buf.reset(new float[size_t(packed_len)]);  // uninitialized on purpose
      packed16_buf.reset(new uint16_t[size_t(packed_len)]);
      packed_cap = packed_len;
    }
    if (n_tables > table_cap) table_buf.reset(new cpu::Nvfp4VllmTable[size_t(n_tables)]), table_cap = n_tables;
    float* const packed = packed_buf.get();
    uint16_t* const packed16 = packed16_buf.get();
    cpu::Nvfp4VllmTable* const tables = table_buf.get();
    const int threads = cpu::choose_threads(bytes, int64_t(items.size()), omp_get_max_threads());
    // Items are claimed from an atomic counter by the caller and pool helpers (work_pool.hpp: the
    // caller never waits for a helper that has not started), and a task's activations are packed by
    // the first thread that reaches one of its items (others wait for that one, which is running).
    std::unique_ptr<std::atomic<int>[]> pack_state(new std::atomic<int>[tasks.size()]);  // 0 todo, 1 busy, 2 done
    for (size_t t = 0; t < tasks.size(); ++t) pack_state[t].store(0, std::memory_order_relaxed);
    auto ensure_packed = [&](size_t t) {
      if (pack_state[t].load(std::memory_order_acquire) == 2) return;
      int expect = 0;
      if (pack_state[t].compare_exchange_strong(expect, 1, std::memory_order_acq_rel)) {
        const GemmTask& g = tasks[t];
        const int64_t K = g.w->in_features();
        plans[t].bf16 = dot16 && cpu::fp4_pack_activations_bf16(g.a, g.n, K, packed16 + plans[t].act_off);
        if (!plans[t].bf16) cpu::fp4_pack_activations(g.a, g.n, K, packed + plans[t].act_off);
        else if (plans[t].table >= 0) cpu::nvfp4_vllm_table(g.w->packed->params.global_scale, tables + plans[t].table);
        pack_state[t].store(2, std::memory_order_release);
        return;
      }
      while (pack_state[t].load(std::memory_order_acquire) != 2) std::this_thread::yield();
    };
    cpu::parallel_items(int64_t(items.size()), threads, [&](int64_t ii) {
        const size_t i = size_t(ii);
        thread_local std::vector<float> wbuf;  // per thread, grows only
        const Plan& p = plans[items[i].task];
        if (p.path == cpu::GemmPath::Fused || p.path == cpu::GemmPath::FusedMx) ensure_packed(items[i].task);
        const GemmTask& t = tasks[items[i].task];
        const int64_t N = t.w->out_features(), K = t.w->in_features(), r0 = items[i].r0;
        const int64_t nr = std::min(cpu::kTileRows, N - r0);
        switch (p.path) {
          case cpu::GemmPath::Fused: {
            float wa = 1.0f;
            const cpu::Fp4Weight w = fp4_view(*t.w, e, &wa);
            if (p.bf16 && cpu::use_panel(w.gs > 0, t.n) &&
                cpu::fp4_gemm_panel_bf16(w, r0, r0 + nr, packed16 + p.act_off, t.n, t.a_alpha * wa, t.bias, t.y, N))
              break;
            if (p.bf16 && p.table >= 0)
              cpu::fp4_gemv_vllm_table(w, tables[p.table], r0, r0 + nr, packed16 + p.act_off, t.n, t.a_alpha * wa,
                                       t.bias, t.y, N);
            else if (p.bf16)
              cpu::fp4_gemv_bf16(w, r0, r0 + nr, packed16 + p.act_off, t.n, t.a_alpha * wa, t.bias, t.y, N);
            else
              cpu::fp4_gemv(w, r0, r0 + nr, packed + p.act_off, t.n, t.a_alpha * wa, t.bias, t.y, N);
            break;
          }
          case cpu::GemmPath::FusedMx: {
            const QuantizedTensor& q = *t.w->packed;
            const cpu::MxWeight w{q.codes.ptr<uint8_t>(), q.scales.ptr<uint8_t>(), K, traits(q.params.scheme).element};
            if (p.bf16) cpu::mx_gemv_bf16(w, r0, r0 + nr, packed16 + p.act_off, t.n, t.a_alpha, t.bias, t.y, N);
            else cpu::mx_gemv(w, r0, r0 + nr, packed + p.act_off, t.n, t.a_alpha, t.bias, t.y, N);
            break;
          }
          case cpu::GemmPath::DecodeDot: {
            wbuf.resize(size_t(kGemvTile * K));
            for (int64_t j0 = r0; j0 < r0 + nr; j0 += kGemvTile) {
              const int64_t nj = std::min(kGemvTile, r0 + nr - j0);
              const float alpha = t.a_alpha * detail::decode_weight_rows(*t.w, j0, j0 + nj, e, wbuf.data());
              for (int64_t j = 0; j < nj; ++j)
                for (int64_t m = 0; m < t.n; ++m)
                  t.y[m * N + j0 + j] =
                      cpu::dot(t.a + m * K, wbuf.data() + j * K, K) * alpha + (t.bias ? t.bias[j0 + j] : 0.0f);
            }
            break;
          }
          case cpu::GemmPath::Sgemm: {
            wbuf.resize(size_t(nr * K));
            const float alpha = t.a_alpha * detail::decode_weight_rows(*t.w, r0, r0 + nr, e, wbuf.data());
            // y[:, r0:r0+nr] = alpha * a . wtile^T (+ bias)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(t.n), int(nr), int(K), alpha, t.a, int(K),
                        wbuf.data(), int(K), 0.0f, t.y + r0, int(N));
            if (t.bias)
              for (int64_t m = 0; m < t.n; ++m)
                for (int64_t j = 0; j < nr; ++j) t.y[m * N + r0 + j] += t.bias[r0 + j];
            break;
          }
        }
    });
  }
};

}  // namespace

const ExpertsBackend& cpu_experts() {
  static const CpuExperts be;
  return be;
}

}  // namespace mxmoe::moe
