#include "mxmoe/scheme.hpp"

#include "mxmoe/error.hpp"

namespace mxmoe {

Scheme parse_scheme(std::string_view name) {
  for (const auto& t : kSchemes)
    if (t.name == name) return t.scheme;
  MXMOE_THROW("unknown scheme '{}' (expected nvfp4, mxfp4, mxfp6_e2m3, mxfp6_e3m2, mxfp8_e4m3, mxfp8_e5m2, mxint8)",
              name);
}

namespace {
constexpr std::string_view kRuleNames[] = {"floor", "even", "rceil", "ceil"};
}

ScaleRule parse_scale_rule(std::string_view name) {
  for (int i = 0; i < 4; ++i)
    if (kRuleNames[i] == name) return ScaleRule(i);
  MXMOE_THROW("unknown scale rule '{}' (expected floor, even, rceil or ceil)", name);
}

std::string_view scale_rule_name(ScaleRule r) { return kRuleNames[static_cast<int>(r)]; }

}  // namespace mxmoe
