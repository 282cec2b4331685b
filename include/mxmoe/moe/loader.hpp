// Loads one MoE layer of a Hugging Face checkpoint directory (config.json + safetensors, sharded or
// not) in any supported layout, detected automatically.
#pragma once
#include <string>

#include "mxmoe/moe/layer.hpp"

namespace mxmoe::moe {

struct LoadOptions {
  // For unquantized (BF16) checkpoints: quantize the experts on load into this scheme (nullptr: keep
  // bf16). A quantized checkpoint with a different scheme than its own is an error.
  const MoeScheme* scheme = nullptr;
  ScaleRule rule = ScaleRule::Even;  // MX scale rule used when quantizing on load
};

// Architectures: qwen3_moe, mixtral, gpt_oss. Layouts: ModelOpt NVFP4, compressed-tensors
// nvfp4-pack-quantized, AMD Quark MX, gpt-oss MXFP4, BF16.
MoeLayer load_moe_layer(const std::string& dir, int layer, const LoadOptions& opts = {});

// A short description of what was found ("qwen3_moe, 8 experts top-2, modelopt / nvfp4 ...").
std::string describe_checkpoint(const std::string& dir);

}  // namespace mxmoe::moe
