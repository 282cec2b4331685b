// MoE commands: moe (one layer of a checkpoint), bench-moe (synthetic shapes), demo (the README's main job).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "cli/common.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/layout.hpp"
#include "mxmoe/moe/layer.hpp"
#include "mxmoe/moe/loader.hpp"
#include "mxmoe/roofline.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe::cli {


namespace {

using namespace mxmoe::moe;
using Clock = std::chrono::steady_clock;

struct MoeArgs {
  std::string model, in, out, emulation = "vllm", backend = "auto", scheme, rule = "even";
  int layer = 0;
};

void run_moe_cmd(const MoeArgs& a) {
  LoadOptions lo;
  if (!a.scheme.empty()) lo.scheme = &parse_moe_scheme(a.scheme);
  lo.rule = parse_scale_rule(a.rule);
  fmt::print("model   {} ({})\n", a.model, describe_checkpoint(a.model));
  const MoeLayer l = load_moe_layer(a.model, a.layer, lo);
  auto in = SafetensorsFile::open(a.in);
  MXMOE_CHECK(in.contains("hidden_states"), "{}: no tensor 'hidden_states' (expected [T, {}] BF16 or F32)", a.in, l.hidden);
  MoeOptions o;
  o.emulation = parse_emulation(a.emulation);
  o.backend = parse_backend(a.backend);
  const Tensor x = in.load("hidden_states");
  const auto t0 = Clock::now();
  const MoeResult r = run_moe(l, x, o);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  for (const auto& w : r.warnings) fmt::print(stderr, "mxmoe: warning: {}\n", w);
  write_safetensors(a.out, {{"hidden_states", r.out}, {"topk_ids", r.topk_ids}, {"topk_weights", r.topk_weights}});
  fmt::print("layer   {} scheme {}, emulation {}, backend {}\n", a.layer, l.scheme->name, a.emulation, r.backend);
  fmt::print("tokens  {} -> {} ({:.2f} ms)\n", x.shape[0], a.out, ms);
}


struct BenchArgs {
  std::string shape = "qwen3-30b-a3b", scheme = "w_nvfp4_a_nvfp4", emulation = "exact", backend = "cpu";
  std::vector<int64_t> tokens{1, 8, 64, 512};
  int iters = 10;
};

// Times the host backends only: run_moe on CUDA uploads the layer on every call, which would time the
// upload against the host's bandwidth. The device-resident layer has its own benchmark.
void bench_moe_cmd(const BenchArgs& a) {
  const Backend backend = a.backend == "auto" ? Backend::Cpu : parse_backend(a.backend);
  MXMOE_CHECK(backend != Backend::Cuda,
              "bench-moe times the CPU backends (cpu, ref); for the GPU, bench_moe_cuda (built with the CUDA "
              "backend; scripts/device/bench.sh runs it beside vLLM's recipe) times the device-resident layer");
  MXMOE_CHECK(a.iters > 0, "--iters must be positive, got {}", a.iters);
  const SyntheticShape s = synthetic_shape(a.shape);
  const MoeScheme& sch = parse_moe_scheme(a.scheme);
  fmt::print("building synthetic {} layer (H {}, I {}, {} experts, top-{}) in {} ...\n", s.name, s.hidden, s.inter,
             s.num_experts, s.top_k, sch.name);
  std::fflush(stdout);
  const MoeLayer l = synthetic_layer(s, sch, 1);
  const double bw = measure_copy_bandwidth();
  fmt::print("memory bandwidth (copy, read+write, {} threads): {:.1f} GB/s\n\n", omp_get_max_threads(), bw / 1e9);
  MoeOptions o;
  o.emulation = parse_emulation(a.emulation);
  o.backend = backend;
  Table t({"tokens", "us/layer", "touched MB", "GB/s", "GFLOP/s", "floor us", "x floor"}, {true, true, true, true, true, true, true});
  std::string r_backend = a.backend == "auto" ? "cpu" : a.backend;  // then what run_moe reports
  for (int64_t T : a.tokens) {
    MXMOE_CHECK(T > 0, "--tokens: counts must be positive, got {}", T);
    std::vector<double> us;
    MoeResult r;
    for (int it = 0; it < a.iters + 1; ++it) {
      Tensor x = synthetic_tokens(T, s.hidden, uint32_t(it));
      const auto t0 = Clock::now();
      r = run_moe(l, x, o);
      if (it > 0) us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    r_backend = r.backend;
    const double med = us[us.size() / 2], bytes = touched_weight_bytes(l, r.topk_ids);
    const double flops = 2.0 * double(T) * s.top_k * 3.0 * double(s.hidden) * double(s.inter);
    const double floor_us = bytes / bw * 1e6;
    t.add({fmt::format("{}", T), fmt::format("{:.0f}", med), fmt::format("{:.1f}", bytes / 1e6),
           fmt::format("{:.2f}", bytes / med / 1e3), fmt::format("{:.1f}", flops / med / 1e3),
           fmt::format("{:.0f}", floor_us), fmt::format("{:.2f}", med / floor_us)});
  }
  fmt::print("{} {} emulation {}, backend {}, median of {} runs\n", s.name, sch.name, a.emulation, r_backend, a.iters);
  t.print();
}

}  // namespace

void add_moe_commands(CLI::App& app) {
  static MoeArgs m;
  auto* moe = app.add_subcommand("moe", "Run one MoE layer of a checkpoint on hidden_states from a safetensors file");
  moe->add_option("--model", m.model, "Hugging Face checkpoint directory (config.json + safetensors)")->required();
  moe->add_option("--layer", m.layer, "Decoder layer index")->required();
  moe->add_option("--emulation", m.emulation, "vllm (PR #35737 recipe) or exact (block-scaled tensor-core semantics)");
  moe->add_option("--backend", m.backend, "auto, cpu, ref (scalar reference) or cuda");
  moe->add_option("--scheme", m.scheme, "Quantize an unquantized (bf16) checkpoint on load into this MoE scheme");
  moe->add_option("--scale-rule", m.rule, "MX scale rule for --scheme (default even, as vLLM/Quark)");
  moe->add_option("IN", m.in, "safetensors with hidden_states [T, H] (BF16 or F32)")->required();
  moe->add_option("OUT", m.out, "output safetensors: hidden_states F32, topk_ids, topk_weights")->required();
  moe->callback([] { run_moe_cmd(m); });

  static BenchArgs b;
  auto* bm = app.add_subcommand("bench-moe", "Time one synthetic MoE layer against the memory-bandwidth floor");
  bm->add_option("--shape", b.shape, "qwen3-30b-a3b, gpt-oss-20b, mixtral-8x7b, deepseek-v3, tiny");
  bm->add_option("--scheme", b.scheme, "MoE scheme (w_nvfp4_a_nvfp4, w_mxfp4_a_mxfp4, bf16, ...)");
  bm->add_option("--tokens", b.tokens, "Token counts")->delimiter(',');
  bm->add_option("--emulation", b.emulation, "vllm or exact");
  bm->add_option("--backend", b.backend, "cpu (default; auto means cpu here) or ref; the GPU: bench_moe_cuda");
  bm->add_option("--iters", b.iters, "Timed runs per token count (median reported)");
  bm->callback([] { bench_moe_cmd(b); });
}

}  // namespace mxmoe::cli
