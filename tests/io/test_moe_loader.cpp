// MoE checkpoint loading: small synthetic checkpoints written in each architecture's exact layout
// (gpt-oss fused MXFP4, Mixtral and Qwen3 BF16) load back to layers that compute the same outputs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mxmoe/error.hpp"
#include "mxmoe/moe/layer.hpp"
#include "mxmoe/moe/loader.hpp"
#include "mxmoe/safetensors.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path p;
  TempDir() : p(fs::temp_directory_path() / ("mxmoe-loader-" + std::to_string(::getpid()) + "-" + std::to_string(rand()))) {
    fs::create_directories(p);
  }
  ~TempDir() { fs::remove_all(p); }
};

Tensor rows(const Tensor& w, int64_t r0, int64_t n) {
  Tensor o(w.dtype, {n, w.shape[1]});
  const int64_t rb = w.shape[1] * dtype_size(w.dtype);
  std::copy_n(w.data.data() + r0 * rb, n * rb, o.data.data());
  return o;
}

Tensor stack(const std::vector<const Tensor*>& ts, std::vector<int64_t> shape) {
  Tensor o(ts[0]->dtype, std::move(shape));
  size_t off = 0;
  for (const Tensor* t : ts) std::copy(t->data.begin(), t->data.end(), o.data.begin() + long(off)), off += t->data.size();
  return o;
}

void write_config(const fs::path& dir, nlohmann::json cfg) { std::ofstream(dir / "config.json") << cfg.dump(2); }

void expect_same_outputs(const MoeLayer& a, const MoeLayer& b, int64_t H) {
  const Tensor x = test::random_tensor(DType::BF16, {11, H}, 3);
  for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
    MoeOptions o;
    o.emulation = e;
    const MoeResult ra = run_moe(a, x, o), rb = run_moe(b, x, o);
    EXPECT_EQ(test::count_bit_mismatches(rb.out, ra.out, "out"), 0);
    EXPECT_EQ(ra.topk_ids.data, rb.topk_ids.data);
  }
}

}  // namespace

TEST(MoeLoader, GptOssFusedMxfp4) {
  const SyntheticShape s{"gpt-oss-test", 64, 64, 4, 2};
  MoeLayer mem = synthetic_layer(s, parse_moe_scheme("w_mxfp4_a16"), 5);
  const int64_t H = s.hidden, I = s.inter, E = s.num_experts;
  mem.gate_bias = Tensor(DType::F32, {E});
  mem.b13 = test::random_tensor(DType::F32, {E, 2 * I}, 9, 0.1f);
  mem.b2 = test::random_tensor(DType::F32, {E, H}, 10, 0.1f);
  std::vector<const Tensor*> c13, s13, c2, s2;
  for (int e = 0; e < E; ++e) {
    c13.push_back(&mem.w13[size_t(e)].packed->codes), s13.push_back(&mem.w13[size_t(e)].packed->scales);
    c2.push_back(&mem.w2[size_t(e)].packed->codes), s2.push_back(&mem.w2[size_t(e)].packed->scales);
  }
  TempDir d;
  const std::string P = "model.layers.0.mlp.";
  write_safetensors((d.p / "model.safetensors").string(),
                    {{P + "router.weight", mem.gate},
                     {P + "router.bias", mem.gate_bias},
                     {P + "experts.gate_up_proj_blocks", stack(c13, {E, 2 * I, H / 32, 16})},
                     {P + "experts.gate_up_proj_scales", stack(s13, {E, 2 * I, H / 32})},
                     {P + "experts.gate_up_proj_bias", mem.b13},
                     {P + "experts.down_proj_blocks", stack(c2, {E, H, I / 32, 16})},
                     {P + "experts.down_proj_scales", stack(s2, {E, H, I / 32})},
                     {P + "experts.down_proj_bias", mem.b2}});
  write_config(d.p, {{"model_type", "gpt_oss"}, {"hidden_size", H}, {"intermediate_size", I}, {"num_local_experts", E},
                     {"num_experts_per_tok", s.top_k}, {"num_hidden_layers", 1}, {"swiglu_limit", 7.0}});
  const MoeLayer loaded = load_moe_layer(d.p.string(), 0);
  EXPECT_EQ(loaded.scheme->name, "w_mxfp4_a16");
  EXPECT_EQ(loaded.activation.act, Activation::SwiGLUOAI);
  EXPECT_EQ(loaded.router.kind, RouterKind::TopKThenSoftmax);
  expect_same_outputs(mem, loaded, H);
  // A missing tensor is named.
  fs::remove(d.p / "model.safetensors");
  write_safetensors((d.p / "model.safetensors").string(), {{P + "router.weight", mem.gate}});
  try {
    load_moe_layer(d.p.string(), 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("router.bias"), std::string::npos) << e.what();
  }
}

TEST(MoeLoader, MixtralBf16AndQuantizeOnLoad) {
  const SyntheticShape s{"mixtral-test", 64, 32, 4, 2};
  MoeLayer mem = synthetic_layer(s, parse_moe_scheme("bf16"), 6);
  const int64_t H = s.hidden, I = s.inter;
  TempDir d;
  std::vector<std::pair<std::string, Tensor>> ts{{"model.layers.1.block_sparse_moe.gate.weight", mem.gate}};
  for (int e = 0; e < s.num_experts; ++e) {
    const std::string P = "model.layers.1.block_sparse_moe.experts." + std::to_string(e) + ".";
    ts.emplace_back(P + "w1.weight", rows(mem.w13[size_t(e)].dense, 0, I));
    ts.emplace_back(P + "w3.weight", rows(mem.w13[size_t(e)].dense, I, I));
    ts.emplace_back(P + "w2.weight", mem.w2[size_t(e)].dense);
  }
  write_safetensors((d.p / "model.safetensors").string(), ts);
  write_config(d.p, {{"model_type", "mixtral"}, {"hidden_size", H}, {"intermediate_size", I}, {"num_local_experts", s.num_experts},
                     {"num_experts_per_tok", s.top_k}, {"num_hidden_layers", 2}, {"hidden_act", "silu"}});
  const MoeLayer loaded = load_moe_layer(d.p.string(), 1);
  EXPECT_EQ(loaded.scheme->name, "bf16");
  EXPECT_TRUE(loaded.router.renormalize);
  expect_same_outputs(mem, loaded, H);
  LoadOptions lo;
  lo.scheme = &parse_moe_scheme("w_mxfp4_a_mxfp4");
  const MoeLayer q = load_moe_layer(d.p.string(), 1, lo);
  expect_same_outputs(quantize_layer(mem, *lo.scheme, ScaleRule::Even), q, H);
  EXPECT_THROW(load_moe_layer(d.p.string(), 2), Error);  // out of range, named
}

TEST(MoeLoader, UnsupportedArchitectureIsNamed) {
  TempDir d;
  write_config(d.p, {{"model_type", "llama"}, {"num_hidden_layers", 1}});
  try {
    load_moe_layer(d.p.string(), 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("llama"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("qwen3_moe"), std::string::npos) << e.what();
  }
}

TEST(MoeLoader, DeepSeekV3GroupedRoutingAndSharedExperts) {
  const SyntheticShape s{"deepseek-test", 64, 32, 16, 4};
  const MoeLayer mem = synthetic_layer(s, parse_moe_scheme("bf16"), 12);
  ASSERT_EQ(mem.shared_w13.size(), 1u);
  const int64_t H = s.hidden, I = s.inter;
  TempDir d;
  const std::string P = "model.layers.3.mlp.";
  std::vector<std::pair<std::string, Tensor>> ts{{P + "gate.weight", mem.gate},
                                                 {P + "gate.e_score_correction_bias", mem.correction_bias}};
  auto add_mlp = [&](const std::string& prefix, const ExpertLinear& w13, const ExpertLinear& w2) {
    ts.emplace_back(prefix + "gate_proj.weight", rows(w13.dense, 0, I));
    ts.emplace_back(prefix + "up_proj.weight", rows(w13.dense, I, I));
    ts.emplace_back(prefix + "down_proj.weight", w2.dense);
  };
  for (int e = 0; e < s.num_experts; ++e)
    add_mlp(P + "experts." + std::to_string(e) + ".", mem.w13[size_t(e)], mem.w2[size_t(e)]);
  add_mlp(P + "shared_experts.", mem.shared_w13[0], mem.shared_w2[0]);
  write_safetensors((d.p / "model.safetensors").string(), ts);
  write_config(d.p, {{"model_type", "deepseek_v3"}, {"hidden_size", H}, {"moe_intermediate_size", I},
                     {"n_routed_experts", s.num_experts}, {"num_experts_per_tok", s.top_k}, {"n_group", 8},
                     {"topk_group", 4}, {"routed_scaling_factor", 2.5}, {"norm_topk_prob", true},
                     {"n_shared_experts", 1}, {"first_k_dense_replace", 3}, {"num_hidden_layers", 4},
                     {"scoring_func", "sigmoid"}, {"hidden_act", "silu"}});
  const MoeLayer loaded = load_moe_layer(d.p.string(), 3);
  EXPECT_EQ(loaded.router.kind, RouterKind::SigmoidGroupedTopK);
  EXPECT_EQ(loaded.router.n_group, 8);
  EXPECT_EQ(loaded.shared_inter, I);
  expect_same_outputs(mem, loaded, H);
  try {
    load_moe_layer(d.p.string(), 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("first_k_dense_replace"), std::string::npos) << e.what();
  }

  // The shared expert adds exactly its dense gated MLP (exact mode, bf16 weights: float32 math).
  MoeLayer routed_only = mem;
  routed_only.shared_w13.clear(), routed_only.shared_w2.clear();
  const Tensor x = test::random_tensor(DType::BF16, {5, H}, 4);
  MoeOptions o;
  o.emulation = Emulation::Exact;
  const MoeResult with = run_moe(mem, x, o), without = run_moe(routed_only, x, o);
  double num = 0, den = 0;
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t c = 0; c < H; ++c) {
      double y = 0;
      for (int64_t i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (int64_t h = 0; h < H; ++h) {
          const double xv = load_as_f32(x.data.data(), x.dtype, t * H + h);
          g += xv * load_as_f32(mem.shared_w13[0].dense.data.data(), DType::BF16, i * H + h);
          u += xv * load_as_f32(mem.shared_w13[0].dense.data.data(), DType::BF16, (I + i) * H + h);
        }
        y += g / (1 + std::exp(-g)) * u * load_as_f32(mem.shared_w2[0].dense.data.data(), DType::BF16, c * I + i);
      }
      const double diff = double(with.out.ptr<float>()[t * H + c]) - without.out.ptr<float>()[t * H + c];
      num += (diff - y) * (diff - y), den += y * y;
    }
  EXPECT_LT(std::sqrt(num / den), 1e-5);
}
