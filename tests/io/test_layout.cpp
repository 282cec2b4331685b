// Checkpoint layouts of one quantized linear: export/import round trips, the error paths, detection
// from configs and tensor names, and the golden ModelOpt / compressed-tensors / Quark checkpoints.
#include <fstream>
#include <nlohmann/json.hpp>

#include "mxmoe/layout.hpp"
#include "test_util.hpp"

namespace mxmoe {
namespace {

using json = nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

QuantParams params(Scheme s, float gs = 1.0f) {
  QuantParams p;
  p.scheme = s;
  p.rule = ScaleRule::Even;
  p.global_scale = gs;
  return p;
}

const NamedTensor* by_name(const std::vector<NamedTensor>& v, const std::string& n) {
  for (const auto& t : v)
    if (t.name == n) return &t;
  return nullptr;
}

std::vector<TensorInfo> infos_of(const std::vector<NamedTensor>& v) {
  std::vector<TensorInfo> out;
  for (const auto& t : v) {
    TensorInfo i;
    i.name = t.name;
    i.dtype = t.tensor.dtype;
    i.shape = t.tensor.shape;
    out.push_back(i);
  }
  return out;
}

TEST(Layout, ParseAndName) {
  for (Layout l : {Layout::ModelOpt, Layout::CompressedTensors, Layout::Quark})
    EXPECT_EQ(parse_layout(layout_name(l)), l);
  EXPECT_EQ(parse_layout("ct"), Layout::CompressedTensors);
  const std::string msg = error_of([] { parse_layout("gguf"); });
  EXPECT_NE(msg.find("'gguf'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("compressed-tensors"), std::string::npos) << msg;
  EXPECT_EQ(default_layout(Scheme::NVFP4), Layout::ModelOpt);
  EXPECT_EQ(default_layout(Scheme::MXFP6_E2M3), Layout::Quark);
}

TEST(Layout, ModelOptExportNamesDtypesAndScales) {
  const Tensor x = test::random_tensor(DType::BF16, {8, 64}, 1);
  const float gs = nvfp4_default_global_scale(tensor_amax(x));
  const QuantizedTensor q = quantize(x, params(Scheme::NVFP4, gs));
  const auto v = export_linear(Layout::ModelOpt, "m.up_proj", q, 0.01f);
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[0].name, "m.up_proj.weight");
  EXPECT_EQ(v[0].tensor.dtype, DType::U8);
  EXPECT_EQ(v[0].tensor.shape, (std::vector<int64_t>{8, 32}));
  EXPECT_EQ(v[1].name, "m.up_proj.weight_scale");
  EXPECT_EQ(v[1].tensor.dtype, DType::F8_E4M3);
  EXPECT_EQ(v[1].tensor.shape, (std::vector<int64_t>{8, 4}));
  EXPECT_EQ(v[2].name, "m.up_proj.weight_scale_2");
  EXPECT_TRUE(v[2].tensor.shape.empty());
  EXPECT_FLOAT_EQ(*v[2].tensor.ptr<float>(), 1.0f / gs);  // decode direction
  EXPECT_EQ(1.0f / *v[2].tensor.ptr<float>(), gs);        // chosen so that a reader gets gs back exactly
  EXPECT_EQ(v[3].name, "m.up_proj.input_scale");
  EXPECT_EQ(*v[3].tensor.ptr<float>(), 0.01f);
  // Without an input scale there is no input_scale tensor.
  EXPECT_EQ(export_linear(Layout::ModelOpt, "m", q).size(), 3u);
}

TEST(Layout, CompressedTensorsExportIsEncodeDirection) {
  const Tensor x = test::random_tensor(DType::F32, {4, 32}, 2);
  const float gs = nvfp4_default_global_scale(tensor_amax(x));
  const auto v = export_linear(Layout::CompressedTensors, "p", quantize(x, params(Scheme::NVFP4, gs)), 0.5f);
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[0].name, "p.weight_packed");
  EXPECT_EQ(v[2].name, "p.weight_global_scale");
  EXPECT_EQ(v[2].tensor.shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(*v[2].tensor.ptr<float>(), gs);
  EXPECT_EQ(v[3].name, "p.input_global_scale");
  EXPECT_EQ(*v[3].tensor.ptr<float>(), 2.0f);
}

TEST(Layout, RoundTripEveryLayoutAndScheme) {
  const Tensor x = test::random_tensor(DType::BF16, {16, 128}, 3);
  struct Case {
    Layout l;
    Scheme s;
  };
  for (const Case c : {Case{Layout::ModelOpt, Scheme::NVFP4}, Case{Layout::CompressedTensors, Scheme::NVFP4},
                       Case{Layout::Quark, Scheme::MXFP4}, Case{Layout::Quark, Scheme::MXFP6_E3M2},
                       Case{Layout::Quark, Scheme::MXFP6_E2M3}, Case{Layout::Quark, Scheme::MXFP8_E4M3},
                       Case{Layout::Quark, Scheme::MXINT8}}) {
    SCOPED_TRACE(fmt::format("{} {}", layout_name(c.l), traits(c.s).name));
    const float gs = c.s == Scheme::NVFP4 ? nvfp4_default_global_scale(tensor_amax(x)) : 1.0f;
    const QuantizedTensor q = quantize(x, params(c.s, gs));
    const float in_scale = c.l == Layout::Quark ? 0.0f : 0.125f;
    const auto v = export_linear(c.l, "layer.w", q, in_scale);
    const QuantizedLinear back = import_linear(lookup_of(v), "layer.w", c.l, params(c.s));
    EXPECT_EQ(back.weight.params.scheme, c.s);
    EXPECT_EQ(back.weight.shape, q.shape);
    EXPECT_EQ(back.input_scale, in_scale);
    EXPECT_EQ(back.weight.params.global_scale, gs);
    EXPECT_EQ(test::count_bit_mismatches(dequantize(back.weight), dequantize(q), "dequantized"), 0);
    const LayoutInfo info = detect_layout_from_tensors(infos_of(v));
    EXPECT_EQ(info.layout, c.l);
    if (info.scheme_certain) EXPECT_EQ(info.scheme, c.s);
  }
}

TEST(Layout, UnsupportedPairsListWhatWorks) {
  const Tensor x = test::random_tensor(DType::F32, {2, 64}, 4);
  const auto q6 = quantize(x, params(Scheme::MXFP6_E3M2));
  std::string msg = error_of([&] { export_linear(Layout::ModelOpt, "a.b", q6); });
  EXPECT_NE(msg.find("modelopt layout cannot hold mxfp6_e3m2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("quark: mxfp4"), std::string::npos) << msg;
  const auto q4 = quantize(x, params(Scheme::NVFP4));
  msg = error_of([&] { export_linear(Layout::Quark, "a.b", q4); });
  EXPECT_NE(msg.find("quark layout cannot hold nvfp4"), std::string::npos) << msg;
  msg = error_of([&] { export_linear(Layout::Quark, "a.b", q6, 0.5f); });
  EXPECT_NE(msg.find("no static input scale"), std::string::npos) << msg;
}

TEST(Layout, ImportErrorsNameTheTensor) {
  const Tensor x = test::random_tensor(DType::F32, {4, 64}, 5);
  auto v = export_linear(Layout::ModelOpt, "e.gate_proj", quantize(x, params(Scheme::NVFP4, 100.0f)));
  // Missing weight_scale_2.
  auto missing = v;
  missing.erase(missing.begin() + 2);
  std::string msg = error_of([&] { import_linear(lookup_of(missing), "e.gate_proj", Layout::ModelOpt); });
  EXPECT_NE(msg.find("missing tensor 'e.gate_proj.weight_scale_2'"), std::string::npos) << msg;
  // Wrong dtype of the block scales.
  auto wrong = v;
  wrong[1].tensor.dtype = DType::U8;
  msg = error_of([&] { import_linear(lookup_of(wrong), "e.gate_proj", Layout::ModelOpt); });
  EXPECT_NE(msg.find("'e.gate_proj.weight_scale'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected F8_E4M3 [4, 4], found U8 [4, 4]"), std::string::npos) << msg;
  // Wrong shape of the block scales.
  auto shaped = v;
  shaped[1].tensor.shape = {4, 2, 2};
  msg = error_of([&] { import_linear(lookup_of(shaped), "e.gate_proj", Layout::ModelOpt); });
  EXPECT_NE(msg.find("'e.gate_proj.weight_scale'"), std::string::npos) << msg;
  // A non-scalar weight_scale_2.
  auto scal = v;
  scal[2].tensor = Tensor(DType::F32, {2});
  msg = error_of([&] { import_linear(lookup_of(scal), "e.gate_proj", Layout::ModelOpt); });
  EXPECT_NE(msg.find("'e.gate_proj.weight_scale_2': expected F32 [] (a scalar), found F32 [2]"), std::string::npos)
      << msg;
  // Reading a ModelOpt linear as compressed-tensors.
  msg = error_of([&] { import_linear(lookup_of(v), "e.gate_proj", Layout::CompressedTensors); });
  EXPECT_NE(msg.find("missing tensor 'e.gate_proj.weight_packed'"), std::string::npos) << msg;
  // Quark data of 6-bit elements read with an fp4 hint.
  const auto q6 = export_linear(Layout::Quark, "q", quantize(x, params(Scheme::MXFP6_E2M3)));
  msg = error_of([&] { import_linear(lookup_of(q6), "q", Layout::Quark, params(Scheme::MXFP4)); });
  EXPECT_NE(msg.find("tensor 'q.weight': expected U8 [4, 32] for mxfp4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("6-bit"), std::string::npos) << msg;
}

TEST(Layout, DetectFromConfigs) {
  json ct = {{"quantization_config", {{"quant_method", "compressed-tensors"}, {"format", "nvfp4-pack-quantized"}}}};
  EXPECT_EQ(detect_layout(ct).layout, Layout::CompressedTensors);
  json mo = {{"quantization_config", {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}}}};
  EXPECT_EQ(detect_layout(mo).layout, Layout::ModelOpt);
  EXPECT_EQ(detect_layout(json::object(), json{{"quantization", {{"quant_algo", "NVFP4"}}}}).layout,
            Layout::ModelOpt);
  json qk = {{"quantization_config",
              {{"quant_method", "quark"},
               {"global_quant_config",
                {{"weight",
                  {{"dtype", "fp6_e2m3"}, {"qscheme", "per_group"}, {"group_size", 32}, {"scale_format", "e8m0"},
                   {"scale_calculation_mode", "floor"}}}}}}}};
  const LayoutInfo q = detect_layout(qk);
  EXPECT_EQ(q.layout, Layout::Quark);
  EXPECT_EQ(q.scheme, Scheme::MXFP6_E2M3);
  EXPECT_EQ(q.rule, ScaleRule::Floor);
  EXPECT_NE(describe(q).find("quark / mxfp6_e2m3"), std::string::npos) << describe(q);

  std::string msg = error_of([] { detect_layout(json{{"quantization_config", {{"quant_method", "gptq"}}}}); });
  EXPECT_NE(msg.find("'gptq'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("compressed-tensors 'nvfp4-pack-quantized'"), std::string::npos) << msg;
  msg = error_of([] {
    detect_layout(json{{"quantization_config", {{"quant_method", "compressed-tensors"}, {"format", "float-quantized"}}}});
  });
  EXPECT_NE(msg.find("'float-quantized'"), std::string::npos) << msg;
  msg = error_of([] { detect_layout(json::object(), json{{"quantization", {{"quant_algo", "FP8"}}}}); });
  EXPECT_NE(msg.find("'FP8'"), std::string::npos) << msg;
  msg = error_of([] { detect_layout(json{{"hidden_size", 8}}); });
  EXPECT_NE(msg.find("no quantization_config"), std::string::npos) << msg;
}

TEST(Layout, DetectFromTensorsRejectsDense) {
  TensorInfo a;
  a.name = "x.weight";
  a.dtype = DType::BF16;
  a.shape = {4, 4};
  const std::string msg = error_of([&] { detect_layout_from_tensors({a}); });
  EXPECT_NE(msg.find("1 BF16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("weight_scale_2"), std::string::npos) << msg;
}

// ----------------------------------------------------------------------------- golden checkpoints
TEST(Layout, GoldenDetection) {
  MXMOE_SKIP_WITHOUT_SHARED(mo, "golden/moe_nvfp4");
  MXMOE_SKIP_WITHOUT_SHARED(ct, "golden/moe_nvfp4_ct");
  MXMOE_SKIP_WITHOUT_SHARED(qk, "golden/moe_mxfp4_quark");
  struct Case {
    std::string dir;
    Layout layout;
    Scheme scheme;
  };
  for (const Case& c : {Case{mo, Layout::ModelOpt, Scheme::NVFP4}, Case{ct, Layout::CompressedTensors, Scheme::NVFP4},
                        Case{qk, Layout::Quark, Scheme::MXFP4}}) {
    SCOPED_TRACE(c.dir);
    const LayoutInfo from_dir = detect_checkpoint_layout(c.dir);
    EXPECT_EQ(from_dir.layout, c.layout);
    EXPECT_EQ(from_dir.scheme, c.scheme);
    const LayoutInfo from_file = detect_checkpoint_layout(c.dir + "/model.safetensors");
    EXPECT_EQ(from_file.layout, c.layout);
    EXPECT_EQ(from_file.scheme, c.scheme);
    EXPECT_NE(from_file.source.find("tensor names"), std::string::npos);
    const Checkpoint ck = Checkpoint::open(c.dir + "/model.safetensors");
    std::vector<TensorInfo> infos;
    for (const auto& n : ck.names()) infos.push_back(ck.info(n));
    EXPECT_EQ(find_linears(infos, c.layout).size(), 24u);  // 8 experts x 3 projections
  }
  const LayoutInfo q = detect_checkpoint_layout(qk);
  EXPECT_EQ(q.rule, ScaleRule::Even);
  EXPECT_TRUE(q.rule_certain);
}

TEST(Layout, GoldenModelOptAndCompressedTensorsAgree) {
  MXMOE_SKIP_WITHOUT_SHARED(mo, "golden/moe_nvfp4/model.safetensors");
  MXMOE_SKIP_WITHOUT_SHARED(ct, "golden/moe_nvfp4_ct/model.safetensors");
  const Checkpoint a = Checkpoint::open(mo), b = Checkpoint::open(ct);
  for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
    const std::string p = fmt::format("model.layers.0.mlp.experts.0.{}", proj);
    const QuantizedLinear la = import_linear(a, p, Layout::ModelOpt), lb = import_linear(b, p, Layout::CompressedTensors);
    EXPECT_EQ(la.weight.params.scheme, Scheme::NVFP4);
    EXPECT_EQ(la.weight.shape, lb.weight.shape);
    EXPECT_EQ(la.weight.params.global_scale, lb.weight.params.global_scale) << p;
    EXPECT_GT(la.input_scale, 0.0f);
    EXPECT_EQ(la.input_scale, lb.input_scale) << p;
    EXPECT_EQ(test::count_bit_mismatches(dequantize(la.weight), dequantize(lb.weight), p), 0);
  }
  const QuantizedLinear g = import_linear(a, "model.layers.0.mlp.experts.0.gate_proj", Layout::ModelOpt);
  EXPECT_EQ(g.weight.shape, (std::vector<int64_t>{128, 256}));
}

TEST(Layout, GoldenQuarkImport) {
  MXMOE_SKIP_WITHOUT_SHARED(qk, "golden/moe_mxfp4_quark/model.safetensors");
  const Checkpoint ck = Checkpoint::open(qk);
  QuantParams hint = params(Scheme::MXFP4);
  const QuantizedLinear l = import_linear(ck, "model.layers.0.mlp.experts.0.down_proj", Layout::Quark, hint);
  EXPECT_EQ(l.weight.shape, (std::vector<int64_t>{256, 128}));
  EXPECT_EQ(l.input_scale, 0.0f);
  const Tensor w = dequantize(l.weight);
  EXPECT_GT(tensor_amax(w), 0.0f);
  // Reading it as ModelOpt names the missing tensor.
  const std::string msg = error_of([&] { import_linear(ck, "model.layers.0.mlp.experts.0.down_proj", Layout::ModelOpt); });
  EXPECT_NE(msg.find("weight_scale"), std::string::npos) << msg;
}

}  // namespace
}  // namespace mxmoe
