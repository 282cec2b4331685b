// Synthetic MoE layers with the shapes of real models, for tests, the demo and benchmarks.
#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "mxmoe/error.hpp"
#include "mxmoe/moe/layer.hpp"

namespace mxmoe::moe {
namespace {

const SyntheticShape kShapes[] = {
    {"qwen3-30b-a3b", 2048, 768, 128, 8}, {"gpt-oss-20b", 2880, 2880, 32, 4}, {"mixtral-8x7b", 4096, 14336, 8, 2},
    {"deepseek-v3", 7168, 2048, 256, 8},  {"tiny", 256, 128, 8, 2},
};

// Fast deterministic pseudo-normal numbers (sum of four uniforms, variance-normalized): weight
// generation for a 128-expert layer must take seconds, not minutes.
struct Rng {
  uint64_t s;
  uint32_t next() {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return uint32_t(s >> 32);
  }
  float normal() {
    float u = 0;
    for (int i = 0; i < 4; ++i) u += float(next()) * 0x1p-32f;
    return (u - 2.0f) * 1.7320508f;
  }
};

Tensor random_bf16(std::vector<int64_t> shape, float stddev, Rng& rng) {
  Tensor t(DType::BF16, std::move(shape));
  auto* p = t.ptr<uint16_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = f32_to_bf16(rng.normal() * stddev);
  return t;
}

}  // namespace

SyntheticShape synthetic_shape(std::string_view name) {
  std::string names;
  for (const auto& s : kShapes) {
    if (s.name == name) return s;
    names += fmt::format("{}{}", names.empty() ? "" : ", ", s.name);
  }
  MXMOE_THROW("unknown model shape '{}' (known: {})", name, names);
}

MoeLayer synthetic_layer(const SyntheticShape& s, const MoeScheme& scheme, uint32_t seed) {
  MoeLayer l;
  l.hidden = s.hidden, l.inter = s.inter, l.num_experts = s.num_experts;
  l.scheme = &scheme;
  const bool oss = s.name.rfind("gpt-oss", 0) == 0;
  l.router = {oss ? RouterKind::TopKThenSoftmax : RouterKind::SoftmaxTopK, s.num_experts, s.top_k, !oss};
  l.activation = {oss ? Activation::SwiGLUOAI : Activation::SiLU};
  Rng rng{0x9e3779b97f4a7c15ull ^ (uint64_t(seed) << 1 | 1)};
  // A bf16 router, held in float32 like the loader holds it.
  const Tensor gate16 = random_bf16({s.num_experts, s.hidden}, 1.0f / std::sqrt(float(s.hidden)), rng);
  l.gate = Tensor::uninitialized(DType::F32, gate16.shape);
  to_f32(gate16.data.data(), DType::BF16, gate16.numel(), l.gate.ptr<float>());
  const bool dsv3 = s.name.rfind("deepseek", 0) == 0;
  if (dsv3) {  // DeepSeek-V3 routing (8 groups, 4 kept, scaling 2.5), a correction bias and one shared expert
    const int groups = s.num_experts % 8 == 0 ? 8 : 1;
    l.router = {RouterKind::SigmoidGroupedTopK, s.num_experts, s.top_k, true, groups, groups == 8 ? 4 : 1, 2.5f};
    l.correction_bias = Tensor(DType::F32, {s.num_experts});
    for (int e = 0; e < s.num_experts; ++e) l.correction_bias.ptr<float>()[e] = 0.05f * rng.normal();
    l.shared_inter = s.inter;
  }
  // Weights are quantized expert by expert so a large layer never exists densely in memory.
  for (int e = 0; e < s.num_experts + (dsv3 ? 1 : 0); ++e) {
    const bool shared = e == s.num_experts;
    for (auto [vec, o, i] : {std::tuple{shared ? &l.shared_w13 : &l.w13, 2 * s.inter, s.hidden},
                             std::tuple{shared ? &l.shared_w2 : &l.w2, s.hidden, s.inter}}) {
      ExpertLinear w;
      w.dense = random_bf16({o, i}, 1.0f / std::sqrt(float(i)), rng);
      if (scheme.weight_quantized) {
        QuantParams p{scheme.weight, ScaleRule::Even, Rounding::RNE, nvfp4_default_global_scale(tensor_amax(w.dense))};
        w.packed = quantize(w.dense, p, fmt::format("synthetic expert {}", e));
        w.dense = Tensor();
      }
      vec->push_back(std::move(w));
    }
  }
  pack_expert_weights(l);
  return l;
}

Tensor synthetic_tokens(int64_t T, int64_t H, uint32_t seed) {
  Tensor x(DType::BF16, {T, H});
  uint64_t st = 0x2545F4914F6CDD1Dull * (seed + 1);
  for (int64_t i = 0; i < x.numel(); ++i) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    float u = 0;
    for (int j = 0; j < 4; ++j) u += float((st >> (16 * j)) & 0xffff) / 65536.0f;
    x.ptr<uint16_t>()[i] = f32_to_bf16((u - 2.0f) * 1.7320508f);
  }
  return x;
}

}  // namespace mxmoe::moe
