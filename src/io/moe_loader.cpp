// MoE layer loading: architecture names from config.json, layouts through mxmoe/layout.hpp.
#include "mxmoe/moe/loader.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "mxmoe/error.hpp"
#include "mxmoe/layout.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe::moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

template <class T>
T cfg_get(const json& c, std::initializer_list<const char*> keys, const char* what) {
  for (const char* k : keys)
    if (c.contains(k) && !c[k].is_null()) return c[k].get<T>();
  MXMOE_THROW("config.json: missing {} (looked for {})", what, fmt::join(keys, ", "));
}

// Where one architecture keeps its MoE tensors.
struct ArchNames {
  std::string model_type, moe_prefix, gate, gate_proj, up_proj, down_proj;
};

ArchNames arch_names(const std::string& model_type, int layer) {
  const std::string L = fmt::format("model.layers.{}.", layer);
  if (model_type == "qwen3_moe" || model_type == "qwen2_moe")
    return {model_type, L + "mlp.", "gate.weight", "gate_proj", "up_proj", "down_proj"};
  if (model_type == "mixtral") return {model_type, L + "block_sparse_moe.", "gate.weight", "w1", "w3", "w2"};
  if (model_type == "deepseek_v3") return {model_type, L + "mlp.", "gate.weight", "gate_proj", "up_proj", "down_proj"};
  if (model_type == "gpt_oss") return {model_type, L + "mlp.", "router.weight", "", "", ""};
  MXMOE_THROW("unsupported architecture '{}' (supported: qwen3_moe, mixtral, deepseek_v3, gpt_oss)", model_type);
}

Tensor require(const Checkpoint& ck, const std::string& name, std::vector<int64_t> shape) {
  MXMOE_CHECK(ck.contains(name), "checkpoint {}: missing tensor {}", ck.dir(), name);
  Tensor t = ck.load(name);
  MXMOE_CHECK(t.shape == shape, "checkpoint {}: tensor {} has shape {}, expected {}", ck.dir(), name,
              shape_str(t.shape), shape_str(shape));
  return t;
}

Tensor to_f32_tensor(const Tensor& t) {
  Tensor o(DType::F32, t.shape);
  to_f32(t.data.data(), t.dtype, t.numel(), o.ptr<float>());
  return o;
}

// Concatenates the rows of two projections into one ExpertLinear (w13 = concat(gate, up)).
ExpertLinear concat_rows(ExpertLinear a, const ExpertLinear& b, const std::string& what) {
  if (a.packed) {
    MXMOE_CHECK(a.packed->params.global_scale == b.packed->params.global_scale,
                "{}: gate and up projections have different weight tensor scales ({:g} vs {:g}); mxmoe needs the "
                "shared value ModelOpt writes",
                what, a.packed->params.global_scale, b.packed->params.global_scale);
    MXMOE_CHECK(a.input_scale == b.input_scale, "{}: gate and up projections have different input scales", what);
    for (Tensor* dst : {&a.packed->codes, &a.packed->scales}) {
      const Tensor& src = dst == &a.packed->codes ? b.packed->codes : b.packed->scales;
      dst->data.insert(dst->data.end(), src.data.begin(), src.data.end());
      dst->shape[0] += src.shape[0];
    }
    a.packed->shape[0] += b.packed->shape[0];
  } else {
    a.dense.data.insert(a.dense.data.end(), b.dense.data.begin(), b.dense.data.end());
    a.dense.shape[0] += b.dense.shape[0];
  }
  return a;
}

// The MoE scheme of a Quark MX checkpoint: weights as detected, activations from input_tensors
// (null: weight-only; fp8_e4m3: per-tensor FP8; otherwise the MX format named).
std::string quark_moe_scheme(const json& cfg, Scheme w) {
  const std::string ws(traits(w).name);
  const json* in = nullptr;
  if (cfg.contains("quantization_config") && cfg["quantization_config"].contains("global_quant_config"))
    if (const auto& g = cfg["quantization_config"]["global_quant_config"]; g.contains("input_tensors"))
      in = &g["input_tensors"];
  if (!in || in->is_null()) return w == Scheme::MXFP4 ? "w_mxfp4" : "w_" + ws + "_a16";
  const std::string dt = in->value("dtype", "");
  if (dt == "fp8_e4m3") return "w_" + ws + "_a_fp8";
  if (dt == "fp4") return "w_" + ws + "_a_mxfp4";
  return "w_" + ws + "_a_mx" + dt;  // fp6_e3m2 -> mxfp6_e3m2
}

}  // namespace

MoeLayer load_moe_layer(const std::string& dir, int layer, const LoadOptions& opts) {
  const fs::path d(dir);
  MXMOE_CHECK(fs::is_directory(d), "{} is not a checkpoint directory (expected config.json + safetensors)", dir);
  const json cfg = read_json_file((d / "config.json").string());
  const std::string model_type = cfg.value("model_type", "");
  const ArchNames names = arch_names(model_type, layer);
  const int n_layers = cfg_get<int>(cfg, {"num_hidden_layers"}, "num_hidden_layers");
  MXMOE_CHECK(layer >= 0 && layer < n_layers, "layer {} out of range: the model has {} layer{} (0 to {})", layer, n_layers,
              n_layers == 1 ? "" : "s", n_layers - 1);
  const bool dsv3 = model_type == "deepseek_v3";
  if (dsv3) {
    const int first_moe = cfg.value("first_k_dense_replace", 0);
    MXMOE_CHECK(layer >= first_moe, "layer {} is a dense MLP (first_k_dense_replace = {}), not an MoE layer", layer,
                first_moe);
    const std::string scoring = cfg.value("scoring_func", "sigmoid");
    MXMOE_CHECK(scoring == "sigmoid", "deepseek_v3 scoring_func '{}' is not supported (only sigmoid)", scoring);
  }
  if (cfg.contains("mlp_only_layers"))
    for (int m : cfg["mlp_only_layers"].get<std::vector<int>>())
      MXMOE_CHECK(m != layer, "layer {} is a dense MLP (mlp_only_layers), not an MoE layer", layer);

  MoeLayer l;
  l.hidden = cfg_get<int64_t>(cfg, {"hidden_size"}, "hidden_size");
  l.inter = model_type == "mixtral" || model_type == "gpt_oss"
                ? cfg_get<int64_t>(cfg, {"intermediate_size"}, "intermediate_size")
                : cfg_get<int64_t>(cfg, {"moe_intermediate_size"}, "moe_intermediate_size");
  l.num_experts = cfg_get<int>(cfg, {"num_experts", "num_local_experts", "n_routed_experts"}, "the number of experts");
  const int k = cfg_get<int>(cfg, {"num_experts_per_tok", "experts_per_token"}, "num_experts_per_tok");
  const bool oss = model_type == "gpt_oss";
  l.router = {oss ? RouterKind::TopKThenSoftmax : RouterKind::SoftmaxTopK, l.num_experts, k,
              oss ? false : cfg.value("norm_topk_prob", model_type == "mixtral")};
  if (dsv3) {
    l.router = {RouterKind::SigmoidGroupedTopK, l.num_experts, k, cfg.value("norm_topk_prob", true),
                cfg.value("n_group", 1), cfg.value("topk_group", 1), cfg.value("routed_scaling_factor", 1.0f)};
  }
  l.activation = {oss ? Activation::SwiGLUOAI : parse_activation(cfg.value("hidden_act", "silu"))};
  if (oss) l.activation.limit = cfg.value("swiglu_limit", kSwiGLUOAIDefaultLimit);

  const Checkpoint ck = Checkpoint::open(dir);
  const std::string P = names.moe_prefix;
  l.gate = to_f32_tensor(require(ck, P + names.gate, {l.num_experts, l.hidden}));  // float32 once, not per call
  const int64_t H = l.hidden, I = l.inter, E = l.num_experts;

  if (oss) {
    // gpt-oss MXFP4: fused [E, 2I, H/32, 16] blocks with E8M0 scales; rows interleave gate and up.
    l.gate_bias = to_f32_tensor(require(ck, P + "router.bias", {E}));
    l.scheme = &parse_moe_scheme("w_mxfp4_a16");
    auto load_fused = [&](const std::string& base, int64_t out, int64_t in, std::vector<ExpertLinear>& dst) {
      const Tensor blocks = require(ck, P + "experts." + base + "_blocks", {E, out, in / 32, 16});
      const Tensor scales = require(ck, P + "experts." + base + "_scales", {E, out, in / 32});
      for (int64_t e = 0; e < E; ++e) {
        QuantizedTensor q{{Scheme::MXFP4, ScaleRule::Floor}, {out, in}, Tensor(DType::U8, {out, in / 2}),
                          Tensor(DType::U8, {out, in / 32})};
        std::copy_n(blocks.data.data() + e * out * in / 2, out * in / 2, q.codes.data.data());
        std::copy_n(scales.data.data() + e * out * in / 32, out * in / 32, q.scales.data.data());
        dst.push_back({std::move(q), {}, 0.0f});
      }
    };
    load_fused("gate_up_proj", 2 * I, H, l.w13);
    load_fused("down_proj", H, I, l.w2);
    l.b13 = to_f32_tensor(require(ck, P + "experts.gate_up_proj_bias", {E, 2 * I}));
    l.b2 = to_f32_tensor(require(ck, P + "experts.down_proj_bias", {E, H}));
    l.validate();
    pack_expert_weights(l);
    return l;
  }

  // Per-expert projections: quantized (ModelOpt / compressed-tensors / Quark) or dense BF16.
  const std::string probe = P + "experts.0." + names.gate_proj;
  const bool dense = ck.contains(probe + ".weight") && ck.info(probe + ".weight").dtype != DType::U8;
  std::optional<LayoutInfo> li;
  if (!dense) li = detect_checkpoint_layout(dir);
  auto load_proj = [&](const std::string& prefix, std::vector<int64_t> shape) {
    ExpertLinear w;
    if (dense) {
      w.dense = require(ck, prefix + ".weight", shape);
    } else {
      QuantParams hint{li->scheme, li->rule, li->rounding};
      QuantizedLinear q = import_linear(ck, prefix, li->layout, hint);
      MXMOE_CHECK(q.weight.shape == shape, "{}: shape {}, expected {}", prefix, shape_str(q.weight.shape), shape_str(shape));
      w.packed = std::move(q.weight);
      w.input_scale = q.input_scale;
    }
    return w;
  };
  auto load_mlp = [&](const std::string& prefix, int64_t inter, std::vector<ExpertLinear>& w13,
                      std::vector<ExpertLinear>& w2) {
    ExpertLinear g = load_proj(prefix + names.gate_proj, {inter, H}), u = load_proj(prefix + names.up_proj, {inter, H});
    w13.push_back(concat_rows(std::move(g), u, prefix));
    w2.push_back(load_proj(prefix + names.down_proj, {H, inter}));
  };
  for (int64_t e = 0; e < E; ++e) load_mlp(fmt::format("{}experts.{}.", P, e), I, l.w13, l.w2);
  if (dsv3) {
    if (ck.contains(P + "gate.e_score_correction_bias"))
      l.correction_bias = to_f32_tensor(require(ck, P + "gate.e_score_correction_bias", {E}));
    if (const int ns = cfg.value("n_shared_experts", 0); ns > 0) {
      l.shared_inter = I * ns;
      load_mlp(P + "shared_experts.", l.shared_inter, l.shared_w13, l.shared_w2);
    }
  }
  if (dense) {
    l.scheme = &parse_moe_scheme("bf16");
    if (opts.scheme && opts.scheme->weight_quantized) l = quantize_layer(l, *opts.scheme, opts.rule);
  } else {
    // The activation recipe follows the checkpoint: NVFP4 W4A4 when input scales exist, Quark's
    // declared activation format otherwise.
    std::string name;
    if (li->scheme == Scheme::NVFP4) name = l.w13[0].input_scale > 0 ? "w_nvfp4_a_nvfp4" : "w_nvfp4_a16";
    else name = quark_moe_scheme(cfg, li->scheme);
    if (opts.scheme) {
      MXMOE_CHECK(opts.scheme->weight_quantized && opts.scheme->weight == li->scheme,
                  "--scheme {} does not match the checkpoint's {} weights (quantize-on-load needs a bf16 checkpoint)",
                  opts.scheme->name, traits(li->scheme).name);
      name = opts.scheme->name;
    } else {
      // A declared combination without a MoE scheme (say weight-only MXFP6): name the ones that exist.
      std::string with;
      bool known = false;
      for (const auto& s : moe_schemes()) {
        known = known || s.name == name;
        if (s.weight_quantized && s.weight == li->scheme) with += fmt::format("{}{}", with.empty() ? "" : ", ", s.name);
      }
      MXMOE_CHECK(known, "{}: the checkpoint declares {} weights with activations as '{}', which no MoE scheme runs; "
                  "choose one with --scheme (LoadOptions::scheme): {}", dir, traits(li->scheme).name, name, with);
    }
    l.scheme = &parse_moe_scheme(name);
    l.act_rule = li->rule;
    l.act_rounding = li->rounding;
  }
  l.validate();
  pack_expert_weights(l);
  return l;
}

std::string describe_checkpoint(const std::string& dir) {
  const json cfg = read_json_file((fs::path(dir) / "config.json").string());
  std::string q = "bf16";
  try {
    q = describe(detect_checkpoint_layout(dir));
  } catch (const Error&) {
  }
  return fmt::format("{}, {} experts top-{}, {}", cfg.value("model_type", "?"),
                     cfg.value("num_experts", cfg.value("num_local_experts", 0)), cfg.value("num_experts_per_tok", 0), q);
}

}  // namespace mxmoe::moe
