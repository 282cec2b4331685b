// Checkpoint layouts of one quantized linear weight (REFERENCE.md sections 3, 4 and 6): the tensor
// names, dtypes, shapes and tensor-scale conventions of the producers the project reads and writes.
//
//   ModelOpt NVFP4          P.weight U8 [out,in/2]  P.weight_scale F8_E4M3 [out,in/16]
//                           P.weight_scale_2 F32 []  (decode: 1/encode global scale)
//                           P.input_scale F32 []     (decode: amax_x/(6*448)), optional
//   compressed-tensors      P.weight_packed U8 [out,in/2]  P.weight_scale F8_E4M3 [out,in/16]
//   (nvfp4-pack-quantized)  P.weight_global_scale F32 [1]  (encode: 448*6/amax_w)
//                           P.input_global_scale F32 [1]   (encode: 1/input_scale), optional
//   AMD Quark MX            P.weight U8 [out, packed_row_bytes(scheme, in)]  P.weight_scale U8 (E8M0) [out,in/32]
//                           (no static input scale: Quark MX activations are dynamic)
//
// Everything a MoE loader needs per expert projection: import_linear(lookup, prefix, layout, hint).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mxmoe/quant.hpp"
#include "mxmoe/safetensors.hpp"
#include "mxmoe/scheme.hpp"
#include "mxmoe/tensor.hpp"

namespace mxmoe {

enum class Layout : uint8_t { ModelOpt, CompressedTensors, Quark };
inline constexpr int kNumLayouts = 3;

// "modelopt", "compressed-tensors" (also "ct"), "quark"; errors list the valid names.
Layout parse_layout(std::string_view name);
std::string_view layout_name(Layout l);
// Schemes a layout can hold: ModelOpt / CT: nvfp4; Quark: every MX scheme (fp4 / fp6 are what Quark
// and vLLM use; mxfp8 / mxint8 reuse the same tensor names and are this project's extension).
bool layout_supports(Layout l, Scheme s);
// The default layout for a scheme: modelopt for nvfp4, quark for MX.
Layout default_layout(Scheme s);
// Quark's weight dtype name of an MX scheme ("fp4", "fp6_e3m2", ...); throws for the others.
std::string_view quark_dtype_name(Scheme s);

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

// The tensors of one quantized linear `w` (2-D [out, in]) under `prefix` (e.g.
// "model.layers.0.mlp.experts.3.up_proj"), in producer order. `input_scale_decode` > 0 adds the
// static activation scale (decode direction, amax_x/(6*448)); <= 0 adds none. Throws for a scheme
// the layout cannot hold (the message lists what works) and for an input scale in the Quark layout.
// Stored reciprocals (ModelOpt weight_scale_2, CT input_global_scale) are chosen, where such a float
// exists, so that import_linear's 1.0f / stored gives the exporter's value back bit for bit.
std::vector<NamedTensor> export_linear(Layout layout, const std::string& prefix, const QuantizedTensor& w,
                                       float input_scale_decode = 0.0f);

// The config files of a checkpoint in `layout` whose weights were quantized with `p` (weight-only: no
// input scales) and whose modules `excluded` (names without ".weight") stay unquantized: ModelOpt's
// hf_quant_config.json, or the quantization_config object of config.json (compressed-tensors, Quark).
// detect_layout reads either back. Throws for a scheme the layout cannot hold, and for Quark with a
// rounding other than RNE.
struct QuantConfigFiles {
  std::optional<nlohmann::json> hf_quant_config;
  std::optional<nlohmann::json> quantization_config;
};
QuantConfigFiles quant_config(Layout layout, const QuantParams& p, const std::vector<std::string>& excluded);

// Read access to named tensors: a Checkpoint, a SafetensorsFile, in-memory NamedTensors, or
// anything else (fill the two callables). `find` returns nullptr when the tensor is absent.
struct TensorLookup {
  std::string what;  // appears in error messages, e.g. "checkpoint '/x/model'"
  std::function<const TensorInfo*(const std::string&)> find;
  std::function<Tensor(const std::string&)> load;
};
// The lookups borrow their source: it must outlive them.
TensorLookup lookup_of(const Checkpoint& ck);
TensorLookup lookup_of(const SafetensorsFile& f);
TensorLookup lookup_of(const std::vector<NamedTensor>& tensors);

struct QuantizedLinear {
  Layout layout = Layout::ModelOpt;
  // weight.params.global_scale is the NVFP4 *encode* scale (ModelOpt: 1.0f / weight_scale_2 in
  // float32; CT: weight_global_scale as stored). weight.shape is the logical [out, in].
  QuantizedTensor weight;
  // Static activation scale in the *decode* direction (ModelOpt input_scale, CT 1.0f /
  // input_global_scale); 0 when the checkpoint has none.
  float input_scale = 0.0f;
};

// Reads prefix's tensors in `layout`. `hint` supplies what the tensors cannot say: the MX element
// format for Quark (hint.scheme must be an MX scheme whose packed width matches the data), the scale
// rule and rounding to record in params. For ModelOpt / CT the scheme is nvfp4 whatever the hint.
// Errors: missing tensor -> names it; wrong dtype or shape -> names the tensor, expected vs found.
QuantizedLinear import_linear(const TensorLookup& src, const std::string& prefix, Layout layout,
                              const QuantParams& hint = {});
QuantizedLinear import_linear(const Checkpoint& ck, const std::string& prefix, Layout layout,
                              const QuantParams& hint = {});

// The name of the packed weight tensor of a linear in `layout` ("P.weight" or "P.weight_packed").
std::string weight_tensor_name(Layout layout, const std::string& prefix);
// Prefixes of every quantized linear of `layout` among `tensors` (a weight tensor with its
// weight_scale beside it), sorted.
std::vector<std::string> find_linears(const std::vector<TensorInfo>& tensors, Layout layout);

// What a checkpoint holds: layout, scheme and the recipe details a config can carry.
struct LayoutInfo {
  Layout layout = Layout::ModelOpt;
  Scheme scheme = Scheme::NVFP4;
  ScaleRule rule = ScaleRule::Even;   // MX shared-exponent rule (meaningless for nvfp4)
  Rounding rounding = Rounding::RNE;
  bool scheme_certain = true;         // false when tensors alone cannot tell (fp6 e2m3 vs e3m2, 8-bit MX)
  bool rule_certain = true;           // false when the rule is the producer default, not read from a config
  std::string source;                 // where the answer came from, e.g. "hf_quant_config.json quant_algo=NVFP4"
  std::string note;                   // caveats (empty if none)
};

// From config.json (its "quantization_config") and, when given, hf_quant_config.json. Throws when
// neither declares a supported quantization: the message names what was found and what is supported.
LayoutInfo detect_layout(const nlohmann::json& config, const std::optional<nlohmann::json>& hf_quant_config = {});
// From tensor names, dtypes and shapes alone (a bare .safetensors file). Throws like detect_layout.
LayoutInfo detect_layout_from_tensors(const std::vector<TensorInfo>& tensors);
// A file: from its tensors. A directory: config.json (+ hf_quant_config.json) when they declare a
// quantization, otherwise its tensors.
LayoutInfo detect_checkpoint_layout(const std::string& path);
// One line for `mxmoe inspect`, e.g. "modelopt / nvfp4 (block 16, E4M3 scales, F32 tensor scale) ...".
std::string describe(const LayoutInfo& info);

}  // namespace mxmoe
