// The vLLM emulation recipe on the golden one-layer checkpoints (../shared/golden/moe_*).
#include <gtest/gtest.h>

#include <cmath>

#include "mxmoe/moe/layer.hpp"
#include "mxmoe/moe/loader.hpp"
#include "mxmoe/safetensors.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;

namespace {

double rel_l2(const Tensor& got, const Tensor& want) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double a = load_as_f32(got.data.data(), got.dtype, i), b = load_as_f32(want.data.data(), want.dtype, i);
    num += (a - b) * (a - b), den += b * b;
  }
  return std::sqrt(num / den);
}

struct Case {
  const char* dir;
  const char* io;
  const char* scheme;
};

class GoldenMoe : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenMoe, VllmRecipeMatchesReference) {
  const Case c = GetParam();
  MXMOE_SKIP_WITHOUT_SHARED(dir, std::string("golden/") + c.dir);
  MXMOE_SKIP_WITHOUT_SHARED(io_path, std::string("golden/") + c.io + "/io.safetensors");
  const MoeLayer layer = load_moe_layer(dir, 0);
  EXPECT_EQ(layer.scheme->name, c.scheme);
  auto io = SafetensorsFile::open(io_path);
  const Tensor x = io.load("hidden_states");
  for (Backend be : {Backend::Cpu, Backend::Ref}) {
    MoeOptions o;
    o.backend = be;
    const MoeResult r = run_moe(layer, x, o);
    // Routing is exact: same experts, weights to float32 rounding.
    const Tensor ids = io.load("topk_ids"), w = io.load("topk_weights");
    int64_t id_mismatch = 0;
    for (int64_t i = 0; i < ids.numel(); ++i) id_mismatch += r.topk_ids.ptr<int32_t>()[i] != ids.ptr<int32_t>()[i];
    EXPECT_EQ(id_mismatch, 0);
    EXPECT_LT(rel_l2(r.topk_weights, w), 1e-6);
    const double e_bf16 = rel_l2(r.out, io.load("out_emulated_bf16"));
    const double e_f32 = rel_l2(r.out, io.load("out_emulated_f32"));
    const double e_dense = rel_l2(r.out, io.load("out_dense_f64"));
    std::printf("[ %s %s ] rel L2 vs out_emulated_bf16 %.5f, vs out_emulated_f32 %.5f, vs dense f64 %.5f\n", c.dir,
                r.backend.c_str(), e_bf16, e_f32, e_dense);
    EXPECT_LE(std::min(e_bf16, e_f32), 0.04);
    // Emulating FP4 must not be closer to the dense layer than the emulation reference is.
    EXPECT_GT(e_dense, std::min(e_bf16, e_f32));
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, GoldenMoe,
                         ::testing::Values(Case{"moe_nvfp4", "moe_nvfp4", "w_nvfp4_a_nvfp4"},
                                           Case{"moe_nvfp4_ct", "moe_nvfp4", "w_nvfp4_a_nvfp4"},
                                           Case{"moe_mxfp4_quark", "moe_mxfp4_quark", "w_mxfp4_a_mxfp4"}),
                         [](const auto& info) { return std::string(info.param.dir); });

}  // namespace
