// Commands that rewrite tensor files: qdq, quantize (to a checkpoint layout), dequantize.
#include <fmt/format.h>

#include <regex>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <map>
#include <optional>
#include <set>

#include "cli/common.hpp"
#include "mxmoe/layout.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe::cli {
namespace {

namespace fs = std::filesystem;

// Progress on stderr for inputs of 64 MiB or more: a line every 10% of the bytes.
class Progress {
 public:
  Progress(uint64_t total, size_t count) : total_(total), count_(count), enabled_(total >= (64ull << 20)) {}
  void step(uint64_t bytes) {
    done_ += bytes;
    ++n_;
    if (!enabled_) return;
    const int pct = int(100.0 * double(done_) / double(total_));
    if (pct / 10 > last_ / 10 || n_ == count_) {
      fmt::print(stderr, "progress: {}/{} tensors, {} / {} ({}%)\n", n_, count_, human_bytes(done_),
                 human_bytes(total_), pct);
      last_ = pct;
    }
  }

 private:
  uint64_t total_, done_ = 0;
  size_t count_, n_ = 0;
  bool enabled_;
  int last_ = 0;
};

uint64_t data_bytes(const SafetensorsFile& f) {
  uint64_t n = 0;
  for (const auto& t : f.tensors()) n += t.nbytes();
  return n;
}

bool fits_blocks(const TensorInfo& t, Scheme s) {
  return !t.shape.empty() && t.shape.back() % traits(s).block == 0;
}

std::string incompatible_msg(const TensorInfo& t, Scheme s) {
  return t.shape.empty() ? fmt::format("tensor '{}' is a 0-d scalar, with no last dimension to quantize along", t.name)
                         : fmt::format("tensor '{}' {}: last dimension {} is not a multiple of the {} block size {}",
                                       t.name, shape_str(t.shape), t.shape.back(), traits(s).name, traits(s).block);
}

std::string params_str(const QuantParams& p) {
  if (traits(p.scheme).tensor_scale) return fmt::format("scheme={}", traits(p.scheme).name);
  return fmt::format("scheme={} scale_rule={} rounding={}", traits(p.scheme).name, scale_rule_name(p.rule),
                     rounding_name(p.rounding));
}

// ------------------------------------------------------------------------------------------- qdq
struct QdqArgs {
  QuantOptions q;
  std::string in, out;
  bool skip_incompatible = false;
};

void run_qdq(const QdqArgs& a) {
  const QuantParams base = a.q.resolve(ScaleRule::Floor);
  const SafetensorsFile f = SafetensorsFile::open(a.in);
  if (!a.skip_incompatible)
    for (const auto& t : f.tensors())
      if (is_qdq_dtype(t.dtype) && !fits_blocks(t, base.scheme))
        MXMOE_THROW("{} (use --skip-incompatible to copy such tensors unchanged)", incompatible_msg(t, base.scheme));

  fmt::print("qdq {} -> {}: {}\n", a.in, a.out, params_str(base));
  Table table({"tensor", "dtype", "shape", "global_scale", "SQNR dB"}, {false, false, false, true, true});
  std::vector<std::pair<std::string, Tensor>> out;
  Progress progress(data_bytes(f), f.size());
  int quantized = 0, copied = 0, skipped = 0;
  for (const auto& t : f.tensors()) {
    Tensor x = f.load(t.name);
    if (!is_qdq_dtype(t.dtype)) {
      ++copied;
    } else if (!fits_blocks(t, base.scheme)) {
      fmt::print(stderr, "mxmoe: warning: {}: copied unchanged\n", incompatible_msg(t, base.scheme));
      ++skipped;
    } else {
      QuantParams p = base;
      if (traits(p.scheme).tensor_scale && a.q.global_scale == 0)
        p.global_scale = nvfp4_default_global_scale(tensor_amax(x));
      Tensor y = qdq(x, p, fmt::format("tensor '{}'", t.name));
      table.add({t.name, std::string(dtype_name(t.dtype)), shape_str(t.shape),
                 traits(p.scheme).tensor_scale ? fmt::format("{:.6g}", p.global_scale) : "-",
                 fmt_db(error_stats(x, y).sqnr_db())});
      x = std::move(y);
      ++quantized;
    }
    out.emplace_back(t.name, std::move(x));
    progress.step(t.nbytes());
  }
  auto meta = f.metadata();
  meta["mxmoe_qdq"] = params_str(base);
  if (!meta.count("format")) meta["format"] = "pt";
  write_safetensors(a.out, out, meta);
  if (table.rows()) table.print();
  fmt::print("{} tensors quantize-dequantized, {} tensors of other dtypes copied unchanged", quantized, copied);
  if (skipped) fmt::print(", {} incompatible tensors copied unchanged", skipped);
  fmt::print("; wrote {}\n", a.out);
}

// -------------------------------------------------------------------------------------- quantize
struct QuantizeArgs {
  QuantOptions q;
  std::string layout, in, out;
  bool skip_incompatible = false, include_all = false;
  std::vector<std::string> exclude;
};

// What ModelOpt / Quark leave unquantized: embeddings, the LM head and MoE routers.
const std::vector<std::string> kDefaultExcludes = {R"(lm_head\.)", R"(embed_tokens\.)", R"(\.mlp\.gate\.weight$)",
                                                   R"(\.router\.)", R"(shared_expert_gate\.)"};

bool is_linear_weight(const TensorInfo& t) {
  return t.name.size() > 7 && t.name.ends_with(".weight") && t.shape.size() == 2 && is_qdq_dtype(t.dtype);
}

// One quantize command's rules, applied file by file (a checkpoint directory is quantized shard by shard).
struct Quantizer {
  const QuantizeArgs& a;
  Scheme scheme;
  Layout layout;
  QuantParams base;
  std::vector<std::regex> excludes;
  Table table{{"tensor", "shape", "stored as", "SQNR dB"}, {false, false, false, true}};
  int quantized = 0, copied = 0, skipped = 0;
  std::vector<std::string> kept;  // excluded modules (names without ".weight"), for the config
  std::map<std::string, float> pair_amax;  // NVFP4: gate / up (w1 / w3) pair key -> the pair's amax

  explicit Quantizer(const QuantizeArgs& args) : a(args), scheme(parse_scheme(a.q.scheme)) {
    layout = a.layout.empty() ? default_layout(scheme) : parse_layout(a.layout);
    MXMOE_CHECK(a.q.global_scale == 0, "quantize: the NVFP4 global scale is 448*6/amax per weight; --global-scale "
                                       "is a qdq option");
    base = a.q.resolve(ScaleRule::Even);  // the Quark layout's producer default is the 'even' rule
    MXMOE_CHECK(layout_supports(layout, scheme), "the {} layout cannot hold {} (modelopt: nvfp4; compressed-tensors: "
                "nvfp4; quark: mxfp4, mxfp6_e3m2, mxfp6_e2m3, and as a project extension mxfp8_e4m3, mxfp8_e5m2, "
                "mxint8)", layout_name(layout), traits(scheme).name);
    std::vector<std::string> patterns = a.include_all ? std::vector<std::string>{} : kDefaultExcludes;
    patterns.insert(patterns.end(), a.exclude.begin(), a.exclude.end());
    for (const auto& e : patterns) {
      try {
        excludes.emplace_back(e);
      } catch (const std::regex_error& err) {
        MXMOE_THROW("--exclude '{}': not a valid regular expression ({})", e, err.what());
      }
    }
  }
  bool excluded(const std::string& name) const {
    for (const auto& r : excludes)
      if (std::regex_search(name, r)) return true;
    return false;
  }
  void check_blocks(const SafetensorsFile& f) const {
    if (a.skip_incompatible) return;
    for (const auto& t : f.tensors())
      if (is_linear_weight(t) && !fits_blocks(t, scheme))
        MXMOE_THROW("{} (use --skip-incompatible to copy such tensors unchanged)", incompatible_msg(t, scheme));
  }
  // ModelOpt gives an expert's gate and up projections one tensor scale (vLLM fuses them, mxmoe's loader
  // needs it): NVFP4 takes each pair's joint amax, over every file of a checkpoint.
  static std::optional<std::string> pair_key(const std::string& name) {
    static const std::regex re(R"(^(.*)\.(gate_proj|up_proj|w1|w3)\.weight$)");
    std::smatch m;
    if (!std::regex_match(name, m, re)) return std::nullopt;
    const std::string which = m[2].str();
    return m[1].str() + (which == "w1" || which == "w3" ? "|w13" : "|gate_up");
  }
  void scan_pairs(const SafetensorsFile& f) {
    if (!traits(scheme).tensor_scale) return;
    for (const auto& t : f.tensors())
      if (is_linear_weight(t) && !excluded(t.name) && fits_blocks(t, scheme))
        if (const auto key = pair_key(t.name)) {
          const float m = tensor_amax(f.load(t.name));
          auto [it, fresh] = pair_amax.emplace(*key, m);
          if (!fresh) it->second = std::fmax(it->second, m);
        }
  }
  void header() const {
    fmt::print("quantize {} -> {}: layout={} {}\n", a.in, a.out, layout_name(layout), params_str(base));
    if (scheme == Scheme::MXFP8_E4M3 || scheme == Scheme::MXFP8_E5M2 || scheme == Scheme::MXINT8)
      fmt::print("note: 8-bit MX in the quark layout is a project extension (vLLM's Quark MX path reads fp4/fp6)\n");
  }

  std::vector<NamedTensor> file(const SafetensorsFile& f, Progress& progress) {
    std::vector<NamedTensor> out;
    for (const auto& t : f.tensors()) {
      Tensor x = f.load(t.name);
      if (is_linear_weight(t) && excluded(t.name)) {
        kept.push_back(t.name.substr(0, t.name.size() - 7));
        out.push_back({t.name, std::move(x)});
      } else if (is_linear_weight(t) && fits_blocks(t, scheme)) {
        QuantParams p = base;
        if (traits(scheme).tensor_scale) {
          const auto key = pair_key(t.name);
          const auto it = key ? pair_amax.find(*key) : pair_amax.end();
          p.global_scale = nvfp4_default_global_scale(it != pair_amax.end() ? it->second : tensor_amax(x));
        }
        const QuantizedTensor q = quantize(x, p, fmt::format("tensor '{}'", t.name));
        const std::string prefix = t.name.substr(0, t.name.size() - 7);
        auto tensors = export_linear(layout, prefix, q);
        std::string stored;
        for (const auto& nt : tensors)
          stored += fmt::format("{}{} {}", stored.empty() ? "" : ", ", nt.name.substr(prefix.size() + 1),
                                dtype_name(nt.tensor.dtype));
        table.add({t.name, shape_str(t.shape), stored, fmt_db(error_stats(x, dequantize(q)).sqnr_db())});
        for (auto& nt : tensors) out.push_back(std::move(nt));
        ++quantized;
      } else {
        if (is_linear_weight(t)) {
          fmt::print(stderr, "mxmoe: warning: {}: copied unchanged\n", incompatible_msg(t, scheme));
          ++skipped;
        } else {
          ++copied;
        }
        out.push_back({t.name, std::move(x)});
      }
      progress.step(t.nbytes());
    }
    return out;
  }
  std::map<std::string, std::string> metadata(const SafetensorsFile& f) const {
    auto meta = f.metadata();
    meta["mxmoe_quantize"] = fmt::format("layout={} {}", layout_name(layout), params_str(base));
    if (!meta.count("format")) meta["format"] = "pt";
    return meta;
  }
  void summary() const {
    if (table.rows()) table.print();
    fmt::print("{} linear weights quantized, {} other tensors copied unchanged", quantized, copied);
    if (skipped) fmt::print(", {} incompatible weights copied unchanged", skipped);
    if (!kept.empty())
      fmt::print(", {} excluded weights (router, embeddings, lm_head, --exclude) kept unquantized", kept.size());
    fmt::print("; wrote {}\n", a.out);
  }
};

void write_tensors(const std::string& path, const std::vector<NamedTensor>& out,
                   const std::map<std::string, std::string>& meta) {
  std::vector<TensorRef> refs;
  for (const auto& nt : out) refs.push_back(tensor_ref(nt.name, nt.tensor));
  write_safetensors(path, refs, meta);
}

// A checkpoint directory (config.json + shards) -> a quantized one: each shard under its own name, the
// index's weight_map renamed, config.json with the layout's quantization_config (or ModelOpt's
// hf_quant_config.json), every other top-level file (tokenizer, generation config) copied.
void quantize_dir(Quantizer& qz) {
  const QuantizeArgs& a = qz.a;
  const fs::path in(a.in), out(a.out);
  MXMOE_CHECK(fs::exists(in / "config.json"), "{}: a checkpoint directory needs config.json", a.in);
  nlohmann::json cfg = read_json_file((in / "config.json").string());
  MXMOE_CHECK(cfg.is_object() && !cfg.contains("quantization_config") && !fs::exists(in / "hf_quant_config.json"),
              "{} is already quantized (it declares a quantization config); quantize reads an unquantized "
              "(bf16 / f16 / f32) checkpoint", a.in);
  std::error_code ec;
  // (The input holds config.json, so this also refuses OUT = IN.)
  MXMOE_CHECK(!fs::exists(out) || (fs::is_directory(out) && fs::is_empty(out)),
              "output directory {} exists and is not empty (quantize writes a new checkpoint directory)", a.out);
  const Checkpoint ck = Checkpoint::open(a.in);
  for (const auto& f : ck.files()) qz.check_blocks(f), qz.scan_pairs(f);
  uint64_t bytes = 0;
  for (const auto& f : ck.files()) bytes += data_bytes(f);
  fs::create_directories(out, ec);
  MXMOE_CHECK(!ec, "cannot create directory {}: {}", a.out, ec.message());
  qz.header();
  Progress progress(bytes, ck.size());
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  std::set<std::string> shard_names;
  for (const auto& f : ck.files()) {
    const std::vector<NamedTensor> tensors = qz.file(f, progress);
    const std::string name = fs::path(f.path()).filename().string();
    write_tensors((out / name).string(), tensors, qz.metadata(f));
    shard_names.insert(name);
    for (const auto& nt : tensors) weight_map[nt.name] = name, total += nt.tensor.data.size();
  }
  constexpr const char* kIndex = "model.safetensors.index.json";
  if (ck.files().size() > 1 || fs::exists(in / kIndex)) write_sharded_index(a.out, weight_map, total);
  std::sort(qz.kept.begin(), qz.kept.end());
  const QuantConfigFiles qc = quant_config(qz.layout, qz.base, qz.kept);
  if (qc.quantization_config) cfg["quantization_config"] = *qc.quantization_config;
  write_json_file((out / "config.json").string(), cfg);
  if (qc.hf_quant_config) write_json_file((out / "hf_quant_config.json").string(), *qc.hf_quant_config);
  for (const auto& entry : fs::directory_iterator(in)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name == "config.json" || name == kIndex || shard_names.count(name)) continue;
    fs::copy_file(entry.path(), out / name, fs::copy_options::overwrite_existing, ec);
    MXMOE_CHECK(!ec, "cannot copy {} to {}: {}", entry.path().string(), a.out, ec.message());
  }
  qz.summary();
  fmt::print("config: {}\n", qc.hf_quant_config ? "hf_quant_config.json (ModelOpt NVFP4)"
                                                 : fmt::format("config.json quantization_config ({})",
                                                               layout_name(qz.layout)));
}

void run_quantize(const QuantizeArgs& a) {
  Quantizer qz(a);
  if (fs::is_directory(a.in)) return quantize_dir(qz);
  const SafetensorsFile f = SafetensorsFile::open(a.in);
  qz.check_blocks(f);
  qz.scan_pairs(f);
  qz.header();
  Progress progress(data_bytes(f), f.size());
  const std::vector<NamedTensor> out = qz.file(f, progress);
  write_tensors(a.out, out, qz.metadata(f));
  qz.summary();
}

// ------------------------------------------------------------------------------------ dequantize
struct DequantizeArgs {
  std::string in, out, dtype = "f32", scheme;
};

void run_dequantize(const DequantizeArgs& a) {
  DType dt;
  if (a.dtype == "f32") dt = DType::F32;
  else if (a.dtype == "bf16") dt = DType::BF16;
  else if (a.dtype == "f16") dt = DType::F16;
  else MXMOE_THROW("--dtype '{}' is not supported (expected f32, bf16 or f16)", a.dtype);

  const Checkpoint ck = Checkpoint::open(a.in);
  std::vector<TensorInfo> infos;
  for (const auto& n : ck.names()) infos.push_back(ck.info(n));
  LayoutInfo li = detect_layout_from_tensors(infos);
  if (!a.scheme.empty()) {
    const Scheme s = parse_scheme(a.scheme);
    MXMOE_CHECK(layout_supports(li.layout, s), "--scheme {}: the tensors are in the {} layout, which holds {}",
                a.scheme, layout_name(li.layout), li.layout == Layout::Quark ? "MX schemes" : "nvfp4");
    li.scheme = s;
    li.scheme_certain = true;
  }
  MXMOE_CHECK(li.scheme_certain, "{}: {}; pass --scheme", a.in, li.note);
  fmt::print("dequantize {} -> {}: {}\n", a.in, a.out, describe(li));

  QuantParams hint;
  hint.scheme = li.scheme;
  hint.rule = li.rule;
  const auto prefixes = find_linears(infos, li.layout);
  std::set<std::string> consumed;
  std::map<std::string, std::string> weight_of;  // packed weight tensor -> prefix
  for (const auto& p : prefixes) {
    weight_of[weight_tensor_name(li.layout, p)] = p;
    for (const char* suf : {".weight", ".weight_packed", ".weight_scale", ".weight_scale_2", ".weight_global_scale",
                            ".input_scale", ".input_global_scale"})
      consumed.insert(p + suf);
  }
  // Tensors in file order (ascending offsets within each file).
  std::vector<const TensorInfo*> order;
  for (const auto& f : ck.files())
    for (const auto& t : f.tensors()) order.push_back(&t);

  const TensorLookup src = lookup_of(ck);
  std::vector<std::pair<std::string, Tensor>> out;
  int dequantized = 0, copied = 0, dropped = 0;
  for (const TensorInfo* t : order) {
    if (auto it = weight_of.find(t->name); it != weight_of.end()) {
      const QuantizedLinear l = import_linear(src, it->second, li.layout, hint);
      out.emplace_back(it->second + ".weight", dequantize(l.weight, dt));
      ++dequantized;
    } else if (consumed.count(t->name)) {
      if (t->name.ends_with("input_scale") || t->name.ends_with("input_global_scale")) ++dropped;
    } else {
      out.emplace_back(t->name, ck.load(t->name));
      ++copied;
    }
  }
  write_safetensors(a.out, out, {{"format", "pt"}, {"mxmoe_dequantize", describe(li)}});
  fmt::print("{} linear weights dequantized to {}, {} other tensors copied unchanged", dequantized,
             dtype_name(dt), copied);
  if (dropped) fmt::print(", {} static input scales dropped", dropped);
  fmt::print("; wrote {}\n", a.out);
}

}  // namespace

void add_quant_commands(CLI::App& app) {
  {
    auto a = std::make_shared<QdqArgs>();
    CLI::App* sub = app.add_subcommand("qdq", "Quantize-dequantize every F32/BF16/F16 tensor along its last dimension");
    a->q.add_to(sub, true);
    sub->add_flag("--skip-incompatible", a->skip_incompatible,
                  "Copy tensors whose last dimension is not a block multiple unchanged (with a warning)");
    sub->add_option("IN", a->in, "Input .safetensors file")->required();
    sub->add_option("OUT", a->out, "Output .safetensors file")->required();
    sub->callback([a] { run_qdq(*a); });
  }
  {
    auto a = std::make_shared<QuantizeArgs>();
    CLI::App* sub = app.add_subcommand(
        "quantize", "Quantize every 2-D float '*.weight' tensor into a checkpoint layout (others copied unchanged); "
                    "a checkpoint directory becomes a new directory with the layout's quantization config");
    a->q.add_to(sub, false);
    sub->add_option("--exclude", a->exclude,
                    "Regex of weight names to keep unquantized (repeatable; added to the defaults: lm_head, "
                    "embed_tokens, MoE routers)");
    sub->add_flag("--include-all", a->include_all, "Drop the default exclusions (quantize routers, embeddings, lm_head)");
    sub->add_option("--layout", a->layout,
                    "modelopt | compressed-tensors | quark (default: modelopt for nvfp4, quark for MX; the MX scale "
                    "rule defaults to Quark's 'even')");
    sub->add_flag("--skip-incompatible", a->skip_incompatible,
                  "Copy weights whose in-features are not a block multiple unchanged (with a warning)");
    sub->add_option("IN", a->in, "Input .safetensors file, or checkpoint directory (config.json + shards)")->required();
    sub->add_option("OUT", a->out, "Output .safetensors file, or a new directory when IN is one")->required();
    sub->callback([a] { run_quantize(*a); });
  }
  {
    auto a = std::make_shared<DequantizeArgs>();
    CLI::App* sub = app.add_subcommand(
        "dequantize", "Dequantize every quantized linear (layout detected from tensor names) to a dense P.weight");
    sub->add_option("IN", a->in, "Input .safetensors file or checkpoint directory")->required();
    sub->add_option("OUT", a->out, "Output .safetensors file")->required();
    sub->add_option("--dtype", a->dtype, "Output dtype of the dense weights: f32 (default), bf16, f16");
    sub->add_option("--scheme", a->scheme, "MX element scheme when tensors cannot tell (6- and 8-bit MX)");
    sub->callback([a] { run_dequantize(*a); });
  }
}

}  // namespace mxmoe::cli
