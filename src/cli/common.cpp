// Shared CLI helpers: error metrics and text tables.
#include "cli/common.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace mxmoe::cli {


QuantParams QuantOptions::resolve(ScaleRule default_rule) const {
  QuantParams p;
  p.scheme = parse_scheme(scheme);
  const bool nvfp4 = traits(p.scheme).tensor_scale;
  if (nvfp4) {
    MXMOE_CHECK(rule.empty(), "--scale-rule {}: nvfp4 has one scale recipe (vLLM's E4M3 block scale); the scale "
                              "rules floor, even, rceil, ceil apply to the MX schemes", rule);
    MXMOE_CHECK(rounding.empty() || rounding == "rne",
                "--rounding {}: nvfp4 follows vLLM's recipe, which rounds to nearest even (rne) only", rounding);
  } else {
    MXMOE_CHECK(global_scale == 0, "--global-scale applies to nvfp4 only; {} has no tensor scale", traits(p.scheme).name);
  }
  p.rule = rule.empty() ? default_rule : parse_scale_rule(rule);
  p.rounding = rounding.empty() ? Rounding::RNE : parse_rounding(rounding);
  if (global_scale != 0) {
    MXMOE_CHECK(std::isfinite(global_scale) && global_scale > 0, "--global-scale must be positive and finite, got {}",
                global_scale);
    p.global_scale = float(global_scale);
  }
  return p;
}

void QuantOptions::add_to(CLI::App* sub, bool with_global_scale) {
  std::string names;
  for (const auto& t : kSchemes) names += (names.empty() ? "" : ", ") + std::string(t.name);
  sub->add_option("--scheme", scheme, "Quantization scheme: " + names)->required();
  sub->add_option("--scale-rule", rule, "MX shared-exponent rule: floor, even, rceil, ceil");
  sub->add_option("--rounding", rounding, "Element rounding: rne (default) or away");
  if (with_global_scale)
    sub->add_option("--global-scale", global_scale,
                    "NVFP4 encode global scale (448*6/amax convention); default: per tensor from its amax");
}


ErrorStats error_stats(const Tensor& x, const Tensor& y) {
  MXMOE_CHECK(x.numel() == y.numel(), "error_stats: {} vs {} elements", x.numel(), y.numel());
  ErrorStats s;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double a = load_as_f32(x.data.data(), x.dtype, i), b = load_as_f32(y.data.data(), y.dtype, i);
    s.signal += a * a;
    s.noise += (a - b) * (a - b);
  }
  return s;
}

std::string fmt_db(double db) {
  if (std::isnan(db)) return "nan";
  if (std::isinf(db)) return db > 0 ? "inf" : "-inf";
  return fmt::format("{:.2f}", db);
}

Table::Table(std::vector<std::string> header, std::vector<bool> right)
    : header_(std::move(header)), right_(std::move(right)) {
  right_.resize(header_.size(), false);
}

void Table::add(std::vector<std::string> row) {
  row.resize(header_.size());
  rows_.push_back(std::move(row));
}

void Table::print() const {
  std::vector<size_t> w(header_.size());
  for (size_t c = 0; c < w.size(); ++c) {
    w[c] = header_[c].size();
    for (const auto& r : rows_) w[c] = std::max(w[c], r[c].size());
  }
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t c = 0; c < w.size(); ++c) {
      if (c) s += "  ";
      s += right_[c] ? fmt::format("{:>{}}", r[c], w[c]) : fmt::format("{:<{}}", r[c], w[c]);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    fmt::print("{}\n", s);
  };
  line(header_);
  std::vector<std::string> rule;
  for (size_t c = 0; c < w.size(); ++c) rule.push_back(std::string(w[c], '-'));
  line(rule);
  for (const auto& r : rows_) line(r);
}

std::string human_bytes(uint64_t n) {
  if (n < 1024) return fmt::format("{} B", n);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = double(n) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  return fmt::format("{:.1f} {}", v, units[u]);
}

bool is_qdq_dtype(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

}  // namespace mxmoe::cli
