// Scalar reference gated activations (see include/mxmoe/moe/activation.hpp).
#include "mxmoe/moe/activation.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>

#include "mxmoe/error.hpp"

namespace mxmoe::moe {

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float g) { return g / (1.0f + std::exp(-g)); }
inline float gelu_erf(float g) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  return 0.5f * g * (1.0f + std::erf(g * kInvSqrt2));
}
inline float gelu_tanh(float g) {
  constexpr float kBeta = 0.79788456080286535588f;  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  const float inner = kBeta * (g + kKappa * g * g * g);
  return 0.5f * g * (1.0f + std::tanh(inner));
}

// gate = min(gate, limit), up = clamp(up, -limit, limit) when limit > 0.
inline void clamp_gate_up(float& gate, float& up, float limit) {
  if (limit <= 0.0f) return;
  gate = std::min(gate, limit);
  up = std::clamp(up, -limit, limit);
}

template <class F>
void gated_split(const float* gate_up, int64_t rows, int64_t I, float limit, float* out, F f) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = gate_up + r * 2 * I;
    for (int64_t i = 0; i < I; ++i) {
      float gate = row[i], up = row[I + i];
      clamp_gate_up(gate, up, limit);
      out[r * I + i] = f(gate) * up;
    }
  }
}

struct ActName {
  std::string_view name;
  Activation act;
};
constexpr ActName kActNames[] = {
    {"silu", Activation::SiLU},           {"swiglu", Activation::SiLU},
    {"gelu", Activation::GELU},           {"gelu_tanh", Activation::GELUTanh},
    {"swigluoai", Activation::SwiGLUOAI},
};

}  // namespace

float effective_limit(const ActivationConfig& cfg) {
  if (cfg.limit > 0.0f) return cfg.limit;
  return cfg.act == Activation::SwiGLUOAI ? kSwiGLUOAIDefaultLimit : 0.0f;
}

void apply_activation(const ActivationConfig& cfg, const float* gate_up, int64_t rows, int64_t I, float* out) {
  MXMOE_CHECK(rows >= 0 && I >= 0, "apply_activation: need rows >= 0 and I >= 0, got rows={} I={}", rows, I);
  MXMOE_CHECK(!std::isnan(cfg.limit) && !std::isnan(cfg.alpha), "apply_activation: NaN alpha ({}) or limit ({})",
              cfg.alpha, cfg.limit);
  if (rows == 0 || I == 0) return;
  MXMOE_CHECK(gate_up && out, "apply_activation: null gate_up/out pointer");
  const float limit = effective_limit(cfg);
  switch (cfg.act) {
    case Activation::SiLU:
      gated_split(gate_up, rows, I, limit, out, silu);
      return;
    case Activation::GELU:
      gated_split(gate_up, rows, I, limit, out, gelu_erf);
      return;
    case Activation::GELUTanh:
      gated_split(gate_up, rows, I, limit, out, gelu_tanh);
      return;
    case Activation::SwiGLUOAI:
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = gate_up + r * 2 * I;
        for (int64_t i = 0; i < I; ++i) {
          float gate = row[2 * i], up = row[2 * i + 1];
          clamp_gate_up(gate, up, limit);
          const float glu = gate * sigmoid(cfg.alpha * gate);
          out[r * I + i] = (up + 1.0f) * glu;
        }
      }
      return;
  }
  MXMOE_THROW("apply_activation: unknown Activation value {}", static_cast<int>(cfg.act));
}

Activation parse_activation(std::string_view name) {
  std::string lower(name);
  for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& an : kActNames)
    if (an.name == lower) return an.act;
  MXMOE_THROW("unknown activation '{}' (valid: silu, swiglu, gelu, gelu_tanh, swigluoai)", name);
}

std::string_view activation_name(Activation act) {
  switch (act) {
    case Activation::SiLU: return "silu";
    case Activation::GELU: return "gelu";
    case Activation::GELUTanh: return "gelu_tanh";
    case Activation::SwiGLUOAI: return "swigluoai";
  }
  MXMOE_THROW("activation_name: unknown Activation value {}", static_cast<int>(act));
}

}  // namespace mxmoe::moe
