// Checkpoint layouts of one quantized linear weight: export, import with checks, and detection
// from configs or tensor names. Conventions: REFERENCE.md sections 3, 4 and 6.
#include "mxmoe/layout.hpp"

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "mxmoe/error.hpp"

namespace mxmoe {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kLayoutNames[kNumLayouts] = {"modelopt", "compressed-tensors", "quark"};

bool ends_with(std::string_view s, std::string_view suf) {
  return s.size() >= suf.size() && s.substr(s.size() - suf.size()) == suf;
}

std::string supported_pairs() {
  return "modelopt: nvfp4; compressed-tensors: nvfp4; quark: mxfp4, mxfp6_e3m2, mxfp6_e2m3 "
         "(also mxfp8_e4m3, mxfp8_e5m2, mxint8 as a project extension)";
}

Tensor scalar_f32(float v, std::vector<int64_t> shape) {
  Tensor t(DType::F32, std::move(shape));
  *t.ptr<float>() = v;
  return t;
}

// A float32 r with 1.0f / r == v when one is near 1/v (so that a reader computing 1.0f / r gets v
// back bit for bit); otherwise 1.0f / v.
float exact_reciprocal(float v) {
  const float r = 1.0f / v;
  float lo = r, hi = r;
  for (int i = 0; i < 4; ++i) {
    if (1.0f / lo == v) return lo;
    if (1.0f / hi == v) return hi;
    lo = std::nextafter(lo, 0.0f);
    hi = std::nextafter(hi, INFINITY);
  }
  return r;
}

std::string info_str(const TensorInfo& t) { return fmt::format("{} {}", dtype_name(t.dtype), shape_str(t.shape)); }

const TensorInfo& require(const TensorLookup& src, const std::string& name, Layout layout, const std::string& prefix) {
  const TensorInfo* t = src.find(name);
  MXMOE_CHECK(t != nullptr, "{}: missing tensor '{}' (the {} layout of linear '{}' needs it)", src.what, name,
              layout_name(layout), prefix);
  return *t;
}

void expect(const TensorInfo& t, const std::string& what, DType dt, const std::vector<int64_t>& shape) {
  MXMOE_CHECK(t.dtype == dt && t.shape == shape, "{}: tensor '{}': expected {} {}, found {}", what, t.name,
              dtype_name(dt), shape_str(shape), info_str(t));
}

// A float32 scalar stored as [] or [1].
float load_scalar(const TensorLookup& src, const TensorInfo& t, const char* expected_shape) {
  MXMOE_CHECK(t.dtype == DType::F32 && (t.shape.empty() || (t.shape.size() == 1 && t.shape[0] == 1)),
              "{}: tensor '{}': expected F32 {} (a scalar), found {}", src.what, t.name, expected_shape, info_str(t));
  const Tensor v = src.load(t.name);
  return *v.ptr<float>();
}

void check_positive(const TensorLookup& src, const std::string& name, float v) {
  MXMOE_CHECK(std::isfinite(v) && v > 0, "{}: tensor '{}' holds {}, expected a positive finite scale", src.what, name,
              v);
}

struct QuarkDtype {
  std::string_view name;
  Scheme scheme;
};
constexpr QuarkDtype kQuarkDtypes[] = {{"fp4", Scheme::MXFP4},           {"fp6_e3m2", Scheme::MXFP6_E3M2},
                                       {"fp6_e2m3", Scheme::MXFP6_E2M3}, {"fp8_e4m3", Scheme::MXFP8_E4M3},
                                       {"fp8_e5m2", Scheme::MXFP8_E5M2}, {"int8", Scheme::MXINT8}};

std::optional<Scheme> quark_scheme_of(std::string_view dtype) {
  for (const auto& d : kQuarkDtypes)
    if (d.name == dtype) return d.scheme;
  return std::nullopt;
}

std::string jstr(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return {};
  const json& v = j[key];
  return v.is_string() ? v.get<std::string>() : v.dump();
}

constexpr const char* kSupportedConfigs =
    "supported: ModelOpt NVFP4 (hf_quant_config.json quant_algo NVFP4, or quantization_config.quant_method "
    "'modelopt'), compressed-tensors 'nvfp4-pack-quantized', AMD Quark MX (quant_method 'quark', weight dtype "
    "fp4 / fp6_e3m2 / fp6_e2m3, per_group 32, e8m0 scales)";

LayoutInfo nvfp4_info(Layout l, std::string source) {
  LayoutInfo info;
  info.layout = l;
  info.scheme = Scheme::NVFP4;
  info.source = std::move(source);
  return info;
}

LayoutInfo detect_quark(const json& qc) {
  MXMOE_CHECK(qc.contains("global_quant_config") && qc["global_quant_config"].is_object() &&
                  qc["global_quant_config"].contains("weight") && qc["global_quant_config"]["weight"].is_object(),
              "config.json quantization_config (quark): missing global_quant_config.weight; {}", kSupportedConfigs);
  const json& w = qc["global_quant_config"]["weight"];
  std::string dtype = jstr(w, "dtype");
  if (dtype == "mx" || dtype == "mx6" || dtype == "mx9") dtype = jstr(w, "mx_element_dtype");
  const auto scheme = quark_scheme_of(dtype);
  MXMOE_CHECK(scheme.has_value(),
              "config.json quantization_config (quark): weight dtype '{}' is not an MX element type this project "
              "reads (supported: fp4, fp6_e3m2, fp6_e2m3; also fp8_e4m3, fp8_e5m2, int8 with e8m0 group scales)",
              dtype);
  const std::string qscheme = jstr(w, "qscheme"), fmt_ = jstr(w, "scale_format"), gs = jstr(w, "group_size");
  MXMOE_CHECK((qscheme.empty() || qscheme == "per_group") && (fmt_.empty() || fmt_ == "e8m0") &&
                  (gs.empty() || gs == "32"),
              "config.json quantization_config (quark): weight dtype '{}' with qscheme '{}', scale_format '{}', "
              "group_size {} is not OCP MX (expected per_group, e8m0, 32)",
              dtype, qscheme, fmt_, gs);
  LayoutInfo info;
  info.layout = Layout::Quark;
  info.scheme = *scheme;
  info.source = fmt::format("config.json quant_method=quark, weight dtype={}", dtype);
  const std::string mode = jstr(w, "scale_calculation_mode");
  if (mode.empty()) {
    info.rule = ScaleRule::Even;
    info.rule_certain = false;
    info.note = "no scale_calculation_mode: assuming Quark's default 'even'";
  } else {
    try {
      info.rule = parse_scale_rule(mode);
    } catch (const Error&) {
      MXMOE_THROW("config.json quantization_config (quark): scale_calculation_mode '{}' is not supported "
                  "(supported: even, floor, ceil, rceil)",
                  mode);
    }
  }
  const std::string rm = jstr(w, "round_method");
  MXMOE_CHECK(rm.empty() || rm == "half_even",
              "config.json quantization_config (quark): round_method '{}' is not supported (supported: half_even)", rm);
  if (*scheme == Scheme::MXFP8_E4M3 || *scheme == Scheme::MXFP8_E5M2 || *scheme == Scheme::MXINT8) {
    if (!info.note.empty()) info.note += "; ";
    info.note += "8-bit MX in the Quark layout is a project extension (vLLM's Quark MX path reads fp4/fp6)";
  }
  return info;
}

}  // namespace

std::string_view quark_dtype_name(Scheme s) {
  for (const auto& d : kQuarkDtypes)
    if (d.scheme == s) return d.name;
  MXMOE_THROW("the quark layout cannot hold {}", traits(s).name);
}

// ---------------------------------------------------------------------------------------------------
Layout parse_layout(std::string_view name) {
  for (int i = 0; i < kNumLayouts; ++i)
    if (kLayoutNames[i] == name) return Layout(i);
  if (name == "ct" || name == "compressed_tensors") return Layout::CompressedTensors;
  MXMOE_THROW("unknown layout '{}' (expected modelopt, compressed-tensors or quark)", name);
}

std::string_view layout_name(Layout l) { return kLayoutNames[static_cast<int>(l)]; }

bool layout_supports(Layout l, Scheme s) {
  return l == Layout::Quark ? !traits(s).tensor_scale : s == Scheme::NVFP4;
}

Layout default_layout(Scheme s) { return traits(s).tensor_scale ? Layout::ModelOpt : Layout::Quark; }

std::string weight_tensor_name(Layout layout, const std::string& prefix) {
  return prefix + (layout == Layout::CompressedTensors ? ".weight_packed" : ".weight");
}

// ---------------------------------------------------------------------------------------------------
std::vector<NamedTensor> export_linear(Layout layout, const std::string& prefix, const QuantizedTensor& w,
                                       float input_scale_decode) {
  const Scheme s = w.params.scheme;
  MXMOE_CHECK(layout_supports(layout, s), "linear '{}': the {} layout cannot hold {} (supported pairs: {})", prefix,
              layout_name(layout), traits(s).name, supported_pairs());
  MXMOE_CHECK(w.shape.size() == 2, "linear '{}': expected a 2-D [out, in] weight, got shape {}", prefix,
              shape_str(w.shape));
  const int64_t out = w.shape[0], in = w.shape[1], block = traits(s).block;
  MXMOE_CHECK(in % block == 0, "linear '{}': in features {} are not a multiple of the {} block {}", prefix, in,
              traits(s).name, block);
  const std::vector<int64_t> cshape{out, packed_row_bytes(s, in)}, sshape{out, in / block};
  MXMOE_CHECK(w.codes.dtype == DType::U8 && w.codes.numel() == cshape[0] * cshape[1],
              "linear '{}': codes are {} {}, expected U8 {}", prefix, dtype_name(w.codes.dtype),
              shape_str(w.codes.shape), shape_str(cshape));
  MXMOE_CHECK(w.scales.dtype == traits(s).scale_dtype && w.scales.numel() == sshape[0] * sshape[1],
              "linear '{}': scales are {} {}, expected {} {}", prefix, dtype_name(w.scales.dtype),
              shape_str(w.scales.shape), dtype_name(traits(s).scale_dtype), shape_str(sshape));
  const bool has_input = input_scale_decode > 0;
  MXMOE_CHECK(!has_input || std::isfinite(input_scale_decode),
              "linear '{}': input scale {} is not a finite number", prefix, input_scale_decode);
  MXMOE_CHECK(!(has_input && layout == Layout::Quark),
              "linear '{}': the quark MX layout has no static input scale (activations are quantized dynamically)",
              prefix);

  Tensor codes = w.codes, scales = w.scales;
  codes.shape = cshape;
  scales.shape = sshape;
  std::vector<NamedTensor> outv;
  switch (layout) {
    case Layout::ModelOpt:
      outv.push_back({prefix + ".weight", std::move(codes)});
      outv.push_back({prefix + ".weight_scale", std::move(scales)});
      outv.push_back({prefix + ".weight_scale_2", scalar_f32(exact_reciprocal(w.params.global_scale), {})});
      if (has_input) outv.push_back({prefix + ".input_scale", scalar_f32(input_scale_decode, {})});
      break;
    case Layout::CompressedTensors:
      outv.push_back({prefix + ".weight_packed", std::move(codes)});
      outv.push_back({prefix + ".weight_scale", std::move(scales)});
      outv.push_back({prefix + ".weight_global_scale", scalar_f32(w.params.global_scale, {1})});
      if (has_input) outv.push_back({prefix + ".input_global_scale", scalar_f32(exact_reciprocal(input_scale_decode), {1})});
      break;
    case Layout::Quark:
      outv.push_back({prefix + ".weight", std::move(codes)});
      outv.push_back({prefix + ".weight_scale", std::move(scales)});
      break;
  }
  return outv;
}

// ---------------------------------------------------------------------------------------------------
TensorLookup lookup_of(const Checkpoint& ck) {
  const Checkpoint* p = &ck;
  return {fmt::format("checkpoint '{}'", ck.files().size() == 1 ? ck.files()[0].path() : ck.dir()),
          [p](const std::string& n) -> const TensorInfo* { return p->contains(n) ? &p->info(n) : nullptr; },
          [p](const std::string& n) { return p->load(n); }};
}

TensorLookup lookup_of(const SafetensorsFile& f) {
  const SafetensorsFile* p = &f;
  return {fmt::format("safetensors file '{}'", f.path()),
          [p](const std::string& n) -> const TensorInfo* { return p->contains(n) ? &p->info(n) : nullptr; },
          [p](const std::string& n) { return p->load(n); }};
}

TensorLookup lookup_of(const std::vector<NamedTensor>& tensors) {
  auto index = std::make_shared<std::map<std::string, std::pair<TensorInfo, const Tensor*>>>();
  for (const auto& nt : tensors) {
    TensorInfo info;
    info.name = nt.name;
    info.dtype = nt.tensor.dtype;
    info.shape = nt.tensor.shape;
    info.end = uint64_t(nt.tensor.nbytes());
    (*index)[nt.name] = {std::move(info), &nt.tensor};
  }
  return {"in-memory tensors",
          [index](const std::string& n) -> const TensorInfo* {
            auto it = index->find(n);
            return it == index->end() ? nullptr : &it->second.first;
          },
          [index](const std::string& n) {
            auto it = index->find(n);
            MXMOE_CHECK(it != index->end(), "in-memory tensors: no tensor '{}'", n);
            return *it->second.second;
          }};
}

// ---------------------------------------------------------------------------------------------------
QuantizedLinear import_linear(const TensorLookup& src, const std::string& prefix, Layout layout,
                              const QuantParams& hint) {
  QuantizedLinear ql;
  ql.layout = layout;
  QuantParams p = hint;
  if (layout != Layout::Quark) {
    p.scheme = Scheme::NVFP4;
    p.rounding = Rounding::RNE;
  } else {
    MXMOE_CHECK(layout_supports(layout, p.scheme),
                "linear '{}': the quark layout holds MX data, but the scheme hint is {} (supported pairs: {})", prefix,
                traits(p.scheme).name, supported_pairs());
  }
  const auto& st = traits(p.scheme);

  const std::string wname = weight_tensor_name(layout, prefix), sname = prefix + ".weight_scale";
  const TensorInfo& wi = require(src, wname, layout, prefix);
  const TensorInfo& si = require(src, sname, layout, prefix);
  MXMOE_CHECK(wi.dtype == DType::U8 && wi.shape.size() == 2, "{}: tensor '{}': expected U8 [out, packed in], found {}",
              src.what, wname, info_str(wi));
  MXMOE_CHECK(si.shape.size() == 2 && si.shape[0] == wi.shape[0],
              "{}: tensor '{}': expected {} [{}, in/{}] beside '{}' ({}), found {}", src.what, sname,
              dtype_name(st.scale_dtype), wi.shape[0], st.block, wname, info_str(wi), info_str(si));
  const int64_t out = wi.shape[0];
  int64_t in = 0;
  if (layout == Layout::Quark) {
    in = si.shape[1] * st.block;  // packed width depends on the element format: read `in` off the scales
    expect(si, src.what, DType::U8, {out, si.shape[1]});
    if (wi.shape[1] != packed_row_bytes(p.scheme, in)) {
      std::string guess;
      if (in > 0 && (wi.shape[1] * 8) % in == 0) guess = fmt::format(" ({}-bit elements)", wi.shape[1] * 8 / in);
      MXMOE_THROW("{}: tensor '{}': expected U8 {} for {} with in = {} (from '{}' {}), found {}{}", src.what, wname,
                  shape_str({out, packed_row_bytes(p.scheme, in)}), st.name, in, sname, shape_str(si.shape),
                  info_str(wi), guess);
    }
  } else {
    in = wi.shape[1] * 2;
    expect(si, src.what, DType::F8_E4M3, {out, in / st.block});
  }

  ql.weight.shape = {out, in};
  ql.weight.codes = src.load(wname);
  ql.weight.scales = src.load(sname);

  if (layout == Layout::ModelOpt) {
    const std::string n2 = prefix + ".weight_scale_2";
    const float s2 = load_scalar(src, require(src, n2, layout, prefix), "[]");
    check_positive(src, n2, s2);
    p.global_scale = 1.0f / s2;
    if (const TensorInfo* ii = src.find(prefix + ".input_scale")) {
      ql.input_scale = load_scalar(src, *ii, "[]");
      check_positive(src, ii->name, ql.input_scale);
    }
  } else if (layout == Layout::CompressedTensors) {
    const std::string ng = prefix + ".weight_global_scale";
    p.global_scale = load_scalar(src, require(src, ng, layout, prefix), "[1]");
    check_positive(src, ng, p.global_scale);
    if (const TensorInfo* ii = src.find(prefix + ".input_global_scale")) {
      const float g = load_scalar(src, *ii, "[1]");
      check_positive(src, ii->name, g);
      ql.input_scale = 1.0f / g;
    }
  } else {
    p.global_scale = 1.0f;
  }
  ql.weight.params = p;
  return ql;
}

QuantizedLinear import_linear(const Checkpoint& ck, const std::string& prefix, Layout layout,
                              const QuantParams& hint) {
  return import_linear(lookup_of(ck), prefix, layout, hint);
}

std::vector<std::string> find_linears(const std::vector<TensorInfo>& tensors, Layout layout) {
  std::set<std::string> names;
  for (const auto& t : tensors) names.insert(t.name);
  const std::string wsuf = layout == Layout::CompressedTensors ? ".weight_packed" : ".weight";
  std::vector<std::string> out;
  for (const auto& n : names) {
    if (!ends_with(n, wsuf)) continue;
    const std::string prefix = n.substr(0, n.size() - wsuf.size());
    if (!names.count(prefix + ".weight_scale")) continue;
    if (layout == Layout::ModelOpt && !names.count(prefix + ".weight_scale_2")) continue;
    out.push_back(prefix);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
LayoutInfo detect_layout(const json& config, const std::optional<json>& hf_quant_config) {
  if (hf_quant_config) {
    const json& h = *hf_quant_config;
    std::string algo = jstr(h.contains("quantization") ? h["quantization"] : json::object(), "quant_algo");
    if (algo.empty()) algo = jstr(h, "quant_algo");
    MXMOE_CHECK(algo == "NVFP4", "hf_quant_config.json: quant_algo '{}' is not supported; {}",
                algo.empty() ? "(none)" : algo, kSupportedConfigs);
    return nvfp4_info(Layout::ModelOpt, "hf_quant_config.json quant_algo=NVFP4");
  }
  MXMOE_CHECK(config.is_object() && config.contains("quantization_config") &&
                  config["quantization_config"].is_object(),
              "config.json has no quantization_config object (and there is no hf_quant_config.json); {}",
              kSupportedConfigs);
  const json& qc = config["quantization_config"];
  const std::string method = jstr(qc, "quant_method");
  if (method == "modelopt") {
    const std::string algo = jstr(qc, "quant_algo");
    MXMOE_CHECK(algo.empty() || algo == "NVFP4",
                "config.json quantization_config: modelopt quant_algo '{}' is not supported; {}", algo,
                kSupportedConfigs);
    return nvfp4_info(Layout::ModelOpt, "config.json quant_method=modelopt, quant_algo=NVFP4");
  }
  if (method == "compressed-tensors") {
    std::set<std::string> formats;
    if (!jstr(qc, "format").empty()) formats.insert(jstr(qc, "format"));
    if (qc.contains("config_groups") && qc["config_groups"].is_object())
      for (const auto& [k, g] : qc["config_groups"].items())
        if (!jstr(g, "format").empty()) formats.insert(jstr(g, "format"));
    std::string found;
    for (const auto& f : formats) found += (found.empty() ? "" : ", ") + f;
    MXMOE_CHECK(formats.size() == 1 && *formats.begin() == "nvfp4-pack-quantized",
                "config.json quantization_config: compressed-tensors format(s) '{}' not supported; {}",
                found.empty() ? "(none)" : found, kSupportedConfigs);
    return nvfp4_info(Layout::CompressedTensors, "config.json quant_method=compressed-tensors, format=nvfp4-pack-quantized");
  }
  if (method == "quark") return detect_quark(qc);
  MXMOE_THROW("config.json quantization_config: quant_method '{}' is not supported; {}",
              method.empty() ? "(none)" : method, kSupportedConfigs);
}

LayoutInfo detect_layout_from_tensors(const std::vector<TensorInfo>& tensors) {
  std::map<std::string, const TensorInfo*> by;
  for (const auto& t : tensors) by[t.name] = &t;
  auto get = [&](const std::string& n) -> const TensorInfo* {
    auto it = by.find(n);
    return it == by.end() ? nullptr : it->second;
  };
  int modelopt = 0, ct = 0, mx = 0, orphan_e4m3 = 0;
  std::string example[3], orphan;
  std::set<int> mx_bits;
  for (const auto& t : tensors) {
    if (ends_with(t.name, ".weight_scale_2")) {
      const std::string p = t.name.substr(0, t.name.size() - 15);
      const TensorInfo* w = get(p + ".weight");
      if (w && w->dtype == DType::U8 && get(p + ".weight_scale")) {
        if (!modelopt++) example[0] = p;
      }
    } else if (ends_with(t.name, ".weight_packed")) {
      const std::string p = t.name.substr(0, t.name.size() - 14);
      if (t.dtype == DType::U8 && get(p + ".weight_scale") && get(p + ".weight_global_scale")) {
        if (!ct++) example[1] = p;
      }
    } else if (ends_with(t.name, ".weight_scale")) {
      const std::string p = t.name.substr(0, t.name.size() - 13);
      const TensorInfo* w = get(p + ".weight");
      if (t.dtype == DType::U8 && w && w->dtype == DType::U8 && w->shape.size() == 2 && t.shape.size() == 2 &&
          w->shape[0] == t.shape[0] && t.shape[1] > 0 && (w->shape[1] * 8) % (t.shape[1] * 32) == 0) {
        mx_bits.insert(int(w->shape[1] * 8 / (t.shape[1] * 32)));
        if (!mx++) example[2] = p;
      } else if (t.dtype == DType::F8_E4M3 && w && !get(p + ".weight_scale_2")) {
        if (!orphan_e4m3++) orphan = p;
      }
    }
  }
  const int kinds = (modelopt > 0) + (ct > 0) + (mx > 0);
  MXMOE_CHECK(kinds <= 1,
              "tensors mix layouts: {} ModelOpt linears (e.g. '{}'), {} compressed-tensors (e.g. '{}'), {} MX/Quark "
              "(e.g. '{}')",
              modelopt, example[0], ct, example[1], mx, example[2]);
  if (modelopt) {
    auto i = nvfp4_info(Layout::ModelOpt, fmt::format("tensor names: {} linears with weight_scale_2", modelopt));
    return i;
  }
  if (ct) return nvfp4_info(Layout::CompressedTensors,
                            fmt::format("tensor names: {} linears with weight_packed + weight_global_scale", ct));
  if (mx) {
    MXMOE_CHECK(mx_bits.size() == 1, "tensors: MX linears with different element widths (e.g. '{}')", example[2]);
    const int bits = *mx_bits.begin();
    LayoutInfo info;
    info.layout = Layout::Quark;
    info.rule = ScaleRule::Even;
    info.rule_certain = false;
    info.source = fmt::format("tensor names: {} linears with U8 weight + U8 weight_scale [out, in/32]", mx);
    if (bits == 4) {
      info.scheme = Scheme::MXFP4;
    } else if (bits == 6) {
      info.scheme = Scheme::MXFP6_E3M2;
      info.scheme_certain = false;
      info.note = "6-bit elements: e3m2 vs e2m3 cannot be told from tensors (assuming mxfp6_e3m2; pass --scheme)";
    } else if (bits == 8) {
      info.scheme = Scheme::MXFP8_E4M3;
      info.scheme_certain = false;
      info.note = "8-bit elements: mxfp8_e4m3 / mxfp8_e5m2 / mxint8 cannot be told from tensors (assuming "
                  "mxfp8_e4m3; pass --scheme)";
    } else {
      MXMOE_THROW("tensors: MX-like linear '{}' has {}-bit elements, not 4, 6 or 8", example[2], bits);
    }
    std::string rn = "scale rule unknown from tensors (Quark's default 'even' assumed)";
    info.note = info.note.empty() ? rn : info.note + "; " + rn;
    return info;
  }
  std::map<std::string, int> dtypes;
  for (const auto& t : tensors) dtypes[std::string(dtype_name(t.dtype))]++;
  std::string found;
  for (const auto& [d, n] : dtypes) found += fmt::format("{}{} {}", found.empty() ? "" : ", ", n, d);
  if (orphan_e4m3)
    found += fmt::format("; '{}' has an F8_E4M3 weight_scale but no weight_scale_2 / weight_global_scale", orphan);
  MXMOE_THROW("no quantized-linear layout recognized among {} tensors ({}); supported: ModelOpt NVFP4 (P.weight U8 + "
              "P.weight_scale F8_E4M3 + P.weight_scale_2 F32), compressed-tensors (P.weight_packed U8 + "
              "P.weight_scale F8_E4M3 + P.weight_global_scale F32), Quark MX (P.weight U8 + P.weight_scale U8 [out, "
              "in/32])",
              tensors.size(), found.empty() ? "none" : found);
}

namespace {
std::optional<json> read_json_if_exists(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) return std::nullopt;
  return read_json_file(p.string());
}
}  // namespace

LayoutInfo detect_checkpoint_layout(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const auto config = read_json_if_exists(fs::path(path) / "config.json");
    const auto hf = read_json_if_exists(fs::path(path) / "hf_quant_config.json");
    if (hf || (config && config->is_object() && config->contains("quantization_config")))
      return detect_layout(config ? *config : json::object(), hf);
  }
  const Checkpoint ck = Checkpoint::open(path);
  std::vector<TensorInfo> infos;
  for (const auto& n : ck.names()) infos.push_back(ck.info(n));
  return detect_layout_from_tensors(infos);
}

std::string describe(const LayoutInfo& info) {
  const auto& st = traits(info.scheme);
  std::string s = fmt::format("{} / {}{} (block {}, {} element, {} scales{})", layout_name(info.layout), st.name,
                              info.scheme_certain ? "" : "?", st.block, traits(st.element).name,
                              traits(st.scale).name, st.tensor_scale ? " + F32 tensor scale" : "");
  if (!st.tensor_scale)
    s += fmt::format(", scale rule {}{}", scale_rule_name(info.rule), info.rule_certain ? "" : "?");
  s += fmt::format(", rounding {}; from {}", rounding_name(info.rounding), info.source);
  if (!info.note.empty()) s += fmt::format(" [{}]", info.note);
  return s;
}

}  // namespace mxmoe
