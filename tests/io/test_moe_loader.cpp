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
