// Read-only commands: inspect (tensors + detected layout), formats (traits tables), compare
// (error of every scheme / scale rule on one tensor).
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>

#include "cli/common.hpp"
#include "mxmoe/layout.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe::cli {
namespace {

// --------------------------------------------------------------------------------------- inspect
struct InspectArgs {
  std::string path;
  size_t first = 20;
  bool all = false;
};

void run_inspect(const InspectArgs& a) {
  const Checkpoint ck = Checkpoint::open(a.path);
  const auto names = ck.names();
  uint64_t total = 0;
  std::map<std::string, std::pair<size_t, uint64_t>> by_dtype;
  for (const auto& n : names) {
    const TensorInfo& t = ck.info(n);
    total += t.nbytes();
    auto& d = by_dtype[std::string(dtype_name(t.dtype))];
    ++d.first;
    d.second += t.nbytes();
  }
  fmt::print("{}: {} tensors in {} file{}, {} of tensor data\n", a.path, names.size(), ck.files().size(),
             ck.files().size() == 1 ? "" : "s", human_bytes(total));
  if (ck.files().size() == 1)
    for (const auto& [k, v] : ck.files()[0].metadata())
      fmt::print("metadata {}: {}\n", k, v.size() > 120 ? v.substr(0, 117) + "..." : v);

  fmt::print("\n");
  Table dt({"dtype", "tensors", "bytes"}, {false, true, true});
  for (const auto& [d, v] : by_dtype) dt.add({d, std::to_string(v.first), human_bytes(v.second)});
  dt.print();

  const size_t shown = a.all ? names.size() : std::min(a.first, names.size());
  fmt::print("\n");
  Table tt({"tensor", "dtype", "shape", "bytes"}, {false, false, false, true});
  for (size_t i = 0; i < shown; ++i) {
    const TensorInfo& t = ck.info(names[i]);
    tt.add({t.name, std::string(dtype_name(t.dtype)), shape_str(t.shape), std::to_string(t.nbytes())});
  }
  tt.print();
  if (shown < names.size()) fmt::print("... {} more tensors (--all lists them)\n", names.size() - shown);

  fmt::print("\n");
  try {
    const LayoutInfo li = detect_checkpoint_layout(a.path);
    fmt::print("layout: {}\n", describe(li));
    const auto linears = find_linears([&] {
      std::vector<TensorInfo> v;
      for (const auto& n : names) v.push_back(ck.info(n));
      return v;
    }(), li.layout);
    fmt::print("quantized linears: {}\n", linears.size());
  } catch (const Error& e) {
    fmt::print("layout: none detected: {}\n", e.message());
  }
}

// --------------------------------------------------------------------------------------- formats
std::string special_name(Special s) {
  switch (s) {
    case Special::None: return "none (all finite)";
    case Special::FnNaN: return "NaN = S.1111.111, no Inf";
    case Special::IEEE: return "IEEE Inf and NaN";
    case Special::ScaleNaN: return "0xFF = NaN";
  }
  return "?";
}

void run_formats() {
  fmt::print("Element and scale encodings\n\n");
  Table e({"name", "bits", "bias", "max finite", "emax", "Inf/NaN"}, {false, true, true, true, true, false});
  for (const auto& t : kEncodings)
    e.add({std::string(t.name), std::to_string(t.bits), t.ebits ? std::to_string(t.bias) : "-",
           fmt::format("{:g}", t.max_finite), std::to_string(t.emax), special_name(t.special)});
  e.print();
  fmt::print("\nSchemes (block scales along the last dimension)\n\n");
  Table s({"name", "block", "element", "scale", "scale dtype", "tensor scale", "bits/element"},
          {false, true, false, false, false, false, true});
  for (const auto& t : kSchemes)
    s.add({std::string(t.name), std::to_string(t.block), std::string(traits(t.element).name),
           std::string(traits(t.scale).name), std::string(dtype_name(t.scale_dtype)), t.tensor_scale ? "F32" : "-",
           fmt::format("{:g}", bits_per_element(t.scheme))});
  s.print();
}

// --------------------------------------------------------------------------------------- compare
struct CompareArgs {
  std::string file, tensor, rounding = "rne";
  int64_t rows = 0;  // 0 = all (synthetic: 256)
  int64_t cols = 4096;
  uint32_t seed = 1;
};

// Student-t (3 degrees of freedom) rows: heavy tails like LLM weights and activations.
Tensor synthetic(int64_t rows, int64_t cols, uint32_t seed) {
  Tensor t(DType::F32, {rows, cols});
  std::mt19937 rng(seed);
  std::student_t_distribution<float> d(3.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = 0.02f * d(rng);
  return t;
}

void run_compare(const CompareArgs& a) {
  Tensor x;
  std::string what;
  if (a.file.empty()) {
    MXMOE_CHECK(a.tensor.empty(), "--tensor needs FILE");
    const int64_t rows = a.rows > 0 ? a.rows : 256;
    MXMOE_CHECK(a.cols > 0, "--cols must be positive, got {}", a.cols);
    x = synthetic(rows, a.cols, a.seed);
    what = fmt::format("synthetic Student-t(3) data {} (seed {})", shape_str(x.shape), a.seed);
  } else {
    MXMOE_CHECK(!a.tensor.empty(), "compare FILE needs --tensor NAME");
    const Checkpoint ck = Checkpoint::open(a.file);
    MXMOE_CHECK(ck.contains(a.tensor), "{}: no tensor '{}'", a.file, a.tensor);
    x = ck.load(a.tensor);
    MXMOE_CHECK(is_qdq_dtype(x.dtype), "tensor '{}' is {}; compare needs F32, BF16 or F16", a.tensor,
                dtype_name(x.dtype));
    MXMOE_CHECK(!x.shape.empty(), "tensor '{}' is a 0-d scalar", a.tensor);
    if (a.rows > 0 && a.rows < x.rows()) {
      const int64_t k = x.cols();
      x.data.resize(size_t(a.rows * k * dtype_size(x.dtype)));
      x.shape = {a.rows, k};
    }
    what = fmt::format("tensor '{}' {} {}", a.tensor, dtype_name(x.dtype), shape_str(x.shape));
  }
  const Rounding rnd = parse_rounding(a.rounding);
  fmt::print("compare on {}, element rounding {} (nvfp4: rne)\n\n", what, rounding_name(rnd));

  struct Row {
    std::string scheme, rule;
    double bits, sqnr, rel;
  };
  std::vector<Row> rows;
  std::vector<std::string> skipped;
  const float amax = tensor_amax(x);
  for (const auto& st : kSchemes) {
    if (x.cols() % st.block != 0) {
      skipped.push_back(std::string(st.name));
      continue;
    }
    std::vector<std::pair<std::string, QuantParams>> variants;
    QuantParams p;
    p.scheme = st.scheme;
    if (st.tensor_scale) {
      p.global_scale = nvfp4_default_global_scale(amax);
      variants.push_back({"e4m3 (vLLM, gs=448*6/amax)", p});
    } else {
      p.rounding = rnd;
      for (ScaleRule r : {ScaleRule::Floor, ScaleRule::Even, ScaleRule::RCeil, ScaleRule::Ceil}) {
        p.rule = r;
        variants.push_back({std::string(scale_rule_name(r)), p});
      }
    }
    for (const auto& [rule, qp] : variants) {
      const ErrorStats es = error_stats(x, qdq(x, qp, what));
      rows.push_back({std::string(st.name), rule, bits_per_element(st.scheme), es.sqnr_db(), es.rel_l2()});
    }
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& l, const Row& r) { return l.sqnr > r.sqnr; });
  Table t({"scheme", "scale rule", "bits/elem", "SQNR dB", "rel L2"}, {false, false, true, true, true});
  for (const auto& r : rows)
    t.add({r.scheme, r.rule, fmt::format("{:g}", r.bits), fmt_db(r.sqnr), fmt::format("{:.3e}", r.rel)});
  t.print();
  for (const auto& s : skipped)
    fmt::print("skipped {}: last dimension {} is not a multiple of its block\n", s, x.cols());
}

}  // namespace

void add_info_commands(CLI::App& app) {
  {
    auto a = std::make_shared<InspectArgs>();
    CLI::App* sub = app.add_subcommand("inspect", "List tensors and the detected quantization layout");
    sub->add_option("PATH", a->path, ".safetensors file or checkpoint directory")->required();
    sub->add_option("-n,--first", a->first, "Tensors listed (default 20)");
    sub->add_flag("--all", a->all, "List every tensor");
    sub->callback([a] { run_inspect(*a); });
  }
  {
    CLI::App* sub = app.add_subcommand("formats", "Table of element encodings and quantization schemes");
    sub->callback([] { run_formats(); });
  }
  {
    auto a = std::make_shared<CompareArgs>();
    CLI::App* sub = app.add_subcommand(
        "compare", "Quantization error of every scheme and scale rule on one tensor (default: synthetic data)");
    sub->add_option("FILE", a->file, ".safetensors file or checkpoint directory (default: synthetic data)");
    sub->add_option("--tensor", a->tensor, "Tensor to compare (with FILE)");
    sub->add_option("--rows", a->rows, "Use only the first R rows (synthetic: R rows, default 256)");
    sub->add_option("--cols", a->cols, "Synthetic data: columns (default 4096)");
    sub->add_option("--seed", a->seed, "Synthetic data: seed (default 1)");
    sub->add_option("--rounding", a->rounding, "MX element rounding: rne (default) or away");
    sub->callback([a] { run_compare(*a); });
  }
}

}  // namespace mxmoe::cli
