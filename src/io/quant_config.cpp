// The quantization config a checkpoint declares for its layout, as `mxmoe quantize` writes it next to
// the quantized shards: the same fields the producers write (ModelOpt's hf_quant_config.json,
// compressed-tensors' and Quark's config.json quantization_config), so that detect_layout, vLLM and the
// producers' own loaders recognise the checkpoint. Weight-only: quantize calibrates no input scales.
#include <nlohmann/json.hpp>

#include "mxmoe/error.hpp"
#include "mxmoe/layout.hpp"

namespace mxmoe {

using json = nlohmann::json;

QuantConfigFiles quant_config(Layout layout, const QuantParams& p, const std::vector<std::string>& excluded) {
  MXMOE_CHECK(layout_supports(layout, p.scheme), "the {} layout cannot hold {}", layout_name(layout),
              traits(p.scheme).name);
  QuantConfigFiles out;
  switch (layout) {
    case Layout::ModelOpt:
      out.hf_quant_config = {{"producer", {{"name", "mxmoe"}, {"version", "0"}}},
                             {"quantization",
                              {{"quant_algo", "NVFP4"},
                               {"kv_cache_quant_algo", nullptr},
                               {"group_size", 16},
                               {"exclude_modules", excluded}}}};
      break;
    case Layout::CompressedTensors: {
      const json weights = {{"num_bits", 4},         {"type", "float"},     {"strategy", "tensor_group"},
                            {"group_size", 16},      {"symmetric", true},   {"dynamic", false},
                            {"observer", "minmax"}};
      out.quantization_config = {
          {"quant_method", "compressed-tensors"},
          {"format", "nvfp4-pack-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}},
              {"format", "nvfp4-pack-quantized"},
              {"weights", weights},
              {"input_activations", nullptr},
              {"output_activations", nullptr}}}}},
          {"ignore", excluded},
          {"kv_cache_scheme", nullptr},
          {"version", "0"}};
      break;
    }
    case Layout::Quark: {
      // detect_layout reads half_even only; the element rounding 'away' has no Quark name.
      MXMOE_CHECK(p.rounding == Rounding::RNE,
                  "the quark layout declares round_method half_even; quantize with --rounding rne for it");
      const json weight = {{"dtype", quark_dtype_name(p.scheme)},
                           {"is_dynamic", false},
                           {"qscheme", "per_group"},
                           {"ch_axis", -1},
                           {"group_size", 32},
                           {"round_method", "half_even"},
                           {"scale_type", "float"},
                           {"scale_format", "e8m0"},
                           {"scale_calculation_mode", scale_rule_name(p.rule)},
                           {"observer_cls", "PerBlockMXObserver"}};
      out.quantization_config = {
          {"quant_method", "quark"},
          {"quant_mode", "eager_mode"},
          {"global_quant_config",
           {{"weight", weight}, {"input_tensors", nullptr}, {"output_tensors", nullptr}, {"bias", nullptr}}},
          {"layer_quant_config", json::object()},
          {"exclude", excluded},
          {"export", {{"pack_method", "reorder"}, {"weight_format", "real_quantized"}}}};
      break;
    }
  }
  return out;
}

}  // namespace mxmoe
