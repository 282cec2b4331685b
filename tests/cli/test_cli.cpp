// The mxmoe binary end to end: each command's happy path on small generated files, the error paths,
// and the quantize -> dequantize round trips per layout.
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "mxmoe/layout.hpp"
#include "mxmoe/moe/layer.hpp"
#include "mxmoe/moe/loader.hpp"
#include "mxmoe/quant.hpp"
#include "mxmoe/safetensors.hpp"
#include "test_util.hpp"

namespace mxmoe {
namespace {

namespace fs = std::filesystem;

struct RunResult {
  int rc = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / fmt::format("mxmoe_cli_{}_{}_{}", info->name(), ::getpid(), counter_++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs `mxmoe ARGS` with stdout / stderr captured to files in the temp dir.
  RunResult run(const std::string& args) {
    const std::string o = path("stdout.txt"), e = path("stderr.txt");
    const std::string cmd = fmt::format("'{}' {} >'{}' 2>'{}'", MXMOE_CLI_PATH, args, o, e);
    const int st = std::system(cmd.c_str());
    RunResult r;
    r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(o);
    r.err = slurp(e);
    return r;
  }

  fs::path dir_;
  static inline int counter_ = 0;
};

#define EXPECT_CONTAINS(hay, needle) \
  EXPECT_NE(std::string(hay).find(needle), std::string::npos) << "missing '" << (needle) << "' in:\n" << (hay)

// A small model-like file: two linear weights, a bias, an index tensor.
void write_model(const std::string& p, DType dt = DType::F32) {
  Tensor ids(DType::I64, {3});
  for (int i = 0; i < 3; ++i) ids.ptr<int64_t>()[i] = i * 7;
  write_safetensors(p, std::vector<std::pair<std::string, Tensor>>{
                           {"layers.0.up_proj.weight", test::random_tensor(dt, {16, 64}, 11)},
                           {"layers.0.down_proj.weight", test::random_tensor(dt, {64, 32}, 12, 0.1f)},
                           {"layers.0.down_proj.bias", test::random_tensor(dt, {64}, 13)},
                           {"ids", ids}});
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.data == b.data;
}

TEST_F(CliTest, HelpExitsZeroForEveryCommand) {
  for (const char* c : {"", "qdq", "quantize", "dequantize", "inspect", "formats", "compare"}) {
    const RunResult r = run(fmt::format("{} --help", c));
    EXPECT_EQ(r.rc, 0) << c << "\n" << r.err;
    EXPECT_CONTAINS(r.out, "Usage");
  }
  const RunResult r = run("");
  EXPECT_NE(r.rc, 0);
  EXPECT_CONTAINS(r.err, "mxmoe: error:");
}

TEST_F(CliTest, FormatsFromTraits) {
  const RunResult r = run("formats");
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const auto& t : kEncodings) EXPECT_CONTAINS(r.out, std::string(t.name));
  for (const auto& s : kSchemes) EXPECT_CONTAINS(r.out, std::string(s.name));
  EXPECT_CONTAINS(r.out, "57344");
  EXPECT_CONTAINS(r.out, "4.25");
}

TEST_F(CliTest, QdqMatchesLibraryAndCopiesNonFloat) {
  write_model(path("in.safetensors"), DType::BF16);
  const RunResult r = run(fmt::format("qdq --scheme mxfp6_e2m3 '{}' '{}'", path("in.safetensors"), path("out.safetensors")));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "SQNR dB");
  EXPECT_CONTAINS(r.out, "1 tensors of other dtypes copied unchanged");
  const auto in = SafetensorsFile::open(path("in.safetensors")), out = SafetensorsFile::open(path("out.safetensors"));
  ASSERT_EQ(out.size(), in.size());
  QuantParams p;
  p.scheme = Scheme::MXFP6_E2M3;
  p.rule = ScaleRule::Floor;  // the qdq default for MX
  for (const auto& t : in.tensors()) {
    const Tensor x = in.load(t.name), y = out.load(t.name);
    EXPECT_EQ(y.dtype, x.dtype) << t.name;
    EXPECT_EQ(y.shape, x.shape) << t.name;
    if (t.dtype == DType::I64) EXPECT_TRUE(same_bytes(x, y));
    else EXPECT_EQ(test::count_bit_mismatches(y, qdq(x, p), t.name), 0);
  }
}

TEST_F(CliTest, QdqNvfp4GlobalScaleAndRules) {
  write_model(path("in.safetensors"));
  const auto in = SafetensorsFile::open(path("in.safetensors"));
  const Tensor x = in.load("layers.0.up_proj.weight");
  // Default: per-tensor 448*6/amax.
  ASSERT_EQ(run(fmt::format("qdq --scheme nvfp4 '{}' '{}'", path("in.safetensors"), path("a.safetensors"))).rc, 0);
  QuantParams p;
  p.scheme = Scheme::NVFP4;
  p.global_scale = nvfp4_default_global_scale(tensor_amax(x));
  EXPECT_EQ(test::count_bit_mismatches(SafetensorsFile::open(path("a.safetensors")).load("layers.0.up_proj.weight"),
                                       qdq(x, p), "default gs"),
            0);
  // Explicit --global-scale.
  ASSERT_EQ(run(fmt::format("qdq --scheme nvfp4 --global-scale 300 '{}' '{}'", path("in.safetensors"),
                            path("b.safetensors")))
                .rc,
            0);
  p.global_scale = 300.0f;
  EXPECT_EQ(test::count_bit_mismatches(SafetensorsFile::open(path("b.safetensors")).load("layers.0.up_proj.weight"),
                                       qdq(x, p), "gs 300"),
            0);
  // MX with a rule and rounding.
  ASSERT_EQ(run(fmt::format("qdq --scheme mxfp4 --scale-rule rceil --rounding away '{}' '{}'", path("in.safetensors"),
                            path("c.safetensors")))
                .rc,
            0);
  QuantParams m;
  m.scheme = Scheme::MXFP4;
  m.rule = ScaleRule::RCeil;
  m.rounding = Rounding::Away;
  EXPECT_EQ(test::count_bit_mismatches(SafetensorsFile::open(path("c.safetensors")).load("layers.0.up_proj.weight"),
                                       qdq(x, m), "rceil away"),
            0);
  // nvfp4 has one recipe.
  const RunResult bad = run(fmt::format("qdq --scheme nvfp4 --scale-rule floor '{}' '{}'", path("in.safetensors"),
                                        path("d.safetensors")));
  EXPECT_NE(bad.rc, 0);
  EXPECT_CONTAINS(bad.err, "nvfp4 has one scale recipe");
}

TEST_F(CliTest, ErrorPaths) {
  write_model(path("in.safetensors"));
  RunResult r = run(fmt::format("qdq --scheme mxfp5 '{}' '{}'", path("in.safetensors"), path("o.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "mxmoe: error: unknown scheme 'mxfp5'");
  EXPECT_CONTAINS(r.err, "mxfp6_e2m3");
  EXPECT_FALSE(fs::exists(path("o.safetensors")));

  r = run(fmt::format("qdq --scheme mxfp4 '{}' '{}'", path("missing.safetensors"), path("o.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "mxmoe: error:");
  EXPECT_CONTAINS(r.err, "missing.safetensors");

  std::ofstream(path("bad.safetensors")) << "\x10\0\0\0\0\0\0\0{not json at all";
  for (const char* cmd : {"qdq --scheme mxfp4", "quantize --scheme nvfp4", "dequantize", "inspect"}) {
    const std::string out = std::string(cmd) == "inspect" ? "" : " '" + path("o.safetensors") + "'";
    r = run(fmt::format("{} '{}'{}", cmd, path("bad.safetensors"), out));
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_CONTAINS(r.err, "mxmoe: error:");
    EXPECT_CONTAINS(r.err, "bad.safetensors");
  }

  r = run(fmt::format("quantize --scheme mxfp6_e3m2 --layout modelopt '{}' '{}'", path("in.safetensors"),
                      path("o.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "modelopt layout cannot hold mxfp6_e3m2");
  EXPECT_CONTAINS(r.err, "quark: mxfp4");

  r = run(fmt::format("quantize --scheme mxfp4 --layout gguf '{}' '{}'", path("in.safetensors"), path("o.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "unknown layout 'gguf'");

  r = run("qdq --scheme mxfp4");  // missing positionals: a usage error
  EXPECT_NE(r.rc, 0);
  EXPECT_CONTAINS(r.err, "mxmoe: error:");

  // A non-quantized file cannot be dequantized: the message says what was found and what is supported.
  r = run(fmt::format("dequantize '{}' '{}'", path("in.safetensors"), path("o.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "no quantized-linear layout recognized");
  EXPECT_CONTAINS(r.err, "compressed-tensors");
}

// bench-moe times the host backends: a tiny layer's table, with the backend that ran; cuda is refused
// with a pointer to the device benchmark (run_moe on CUDA would time the upload of the layer).
TEST_F(CliTest, BenchMoeTimesHostBackends) {
  RunResult r = run("bench-moe --shape tiny --scheme w_mxfp4_a_mxfp4 --tokens 1,3 --iters 2");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "backend cpu");
  EXPECT_CONTAINS(r.out, "x floor");
  r = run("bench-moe --shape tiny --backend ref --tokens 2 --iters 1");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "backend ref");
  r = run("bench-moe --shape tiny --backend cuda --tokens 1");
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "bench_moe_cuda");
  r = run("bench-moe --shape tiny --tokens 1 --iters 0");
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "--iters must be positive");
}

TEST_F(CliTest, WrongBlockMultipleNamesTheTensor) {
  write_safetensors(path("in.safetensors"), std::vector<std::pair<std::string, Tensor>>{
                                                {"ok.weight", test::random_tensor(DType::F32, {4, 64}, 1)},
                                                {"odd.weight", test::random_tensor(DType::F32, {4, 40}, 2)}});
  RunResult r = run(fmt::format("qdq --scheme mxfp4 '{}' '{}'", path("in.safetensors"), path("o.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "tensor 'odd.weight' [4, 40]: last dimension 40 is not a multiple of the mxfp4 block size 32");
  EXPECT_CONTAINS(r.err, "--skip-incompatible");

  r = run(fmt::format("qdq --scheme mxfp4 --skip-incompatible '{}' '{}'", path("in.safetensors"), path("o.safetensors")));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.err, "warning: tensor 'odd.weight'");
  const auto in = SafetensorsFile::open(path("in.safetensors")), out = SafetensorsFile::open(path("o.safetensors"));
  EXPECT_TRUE(same_bytes(in.load("odd.weight"), out.load("odd.weight")));

  r = run(fmt::format("quantize --scheme nvfp4 '{}' '{}'", path("in.safetensors"), path("q.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "'odd.weight'");
  r = run(fmt::format("quantize --scheme nvfp4 --skip-incompatible '{}' '{}'", path("in.safetensors"),
                      path("q.safetensors")));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(SafetensorsFile::open(path("q.safetensors")).contains("odd.weight"));
}

// quantize -> dequantize reproduces mxmoe::qdq of the input: bitwise for F32, and after the cast for bf16.
TEST_F(CliTest, QuantizeDequantizeRoundTripPerLayout) {
  write_model(path("in.safetensors"));
  const auto in = SafetensorsFile::open(path("in.safetensors"));
  struct Case {
    std::string scheme, layout, extra_deq;
    Scheme s;
    Layout l;
    std::string weight_suffix;
  };
  for (const Case& c : {Case{"nvfp4", "", "", Scheme::NVFP4, Layout::ModelOpt, ".weight_scale_2"},
                        Case{"nvfp4", "compressed-tensors", "", Scheme::NVFP4, Layout::CompressedTensors,
                             ".weight_global_scale"},
                        Case{"mxfp4", "", "", Scheme::MXFP4, Layout::Quark, ".weight_scale"},
                        Case{"mxfp6_e2m3", "quark", "--scheme mxfp6_e2m3", Scheme::MXFP6_E2M3, Layout::Quark,
                             ".weight_scale"}}) {
    SCOPED_TRACE(c.scheme + " " + c.layout);
    const std::string q = path("q.safetensors"), d = path("d.safetensors"), b = path("b.safetensors");
    RunResult r = run(fmt::format("quantize --scheme {} {} '{}' '{}'", c.scheme,
                                  c.layout.empty() ? "" : "--layout " + c.layout, path("in.safetensors"), q));
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_CONTAINS(r.out, "2 linear weights quantized, 2 other tensors copied unchanged");
    {
      const auto qf = SafetensorsFile::open(q);
      EXPECT_TRUE(qf.contains("layers.0.up_proj" + c.weight_suffix));
      EXPECT_TRUE(qf.contains("layers.0.down_proj.bias"));
      std::vector<TensorInfo> infos(qf.tensors().begin(), qf.tensors().end());
      EXPECT_EQ(detect_layout_from_tensors(infos).layout, c.l);
    }
    r = run(fmt::format("dequantize {} '{}' '{}'", c.extra_deq, q, d));
    ASSERT_EQ(r.rc, 0) << r.err;
    r = run(fmt::format("dequantize --dtype bf16 {} '{}' '{}'", c.extra_deq, q, b));
    ASSERT_EQ(r.rc, 0) << r.err;
    const auto df = SafetensorsFile::open(d), bf = SafetensorsFile::open(b);
    EXPECT_EQ(df.size(), in.size());
    for (const char* w : {"layers.0.up_proj.weight", "layers.0.down_proj.weight"}) {
      const Tensor x = in.load(w);
      QuantParams p;
      p.scheme = c.s;
      p.rule = ScaleRule::Even;  // quantize's MX default (Quark's producer default)
      if (c.s == Scheme::NVFP4) p.global_scale = nvfp4_default_global_scale(tensor_amax(x));
      const Tensor want = qdq(x, p);
      EXPECT_EQ(test::count_bit_mismatches(df.load(w), want, w), 0);
      Tensor want_bf16(DType::BF16, want.shape);
      from_f32(want.ptr<float>(), want.numel(), DType::BF16, want_bf16.data.data());
      EXPECT_EQ(test::count_bit_mismatches(bf.load(w), want_bf16, w), 0);
    }
    EXPECT_TRUE(same_bytes(df.load("ids"), in.load("ids")));
    EXPECT_TRUE(same_bytes(df.load("layers.0.down_proj.bias"), in.load("layers.0.down_proj.bias")));
  }
}

TEST_F(CliTest, DequantizeAmbiguousMxNeedsScheme) {
  write_model(path("in.safetensors"));
  ASSERT_EQ(run(fmt::format("quantize --scheme mxfp6_e3m2 '{}' '{}'", path("in.safetensors"), path("q.safetensors"))).rc,
            0);
  const RunResult r = run(fmt::format("dequantize '{}' '{}'", path("q.safetensors"), path("d.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "pass --scheme");
}

TEST_F(CliTest, InspectFile) {
  write_model(path("in.safetensors"));
  ASSERT_EQ(run(fmt::format("quantize --scheme nvfp4 '{}' '{}'", path("in.safetensors"), path("q.safetensors"))).rc, 0);
  RunResult r = run(fmt::format("inspect '{}'", path("q.safetensors")));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "layers.0.up_proj.weight_scale_2");
  EXPECT_CONTAINS(r.out, "F8_E4M3");
  EXPECT_CONTAINS(r.out, "layout: modelopt / nvfp4");
  EXPECT_CONTAINS(r.out, "quantized linears: 2");
  r = run(fmt::format("inspect -n 2 '{}'", path("q.safetensors")));
  EXPECT_CONTAINS(r.out, "more tensors (--all lists them)");
  r = run(fmt::format("inspect '{}'", path("in.safetensors")));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "layout: none detected");
  EXPECT_EQ(r.out.find(".cpp:"), std::string::npos) << "an expected outcome prints no source location: " << r.out;
}

TEST_F(CliTest, InspectGoldenDirectories) {
  MXMOE_SKIP_WITHOUT_SHARED(mo, "golden/moe_nvfp4");
  MXMOE_SKIP_WITHOUT_SHARED(ct, "golden/moe_nvfp4_ct");
  MXMOE_SKIP_WITHOUT_SHARED(qk, "golden/moe_mxfp4_quark");
  EXPECT_CONTAINS(run(fmt::format("inspect '{}'", mo)).out, "layout: modelopt / nvfp4");
  EXPECT_CONTAINS(run(fmt::format("inspect '{}'", ct)).out, "layout: compressed-tensors / nvfp4");
  const RunResult r = run(fmt::format("inspect --all '{}'", qk));
  EXPECT_CONTAINS(r.out, "layout: quark / mxfp4");
  EXPECT_CONTAINS(r.out, "scale rule even,");
  EXPECT_CONTAINS(r.out, "model.layers.0.mlp.experts.7.up_proj.weight_scale");
}

// A bf16 checkpoint directory (the golden ModelOpt layer dequantized, in shards with an index)
// quantized into each layout: the output declares its layout (detect_layout, the loader), keeps the
// shard names and the index, copies the tokenizer, and runs bit-identical to quantize-on-load of the
// bf16 directory (gate and up share one NVFP4 tensor scale, as the loader's concatenation does).
TEST_F(CliTest, QuantizeCheckpointDirectoryLoadsBack) {
  MXMOE_SKIP_WITHOUT_SHARED(golden, "golden/moe_nvfp4");
  ASSERT_EQ(run(fmt::format("dequantize --dtype bf16 '{}' '{}'", golden, path("dense.safetensors"))).rc, 0);
  const SafetensorsFile dense = SafetensorsFile::open(path("dense.safetensors"));
  std::vector<TensorRef> refs;
  uint64_t bytes = 0;
  for (const auto& t : dense.tensors()) refs.push_back({t.name, t.dtype, t.shape, dense.bytes(t)}), bytes += t.nbytes();
  const size_t shards = write_sharded(path("bf16"), refs, bytes / 3 + 1).size();
  ASSERT_GE(shards, 2u);
  nlohmann::json cfg = nlohmann::json::parse(slurp(fs::path(golden) / "config.json"));
  cfg.erase("quantization_config");
  std::ofstream(path("bf16/config.json")) << cfg.dump(2);
  std::ofstream(path("bf16/tokenizer.json")) << "{}";
  const Tensor x = SafetensorsFile::open((fs::path(golden) / "io.safetensors").string()).load("hidden_states");
  moe::MoeOptions o;
  o.backend = moe::Backend::Cpu;

  struct Case {
    const char *scheme, *layout, *moe_scheme, *config;
  };
  for (const Case& c : {Case{"nvfp4", "modelopt", "w_nvfp4_a16", "hf_quant_config.json"},
                        Case{"nvfp4", "compressed-tensors", "w_nvfp4_a16", "config.json"},
                        Case{"mxfp4", "quark", "w_mxfp4", "config.json"},
                        Case{"mxfp6_e2m3", "quark", "w_mxfp6_e2m3_a_mxfp6_e2m3", "config.json"}}) {
    const std::string out = path(fmt::format("{}-{}", c.scheme, c.layout));
    const RunResult r = run(fmt::format("quantize --scheme {} --layout {} '{}' '{}'", c.scheme, c.layout,
                                        path("bf16"), out));
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_CONTAINS(r.out, "24 linear weights quantized");
    EXPECT_CONTAINS(r.out, "1 excluded weights");
    EXPECT_TRUE(fs::exists(fs::path(out) / "tokenizer.json")) << out;
    const std::string cfg_text = slurp(fs::path(out) / c.config);
    EXPECT_CONTAINS(cfg_text, "model.layers.0.mlp.gate");  // the router, kept unquantized, named as excluded
    const Checkpoint ck = Checkpoint::open(out);
    EXPECT_EQ(ck.files().size(), shards) << out;
    EXPECT_TRUE(ck.contains("model.layers.0.mlp.experts.7.down_proj.weight_scale")) << out;

    // Weight-only MXFP6 has no MoE scheme: the loader says so and names the choices.
    const bool mx6 = std::string(c.scheme) == "mxfp6_e2m3";
    if (mx6) test::expect_error([&] { moe::load_moe_layer(out, 0); }, "no MoE scheme runs");
    moe::LoadOptions lo;
    lo.scheme = &moe::parse_moe_scheme(c.moe_scheme);
    const moe::MoeLayer q = mx6 ? moe::load_moe_layer(out, 0, lo) : moe::load_moe_layer(out, 0);
    EXPECT_EQ(std::string(q.scheme->name), c.moe_scheme) << out;
    const moe::MoeLayer onload = moe::load_moe_layer(path("bf16"), 0, lo);
    const Tensor y = moe::run_moe(q, x, o).out, want = moe::run_moe(onload, x, o).out;
    EXPECT_EQ(test::count_bit_mismatches(y, want, out), 0);
  }

  // Refusals: an output directory that is not empty, an input that is quantized already.
  RunResult r = run(fmt::format("quantize --scheme nvfp4 '{}' '{}'", path("bf16"), path("nvfp4-modelopt")));
  EXPECT_NE(r.rc, 0);
  EXPECT_CONTAINS(r.err, "exists and is not empty");
  r = run(fmt::format("quantize --scheme nvfp4 '{}' '{}'", golden, path("again")));
  EXPECT_NE(r.rc, 0);
  EXPECT_CONTAINS(r.err, "is already quantized");
  r = run(fmt::format("quantize --scheme mxfp4 --layout quark --rounding away '{}' '{}'", path("bf16"), path("away")));
  EXPECT_NE(r.rc, 0);
  EXPECT_CONTAINS(r.err, "round_method half_even");
}

TEST_F(CliTest, CompareSyntheticAndFile) {
  RunResult r = run("compare --rows 8 --cols 256");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "Student-t");
  EXPECT_CONTAINS(r.out, "nvfp4");
  EXPECT_CONTAINS(r.out, "rceil");
  EXPECT_CONTAINS(r.out, "rel L2");
  // 1 nvfp4 row + 6 MX schemes x 4 rules, sorted by SQNR (highest first).
  std::istringstream lines(r.out);
  std::string line;
  std::vector<double> sqnr;
  bool table = false;
  while (std::getline(lines, line)) {
    if (line.rfind("-----", 0) == 0) {
      table = true;
      continue;
    }
    if (!table || line.empty()) continue;
    std::istringstream f(line);
    std::vector<std::string> cols;
    for (std::string w; f >> w;) cols.push_back(w);
    ASSERT_GE(cols.size(), 4u);
    sqnr.push_back(std::stod(cols[cols.size() - 2]));
  }
  EXPECT_EQ(sqnr.size(), 25u);
  EXPECT_TRUE(std::is_sorted(sqnr.rbegin(), sqnr.rend()));

  write_model(path("in.safetensors"));
  r = run(fmt::format("compare '{}' --tensor layers.0.up_proj.weight --rows 4", path("in.safetensors")));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "tensor 'layers.0.up_proj.weight' F32 [4, 64]");
  r = run(fmt::format("compare '{}' --tensor nope", path("in.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "no tensor 'nope'");
}

TEST_F(CliTest, QuantizeKeepsRoutersEmbeddingsAndLmHeadUnlessAsked) {
  write_safetensors(path("m.safetensors"),
                    std::vector<std::pair<std::string, Tensor>>{
                        {"model.embed_tokens.weight", test::random_tensor(DType::BF16, {8, 32}, 1)},
                        {"model.layers.0.mlp.gate.weight", test::random_tensor(DType::BF16, {4, 32}, 2)},
                        {"model.layers.0.mlp.experts.0.up_proj.weight", test::random_tensor(DType::BF16, {16, 32}, 3)},
                        {"lm_head.weight", test::random_tensor(DType::BF16, {8, 32}, 4)}});
  RunResult r = run(fmt::format("quantize --scheme mxfp4 '{}' '{}'", path("m.safetensors"), path("q.safetensors")));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_CONTAINS(r.out, "1 linear weights quantized");
  EXPECT_CONTAINS(r.out, "3 excluded weights");
  {
    const auto q = SafetensorsFile::open(path("q.safetensors"));
    EXPECT_EQ(q.info("model.layers.0.mlp.gate.weight").dtype, DType::BF16);
    EXPECT_EQ(q.info("lm_head.weight").dtype, DType::BF16);
    EXPECT_EQ(q.info("model.layers.0.mlp.experts.0.up_proj.weight").dtype, DType::U8);
  }
  r = run(fmt::format("quantize --scheme mxfp4 --include-all --exclude 'experts' '{}' '{}'", path("m.safetensors"),
                      path("q2.safetensors")));
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto q2 = SafetensorsFile::open(path("q2.safetensors"));
  EXPECT_EQ(q2.info("model.layers.0.mlp.gate.weight").dtype, DType::U8);
  EXPECT_EQ(q2.info("model.layers.0.mlp.experts.0.up_proj.weight").dtype, DType::BF16);
  r = run(fmt::format("quantize --scheme mxfp4 --exclude '(' '{}' '{}'", path("m.safetensors"), path("q3.safetensors")));
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, "not a valid regular expression");
}

}  // namespace
}  // namespace mxmoe
