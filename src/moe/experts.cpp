// Orchestration of the experts stage (shared by every CPU implementation) and the scalar reference
// grouped GEMM. The bf16 rounding points reproduce vLLM's emulation (REFERENCE.md section 5).
#include "moe/experts.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "mxmoe/error.hpp"

namespace mxmoe::moe {
namespace {

using detail::round_bf16;

void round_all_bf16(detail::Floats& v) {
  for (auto& x : v) x = round_bf16(x);
}

// The NVFP4 encode scale of one GEMM input in vllm mode: 1 / max over experts of the static input
// scales (a warning when they differ), or dynamic 448*6/amax when the checkpoint has none.
float shared_nvfp4_gs(const std::vector<ExpertLinear>& ws, const float* rows, int64_t n, const char* which,
                      std::vector<std::string>& warnings) {
  float lo = INFINITY, hi = 0;
  for (const auto& w : ws) lo = std::min(lo, w.input_scale), hi = std::max(hi, w.input_scale);
  if (hi <= 0) return nvfp4_default_global_scale(detail::amax(rows, n));
  if (lo != hi)
    warnings.push_back(fmt::format("experts disagree on the {} input_scale (min {:g}, max {:g}); the vllm recipe "
                                   "uses the max for all experts",
                                   which, lo, hi));
  return 1.0f / hi;
}

// Exact mode: each expert's own static scale, or dynamic over its rows.
float expert_nvfp4_gs(const ExpertLinear& w, const float* rows, int64_t count) {
  return w.input_scale > 0 ? 1.0f / w.input_scale : nvfp4_default_global_scale(detail::amax(rows, count));
}

float fp8_scale(const float* rows, int64_t n) {
  const float m = detail::amax(rows, n);
  return m > 0 ? m / 448.0f : 1.0f;
}

class RefExperts final : public ExpertsBackend {
 public:
  std::string name() const override { return "ref"; }
  std::string unsupported(const MoeLayer&, Emulation) const override { return {}; }
  void grouped_gemm(const std::vector<GemmTask>& tasks, Emulation e) const override {
    for (const auto& t : tasks) {
      const int64_t N = t.w->out_features(), K = t.w->in_features();
      std::vector<float> w(size_t(N * K));
      const float alpha = t.a_alpha * detail::decode_weight_rows(*t.w, 0, N, e, w.data());
      for (int64_t i = 0; i < t.n; ++i)
        for (int64_t j = 0; j < N; ++j) {
          float acc = 0;
          for (int64_t k = 0; k < K; ++k) acc += t.a[i * K + k] * w[size_t(j * K + k)];
          t.y[i * N + j] = acc * alpha + (t.bias ? t.bias[j] : 0.0f);
        }
    }
  }
};

}  // namespace

const ExpertsBackend& ref_experts() {
  static const RefExperts be;
  return be;
}

void run_experts(const ExpertsBackend& be, const MoeLayer& l, const ExpertSet& set, Emulation e, const ExpertGroups& g,
                 const std::vector<int>& local_to_global, const float* x, float* out,
                 std::vector<std::string>& warnings) {
  const int64_t H = l.hidden, I = set.inter, P = g.num_rows();
  const auto &w13 = *set.w13, &w2 = *set.w2;
  const Tensor &b13 = *set.b13, &b2 = *set.b2;
  const MoeScheme& s = *l.scheme;
  const bool nv_act = s.act == ActQuant::Block && traits(s.act_scheme).tensor_scale;
  const bool vllm = e == Emulation::VLLM;
  auto rows_of = [&](int le) { return std::pair{g.expert_offsets[size_t(le)], g.rows_of(le)}; };

  // One GEMM stage: quantize the input rows a [P, K] for this GEMM (vllm: one qdq over all rows with
  // the shared scale; exact: per expert), then y [P, N] = a . W^T (+ bias) for every expert with rows.
  auto gemm_stage = [&](const std::vector<ExpertLinear>& ws, const Tensor& bias, const char* which, float* a,
                        int64_t K, int64_t N, float* y) {
    std::vector<float> alpha(size_t(g.num_local_experts), 1.0f);
    const float fp8 = s.act == ActQuant::FP8Tensor ? fp8_scale(a, P * K) : 1.0f;
    if (vllm) {
      const float gs = nv_act ? shared_nvfp4_gs(ws, a, P * K, which, warnings) : 1.0f;
      detail::quantize_activation_rows(l, e, gs, fp8, a, P, K);
    } else {
      for (int le = 0; le < g.num_local_experts; ++le) {
        auto [o, n] = rows_of(le);
        float* r = a + o * K;
        const float gs = nv_act ? expert_nvfp4_gs(ws[size_t(local_to_global[size_t(le)])], r, n * K) : 1.0f;
        alpha[size_t(le)] = detail::quantize_activation_rows(l, e, gs, fp8, r, n, K);
      }
    }
    std::vector<GemmTask> tasks;
    for (int le = 0; le < g.num_local_experts; ++le) {
      auto [o, n] = rows_of(le);
      const int ge = local_to_global[size_t(le)];
      if (n == 0) continue;
      const float* b = bias.data.empty() ? nullptr : bias.ptr<float>() + ge * N;
      tasks.push_back({&ws[size_t(ge)], a + o * K, n, alpha[size_t(le)], b, y + o * N});
    }
    be.grouped_gemm(tasks, e);
  };

  detail::Floats a1(x, x + P * H), h1(size_t(P * 2 * I));
  gemm_stage(w13, b13, "w13", a1.data(), H, 2 * I, h1.data());
  if (vllm) round_all_bf16(h1);

  detail::Floats a2(size_t(P * I));
  apply_activation(l.activation, h1.data(), P, I, a2.data());
  if (vllm) round_all_bf16(a2);
  gemm_stage(w2, b2, "w2", a2.data(), I, H, out);
  if (vllm)
    for (int64_t i = 0; i < P * H; ++i) out[i] = round_bf16(out[i]);
}

}  // namespace mxmoe::moe
