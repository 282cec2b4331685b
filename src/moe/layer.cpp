// MoE forward pass: route -> prepare -> experts -> finalize, plus layer validation and builders.
#include "mxmoe/moe/layer.hpp"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "moe/experts.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/moe/permute.hpp"
#ifdef MXMOE_HAVE_CUDA
#include "mxmoe/moe/cuda_moe.hpp"
#endif

namespace mxmoe::moe {

Backend parse_backend(std::string_view name) {
  if (name == "auto") return Backend::Auto;
  if (name == "ref") return Backend::Ref;
  if (name == "cpu") return Backend::Cpu;
  if (name == "cuda") return Backend::Cuda;
  MXMOE_THROW("unknown backend '{}' (expected auto, cpu, ref or cuda)", name);
}

void MoeLayer::validate() const {
  MXMOE_CHECK(scheme, "MoE layer has no scheme");
  MXMOE_CHECK(hidden > 0 && inter > 0 && num_experts > 0, "MoE layer sizes must be positive (H {}, I {}, E {})",
              hidden, inter, num_experts);
  MXMOE_CHECK(int(w13.size()) == num_experts && int(w2.size()) == num_experts,
              "MoE layer has {} w13 and {} w2 projections for {} experts", w13.size(), w2.size(), num_experts);
  MXMOE_CHECK(gate.shape == (std::vector<int64_t>{num_experts, hidden}), "router weight has shape {}, expected [{}, {}]",
              shape_str(gate.shape), num_experts, hidden);
  for (int e = 0; e < num_experts; ++e) {
    for (auto [w, name, o, i] : {std::tuple{&w13[size_t(e)], "w13", 2 * inter, hidden},
                                 std::tuple{&w2[size_t(e)], "w2", hidden, inter}}) {
      MXMOE_CHECK(bool(w->packed) == scheme->weight_quantized,
                  "expert {} {}: storage ({}) does not match scheme {}", e, name, w->packed ? "packed" : "dense",
                  scheme->name);
      MXMOE_CHECK(w->out_features() == o && w->in_features() == i, "expert {} {}: shape [{}, {}], expected [{}, {}]",
                  e, name, w->out_features(), w->in_features(), o, i);
      if (w->packed)
        MXMOE_CHECK(w->packed->params.scheme == scheme->weight, "expert {} {}: packed as {}, scheme {} wants {}", e,
                    name, traits(w->packed->params.scheme).name, scheme->name, traits(scheme->weight).name);
    }
  }
  if (!b13.data.empty())
    MXMOE_CHECK(b13.shape == (std::vector<int64_t>{num_experts, 2 * inter}) && b13.dtype == DType::F32,
                "w13 bias has shape {}, expected F32 [{}, {}]", shape_str(b13.shape), num_experts, 2 * inter);
  if (!b2.data.empty())
    MXMOE_CHECK(b2.shape == (std::vector<int64_t>{num_experts, hidden}) && b2.dtype == DType::F32,
                "w2 bias has shape {}, expected F32 [{}, {}]", shape_str(b2.shape), num_experts, hidden);
  MXMOE_CHECK(shared_w13.size() == shared_w2.size() && shared_w13.size() <= 1,
              "shared experts: {} w13 and {} w2 projections (expected none or one of each)", shared_w13.size(),
              shared_w2.size());
  if (!shared_w13.empty()) {
    const ExpertLinear &a = shared_w13[0], &b = shared_w2[0];
    MXMOE_CHECK(a.out_features() == 2 * shared_inter && a.in_features() == hidden && b.out_features() == hidden &&
                    b.in_features() == shared_inter && bool(a.packed) == scheme->weight_quantized &&
                    bool(b.packed) == scheme->weight_quantized,
                "shared experts: shapes [{}, {}] / [{}, {}] or storage do not match H {}, shared I {}, scheme {}",
                a.out_features(), a.in_features(), b.out_features(), b.in_features(), hidden, shared_inter,
                scheme->name);
  }
  MXMOE_CHECK(router.num_experts == num_experts, "router is configured for {} experts, the layer has {}",
              router.num_experts, num_experts);
  moe::validate(router);
}

namespace {

// Which implementation runs the experts, and why (`why` is reported in MoeResult::backend). nullptr
// means the CUDA layer (src/moe/cuda), which runs the whole pipeline on the GPU.
const ExpertsBackend* pick_backend(const MoeLayer& l, const MoeOptions& o, std::string& why) {
  switch (o.backend) {
    case Backend::Ref: why = "ref (requested)"; return &ref_experts();
    case Backend::Cpu: why = "cpu (requested)"; return &cpu_experts();
    case Backend::Cuda:
#ifdef MXMOE_HAVE_CUDA
      why = "cuda (requested)";
      return nullptr;
#else
      MXMOE_THROW("backend cuda: this build has no CUDA backend (nvcc was not found; available: cpu, ref)");
#endif
    case Backend::Auto: break;
  }
  std::string cuda_why = "this build has no CUDA backend";
#ifdef MXMOE_HAVE_CUDA
  if (cuda_moe_available(l, o, &cuda_why)) {
    why = "cuda (auto: a CUDA device is usable and supports this layer)";
    return nullptr;
  }
#endif
  if (auto r = cpu_experts().unsupported(l, o.emulation); !r.empty())
    MXMOE_THROW("no backend supports this layer: cuda: {}; cpu: {}", cuda_why, r);
  why = "cpu (auto: cuda not used: " + cuda_why + "; cpu supports every scheme and mode)";
  return &cpu_experts();
}

Tensor router_logits(const MoeLayer& l, const float* x, int64_t T) {
  const int64_t E = l.num_experts, H = l.hidden;
  // Loaders and builders keep the router in float32 (exact for bf16 checkpoints); convert otherwise.
  detail::Floats converted;
  const float* g = l.gate.ptr<float>();
  if (l.gate.dtype != DType::F32) {
    converted.resize(size_t(E * H));
    to_f32(l.gate.data.data(), l.gate.dtype, E * H, converted.data());
    g = converted.data();
  }
  Tensor logits = Tensor::uninitialized(DType::F32, {T, E});
  if (T <= 2) {  // decode: sgemm would pack the whole E x H gate on every call (~4% of a T = 1 layer)
    for (int64_t t = 0; t < T; ++t)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(E), int(H), 1.0f, g, int(H), x + t * H, 1, 0.0f,
                  logits.ptr<float>() + t * E, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(E), int(H), 1.0f, x, int(H), g, int(H), 0.0f,
                logits.ptr<float>(), int(E));
  }
  float* lg = logits.ptr<float>();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      // Logits stay float32 (products of bf16 values are exact; the golden references route on them).
      lg[t * E + e] += l.gate_bias.data.empty() ? 0.0f : load_as_f32(l.gate_bias.data.data(), l.gate_bias.dtype, e);
    }
  return logits;
}

}  // namespace

MoeResult run_moe(const MoeLayer& l, const Tensor& hs, const MoeOptions& o) {
  l.validate();
  MXMOE_CHECK(hs.dtype == DType::BF16 || hs.dtype == DType::F32 || hs.dtype == DType::F16,
              "hidden_states: dtype {} not supported (expected BF16, F16 or F32)", dtype_name(hs.dtype));
  MXMOE_CHECK(hs.shape.size() == 2 && hs.shape[1] == l.hidden, "hidden_states: shape {}, expected [T, {}]",
              shape_str(hs.shape), l.hidden);
  const int64_t T = hs.shape[0], H = l.hidden;
  const int k = l.router.top_k, E = l.num_experts;
  MoeResult r;
  const ExpertsBackend* be = pick_backend(l, o, r.backend);

  detail::Floats x(size_t(T * H));
  to_f32(hs.data.data(), hs.dtype, T * H, x.data());
  for (int64_t i = 0; i < T * H; ++i)
    MXMOE_CHECK(std::isfinite(x[size_t(i)]), "hidden_states: non-finite value at token {}, column {}", i / H, i % H);
#ifdef MXMOE_HAVE_CUDA
  if (!be) {
    run_moe_cuda(l, hs, o, r);
    return r;
  }
#endif

  Tensor logits = router_logits(l, x.data(), T);
  r.topk_ids = Tensor(DType::I32, {T, k});
  r.topk_weights = Tensor(DType::F32, {T, k});
  route(l.router, logits.ptr<float>(), T, l.correction_bias.data.empty() ? nullptr : l.correction_bias.ptr<float>(),
        r.topk_ids.ptr<int32_t>(), r.topk_weights.ptr<float>());

  if (!o.expert_map.empty())
    MXMOE_CHECK(int(o.expert_map.size()) == E, "expert_map has {} entries for {} experts", o.expert_map.size(), E);
  const ExpertGroups g = group_by_expert(r.topk_ids.ptr<int32_t>(), T, k, E, o.expert_map.empty() ? nullptr : o.expert_map.data());
  std::vector<int> local_to_global(size_t(g.num_local_experts));
  for (int e = 0; e < E; ++e) {
    const int le = o.expert_map.empty() ? e : o.expert_map[size_t(e)];
    if (le >= 0) local_to_global[size_t(le)] = e;
  }
  // Shared experts see every token, unweighted (before any router weight is applied to the input).
  detail::Floats shared;
  if (!l.shared_w13.empty()) {
    const std::vector<int32_t> all_to_0(size_t(T), 0);
    const ExpertGroups sg = group_by_expert(all_to_0.data(), T, 1, 1, nullptr);
    shared.resize(size_t(T * H));
    run_experts(*be, l, shared_experts(l), o.emulation, sg, {0}, x.data(), shared.data(), r.warnings);
  }
  if (o.apply_router_weight_on_input) apply_router_weight_on_input(x.data(), H, T, H, r.topk_weights.ptr<float>(), k);

  detail::Floats xp(size_t(g.num_rows() * H)), yp(size_t(g.num_rows() * H));
  gather_rows(x.data(), H, H, g, xp.data());
  run_experts(*be, l, routed_experts(l), o.emulation, g, local_to_global, xp.data(), yp.data(), r.warnings);

  r.out = Tensor::uninitialized(DType::F32, {T, H});
  float* out = r.out.ptr<float>();
  finalize(g, yp.data(), H, r.topk_weights.ptr<float>(), T, k, o.apply_router_weight_on_input, out);
  // vllm: the layer returns the activation dtype, and adds the (bf16) shared output to the bf16 routed one.
  const bool vllm = o.emulation == Emulation::VLLM;
  for (int64_t i = 0; i < T * H; ++i) {
    float v = vllm ? detail::round_bf16(out[i]) : out[i];
    if (!shared.empty()) v += shared[size_t(i)];
    out[i] = vllm ? detail::round_bf16(v) : v;
  }
  return r;
}

double touched_weight_bytes(const MoeLayer& l, const Tensor& topk_ids) {
  auto bytes = [](const ExpertLinear& w) {
    return w.packed ? double(w.packed->codes.nbytes() + w.packed->scales.nbytes()) : double(w.dense.nbytes());
  };
  std::vector<bool> used(size_t(l.num_experts));
  for (int64_t i = 0; i < topk_ids.numel(); ++i) used[size_t(topk_ids.ptr<int32_t>()[i])] = true;
  double b = 0;
  for (int e = 0; e < l.num_experts; ++e)
    if (used[size_t(e)]) b += bytes(l.w13[size_t(e)]) + bytes(l.w2[size_t(e)]);
  for (size_t i = 0; i < l.shared_w13.size(); ++i) b += bytes(l.shared_w13[i]) + bytes(l.shared_w2[i]);
  return b;
}

void pack_expert_weights(MoeLayer& l) {
  std::vector<Tensor*> ts;
  auto add = [&](ExpertLinear& w) {
    if (w.packed) ts.push_back(&w.packed->codes), ts.push_back(&w.packed->scales);
    else ts.push_back(&w.dense);
  };
  for (size_t e = 0; e < l.w13.size() || e < l.w2.size(); ++e) {
    if (e < l.w13.size()) add(l.w13[e]);
    if (e < l.w2.size()) add(l.w2[e]);
  }
  for (size_t i = 0; i < l.shared_w13.size() || i < l.shared_w2.size(); ++i) {
    if (i < l.shared_w13.size()) add(l.shared_w13[i]);
    if (i < l.shared_w2.size()) add(l.shared_w2[i]);
  }
  const std::shared_ptr<HugeArena> first = ts.empty() ? nullptr : ts[0]->data.get_allocator().arena;
  if (first && std::all_of(ts.begin(), ts.end(), [&](const Tensor* t) { return t->data.get_allocator().arena == first; }))
    return;  // packed already (quantize_layer inside the loader)
  size_t bytes = 0;
  for (const Tensor* t : ts) bytes += HugeArena::footprint(t->data.size());
  if (bytes == 0) return;
  const auto arena = std::make_shared<HugeArena>(bytes);
  for (Tensor* t : ts) t->move_to(arena);
}

MoeLayer quantize_layer(const MoeLayer& dense, const MoeScheme& scheme, ScaleRule rule) {
  MoeLayer q = dense;
  q.scheme = &scheme;
  if (scheme.act == ActQuant::Block) q.act_rule = rule;
  if (!scheme.weight_quantized) return q;
  auto conv = [&](std::vector<ExpertLinear>& ws, const char* which) {
    for (size_t e = 0; e < ws.size(); ++e) {
      MXMOE_CHECK(!ws[e].packed, "expert {} {} is already quantized", e, which);
      QuantParams p{scheme.weight, rule, Rounding::RNE, nvfp4_default_global_scale(tensor_amax(ws[e].dense))};
      ws[e].packed = quantize(ws[e].dense, p, fmt::format("expert {} {}", e, which));
      ws[e].dense = Tensor();
    }
  };
  conv(q.w13, "w13");
  conv(q.w2, "w2");
  conv(q.shared_w13, "shared w13");
  conv(q.shared_w2, "shared w2");
  pack_expert_weights(q);
  return q;
}

}  // namespace mxmoe::moe
