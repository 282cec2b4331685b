#include "mxmoe/moe/moe_scheme.hpp"

#include <fmt/format.h>

#include "mxmoe/error.hpp"

namespace mxmoe::moe {

const std::vector<MoeScheme>& moe_schemes() {
  using S = Scheme;
  static const std::vector<MoeScheme> kTable = {
      {"bf16", false, S::NVFP4, ActQuant::None, S::NVFP4},
      {"w_nvfp4_a_nvfp4", true, S::NVFP4, ActQuant::Block, S::NVFP4},
      {"w_nvfp4_a16", true, S::NVFP4, ActQuant::None, S::NVFP4},
      {"w_mxfp4", true, S::MXFP4, ActQuant::None, S::MXFP4},
      {"w_mxfp4_a16", true, S::MXFP4, ActQuant::None, S::MXFP4},
      {"w_mxfp4_a_mxfp4", true, S::MXFP4, ActQuant::Block, S::MXFP4},
      {"w_mxfp4_a_mxfp6_e3m2", true, S::MXFP4, ActQuant::Block, S::MXFP6_E3M2},
      {"w_mxfp4_a_mxfp6_e2m3", true, S::MXFP4, ActQuant::Block, S::MXFP6_E2M3},
      {"w_mxfp4_a_fp8", true, S::MXFP4, ActQuant::FP8Tensor, S::MXFP4},
      {"w_mxfp6_e3m2_a_mxfp6_e3m2", true, S::MXFP6_E3M2, ActQuant::Block, S::MXFP6_E3M2},
      {"w_mxfp6_e3m2_a_fp8", true, S::MXFP6_E3M2, ActQuant::FP8Tensor, S::MXFP6_E3M2},
      {"w_mxfp6_e2m3_a_mxfp6_e2m3", true, S::MXFP6_E2M3, ActQuant::Block, S::MXFP6_E2M3},
      {"w_mxfp6_e2m3_a_fp8", true, S::MXFP6_E2M3, ActQuant::FP8Tensor, S::MXFP6_E2M3},
      {"w_mxfp8_e4m3_a16", true, S::MXFP8_E4M3, ActQuant::None, S::MXFP8_E4M3},
  };
  return kTable;
}

const MoeScheme& parse_moe_scheme(std::string_view name) {
  std::string names;
  for (const auto& s : moe_schemes()) {
    if (s.name == name) return s;
    names += fmt::format("{}{}", names.empty() ? "" : ", ", s.name);
  }
  MXMOE_THROW("unknown MoE scheme '{}' (supported: {})", name, names);
}

Emulation parse_emulation(std::string_view name) {
  if (name == "vllm") return Emulation::VLLM;
  if (name == "exact") return Emulation::Exact;
  MXMOE_THROW("unknown emulation mode '{}' (expected vllm or exact)", name);
}

std::string_view emulation_name(Emulation e) { return e == Emulation::VLLM ? "vllm" : "exact"; }

}  // namespace mxmoe::moe
