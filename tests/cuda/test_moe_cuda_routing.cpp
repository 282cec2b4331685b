// The CUDA MoE backend's DeepSeek-V3 and expert-parallel features against the CPU `ref` backend: the
// grouped sigmoid router (moe_route.cu), shared experts (a dense pass through the grouped GEMMs),
// expert_map and apply_router_weight_on_input. Fresh random inputs, every output element checked
// finite (run_moe's device buffers start unwritten; the graph test poisons them with NaN), token counts
// that are not multiples of the tile sizes, experts with no tokens, both emulation modes, FP4 (NVFP4,
// MXFP4) and other schemes. Without a usable device the device tests skip with the reason.
//
// Bounds. Layer outputs: rel L2 vs ref <= 5e-3, the bound of test_moe_cuda.cpp and for the same reason
// (float32 summation order can flip a re-quantized element by one FP4 step). Router: ids must equal the
// ref's exactly. Weights: with random inputs the GPU and CPU logits differ by float32 summation order
// (~1e-7 relative), so the weights' rel L2 against the ref's is within 1e-5 (single weights moved by up
// to 1.5e-5 on the H200). With logits that are exact in any order (one nonzero per token row) both
// routers see the same float32 logits and every tie goes the ref's way; the weights are then bit-identical: the device's sigmoid rounds a double exp once to
// float32 (the correctly rounded expf), and glibc's expf (the ref) returns the same for every logit
// value that test uses (checked on the host; on random inputs it differs in the last bit ~0.06% of the
// time, which would move a weight by an ulp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "moe/cuda/moe_heuristics.hpp"
#include "mxmoe/cuda.hpp"
#include "mxmoe/moe/cuda_moe.hpp"
#include "mxmoe/moe/layer.hpp"
#include "cuda/moe_cuda_test_util.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;
using namespace mxmoe::moe_test;

namespace {

// A DeepSeek-V3-style layer (H 128, I 64): E experts in G groups, tg kept, top-k, factor 2.5, a
// correction bias (unless bias_scale is 0), and a shared expert of intermediate SI (0: none); static
// NVFP4 input scales when asked.
MoeLayer ds_layer(const MoeScheme& s, int E, int k, int G, int tg, int64_t SI, uint32_t seed, bool static_scales,
                  float bias_scale = 0.05f) {
  MoeLayer d = synthetic_layer({"small", 128, 64, E, k}, parse_moe_scheme("bf16"), seed);
  d.router = {RouterKind::SigmoidGroupedTopK, E, k, true, G, tg, 2.5f};
  if (bias_scale > 0) d.correction_bias = test::random_tensor(DType::F32, {E}, seed + 1, bias_scale);
  if (SI > 0) {
    d.shared_inter = SI;
    d.shared_w13.resize(1), d.shared_w2.resize(1);
    d.shared_w13[0].dense = test::random_tensor(DType::BF16, {2 * SI, d.hidden}, seed + 2, 1.0f / std::sqrt(128.0f));
    d.shared_w2[0].dense = test::random_tensor(DType::BF16, {d.hidden, SI}, seed + 3, 1.0f / std::sqrt(float(SI)));
  }
  MoeLayer l = quantize_layer(d, s);
  if (static_scales) {
    for (int e = 0; e < l.num_experts; ++e) {
      l.w13[size_t(e)].input_scale = (3.0f + 0.25f * e) / (6 * 448);
      l.w2[size_t(e)].input_scale = (0.5f + 0.05f * e) / (6 * 448);
    }
    for (auto& w : l.shared_w13) w.input_scale = 3.5f / (6 * 448);
    for (auto& w : l.shared_w2) w.input_scale = 0.6f / (6 * 448);
  }
  return l;
}

void expect_close(const Compared& c, const std::string& what, double w_tol = 1e-5) {
  EXPECT_LT(c.err, kTol) << what;
  EXPECT_EQ(c.id_mismatch, 0) << what;
  EXPECT_LE(c.w_err, w_tol) << what;
}

struct RouterCase {
  int E, k, G, tg;
  bool renormalize, bias;
  float scaling;
};

// Router shapes: DeepSeek-V3's 256 experts / 8 groups / 4 kept (8 candidates per lane), no bias and no
// renormalization, one-expert groups, one group, 512 experts (16 per lane), groups of 25 (E not a
// multiple of 32).
const std::vector<RouterCase> kRouters{{256, 8, 8, 4, true, true, 2.5f}, {64, 6, 4, 2, false, false, 1.0f},
                                       {40, 4, 40, 10, true, true, 1.5f}, {96, 8, 1, 1, true, true, 2.5f},
                                       {512, 8, 16, 4, true, true, 2.5f}, {300, 6, 12, 5, true, true, 1.0f}};

MoeLayer router_layer(const RouterCase& rc, uint32_t seed) {
  MoeLayer l = ds_layer(parse_moe_scheme("w_nvfp4_a_nvfp4"), rc.E, rc.k, rc.G, rc.tg, 0, seed, false, rc.bias ? 0.05f : 0);
  l.router.renormalize = rc.renormalize, l.router.routed_scaling_factor = rc.scaling;
  return l;
}

std::string router_name(const RouterCase& rc) {
  return "E" + std::to_string(rc.E) + " k" + std::to_string(rc.k) + " G" + std::to_string(rc.G) + "/" +
         std::to_string(rc.tg);
}

// Random tokens; T from 1 to past 512 (tensor-core logits), not multiples of the tile sizes.
TEST(CudaMoeRouting, GroupedSigmoidRouterMatchesRef) {
  SKIP_WITHOUT_DEVICE();
  const std::vector<int64_t> Ts = quick() ? std::vector<int64_t>{3, 37} : std::vector<int64_t>{1, 3, 37, 300, 515};
  for (const RouterCase& rc : kRouters) {
    const MoeLayer l = router_layer(rc, 3);
    for (int64_t T : Ts) {
      const Tensor x = test::random_tensor(DType::BF16, {T, l.hidden}, uint32_t(100 + T));
      for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
        MoeOptions o;
        o.emulation = e;
        const std::string what = router_name(rc) + " " + std::string(emulation_name(e)) + " T=" + std::to_string(T);
        expect_close(compare(l, x, o, what), what);
      }
    }
  }
}

// Logits exact in any summation order (one nonzero per token row, gate and bias from small sets of
// short binary fractions): both routers see the same float32 logits, so equal scores occur (a zero
// row ties every expert; equal gate entries tie experts and groups) and the ranking rule decides them.
TEST(CudaMoeRouting, GroupedRouterTiesGoTheRefsWay) {
  SKIP_WITHOUT_DEVICE();
  for (const RouterCase& rc : kRouters) {
    MoeLayer l = router_layer(rc, 5);
    float* g = l.gate.ptr<float>();
    for (int64_t i = 0; i < l.gate.numel(); ++i) g[i] = 0.25f * float(int(i * 7 % 9) - 4);  // [-1, 1] in 0.25
    if (rc.bias)
      for (int e = 0; e < rc.E; ++e) l.correction_bias.ptr<float>()[e] = 0.125f * float(e * 5 % 3);
    for (int64_t T : {int64_t(1), int64_t(45), int64_t(520)}) {
      Tensor x(DType::BF16, {T, l.hidden});  // zeros
      for (int64_t t = 0; t < T; ++t)
        if (t % 5 != 0) store_from_f32(x.data.data(), DType::BF16, t * l.hidden + t * 13 % l.hidden, float(t % 4) - 1.5f);
      MoeOptions o;
      const std::string what = router_name(rc) + " exact logits T=" + std::to_string(T);
      expect_close(compare(l, x, o, what), what, 0.0);
    }
  }
}

// Shared experts (an intermediate other than the routed one) with the grouped router, every GEMM path
// and the heuristic's choice; static and dynamic NVFP4 input scales.
TEST(CudaMoeRouting, SharedExpertsMatchRef) {
  SKIP_WITHOUT_DEVICE();
  using mxmoe::moe::cuda::GemmPath;
  const std::vector<const char*> schemes =
      quick() ? std::vector<const char*>{"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4"}
              : std::vector<const char*>{"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_nvfp4_a16", "w_mxfp4_a_fp8",
                                         "w_mxfp6_e3m2_a_mxfp6_e3m2", "w_mxfp8_e4m3_a16", "bf16"};
  const char* paths[] = {"auto", "tiled", "gemv", "tile128"};
  for (const char* sname : schemes)
    for (bool static_scales : {false, true}) {
      const MoeScheme& s = parse_moe_scheme(sname);
      if (static_scales && !(s.act == ActQuant::Block && traits(s.act_scheme).tensor_scale)) continue;
      const MoeLayer l = ds_layer(s, 16, 4, 8, 4, 96, 7, static_scales);
      for (int64_t T : quick() ? std::vector<int64_t>{5} : std::vector<int64_t>{1, 5, 37, 300})
        for (int path = 0; path < 4; ++path) {
          ForcePath f(path == 0 ? GemmPath::Auto : path == 1 ? GemmPath::Tiled : path == 2 ? GemmPath::Gemv : GemmPath::Tile128);
          const Tensor x = test::random_tensor(DType::BF16, {T, l.hidden}, uint32_t(7 * T + path));
          for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
            MoeOptions o;
            o.emulation = e;
            const std::string what = std::string(sname) + (static_scales ? " static " : " ") + paths[path] + " " +
                                     std::string(emulation_name(e)) + " T=" + std::to_string(T);
            const Compared c = compare(l, x, o, what);
            expect_close(c, what);
            std::printf("[ %-52s ] rel L2 vs ref %.2e\n", what.c_str(), c.err);
          }
        }
    }
}

// expert_map: half the experts in a scrambled local order, one expert, none (the output is zero: no
// shared expert here), all in reverse order; crowded and empty experts (a gate bias on a softmax router),
// then a DeepSeek-style layer with shared experts. Dynamic scales must come from the local rows only.
TEST(CudaMoeRouting, ExpertMapMatchesRef) {
  SKIP_WITHOUT_DEVICE();
  const int E = 16;
  std::vector<std::vector<int32_t>> maps(4, std::vector<int32_t>(size_t(E), -1));
  for (int e = 0, n = 0; e < E; ++e)
    if (e % 2 == 0) maps[0][size_t(e)] = 7 - n++;
  maps[1][5] = 0;
  for (int e = 0; e < E; ++e) maps[3][size_t(e)] = E - 1 - e;
  const std::vector<const char*> schemes =
      quick() ? std::vector<const char*>{"w_nvfp4_a_nvfp4"}
              : std::vector<const char*>{"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_mxfp4_a_fp8", "w_nvfp4_a16"};
  for (const char* sname : schemes)
    for (int variant = 0; variant < 3; ++variant) {
      const MoeScheme& s = parse_moe_scheme(sname);
      MoeLayer l;
      if (variant < 2) {
        l = synthetic_layer({"ep", 128, 64, E, 3}, s, 9);
        if (variant == 1) {  // experts 0-2 take every token; the others none
          l.gate_bias = Tensor(DType::F32, {E});
          for (int e = 0; e < 3; ++e) l.gate_bias.ptr<float>()[e] = 100.0f;
        }
      } else {
        l = ds_layer(s, E, 3, 4, 2, 64, 9, std::string(sname) == "w_nvfp4_a_nvfp4");
      }
      for (size_t mi = 0; mi < maps.size(); ++mi)
        for (int64_t T : quick() ? std::vector<int64_t>{7} : std::vector<int64_t>{1, 7, 37, 300}) {
          const Tensor x = test::random_tensor(DType::BF16, {T, l.hidden}, uint32_t(31 * T + mi));
          for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
            MoeOptions o;
            o.emulation = e, o.expert_map = maps[mi];
            const std::string what = std::string(sname) + " variant " + std::to_string(variant) + " map " +
                                     std::to_string(mi) + " " + std::string(emulation_name(e)) + " T=" + std::to_string(T);
            expect_close(compare(l, x, o, what), what);
          }
        }
    }
}

// The router weight on GEMM1's input (top-1): softmax and grouped routers, with and without shared
// experts and an expert_map; a16 schemes read x * w as float32 (tile128's three bf16 planes).
TEST(CudaMoeRouting, RouterWeightOnInputMatchesRef) {
  SKIP_WITHOUT_DEVICE();
  const std::vector<const char*> schemes =
      quick() ? std::vector<const char*>{"w_nvfp4_a_nvfp4", "w_nvfp4_a16"}
              : std::vector<const char*>{"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_nvfp4_a16", "w_mxfp4_a_fp8",
                                         "w_mxfp8_e4m3_a16", "bf16"};
  for (const char* sname : schemes)
    for (int variant = 0; variant < 3; ++variant) {
      const MoeScheme& s = parse_moe_scheme(sname);
      const bool nv_act = s.act == ActQuant::Block && traits(s.act_scheme).tensor_scale;
      MoeLayer l = variant == 0 ? synthetic_layer({"top1", 128, 64, 8, 1}, s, 12)
                                : ds_layer(s, 16, 1, 4, 2, 64, 12, nv_act && variant == 2);
      l.router.renormalize = variant == 2;  // a renormalized top-1 weight is the scaling factor alone
      for (int64_t T : quick() ? std::vector<int64_t>{5} : std::vector<int64_t>{1, 5, 37, 300}) {
        const Tensor x = test::random_tensor(DType::BF16, {T, l.hidden}, uint32_t(T + 3));
        for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
          MoeOptions o;
          o.emulation = e, o.apply_router_weight_on_input = true;
          if (variant == 2) {  // the odd experts on this rank
            o.expert_map.assign(16, -1);
            for (int i = 0; i < 8; ++i) o.expert_map[size_t(2 * i + 1)] = i;
          }
          const std::string what = std::string(sname) + " variant " + std::to_string(variant) + " " +
                                   std::string(emulation_name(e)) + " T=" + std::to_string(T);
          expect_close(compare(l, x, o, what), what);
        }
      }
    }
}

// The CPU path's errors, with the same messages, on both backends.
TEST(CudaMoeRouting, OptionErrorsMirrorTheCpu) {
  SKIP_WITHOUT_DEVICE();
  const MoeLayer l = synthetic_layer({"small", 64, 32, 6, 2}, parse_moe_scheme("w_mxfp4_a_mxfp4"), 1);
  const Tensor x = test::random_tensor(DType::BF16, {4, l.hidden}, 1);
  for (Backend b : {Backend::Ref, Backend::Cuda}) {
    MoeOptions o;
    o.backend = b;
    o.apply_router_weight_on_input = true;
    test::expect_error([&] { run_moe(l, x, o); }, "only supported for top_k == 1, got top_k=2");
    o.apply_router_weight_on_input = false;
    o.expert_map = {0, 1, 2};
    test::expect_error([&] { run_moe(l, x, o); }, "expert_map has 3 entries for 6 experts");
    o.expert_map = {0, -1, 0, 1, -1, 2};
    test::expect_error([&] { run_moe(l, x, o); }, "both map to local id 0");
    o.expert_map = {0, -1, 2, 1, -1, 4};
    test::expect_error([&] { run_moe(l, x, o); }, "none maps to 3");
  }
}

// auto takes the GPU for every new feature at once.
TEST(CudaMoeRouting, AutoPicksCuda) {
  SKIP_WITHOUT_DEVICE();
  const MoeLayer l = ds_layer(parse_moe_scheme("w_nvfp4_a_nvfp4"), 16, 1, 4, 2, 64, 2, false);
  const Tensor x = test::random_tensor(DType::BF16, {9, l.hidden}, 2);
  MoeOptions o;
  o.apply_router_weight_on_input = true;
  o.expert_map.assign(16, -1);
  for (int i = 0; i < 6; ++i) o.expert_map[size_t(i + 3)] = i;
  const MoeResult r = run_moe(l, x, o);
  EXPECT_EQ(r.backend.rfind("cuda (auto", 0), 0u) << r.backend;
}

// The grouped router and shared experts through CudaMoeLayer::forward: they never take the fused
// kernel; poisoned outputs are overwritten, two forwards and a graph replay agree bit for bit.
class CudaMoeRoutingGraphs : public ::testing::TestWithParam<int64_t> {};

TEST_P(CudaMoeRoutingGraphs, DeterministicUnderGraphs) {
  SKIP_WITHOUT_DEVICE();
  const MoeLayer l = ds_layer(parse_moe_scheme("w_mxfp4_a_mxfp4"), 32, 4, 8, 4, 96, 4, false);
  const int64_t T = GetParam(), H = l.hidden;
  const int k = l.router.top_k;
  const Tensor x = test::random_tensor(DType::BF16, {T, H}, 8);
  CudaMoeLayer dev(l, T);
  for (Emulation e : {Emulation::VLLM, Emulation::Exact}) EXPECT_EQ(dev.fused_tokens(e), 0);
  const DeviceIo io(x, k);
  for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
    std::vector<std::vector<float>> outs;
    for (int run = 0; run < 3; ++run) {
      io.poison();
      outs.push_back(io.run([&](cudaStream_t st) { dev.forward(io.x, T, e, io.out, io.ids, io.w, st); },
                            run == 2 ? 2 : 0));
    }
    const std::vector<int32_t> ids = io.ids_host();
    for (size_t i = 0; i < outs[0].size(); ++i) ASSERT_TRUE(std::isfinite(outs[0][i])) << "unwritten output " << i;
    EXPECT_EQ(std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * 4), 0) << "two forwards differ";
    EXPECT_EQ(std::memcmp(outs[0].data(), outs[2].data(), outs[0].size() * 4), 0) << "graph replay differs";
    MoeOptions o;
    o.emulation = e, o.backend = Backend::Ref;
    const MoeResult ref = run_moe(l, x, o);
    EXPECT_LT(rel_l2(outs[0].data(), ref.out.ptr<float>(), T * H), kTol) << emulation_name(e);
    EXPECT_EQ(std::memcmp(ids.data(), ref.topk_ids.data.data(), ids.size() * 4), 0) << emulation_name(e);
  }
}

// T = 3: where a plain layer would take the fused kernel; T = 19: the GEMV kernel; T = 300: tile128.
INSTANTIATE_TEST_SUITE_P(EveryPath, CudaMoeRoutingGraphs, ::testing::Values(int64_t(3), int64_t(19), int64_t(300)));

// The options reach a device-resident layer too: CudaMoeLayer(layer, T, options) with an expert_map (and,
// on a top-1 layer, the router weight on the input) gives run_moe's CUDA result bit for bit (the same
// kernels on the same inputs), and a bad map is refused by the constructor.
TEST(CudaMoeRouting, LayerObjectTakesOptions) {
  SKIP_WITHOUT_DEVICE();
  const int E = 16;
  const int64_t T = 37;
  for (int top_k : {3, 1}) {
    const MoeLayer l = synthetic_layer({"ep", 128, 64, E, top_k}, parse_moe_scheme("w_nvfp4_a_nvfp4"), 5);
    const int64_t H = l.hidden;
    MoeOptions o;
    o.backend = Backend::Cuda;
    o.expert_map.assign(size_t(E), -1);
    for (int e = 0; e < E; e += 2) o.expert_map[size_t(e)] = e / 2;
    o.apply_router_weight_on_input = top_k == 1;
    const Tensor x = test::random_tensor(DType::BF16, {T, H}, 77);
    CudaMoeLayer dev(l, T, o);
    const DeviceIo io(x, top_k);
    for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
      io.poison();
      const std::vector<float> out =
          io.run([&](cudaStream_t st) { dev.forward(io.x, T, e, io.out, io.ids, io.w, st); });
      o.emulation = e;
      const MoeResult r = run_moe(l, x, o);
      EXPECT_EQ(std::memcmp(out.data(), r.out.data.data(), out.size() * 4), 0)
          << "top_k " << top_k << " " << emulation_name(e);
    }
    o.expert_map.assign(size_t(E - 1), 0);
    test::expect_error([&] { CudaMoeLayer bad(l, T, o); }, "expert_map");
  }
}

// The tensor-core logits (T >= 512) multiply only the hi term of a bf16 gate (its mid and lo terms are
// zero): the same bits as all three terms, for softmax and grouped sigmoid routers, a partial 32-expert
// block (E = 40) and a partial 64-wide K chunk (H = 224). A float32 gate that bf16 cannot hold (every
// entry nudged by a relative 2^-12) keeps three terms and stays within the router bounds of the ref.
TEST(CudaMoeRouting, LogitsOneTermChangesNoBits) {
  SKIP_WITHOUT_DEVICE();
  const int64_t T = 515;
  MoeLayer softmax = synthetic_layer({"r40", 224, 32, 40, 4}, parse_moe_scheme("w_nvfp4_a_nvfp4"), 9);
  MoeLayer grouped = router_layer(kRouters[0], 11);
  for (MoeLayer* l : {&softmax, &grouped}) {
    const std::string name = l == &softmax ? "softmax E40 H224" : "grouped " + router_name(kRouters[0]);
    const Tensor x = test::random_tensor(DType::BF16, {T, l->hidden}, 515);
    MoeOptions o;
    o.backend = Backend::Cuda;
    MoeResult r[2];
    for (int i = 0; i < 2; ++i) {
      ForceFlag one(mxmoe::moe::cuda::logits_one_term_enabled(), i == 0);
      r[i] = run_moe(*l, x, o);
    }
    EXPECT_EQ(std::memcmp(r[0].out.data.data(), r[1].out.data.data(), r[0].out.data.size()), 0) << name;
    EXPECT_EQ(std::memcmp(r[0].topk_ids.data.data(), r[1].topk_ids.data.data(), r[0].topk_ids.data.size()), 0) << name;
    EXPECT_EQ(std::memcmp(r[0].topk_weights.data.data(), r[1].topk_weights.data.data(), r[0].topk_weights.data.size()), 0)
        << name;
    float* g = l->gate.ptr<float>();
    for (int64_t i = 0; i < l->gate.numel(); ++i) g[i] *= 1.0f + 0x1p-12f;
    expect_close(compare(*l, x, MoeOptions{}, name + " float32 gate"), name + " float32 gate");
  }
}

// Host-only: the DeepSeek-V3 features are accepted; what is still not is named.
TEST(CudaMoeRoutingHost, DeepSeekLayersAreSupported) {
  MoeLayer l = ds_layer(parse_moe_scheme("w_nvfp4_a_nvfp4"), 16, 4, 8, 4, 96, 1, false);
  EXPECT_EQ(cuda_moe_unsupported(l, Emulation::VLLM), "");
  l.shared_inter = 80;
  EXPECT_NE(cuda_moe_unsupported(l, Emulation::Exact).find("shared experts' intermediate 80"), std::string::npos);
}

}  // namespace
