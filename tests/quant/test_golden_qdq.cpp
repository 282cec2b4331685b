// Bit-exact agreement with the golden vectors produced by the peers' own code (../shared/golden).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "mxmoe/quant.hpp"
#include "mxmoe/safetensors.hpp"
#include "golden_qdq_cases.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using mxmoe::test::count_bit_mismatches;
using mxmoe::test::golden_cases;

// vLLM ref_nvfp4_quant_dequant (torch path, `y_cpu`), plus the codes and block scales it produced.
TEST(GoldenQdq, Nvfp4MatchesVllmTorchPath) {
  MXMOE_SKIP_WITHOUT_SHARED(path, "golden/nvfp4_qdq.safetensors");
  auto f = SafetensorsFile::open(path);
  int n = 0;
  for (const auto& c : golden_cases(f)) {
    const std::string name = c["name"];
    const Tensor x = f.load(name + ".x");
    QuantParams p{Scheme::NVFP4};
    p.global_scale = f.load(name + ".global_scale").ptr<float>()[0];
    EXPECT_EQ(count_bit_mismatches(qdq(x, p, name), f.load(name + ".y_cpu"), name + " y"), 0);
    // The packed form decodes to the same E2M1 values and block scales vLLM returned.
    const QuantizedTensor q = quantize(x, p, name);
    Tensor vals(DType::F32, x.shape), scales(DType::F32, q.scales.shape);
    std::vector<uint8_t> codes(size_t(x.numel()));
    unpack_codes(q.codes.ptr<uint8_t>(), x.numel(), 4, codes.data());
    for (int64_t i = 0; i < x.numel(); ++i) vals.ptr<float>()[i] = decode(Encoding::E2M1, codes[size_t(i)]);
    for (int64_t i = 0; i < q.scales.numel(); ++i)
      scales.ptr<float>()[i] = decode(Encoding::UE4M3, q.scales.ptr<uint8_t>()[i]);
    EXPECT_EQ(count_bit_mismatches(vals, f.load(name + ".fp4_values"), name + " fp4_values"), 0);
    EXPECT_EQ(count_bit_mismatches(scales, f.load(name + ".block_scales"), name + " block_scales"), 0);
    ++n;
  }
  EXPECT_GE(n, 20) << "expected the full case list";
}

// microxcaling quantize_mx_op: floor scale rule, rounding even (RNE) and nearest (away), six formats.
TEST(GoldenQdq, MxFloorMatchesMicroxcaling) {
  MXMOE_SKIP_WITHOUT_SHARED(path, "golden/mx_floor_qdq.safetensors");
  EXPECT_EQ(test::check_mx_floor_golden(path, [](const Tensor& x, const QuantParams& p) { return qdq(x, p); }), 36);
}

// vLLM's torch reference of AMD Quark's MXFP4 qdq: `even` scale rule, RNE, bf16 and fp16 tensors.
TEST(GoldenQdq, Mxfp4EvenMatchesQuarkReference) {
  MXMOE_SKIP_WITHOUT_SHARED(path, "golden/mxfp4_even_qdq.safetensors");
  EXPECT_EQ(test::check_mxfp4_even_golden(path, [](const Tensor& x, const QuantParams& p) { return qdq(x, p); }), 6);
}
