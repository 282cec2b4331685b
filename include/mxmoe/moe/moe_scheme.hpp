// MoE quantization schemes: what the expert weights are stored in and how activations are quantized
// before each GEMM. Names follow vLLM (REFERENCE.md section 5).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "mxmoe/quant.hpp"

namespace mxmoe::moe {

enum class ActQuant : uint8_t {
  None,       // a16: activations stay in the activation dtype
  Block,      // NVFP4 (static tensor scale from the checkpoint) or MX (dynamic per block)
  FP8Tensor,  // per-tensor dynamic E4M3: scale = amax / 448
};

struct MoeScheme {
  std::string_view name;
  bool weight_quantized;
  Scheme weight;      // valid when weight_quantized
  ActQuant act;
  Scheme act_scheme;  // valid when act == Block
};

// The table of supported MoE schemes, "bf16" (unquantized baseline) first.
const std::vector<MoeScheme>& moe_schemes();
// Throws mxmoe::Error listing every supported name.
const MoeScheme& parse_moe_scheme(std::string_view name);

enum class Emulation : uint8_t {
  VLLM,   // vLLM PR #35737: dequantized bf16 weights, one activation scale per GEMM, bf16 intermediates
  Exact,  // block-scaled tensor-core semantics: exact products, float32 accumulation, per-expert scales
};
Emulation parse_emulation(std::string_view name);
std::string_view emulation_name(Emulation e);

}  // namespace mxmoe::moe
