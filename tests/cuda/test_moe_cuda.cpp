// The CUDA MoE backend against the CPU `ref` backend: every MoE scheme in both emulation modes, token
// counts that are not multiples of the tile sizes, experts with no tokens, every activation, the
// golden checkpoints, poisoned outputs, determinism and CUDA-graph capture. Without a usable device
// every test skips with the reason. MXMOE_TEST_QUICK=1 (the sanitizer runs) trims the sweep.
//
// Tolerance (rel L2 vs ref <= 5e-3): both sides compute the same function with float32 accumulation
// of exact bf16 products, but in different orders (tensor-core k-chunks and a fixed 4-way split of K
// on the GPU, a plain loop on the CPU): ~1e-6 relative per dot product. Those differences can flip
// a re-quantized activation (GEMM2's input, or an NVFP4 dynamic scale) across a rounding threshold,
// which moves one FP4 element by one step (up to ~1/3 of its value); rare flips over a few thousand
// elements give rel L2 of order 1e-3, the same bound family as cpu vs ref (docs/numerics.md). Routing
// must match exactly (ids) and to float32 rounding (weights).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "mxmoe/cuda.hpp"
#include "mxmoe/moe/cuda_moe.hpp"
#include "mxmoe/moe/layer.hpp"
#include "mxmoe/moe/loader.hpp"
#include "mxmoe/safetensors.hpp"
#include "moe/cuda/moe_heuristics.hpp"
#include "cuda/moe_cuda_test_util.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;
using namespace mxmoe::moe_test;

namespace {

const SyntheticShape kSmall{"small", 64, 32, 6, 2};
// Many experts, K over several 128-chunks, K % 128 != 0 in both GEMMs (H 352, I 160).
const SyntheticShape kWide{"wide", 352, 160, 32, 4};

MoeLayer small_layer(const MoeScheme& s, uint32_t seed, bool static_scales, const SyntheticShape& sh = kSmall) {
  MoeLayer l = synthetic_layer(sh, s, seed);
  if (static_scales)
    for (int e = 0; e < l.num_experts; ++e) {
      l.w13[size_t(e)].input_scale = (3.0f + 0.25f * e) / (6 * 448);
      l.w2[size_t(e)].input_scale = (0.5f + 0.05f * e) / (6 * 448);
    }
  return l;
}

// gpt-oss's MLP on a test layer: SwiGLU-OAI (interleaved gate / up rows), top-k then softmax, biases.
void make_gpt_oss(MoeLayer& l) {
  l.activation = {Activation::SwiGLUOAI};
  l.router.kind = RouterKind::TopKThenSoftmax, l.router.renormalize = false;
  l.b13 = test::random_tensor(DType::F32, {l.num_experts, 2 * l.inter}, 4, 0.1f);
  l.b2 = test::random_tensor(DType::F32, {l.num_experts, l.hidden}, 5, 0.1f);
}

class CudaMoeDeviceScheme : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaMoeDeviceScheme, MatchesRefInBothModes) {
  SKIP_WITHOUT_DEVICE();
  const MoeScheme& s = parse_moe_scheme(GetParam());
  const bool nv_act = s.act == ActQuant::Block && traits(s.act_scheme).tensor_scale;
  std::vector<int64_t> Ts = quick() ? std::vector<int64_t>{3, 37} : std::vector<int64_t>{1, 3, 37, 300};
  for (bool static_scales : {false, true}) {
    if (static_scales && !nv_act) continue;
    const MoeLayer l = small_layer(s, 11, static_scales);
    for (int64_t T : Ts) {
      const Tensor x = test::random_tensor(DType::BF16, {T, kSmall.hidden}, uint32_t(5 + T));
      for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
        const std::string what = std::string(s.name) + " " + std::string(emulation_name(e)) + " T=" +
                                 std::to_string(T) + (static_scales ? " static" : " dynamic");
        const Compared c = compare(l, x, e, what);
        EXPECT_LT(c.err, kTol) << what;
        EXPECT_EQ(c.id_mismatch, 0) << what;
        EXPECT_LT(c.w_err, 1e-5) << what;
        std::printf("[ %-40s ] rel L2 vs ref %.2e\n", what.c_str(), c.err);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Schemes, CudaMoeDeviceScheme, ::testing::ValuesIn([] {
                           std::vector<std::string> v;
                           for (const auto& s : moe_schemes()) v.emplace_back(s.name);
                           return v;
                         }()));

// Every activation, with gpt-oss's router (top-k then softmax) for SwiGLU-OAI.
TEST(CudaMoeDevice, EveryActivation) {
  SKIP_WITHOUT_DEVICE();
  for (const char* sname : {"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_nvfp4_a16"})
    for (Activation act : {Activation::SiLU, Activation::GELU, Activation::GELUTanh, Activation::SwiGLUOAI}) {
      MoeLayer l = small_layer(parse_moe_scheme(sname), 3, false);
      l.activation = {act};
      if (act == Activation::SwiGLUOAI) make_gpt_oss(l);
      const Tensor x = test::random_tensor(DType::BF16, {37, l.hidden}, 9);
      // The heuristic's path, then the 128 x 128 kernel (wgmma where the GPU takes it, and mma.sync): its
      // epilogue maps tile rows to gate / up rows itself (halves, or gpt-oss's interleaved rows).
      for (int path = 0; path < 3; ++path)
        for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
          const std::string what = std::string(sname) + " " + std::string(activation_name(act)) + " " +
                                   std::string(emulation_name(e)) + " path " + std::to_string(path);
          std::optional<ForcePath> f;
          if (path > 0) f.emplace(mxmoe::moe::cuda::GemmPath::Tile128);
          ForceWgmma wg(path != 2);
          const Compared c = compare(l, x, e, what);
          EXPECT_LT(c.err, kTol) << what;
          EXPECT_EQ(c.id_mismatch, 0) << what;
        }
    }
}

// A gate bias sends every token to experts 0 and 1: the others get no rows, experts 0/1 get T rows
// each (several tiles of the many-token path).
TEST(CudaMoeDevice, ExpertsWithoutTokensAndCrowdedExperts) {
  SKIP_WITHOUT_DEVICE();
  for (const char* sname : {"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4"}) {
    MoeLayer l = small_layer(parse_moe_scheme(sname), 7, false);
    l.gate_bias = Tensor(DType::F32, {l.num_experts});
    for (int e = 0; e < l.num_experts; ++e) l.gate_bias.ptr<float>()[e] = e < 2 ? 100.0f : 0.0f;
    for (int64_t T : {1, 45, 300}) {
      const Tensor x = test::random_tensor(DType::BF16, {T, l.hidden}, uint32_t(T));
      for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
        const Compared c = compare(l, x, e, sname);
        EXPECT_LT(c.err, kTol) << sname << " T=" << T;
        EXPECT_EQ(c.id_mismatch, 0) << sname << " T=" << T;
      }
    }
  }
}

// A wider layer (many experts, K over several 128-chunks, K % 128 != 0).
TEST(CudaMoeDevice, WiderLayer) {
  SKIP_WITHOUT_DEVICE();
  const SyntheticShape& sh = kWide;
  for (const char* sname : {"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_mxfp6_e2m3_a_mxfp6_e2m3"}) {
    const MoeLayer l = small_layer(parse_moe_scheme(sname), 5, false, sh);
    for (int64_t T : quick() ? std::vector<int64_t>{5} : std::vector<int64_t>{1, 64, 257}) {
      const Tensor x = test::random_tensor(DType::BF16, {T, sh.hidden}, uint32_t(T + 1));
      for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
        const Compared c = compare(l, x, e, sname);
        EXPECT_LT(c.err, kTol) << sname << " T=" << T << " " << emulation_name(e);
        EXPECT_EQ(c.id_mismatch, 0) << sname << " T=" << T;
      }
    }
  }
}

// The router (moe_route.cu) on a Qwen3-sized router (128 experts, top-8: 4 top-k candidates per lane;
// H 1024: four unrolled 256-element steps per lane), token counts on both sides of the logits geometry
// switches (T 16: 2 -> 8 experts per CTA; T 256: 4 -> 16 tokens per CTA). Routing must match the ref
// exactly (ids) and to float32 rounding (weights).
TEST(CudaMoeDevice, RouterPathsMatchRef) {
  SKIP_WITHOUT_DEVICE();
  // From kLogitsMmaMinTokens (512) the logits run on the tensor cores; r40's H = 224 ends in a partial
  // 64-wide K chunk and E = 40 in a partial 32-expert block.
  const std::vector<SyntheticShape> shapes{{"r128", 1024, 32, 128, 8}, {"r200", 256, 32, 200, 8}, {"r40", 224, 32, 40, 4}};
  const std::vector<int64_t> Ts = quick() ? std::vector<int64_t>{1, 33, 515}
                                          : std::vector<int64_t>{1, 2, 17, 32, 33, 64, 65, 257, 512, 515, 1100};
  for (const SyntheticShape& sh : shapes) {
    const MoeLayer l = small_layer(parse_moe_scheme("w_nvfp4_a_nvfp4"), 21, false, sh);
    for (int64_t T : Ts) {
      const Tensor x = test::random_tensor(DType::BF16, {T, sh.hidden}, uint32_t(77 + T));
      for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
        const std::string what = sh.name + " " + std::string(emulation_name(e)) + " T=" + std::to_string(T);
        const Compared c = compare(l, x, e, what);
        EXPECT_LT(c.err, kTol) << what;
        EXPECT_EQ(c.id_mismatch, 0) << what;
        EXPECT_LT(c.w_err, 1e-5) << what;
      }
    }
  }
}

// Poisoned outputs are fully overwritten; two forwards agree bit for bit; a captured CUDA graph
// replays to the same bits.
TEST(CudaMoeDevice, PoisonDeterminismAndGraphCapture) {
  SKIP_WITHOUT_DEVICE();
  const MoeLayer l = small_layer(parse_moe_scheme("w_nvfp4_a_nvfp4"), 2, true);
  const int64_t T = 37, H = l.hidden;
  const int k = l.router.top_k;
  const Tensor x = test::random_tensor(DType::BF16, {T, H}, 21);
  CudaMoeLayer dev(l, 64);
  const DeviceIo io(x, k);
  auto run_and_get = [&](bool graph) {
    io.poison();
    return io.run([&](cudaStream_t st) { dev.forward(io.x, T, Emulation::Exact, io.out, io.ids, io.w, st); },
                  graph ? 3 : 0);
  };
  const auto a = run_and_get(false), b = run_and_get(false), c = run_and_get(true);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_TRUE(std::isfinite(a[i])) << "unwritten output " << i;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << "two forwards differ";
  EXPECT_EQ(std::memcmp(a.data(), c.data(), a.size() * 4), 0) << "graph replay differs";
  MoeOptions o;
  o.emulation = Emulation::Exact;
  o.backend = Backend::Ref;
  const MoeResult ref = run_moe(l, x, o);
  EXPECT_LT(rel_l2(a.data(), ref.out.ptr<float>(), T * H), kTol);
  EXPECT_THROW(dev.forward(io.x, 65, Emulation::Exact, io.out, io.ids, io.w, io.st), Error);
}

// The GEMV kernel (sm90_fp4_moe_gemv.cu), the tiled kernel and the 128 x 128 kernel
// (sm80_moe_gemm_tile128.cuh) on the same inputs, each against the CPU ref, and against the tiled
// kernel, at token counts where the heuristic would pick another one (tiles of 8 tokens over crowded
// experts; K % 128 != 0 in the wider layer; 300 tokens over 6 experts fill 128-token tiles). All feed the
// tensor cores the same bf16 operands (the GEMV kernel's scale tables hold the tiled kernel's
// bf16(|q| * m) values; tile128 runs the tiled kernel's decode); only the float32 summation order
// differs (split-K groups, chunk order), so the bound is the same as vs ref (kTol: a float32 rounding
// difference can flip a re-quantized GEMM2 input by one FP4 step).
TEST(CudaMoeDevice, GemmPathsAgree) {
  SKIP_WITHOUT_DEVICE();
  using mxmoe::moe::cuda::GemmPath;
  // tile128 on wgmma where the GPU takes it (sm_90a), and again with mma.sync: the same bf16 tiles and k16
  // order, only the tensor cores' instruction differs.
  const char* names[] = {"tiled", "gemv", "tile128", "tile128-mma.sync"};
  for (const char* sname : {"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_nvfp4_a16", "w_mxfp4_a16", "w_mxfp4_a_fp8",
                            "w_mxfp6_e3m2_a_mxfp6_e3m2", "w_mxfp8_e4m3_a16"})
    for (const SyntheticShape* sh : {&kSmall, &kWide}) {
      const MoeLayer l = small_layer(parse_moe_scheme(sname), 13, sh == &kSmall, *sh);
      for (int64_t T : quick() ? std::vector<int64_t>{5} : std::vector<int64_t>{1, 5, 64, 300}) {
        const Tensor x = test::random_tensor(DType::BF16, {T, sh->hidden}, uint32_t(31 + T));
        for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
          const std::string what = std::string(sname) + " " + sh->name + " " + std::string(emulation_name(e)) +
                                   " T=" + std::to_string(T);
          MoeOptions o;
          o.emulation = e;
          o.backend = Backend::Cuda;
          MoeResult r[4];
          for (int i = 0; i < 4; ++i) {
            ForcePath f(i == 0 ? GemmPath::Tiled : i == 1 ? GemmPath::Gemv : GemmPath::Tile128);
            ForceWgmma wg(i != 3);
            const Compared c = compare(l, x, e, what);
            EXPECT_LT(c.err, kTol) << what << " " << names[i] << " vs ref";
            EXPECT_EQ(c.id_mismatch, 0) << what;
            r[i] = run_moe(l, x, o);
          }
          for (int i = 1; i < 4; ++i) {
            const double d = rel_l2(r[i].out.ptr<float>(), r[0].out.ptr<float>(), r[0].out.numel());
            EXPECT_LT(d, kTol) << what << ": " << names[i] << " vs tiled";
            std::printf("[ %-52s ] rel L2 %s vs tiled %.2e\n", what.c_str(), names[i], d);
          }
          const double dw = rel_l2(r[2].out.ptr<float>(), r[3].out.ptr<float>(), r[3].out.numel());
          EXPECT_LT(dw, kTol) << what << ": tile128 wgmma vs mma.sync";
          std::printf("[ %-52s ] rel L2 tile128 vs tile128-mma.sync %.2e\n", what.c_str(), dw);
        }
      }
    }
}

// GEMM2's input quantized in tile128's GEMM1 epilogue (static scales) and GEMM2's bf16 output (vllm
// mode) against the separate quantizer over float32 rows and a float32 y: the same values in the same
// order, so the layer's output is bit-identical. Schemes where the epilogue takes it (MX, NVFP4 with
// static scales, bf16) and where it must not (NVFP4 dynamic, FP8); intermediate widths with a partial
// last 64-column CTA (32, 160) and gpt-oss's interleaved rows with biases; wgmma and mma.sync.
TEST(CudaMoeDevice, EpilogueQuantAndBf16OutputChangeNoBits) {
  SKIP_WITHOUT_DEVICE();
  using mxmoe::moe::cuda::GemmPath;
  struct Case {
    const char* scheme;
    bool static_scales;
    const SyntheticShape* shape;
    bool oai;
  };
  std::vector<Case> cases{{"w_nvfp4_a_nvfp4", true, &kSmall, false},  {"w_nvfp4_a_nvfp4", true, &kWide, false},
                          {"w_nvfp4_a_nvfp4", false, &kWide, false}, {"w_mxfp4_a_mxfp4", false, &kWide, true},
                          {"w_nvfp4_a16", false, &kWide, false},     {"w_mxfp4_a_fp8", false, &kSmall, false}};
  if (!quick())
    cases.insert(cases.end(), {{"w_mxfp6_e2m3_a_mxfp6_e2m3", false, &kWide, false},
                               {"w_mxfp6_e3m2_a_mxfp6_e3m2", false, &kSmall, false},
                               {"w_mxfp8_e4m3_a16", false, &kWide, true}});
  for (const Case& cs : cases) {
    MoeLayer l = small_layer(parse_moe_scheme(cs.scheme), 17, cs.static_scales, *cs.shape);
    if (cs.oai) make_gpt_oss(l);
    for (int64_t T : {int64_t(5), int64_t(300)}) {
      const Tensor x = test::random_tensor(DType::BF16, {T, cs.shape->hidden}, uint32_t(7 + T));
      for (Emulation e : {Emulation::VLLM, Emulation::Exact})
        for (bool wgmma : {true, false}) {
          const std::string what = std::string(cs.scheme) + " " + cs.shape->name + (cs.static_scales ? " static" : "") +
                                   (cs.oai ? " swigluoai" : "") + " " + std::string(emulation_name(e)) +
                                   " T=" + std::to_string(T) + (wgmma ? "" : " mma.sync");
          std::optional<ForcePath> f;
          if (T > 5) f.emplace(GemmPath::Tile128);
          ForceWgmma wg(wgmma);
          MoeOptions o;
          o.emulation = e, o.backend = Backend::Cuda;
          MoeResult r[2];
          for (int i = 0; i < 2; ++i) {
            ForceFlag q(mxmoe::moe::cuda::epilogue_quant_enabled(), i == 0);
            ForceFlag y(mxmoe::moe::cuda::y_bf16_enabled(), i == 0);
            r[i] = run_moe(l, x, o);
          }
          const bool same = std::memcmp(r[0].out.data.data(), r[1].out.data.data(), r[0].out.data.size()) == 0;
          EXPECT_TRUE(same) << what;
          const Compared c = compare(l, x, e, what);
          EXPECT_LT(c.err, kTol) << what;
          std::printf("[ %-58s ] bit-identical %s, rel L2 vs ref %.2e\n", what.c_str(), same ? "yes" : "NO", c.err);
        }
    }
  }
}

// FP4 weights in the m-tile layout (fp4_weight_tiles.hpp) against the row layout: every kernel reads the
// same codes and scales from other addresses, so the outputs are bit-identical. Every FP4 path (fused at
// T = 1, GEMV, the tiled kernel, tile128 on wgmma and mma.sync), gated halves and gpt-oss's interleaved
// rows with biases, K % 128 != 0 (the wide shape's H = 352), both modes.
TEST(CudaMoeDevice, WeightTilesChangeNoBits) {
  SKIP_WITHOUT_DEVICE();
  using mxmoe::moe::cuda::GemmPath;
  struct Case {
    const char* scheme;
    bool oai;
  };
  for (const Case& cs : {Case{"w_nvfp4_a_nvfp4", false}, Case{"w_mxfp4_a_mxfp4", true}, Case{"w_nvfp4_a16", false},
                         Case{"w_mxfp4_a16", true}}) {
    MoeLayer l = small_layer(parse_moe_scheme(cs.scheme), 23, false, kWide);
    if (cs.oai) make_gpt_oss(l);
    for (int64_t T : {int64_t(1), int64_t(5), int64_t(300)})
      for (int path = 0; path < 4; ++path) {  // auto, tiled, tile128, tile128 on mma.sync
        if (T == 1 && path != 0) continue;
        const Tensor x = test::random_tensor(DType::BF16, {T, kWide.hidden}, uint32_t(57 + T));
        for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
          const std::string what = std::string(cs.scheme) + (cs.oai ? " swigluoai" : "") + " " +
                                   std::string(emulation_name(e)) + " T=" + std::to_string(T) + " path " +
                                   std::to_string(path);
          std::optional<ForcePath> f;
          if (path > 0) f.emplace(path == 1 ? GemmPath::Tiled : GemmPath::Tile128);
          ForceWgmma wg(path != 3);
          MoeOptions o;
          o.emulation = e, o.backend = Backend::Cuda;
          MoeResult r[2];
          for (int i = 0; i < 2; ++i) {
            ForceFlag tiles(mxmoe::moe::cuda::weight_tiles_enabled(), i == 0);
            r[i] = run_moe(l, x, o);
          }
          EXPECT_EQ(std::memcmp(r[0].out.data.data(), r[1].out.data.data(), r[0].out.data.size()), 0) << what;
        }
      }
  }
}

// The fused kernel at every token count it takes, against the CPU ref and against the multi-kernel path
// (route + quantize + GEMV + finalize) on the same inputs: the same operands and epilogues, only the
// split-K summation order may differ (same bound as GemmPathsAgree). Shapes: few experts with
// top-2 (T up to 8), 32 experts with top-4 and K % 128 != 0, 128 and 200 experts with top-8 (T up to 4;
// both top-k widths).
TEST(CudaMoeDevice, FusedAndMultiKernelPathsAgree) {
  SKIP_WITHOUT_DEVICE();
  ForceFused on(true);
  const std::vector<SyntheticShape> shapes{kSmall, kWide, {"e128", 256, 96, 128, 8},
                                           {"e200", 128, 64, 200, 8}};
  const std::vector<const char*> schemes =
      quick() ? std::vector<const char*>{"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4"}
              : std::vector<const char*>{"w_nvfp4_a_nvfp4", "w_mxfp4_a_mxfp4", "w_nvfp4_a16", "w_mxfp4_a16",
                                         "w_mxfp4_a_fp8", "w_mxfp4_a_mxfp6_e2m3"};
  for (const char* sname : schemes)
    for (const SyntheticShape& sh : shapes)
      for (bool static_scales : {false, true}) {
        if (static_scales && std::string(sname) != "w_nvfp4_a_nvfp4") continue;
        const MoeLayer l = small_layer(parse_moe_scheme(sname), 17, static_scales, sh);
        for (int64_t T : quick() ? std::vector<int64_t>{1, 3} : std::vector<int64_t>{1, 2, 3, 4, 5, 8}) {
          const Tensor x = test::random_tensor(DType::BF16, {T, sh.hidden}, uint32_t(91 + T));
          for (Emulation e : {Emulation::VLLM, Emulation::Exact}) {
            {
              const CudaMoeLayer probe(l, T);
              if (T > probe.fused_tokens(e)) continue;
            }
            const std::string what = std::string(sname) + " " + sh.name + " " + std::string(emulation_name(e)) +
                                     " T=" + std::to_string(T) + (static_scales ? " static" : "");
            const Compared c = compare(l, x, e, what);
            EXPECT_LT(c.err, kTol) << what << " fused vs ref";
            EXPECT_EQ(c.id_mismatch, 0) << what;
            EXPECT_LT(c.w_err, 1e-5) << what;
            MoeOptions o;
            o.emulation = e;
            o.backend = Backend::Cuda;
            const MoeResult fused = run_moe(l, x, o);
            MoeResult multi;
            {
              ForceFused off(false);
              multi = run_moe(l, x, o);
            }
            const double d = rel_l2(fused.out.ptr<float>(), multi.out.ptr<float>(), multi.out.numel());
            EXPECT_LT(d, kTol) << what << ": fused vs multi-kernel";
            EXPECT_EQ(std::memcmp(fused.topk_ids.data.data(), multi.topk_ids.data.data(), multi.topk_ids.data.size()), 0)
                << what;
            EXPECT_EQ(std::memcmp(fused.topk_weights.data.data(), multi.topk_weights.data.data(),
                                  multi.topk_weights.data.size()),
                      0)
                << what << ": the router weights are bit-identical";
            std::printf("[ %-48s ] rel L2 fused vs multi %.2e, vs ref %.2e\n", what.c_str(), d, c.err);
          }
        }
      }
}

// The fused kernel's top-k at T = 1 (rank counting over shared memory) against the multi-kernel route's
// warp arg-max on tied scores: experts 10-19 copy expert 3's gate row (ten equal logits, so equal
// probabilities), both router kinds; router ids and weights bit-identical, outputs within kTol.
TEST(CudaMoeDevice, FusedTopKTiesMatchMultiKernel) {
  SKIP_WITHOUT_DEVICE();
  ForceFused on(true);
  const SyntheticShape sh{"e128", 256, 96, 128, 8};
  for (bool gpt : {false, true}) {
    MoeLayer l = small_layer(parse_moe_scheme("w_nvfp4_a_nvfp4"), 29, false, sh);
    if (gpt) make_gpt_oss(l);
    ASSERT_EQ(l.gate.dtype, DType::F32);
    float* g = l.gate.ptr<float>();
    for (int e = 10; e < 20; ++e) std::memcpy(g + e * sh.hidden, g + 3 * sh.hidden, size_t(sh.hidden) * 4);
    for (uint32_t seed : {41u, 42u, 43u}) {
      // Token 0 aligned with expert 3's row, so the tied experts rank near the top.
      Tensor x = test::random_tensor(DType::BF16, {1, sh.hidden}, seed);
      uint16_t* xb = x.ptr<uint16_t>();
      for (int64_t h = 0; h < sh.hidden; ++h) xb[h] = f32_to_bf16(bf16_to_f32(xb[h]) * 0.25f + 4.0f * g[3 * sh.hidden + h]);
      MoeOptions o;
      o.emulation = Emulation::VLLM;
      o.backend = Backend::Cuda;
      const MoeResult fused = run_moe(l, x, o);
      MoeResult multi;
      {
        ForceFused off(false);
        multi = run_moe(l, x, o);
      }
      const std::string what = std::string(gpt ? "gpt-oss router" : "softmax router") + " seed " + std::to_string(seed);
      EXPECT_EQ(std::memcmp(fused.topk_ids.data.data(), multi.topk_ids.data.data(), multi.topk_ids.data.size()), 0) << what;
      EXPECT_EQ(std::memcmp(fused.topk_weights.data.data(), multi.topk_weights.data.data(), multi.topk_weights.data.size()), 0)
          << what;
      int tied = 0;
      for (int j = 0; j < 8; ++j) {
        const int id = multi.topk_ids.ptr<int32_t>()[j];
        tied += id == 3 || (id >= 10 && id < 20);
      }
      EXPECT_GE(tied, 2) << what << ": the tied experts should be among the selected";
      EXPECT_LT(rel_l2(fused.out.ptr<float>(), multi.out.ptr<float>(), multi.out.numel()), kTol) << what;
    }
  }
}

// The GEMV and 128 x 128 paths and the fused kernel are deterministic (no atomics on outputs; split-K sums in a fixed
// order) and graph-capturable: two forwards and a graph replay agree bit for bit, poisoned outputs
// are overwritten; the same with programmatic dependent launch off (runs 3, 4: eager and a graph).
class CudaMoeDeviceGraphs : public ::testing::TestWithParam<int64_t> {};

TEST_P(CudaMoeDeviceGraphs, DeterministicUnderGraphs) {
  SKIP_WITHOUT_DEVICE();
  ForceFused on(true);
  const MoeLayer l = small_layer(parse_moe_scheme("w_mxfp4_a_mxfp4"), 4, false);
  const int64_t T = GetParam(), H = l.hidden;
  const int k = l.router.top_k;
  const Tensor x = test::random_tensor(DType::BF16, {T, H}, 8);
  CudaMoeLayer dev(l, T);
  EXPECT_EQ(T <= dev.fused_tokens(Emulation::VLLM), T <= 8) << "T = " << T;
  const DeviceIo io(x, k);
  std::vector<std::vector<float>> outs;
  const bool pdl = mxmoe::moe::cuda::pdl_enabled();
  for (int run = 0; run < 5; ++run) {
    ForceFlag p(mxmoe::moe::cuda::pdl_enabled(), run < 3 && pdl);
    io.poison();
    outs.push_back(io.run([&](cudaStream_t st) { dev.forward(io.x, T, Emulation::VLLM, io.out, io.ids, io.w, st); },
                          run == 2 || run == 4 ? 2 : 0));
  }
  for (size_t i = 0; i < outs[0].size(); ++i) ASSERT_TRUE(std::isfinite(outs[0][i])) << "unwritten output " << i;
  EXPECT_EQ(std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * 4), 0) << "two forwards differ";
  EXPECT_EQ(std::memcmp(outs[0].data(), outs[2].data(), outs[0].size() * 4), 0) << "graph replay differs";
  for (int run = 3; run < 5; ++run)
    EXPECT_EQ(std::memcmp(outs[0].data(), outs[size_t(run)].data(), outs[0].size() * 4), 0) << "without PDL, run " << run;
}

// T = 3: the fused kernel; T = 19: route + GEMV + finalize; T = 300: the 128 x 128 kernel.
INSTANTIATE_TEST_SUITE_P(EveryPath, CudaMoeDeviceGraphs, ::testing::Values(int64_t(3), int64_t(19), int64_t(300)));

TEST(CudaMoeDevice, AutoPicksCudaAndUnsupportedFallsBack) {
  SKIP_WITHOUT_DEVICE();
  const MoeLayer l = small_layer(parse_moe_scheme("w_mxfp4_a_mxfp4"), 1, false);
  const Tensor x = test::random_tensor(DType::BF16, {4, l.hidden}, 1);
  MoeOptions o;
  EXPECT_EQ(run_moe(l, x, o).backend.rfind("cuda (auto", 0), 0u);
  // A hidden size CUDA cannot tile: auto falls back to the CPU and says why; --backend cuda refuses.
  const MoeLayer odd = synthetic_layer({"odd", 48, 64, 4, 2}, parse_moe_scheme("w_nvfp4_a_nvfp4"), 1);
  const Tensor xo = test::random_tensor(DType::BF16, {4, odd.hidden}, 1);
  const MoeResult r = run_moe(odd, xo, o);
  EXPECT_NE(r.backend.find("multiples of 32"), std::string::npos) << r.backend;
  o.backend = Backend::Cuda;
  test::expect_error([&] { run_moe(odd, xo, o); }, "multiples of 32");
}

struct GoldenCase {
  const char* dir;
  const char* io;
};
class CudaMoeDeviceGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(CudaMoeDeviceGolden, MatchesEmulationReference) {
  SKIP_WITHOUT_DEVICE();
  const GoldenCase c = GetParam();
  MXMOE_SKIP_WITHOUT_SHARED(dir, std::string("golden/") + c.dir);
  MXMOE_SKIP_WITHOUT_SHARED(io_path, std::string("golden/") + c.io + "/io.safetensors");
  const MoeLayer layer = load_moe_layer(dir, 0);
  auto io = SafetensorsFile::open(io_path);
  const Tensor x = io.load("hidden_states");
  MoeOptions o;
  o.backend = Backend::Cuda;
  const MoeResult r = run_moe(layer, x, o);
  const Tensor ids = io.load("topk_ids");
  int64_t idm = 0;
  for (int64_t i = 0; i < ids.numel(); ++i) idm += r.topk_ids.ptr<int32_t>()[i] != ids.ptr<int32_t>()[i];
  EXPECT_EQ(idm, 0);
  auto rel = [&](const char* name) {
    const Tensor w = io.load(name);
    std::vector<float> wf(size_t(w.numel()));
    to_f32(w.data.data(), w.dtype, w.numel(), wf.data());
    return rel_l2(r.out.ptr<float>(), wf.data(), w.numel());
  };
  const double e_bf16 = rel("out_emulated_bf16"), e_f32 = rel("out_emulated_f32");
  std::printf("[ %s cuda ] rel L2 vs out_emulated_bf16 %.5f, vs out_emulated_f32 %.5f\n", c.dir, e_bf16, e_f32);
  EXPECT_LE(std::min(e_bf16, e_f32), 0.04);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, CudaMoeDeviceGolden,
                         ::testing::Values(GoldenCase{"moe_nvfp4", "moe_nvfp4"}, GoldenCase{"moe_nvfp4_ct", "moe_nvfp4"},
                                           GoldenCase{"moe_mxfp4_quark", "moe_mxfp4_quark"}),
                         [](const auto& info) { return std::string(info.param.dir); });

// Host-only checks (run everywhere): what the CUDA backend declares unsupported.
TEST(CudaMoeHost, UnsupportedLayersAreNamed) {
  MoeLayer l = small_layer(parse_moe_scheme("w_nvfp4_a_nvfp4"), 1, false);
  EXPECT_TRUE(cuda_moe_unsupported(l, Emulation::VLLM).empty());
  l.router.top_k = 33;
  EXPECT_NE(cuda_moe_unsupported(l, Emulation::VLLM).find("top_k 33"), std::string::npos);
  const MoeLayer odd = synthetic_layer({"odd", 48, 64, 4, 2}, parse_moe_scheme("w_nvfp4_a_nvfp4"), 1);
  EXPECT_NE(cuda_moe_unsupported(odd, Emulation::Exact).find("multiples of 32"), std::string::npos);
}

}  // namespace
