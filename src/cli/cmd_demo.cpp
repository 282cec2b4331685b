// `mxmoe demo`: writes a small Qwen3-MoE checkpoint in ModelOpt NVFP4 layout (calibrated input
// scales), loads it back like any checkpoint and reports accuracy against the bf16 layer and speed
// (median of 5 forwards after an untimed one).
#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/common.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/layout.hpp"
#include "mxmoe/moe/layer.hpp"
#include "mxmoe/moe/loader.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe::cli {
namespace {

using namespace mxmoe::moe;
namespace fs = std::filesystem;

std::vector<float> as_f32(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  to_f32(t.data.data(), t.dtype, t.numel(), v.data());
  return v;
}

Tensor rows_of(const Tensor& w, int64_t r0, int64_t n) {
  Tensor o(w.dtype, {n, w.shape[1]});
  const int64_t rb = w.shape[1] * dtype_size(w.dtype);
  std::copy_n(w.data.data() + r0 * rb, n * rb, o.data.data());
  return o;
}

// amax over calibration tokens of silu(x Wg^T) * (x Wu^T): the GEMM2 input of one expert.
float intermediate_amax(const std::vector<float>& x, int64_t T, const ExpertLinear& w13, int64_t H, int64_t I) {
  const auto w = as_f32(w13.dense);
  std::vector<float> h(size_t(T * 2 * I));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(2 * I), int(H), 1.0f, x.data(), int(H), w.data(),
              int(H), 0.0f, h.data(), int(2 * I));
  float m = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const float g = h[size_t(t * 2 * I + i)], u = h[size_t(t * 2 * I + I + i)];
      m = std::max(m, std::fabs(g / (1 + std::exp(-g)) * u));
    }
  return m;
}

void write_checkpoint(const std::string& dir, const MoeLayer& dense, const Tensor& calib) {
  fs::create_directories(dir);
  const int64_t H = dense.hidden, I = dense.inter, T = calib.shape[0];
  const auto x = as_f32(calib);
  float xmax = 0;
  for (float v : x) xmax = std::max(xmax, std::fabs(v));
  // Checkpoints store the router in bf16 (the layer holds it in float32; the values are bf16).
  Tensor gate16 = Tensor::uninitialized(DType::BF16, dense.gate.shape);
  from_f32(dense.gate.ptr<float>(), dense.gate.numel(), DType::BF16, gate16.data.data());
  std::vector<std::pair<std::string, Tensor>> tensors{{"model.layers.0.mlp.gate.weight", gate16}};
  for (int e = 0; e < dense.num_experts; ++e) {
    const auto& w13 = dense.w13[size_t(e)];
    const std::string P = fmt::format("model.layers.0.mlp.experts.{}.", e);
    // gate and up share one tensor scale and one input scale, as ModelOpt writes them.
    const float gs13 = nvfp4_default_global_scale(tensor_amax(w13.dense));
    const float gs2 = nvfp4_default_global_scale(tensor_amax(dense.w2[size_t(e)].dense));
    const float in13 = xmax / (6 * 448), in2 = intermediate_amax(x, T, w13, H, I) / (6 * 448);
    auto add = [&](const std::string& name, const Tensor& w, float gs, float in_scale) {
      QuantParams p{Scheme::NVFP4, ScaleRule::Floor, Rounding::RNE, gs};
      for (auto& nt : export_linear(Layout::ModelOpt, P + name, quantize(w, p, P + name), in_scale))
        tensors.emplace_back(nt.name, std::move(nt.tensor));
    };
    add("gate_proj", rows_of(w13.dense, 0, I), gs13, in13);
    add("up_proj", rows_of(w13.dense, I, I), gs13, in13);
    add("down_proj", dense.w2[size_t(e)].dense, gs2, in2);
  }
  write_safetensors(dir + "/model.safetensors", tensors);
  nlohmann::json cfg = {{"architectures", {"Qwen3MoeForCausalLM"}}, {"model_type", "qwen3_moe"},
                        {"hidden_size", H}, {"moe_intermediate_size", I}, {"num_experts", dense.num_experts},
                        {"num_experts_per_tok", dense.router.top_k}, {"norm_topk_prob", true},
                        {"num_hidden_layers", 1}, {"hidden_act", "silu"}, {"torch_dtype", "bfloat16"}};
  write_json_file(dir + "/config.json", cfg);
  nlohmann::json hq = {{"producer", {{"name", "modelopt"}, {"version", "mxmoe-demo"}}},
                       {"quantization", {{"quant_algo", "NVFP4"}, {"group_size", 16}, {"exclude_modules", {"lm_head", "model.layers.*.mlp.gate"}}}}};
  write_json_file(dir + "/hf_quant_config.json", hq);
}

struct DemoArgs {
  std::string dir = "mxmoe-demo";
  int64_t tokens = 64;
};

void demo_cmd(const DemoArgs& a) {
  const SyntheticShape shape{"demo", 512, 256, 16, 4};
  fmt::print("1. A Qwen3-MoE layer: hidden {}, moe_intermediate {}, {} experts, top-{}, bf16 weights\n", shape.hidden,
             shape.inter, shape.num_experts, shape.top_k);
  const MoeLayer dense = synthetic_layer(shape, parse_moe_scheme("bf16"), 7);
  write_checkpoint(a.dir, dense, synthetic_tokens(256, shape.hidden, 1000));
  fmt::print("2. Wrote {}/ in ModelOpt NVFP4 layout (input scales calibrated on 256 tokens)\n", a.dir);
  const MoeLayer w4a4 = load_moe_layer(a.dir, 0);
  fmt::print("3. Loaded it back: {}\n", describe_checkpoint(a.dir));
  LoadOptions lo;
  lo.scheme = &parse_moe_scheme("w_nvfp4_a16");
  const MoeLayer w4a16 = load_moe_layer(a.dir, 0, lo);
  const MoeLayer mx = quantize_layer(dense, parse_moe_scheme("w_mxfp4_a_mxfp4"), ScaleRule::Even);

  const Tensor x = synthetic_tokens(a.tokens, shape.hidden, 42);
  MoeOptions ref_opts;
  ref_opts.emulation = Emulation::Exact;
  const MoeResult want = run_moe(dense, x, ref_opts);
  fmt::print("4. {} tokens through each layer; reference = the bf16 layer in float32\n\n", a.tokens);
  Table t({"scheme", "emulation", "rel L2 vs bf16", "SQNR dB", "ms/forward", "backend"}, {false, false, true, true, true, false});
  for (const MoeLayer* l : {&w4a4, &w4a16, &mx, &dense})
    for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
      MoeOptions o;
      o.emulation = e;
      // One untimed forward (thread start-up, first touch of buffers), then the median of kTimed.
      MoeResult r = run_moe(*l, x, o);
      constexpr int kTimed = 5;
      std::array<double, kTimed> ms{};
      for (double& m : ms) {
        const auto t0 = std::chrono::steady_clock::now();
        r = run_moe(*l, x, o);
        m = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      }
      std::sort(ms.begin(), ms.end());
      const ErrorStats st = error_stats(want.out, r.out);
      t.add({std::string(l->scheme->name), std::string(emulation_name(e)), fmt::format("{:.4f}", st.rel_l2()),
             fmt_db(st.sqnr_db()), fmt::format("{:.2f}", ms[kTimed / 2]), r.backend.substr(0, r.backend.find(' '))});
    }
  t.print();
  fmt::print("\nTry: mxmoe moe --model {} --layer 0 IN.safetensors OUT.safetensors   (IN holds hidden_states [T, {}])\n",
             a.dir, shape.hidden);
}

}  // namespace

void add_demo_command(CLI::App& app) {
  static DemoArgs d;
  auto* demo = app.add_subcommand("demo", "Write a small Qwen3-MoE NVFP4 checkpoint, run it in both emulation modes, "
                                          "report accuracy against bf16 and speed");
  demo->add_option("--dir", d.dir, "Where to write the demo checkpoint");
  demo->add_option("--tokens", d.tokens, "Evaluation tokens");
  demo->callback([] { demo_cmd(d); });
}

}  // namespace mxmoe::cli
