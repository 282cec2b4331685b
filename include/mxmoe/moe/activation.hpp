// Gated MoE activations: gate_up [rows, 2I] (the GEMM1 output) -> out [rows, I], float32 scalar reference.
#pragma once
#include <cstdint>
#include <string_view>

namespace mxmoe::moe {

enum class Activation {
  SiLU,       // SwiGLU: silu(gate) * up, silu(g) = g / (1 + exp(-g))
  GELU,       // gelu(gate) * up, gelu(g) = 0.5 * g * (1 + erf(g / sqrt(2)))
  GELUTanh,   // gelu_tanh(gate) * up, 0.5 * g * (1 + tanh(sqrt(2/pi) * (g + 0.044715 * g^3)))
  SwiGLUOAI,  // gpt-oss: (up + 1) * gate * sigmoid(alpha * gate) with clamped gate/up
};

// limit: the clamp gate = min(gate, limit), up = clamp(up, -limit, limit), applied when limit > 0.
// The default (kDefaultActivationLimit, <= 0) means the activation's own default: 7.0 for SwiGLUOAI
// (gpt-oss always clamps), no clamp for SiLU / GELU / GELUTanh (vLLM's optional swiglu_limit).
inline constexpr float kDefaultActivationLimit = -1.0f;
inline constexpr float kSwiGLUOAIDefaultLimit = 7.0f;

struct ActivationConfig {
  Activation act;
  float alpha = 1.702f;                    // SwiGLUOAI only: sigmoid(alpha * gate)
  float limit = kDefaultActivationLimit;  // see above
};

// The clamp actually applied: > 0, or 0 for none.
float effective_limit(const ActivationConfig& cfg);

// Layout: SiLU / GELU / GELUTanh: gate = columns [0, I), up = columns [I, 2I) (w13 = concat(gate, up)).
// SwiGLUOAI: gate and up interleave, gate = column 2i, up = column 2i + 1.
// gate_up: [rows, 2I] contiguous, out: [rows, I] contiguous. Everything in float32 with std::exp /
// std::erf / std::tanh.
void apply_activation(const ActivationConfig& cfg, const float* gate_up, int64_t rows, int64_t I, float* out);

// "silu" and "swiglu" -> SiLU, "gelu" -> GELU, "gelu_tanh" -> GELUTanh, "swigluoai" -> SwiGLUOAI
// (case-insensitive); throws mxmoe::Error listing the valid names.
Activation parse_activation(std::string_view name);
std::string_view activation_name(Activation act);  // "silu", "gelu", "gelu_tanh", "swigluoai"

}  // namespace mxmoe::moe
