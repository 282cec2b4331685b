// CudaMoeLayer: upload of a host MoeLayer and the forward pass on one stream (see cuda_moe.hpp).
#include "mxmoe/moe/cuda_moe.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "moe/cuda/fp4_weight_tiles.hpp"
#include "moe/cuda/moe_heuristics.hpp"
#include "moe/cuda/moe_kernels.hpp"
#include "mxmoe/cuda.hpp"
#include "mxmoe/error.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/moe/permute.hpp"

namespace mxmoe::moe {
namespace {

namespace k = mxmoe::moe::cuda;

// One device allocation (freed in the destructor).
struct DevMem {
  void* p = nullptr;
  size_t n = 0;
  DevMem() = default;
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  ~DevMem() {
    if (p) cudaFree(p);
  }
  void alloc(size_t bytes) {
    n = std::max<size_t>(bytes, 16);
    MXMOE_CUDA_CHECK(cudaMalloc(&p, n));
  }
  void upload(const void* src, size_t bytes) {
    alloc(bytes);
    if (bytes) MXMOE_CUDA_CHECK(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice));
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// The float32 gate as three bf16 terms [3][n] (hi, mid, lo) with hi + mid + lo == g exactly: each term
// truncates the remainder to bf16 (8 significand bits each, never rounding up to Inf). Non-finite gate
// values stay in hi, so they reach the logits as before.
std::vector<uint16_t> split_bf16x3(const std::vector<float>& g) {
  const size_t n = g.size();
  std::vector<uint16_t> out(3 * n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(g[i])) {
      out[i] = f32_to_bf16(g[i]);
      continue;
    }
    float r = g[i];
    for (size_t t = 0; t < 3; ++t) {
      const uint16_t b = uint16_t(f32_bits(r) >> 16);
      out[t * n + i] = b;
      r -= bf16_to_f32(b);
    }
  }
  return out;
}

k::WKind weight_kind(const MoeScheme& s) {
  if (!s.weight_quantized) return k::WKind::BF16;
  switch (s.weight) {
    case Scheme::NVFP4: return k::WKind::NVFP4;
    case Scheme::MXFP4: return k::WKind::MXFP4;
    case Scheme::MXFP6_E2M3: return k::WKind::MXFP6_E2M3;
    case Scheme::MXFP6_E3M2: return k::WKind::MXFP6_E3M2;
    case Scheme::MXFP8_E4M3: return k::WKind::MXFP8_E4M3;
    default: MXMOE_THROW("CUDA MoE: weight scheme {} is not supported", traits(s.weight).name);
  }
}

k::AQ act_kind(const MoeScheme& s) {
  if (s.act == ActQuant::None) return k::AQ::None;
  if (s.act == ActQuant::FP8Tensor) return k::AQ::FP8;
  switch (s.act_scheme) {
    case Scheme::NVFP4: return k::AQ::NVFP4;
    case Scheme::MXFP4: return k::AQ::MXFP4;
    case Scheme::MXFP6_E2M3: return k::AQ::MXFP6_E2M3;
    case Scheme::MXFP6_E3M2: return k::AQ::MXFP6_E3M2;
    default: MXMOE_THROW("CUDA MoE: activation scheme {} is not supported", traits(s.act_scheme).name);
  }
}

// Expert weights of one projection kind (w13 or w2), all experts, on the device.
struct DevProj {
  DevMem codes, scales, gs, alpha_vllm, alpha_exact, bias, static_gs_e;
  int64_t N = 0, K = 0, row_bytes = 0;
  bool tiles = false;  // FP4 codes and scales in the m-tile layout (fp4_weight_tiles.hpp)
  float vllm_static_gs = 0.0f;  // 1 / max input_scale, or 0 (dynamic)
  bool static_every = false;     // every expert has an input_scale (exact mode's scales are all static)

  // mode: the kernels' row mode for this projection (wtiles::row_mode), which the m-tile layout follows.
  void upload(const std::vector<ExpertLinear>& ws, const Tensor& b, const MoeScheme& s, const char* which, int mode,
              std::vector<std::string>& warnings) {
    const size_t E = ws.size();
    N = ws[0].out_features(), K = ws[0].in_features();
    std::vector<float> wgs(E, 1.0f), av(E, 1.0f), ae(E, 1.0f), sgs(E, 0.0f);
    float lo = INFINITY, hi = 0;
    for (size_t e = 0; e < E; ++e) {
      lo = std::min(lo, ws[e].input_scale), hi = std::max(hi, ws[e].input_scale);
      sgs[e] = ws[e].input_scale > 0 ? 1.0f / ws[e].input_scale : 0.0f;
    }
    vllm_static_gs = hi > 0 ? 1.0f / hi : 0.0f;
    static_every = lo > 0;
    if (hi > 0 && lo != hi && s.act == ActQuant::Block && traits(s.act_scheme).tensor_scale)
      warnings.push_back(fmt::format("experts disagree on the {} input_scale (min {:g}, max {:g}); the vllm recipe "
                                     "uses the max for all experts",
                                     which, lo, hi));
    if (!s.weight_quantized) {
      row_bytes = K * 2;
      std::vector<uint8_t> host(E * size_t(N * K * 2));
      for (size_t e = 0; e < E; ++e) {
        const Tensor& d = ws[e].dense;
        MXMOE_CHECK(d.dtype == DType::BF16, "CUDA MoE: dense expert weights must be BF16 (got {})", dtype_name(d.dtype));
        std::memcpy(host.data() + e * size_t(N * K * 2), d.data.data(), size_t(N * K * 2));
      }
      codes.upload(host.data(), host.size());
      scales.alloc(16);
    } else {
      const auto& st = traits(s.weight);
      row_bytes = packed_row_bytes(s.weight, K);
      tiles = k::gemv_weights(weight_kind(s)) && k::weight_tiles_enabled();
      // Per expert: the row layout's bytes, or its m-tile blocks (fp4_weight_tiles.hpp).
      const int64_t nb = K / st.block, cb = tiles ? k::wtiles::expert_code_bytes(N, K) : N * row_bytes,
                    sbytes = tiles ? k::wtiles::expert_scale_bytes(N, K, st.block) : N * nb;
      std::vector<uint8_t> hc(E * size_t(cb)), hs(E * size_t(sbytes));
      for (size_t e = 0; e < E; ++e) {
        const QuantizedTensor& q = *ws[e].packed;
        uint8_t* dc = hc.data() + e * size_t(cb);
        uint8_t* ds = hs.data() + e * size_t(sbytes);
        if (tiles) k::wtiles::pack_expert(q.codes.data.data(), q.scales.data.data(), N, K, st.block, mode, dc, ds);
        else std::memcpy(dc, q.codes.data.data(), size_t(cb)), std::memcpy(ds, q.scales.data.data(), size_t(sbytes));
        const float g = q.params.global_scale;
        wgs[e] = g;
        if (st.tensor_scale) ae[e] = 1.0f / g;
      }
      codes.upload(hc.data(), hc.size());
      scales.upload(hs.data(), hs.size());
    }
    gs.upload(wgs.data(), wgs.size() * 4);
    alpha_vllm.upload(av.data(), av.size() * 4);
    alpha_exact.upload(ae.data(), ae.size() * 4);
    static_gs_e.upload(sgs.data(), sgs.size() * 4);
    if (!b.data.empty()) bias.upload(b.data.data(), b.data.size());
  }
};

}  // namespace

std::string cuda_moe_unsupported(const MoeLayer& l, Emulation) {
  const MoeScheme& s = *l.scheme;
  if (l.num_experts > 512) return fmt::format("{} experts (CUDA routes at most 512)", l.num_experts);
  if (l.router.top_k > 32) return fmt::format("top_k {} (CUDA supports at most 32)", l.router.top_k);
  if (l.hidden % 32 != 0 || l.inter % 32 != 0)
    return fmt::format("hidden {} and intermediate {} must be multiples of 32 on CUDA", l.hidden, l.inter);
  if (!l.shared_w13.empty() && l.shared_inter % 32 != 0)
    return fmt::format("shared experts' intermediate {} must be a multiple of 32 on CUDA", l.shared_inter);
  if (s.weight_quantized) {
    const Scheme w = s.weight;
    if (w != Scheme::NVFP4 && w != Scheme::MXFP4 && w != Scheme::MXFP6_E2M3 && w != Scheme::MXFP6_E3M2 &&
        w != Scheme::MXFP8_E4M3)
      return fmt::format("weight scheme {} is not supported on CUDA", traits(w).name);
  } else {
    for (const auto* ws : {&l.w13, &l.w2, &l.shared_w13, &l.shared_w2})
      for (const auto& w : *ws)
        if (w.dense.dtype != DType::BF16) return "dense expert weights must be BF16 on CUDA";
  }
  if (s.act == ActQuant::Block && s.act_scheme != Scheme::NVFP4 && s.act_scheme != Scheme::MXFP4 &&
      s.act_scheme != Scheme::MXFP6_E2M3 && s.act_scheme != Scheme::MXFP6_E3M2)
    return fmt::format("activation scheme {} is not supported on CUDA", traits(s.act_scheme).name);
  return {};
}

bool cuda_moe_available(const MoeLayer& l, const MoeOptions& o, std::string* why) {
  auto no = [&](std::string r) {
    if (why) *why = std::move(r);
    return false;
  };
  if (auto r = cuda_moe_unsupported(l, o.emulation); !r.empty()) return no(r);
  std::string w;
  if (!mxmoe::cuda::cuda_available(&w)) return no("no usable CUDA device (" + w + ")");
  return true;
}

struct CudaMoeLayer::Impl {
  int64_t H = 0, I = 0, max_T = 0;
  int E = 0, topk = 0, sms = 132;
  const MoeScheme* scheme = nullptr;
  ScaleRule act_rule = ScaleRule::Even;
  Rounding act_rounding = Rounding::RNE;
  RouterConfig router{};
  ActivationConfig activation{Activation::SiLU};
  k::WKind wk = k::WKind::NVFP4;
  k::AQ aq = k::AQ::None;
  DevProj w13, w2;
  DevMem gate, gate3, gate_bias, corr_bias;
  int gate_terms = 3;  // 1 when the gate is bf16 (gate3's mid and lo planes all zero)
  bool shared = false;  // shared experts: s13 / s2, output ys [T, H]
  DevProj s13, s2;
  // Options of run_moe (MoeOptions): expert_map [E] (empty: all local), the router weight on the input
  // (xs: x * w float32 [T, H]; xs3: its three bf16 planes for a16 schemes; ones: the finalize weights).
  DevMem expert_map;
  bool on_input = false;
  // workspace
  DevMem logits, rowamax, perm_token, row_expert, slot_to_perm, tiles, a1, a2, a2q, y, ys, shared_tiles, xs, xs3, ones,
      scratch;
  int64_t max_words = 0, zero_row = 0;  // zero_row: a row of y kept at zero (slots of other ranks' experts)
  int64_t fused_T = 0;  // the fused kernel runs for T <= fused_T with fused_grid CTAs (0: never)
  int fused_grid = 0;
  std::vector<std::string> warnings;
  size_t bytes = 0;

  // scratch layout (zeroed each forward): [0] amax_x, [1] amax2, [2] num_tiles, [3] amax of the routed
  // rows, [4] shared num_tiles, [5] shared amax2, [6] shared amax2_e, [7] pad, [8, 9] routed rows (int64),
  // [10, 11] pad, then counts[E], amax1_e[E], amax2_e[E], bitmap[E * words].
  static constexpr int kHead = 12;
  float* amax_x() const { return scratch.as<float>(); }
  float* amax2() const { return scratch.as<float>() + 1; }
  int32_t* num_tiles() const { return scratch.as<int32_t>() + 2; }
  float* amax_routed() const { return scratch.as<float>() + 3; }
  int32_t* shared_num_tiles() const { return scratch.as<int32_t>() + 4; }
  float* shared_amax2() const { return scratch.as<float>() + 5; }
  float* shared_amax2_e() const { return scratch.as<float>() + 6; }
  int64_t* rows_routed() const { return reinterpret_cast<int64_t*>(scratch.as<int32_t>() + 8); }
  int32_t* counts() const { return scratch.as<int32_t>() + kHead; }
  float* amax1_e() const { return scratch.as<float>() + kHead + E; }
  float* amax2_e() const { return scratch.as<float>() + kHead + 2 * E; }
  uint32_t* bitmap() const { return scratch.as<uint32_t>() + kHead + 3 * E; }
  // y as bf16 rows (GEMM2's y16), placed so that its zero row is the first half of y's float32 zero row:
  // both views read zeros there whichever mode ran before.
  uint16_t* y16() const { return reinterpret_cast<uint16_t*>(y.as<uint8_t>() + 2 * zero_row * H); }
};

namespace {

using Impl = CudaMoeLayer::Impl;

// The host checks of run_moe and route() that the device path would otherwise skip, with their messages.
void check_like_cpu(const MoeLayer& l, const MoeOptions& o) {
  const int E = l.num_experts;
  if (!l.correction_bias.data.empty()) {
    MXMOE_CHECK(l.router.kind == RouterKind::SigmoidGroupedTopK,
                "route: correction_bias is only used by sigmoid_grouped_topk, not {}", router_kind_name(l.router.kind));
    MXMOE_CHECK(l.correction_bias.numel() == E, "correction_bias has {} entries for {} experts",
                l.correction_bias.numel(), E);
  }
  if (!o.expert_map.empty()) {
    MXMOE_CHECK(int(o.expert_map.size()) == E, "expert_map has {} entries for {} experts", o.expert_map.size(), E);
    group_by_expert(nullptr, 0, 1, E, o.expert_map.data());  // validates the map (local ids 0..L-1, once each)
  }
  if (o.apply_router_weight_on_input)
    MXMOE_CHECK(l.router.top_k == 1, "apply_router_weight_on_input: only supported for top_k == 1, got top_k={}",
                l.router.top_k);
}

void init_layer(Impl& m, const MoeLayer& l, int64_t max_tokens, const MoeOptions& o) {
  l.validate();
  if (auto r = cuda_moe_unsupported(l, Emulation::VLLM); !r.empty()) MXMOE_THROW("CUDA MoE: {}", r);
  check_like_cpu(l, o);
  MXMOE_CHECK(max_tokens >= 0, "CUDA MoE: max_tokens must be >= 0 (got {})", max_tokens);
  std::string why;
  MXMOE_CHECK(mxmoe::cuda::cuda_available(&why), "CUDA MoE: no usable CUDA device ({})", why);
  m.H = l.hidden, m.I = l.inter, m.E = l.num_experts, m.topk = l.router.top_k, m.max_T = max_tokens;
  m.scheme = l.scheme, m.act_rule = l.act_rule, m.act_rounding = l.act_rounding, m.router = l.router;
  m.activation = l.activation;
  m.wk = weight_kind(*l.scheme), m.aq = act_kind(*l.scheme);
  {
    int dev = 0;
    MXMOE_CUDA_CHECK(cudaGetDevice(&dev));
    MXMOE_CUDA_CHECK(cudaDeviceGetAttribute(&m.sms, cudaDevAttrMultiProcessorCount, dev));
  }
  const int gated_mode = k::wtiles::row_mode(true, int(m.activation.act));
  m.w13.upload(l.w13, l.b13, *l.scheme, "w13", gated_mode, m.warnings);
  m.w2.upload(l.w2, l.b2, *l.scheme, "w2", 0, m.warnings);
  m.shared = !l.shared_w13.empty();
  if (m.shared) {
    m.s13.upload(l.shared_w13, Tensor(), *l.scheme, "shared w13", gated_mode, m.warnings);
    m.s2.upload(l.shared_w2, Tensor(), *l.scheme, "shared w2", 0, m.warnings);
  }
  std::vector<float> g(size_t(m.E * m.H));
  to_f32(l.gate.data.data(), l.gate.dtype, m.E * m.H, g.data());
  m.gate.upload(g.data(), g.size() * 4);
  const std::vector<uint16_t> g3 = split_bf16x3(g);
  m.gate3.upload(g3.data(), g3.size() * 2);
  m.gate_terms = std::all_of(g3.begin() + std::ptrdiff_t(g.size()), g3.end(), [](uint16_t b) { return b == 0; }) ? 1 : 3;
  auto upload_f32 = [&](DevMem& d, const Tensor& t) {
    std::vector<float> v(size_t(m.E));
    to_f32(t.data.data(), t.dtype, m.E, v.data());
    d.upload(v.data(), v.size() * 4);
    return v;
  };
  if (!l.gate_bias.data.empty()) upload_f32(m.gate_bias, l.gate_bias);
  if (!l.correction_bias.data.empty()) {
    const std::vector<float> cb = upload_f32(m.corr_bias, l.correction_bias);
    for (int e = 0; e < m.E; ++e)
      MXMOE_CHECK(!std::isnan(cb[size_t(e)]), "route: NaN correction_bias for expert {}", e);
  }
  if (!o.expert_map.empty()) m.expert_map.upload(o.expert_map.data(), o.expert_map.size() * 4);
  m.on_input = o.apply_router_weight_on_input;

  const int64_t T = std::max<int64_t>(max_tokens, 1), P = T * m.topk;
  const int64_t SI = m.shared ? l.shared_inter : 0, a2_elems = std::max(P * m.I, T * SI);
  m.max_words = (T + 31) / 32;
  m.logits.alloc(size_t(T * m.E) * 4);
  m.rowamax.alloc(size_t(T) * 4);
  m.perm_token.alloc(size_t(P) * 4);
  m.row_expert.alloc(size_t(P) * 4);
  m.slot_to_perm.alloc(size_t(P) * 4);
  m.tiles.alloc(size_t(P + m.E) * 16);
  m.a1.alloc(size_t(P * m.H) * 2);
  m.a2.alloc(size_t(a2_elems) * 4);
  m.a2q.alloc(size_t(a2_elems) * 2 * (m.aq == k::AQ::None ? 3 : 1));  // a16: exact mode's three bf16 planes
  m.zero_row = P;
  m.y.alloc(size_t((P + 1) * m.H) * 4);
  MXMOE_CUDA_CHECK(cudaMemset(m.y.as<float>() + m.zero_row * m.H, 0, size_t(m.H) * 4));
  if (m.shared) {
    m.ys.alloc(size_t(T * m.H) * 4);
    m.shared_tiles.alloc(size_t(T / 8 + 1) * 16);
  }
  if (m.on_input) {
    m.xs.alloc(size_t(T * m.H) * 4);
    if (m.aq == k::AQ::None) m.xs3.alloc(size_t(3 * T * m.H) * 2);
    const std::vector<float> ones(size_t(T), 1.0f);  // k == 1
    m.ones.upload(ones.data(), ones.size() * 4);
  }
  m.scratch.alloc(size_t(Impl::kHead + 3 * m.E + m.E * m.max_words) * 4);
  // The fused kernel runs the plain layer only (its router: softmax_topk, topk_then_softmax).
  const bool fused_layer =
      !m.shared && m.router.kind != RouterKind::SigmoidGroupedTopK && o.expert_map.empty() && !m.on_input;
  m.fused_T = fused_layer ? std::min<int64_t>(k::fused_max_tokens(m.topk), max_tokens) : 0;
  const int fsmem = m.fused_T > 0 ? k::fused_smem_bytes(m.fused_T, m.E, m.H, m.I) : 0;
  if (m.fused_T > 0 && k::gemv_weights(m.wk) && fsmem <= k::kFusedMaxSmem)
    m.fused_grid = k::fused_max_grid(m.wk, m.aq, m.E, fsmem);
  for (const DevMem* d : {&m.w13.codes, &m.w13.scales, &m.w2.codes, &m.w2.scales, &m.s13.codes, &m.s13.scales,
                          &m.s2.codes, &m.s2.scales, &m.gate, &m.gate3, &m.logits, &m.a1, &m.a2, &m.a2q, &m.y, &m.ys,
                          &m.xs, &m.xs3, &m.tiles, &m.scratch})
    m.bytes += d->n;
}

// The GEMM settings every forward shares (weights, activation scales, epilogues) in one emulation mode.
struct GemmSetup {
  const Impl& m;
  bool vllm;

  bool nv() const { return m.aq == k::AQ::NVFP4; }
  // The encode scale of a GEMM input (ActScale) from the amax of all its rows / of each expert's rows.
  k::ActScale scales(const DevProj& w, const float* amax_all, const float* amax_e) const {
    k::ActScale s;
    if (nv() && vllm) {
      s.static_gs = w.vllm_static_gs;
      s.amax_all = amax_all;
    } else if (nv()) {
      s.static_gs_e = w.static_gs_e.as<float>();
      s.amax_e = amax_e;
    } else {
      s.amax_all = amax_all;  // FP8
    }
    return s;
  }
  void weights(k::GemmArgs& g, const DevProj& w) const {
    g.wk = m.wk, g.codes = w.codes.as<uint8_t>(), g.row_bytes = w.row_bytes, g.scales = w.scales.as<uint8_t>();
    g.w_tiles = w.tiles;
    g.w_gs = w.gs.as<float>();
    g.w_alpha = vllm ? w.alpha_vllm.as<float>() : w.alpha_exact.as<float>();
    g.bias = w.bias.p ? w.bias.as<float>() : nullptr;
    g.N = int(w.N), g.K = int(w.K), g.vllm = vllm, g.l2_ahead = k::l2_ahead_chunks();
  }
  // Accumulator factors of the activations (exact mode).
  void act_side(k::GemmArgs& g, const k::ActScale& sc) const {
    if (!vllm && nv()) g.a_alpha_kind = 1, g.a_sc = sc;
    if (!vllm && m.aq == k::AQ::FP8) g.a_alpha_kind = 2, g.a_sc = sc;
  }
  // GEMM2's input needs no amax of GEMM1's output: bf16 (vllm), MX, or NVFP4 with static scales.
  bool gemm2_input_static(const DevProj& w2) const {
    if (m.aq == k::AQ::None) return vllm;
    if (m.aq == k::AQ::FP8) return false;
    return !nv() || (vllm ? w2.vllm_static_gs > 0 : w2.static_every);
  }
  // GEMM1: the activation into a2 [rows, w2.K] float32 with its amax outputs for GEMM2's dynamic scales,
  // or, given GEMM2's static scales sc2 (tile128 only), GEMM2's input quantized into a2q.
  void gemm1_epilogue(k::GemmArgs& g, const DevProj& w2, float* amax2, float* amax2_e,
                      const k::ActScale* sc2 = nullptr) const {
    g.act = int(m.activation.act), g.act_alpha = m.activation.alpha, g.act_limit = effective_limit(m.activation);
    g.ldy = w2.K;
    if (sc2) {
      g.yq = m.a2q.as<uint16_t>(), g.yq_aq = m.aq, g.yq_sc = *sc2;
      g.yq_rule = int(m.act_rule), g.yq_rounding = int(m.act_rounding);
      return;
    }
    g.y = m.a2.as<float>();
    if ((nv() && vllm && w2.vllm_static_gs <= 0) || m.aq == k::AQ::FP8) g.amax_out = amax2;
    if (nv() && !vllm) g.amax_out_e = amax2_e;
  }
};

// One MLP pass through the grouped GEMMs: the routed experts over the permuted rows, or the shared
// experts over all T tokens as one expert (0).
struct Pass {
  const DevProj* w13 = nullptr;
  const DevProj* w2 = nullptr;
  k::GemmPlan plan;
  int64_t rows = 0;                // GEMM rows (an upper bound when nrows is set)
  const int64_t* nrows = nullptr;  // the number of rows on the device (expert_map) or nullptr
  const int4* tiles = nullptr;
  const int32_t* num_tiles = nullptr;
  int max_tiles = 0;
  const int32_t* perm_token = nullptr;  // token of each GEMM row (nullptr: row = token)
  const int32_t* row_expert = nullptr;  // expert of each GEMM row (nullptr: expert 0)
  const void* x = nullptr;              // GEMM1 input [T, H]: bf16, or float32 (x_bf16 false)
  bool x_bf16 = true;
  const uint16_t* x3 = nullptr;  // a16 with a float32 input: its three bf16 planes [3][T, H]
  const float* amax1 = nullptr;  // GEMM1 input amax: all rows, per expert
  const float* amax1_e = nullptr;
  float* amax2 = nullptr;  // GEMM1 output amax (zeroed): all rows, per expert
  float* amax2_e = nullptr;
  float* y = nullptr;  // [rows, H]
  uint16_t* y16 = nullptr;  // or bf16 [rows, H] (vllm mode)
};

// quantize -> GEMM1 + activation -> quantize -> GEMM2 of one pass over T tokens.
void run_pass(const GemmSetup& gs, const Pass& p, int64_t T, cudaStream_t stream) {
  const Impl& m = gs.m;
  const bool f32_gemm2 = m.aq == k::AQ::None && !gs.vllm;
  auto gemm = [&](k::GemmArgs& g, const DevProj& w, bool gemv, int ksplit) {
    gs.weights(g, w);
    g.tiles = p.tiles, g.num_tiles = p.num_tiles, g.max_tiles = p.max_tiles, g.nt = p.plan.nt;
    if (p.plan.tile128) return k::grouped_gemm_tile128(g, stream);
    return gemv ? k::grouped_gemv(g, ksplit, p.plan.depth, stream) : k::grouped_gemm(g, stream);
  };
  auto quant = [&](k::QuantRowsArgs& q, const k::ActScale& sc) {
    q.aq = m.aq, q.vllm = gs.vllm, q.scale_rule = int(m.act_rule), q.rounding = int(m.act_rounding), q.sc = sc;
    MXMOE_CUDA_CHECK(k::quant_rows(q, stream));
  };

  // GEMM1 input
  k::GemmArgs g1;
  const k::ActScale sc1 = gs.scales(*p.w13, p.amax1, p.amax1_e);
  if (m.aq == k::AQ::None) {
    g1.b_row = p.perm_token;
    if (p.x3) g1.b16 = p.x3, g1.b_terms = 3, g1.b_term_stride = T * m.H;
    else g1.b16 = static_cast<const uint16_t*>(p.x);
  } else {
    k::QuantRowsArgs q;
    q.x = p.x, q.x_bf16 = p.x_bf16, q.ldx = m.H, q.K = m.H, q.y = m.a1.as<uint16_t>();
    if (gs.nv() && !gs.vllm && p.row_expert) {  // per expert scales: one quantized row per (token, expert)
      q.src_row = p.perm_token, q.row_expert = p.row_expert, q.rows = p.rows, q.nrows_dev = p.nrows;
      g1.b_row = nullptr;
    } else {  // the same for every expert: once per token
      q.rows = T;
      g1.b_row = p.perm_token;
    }
    quant(q, sc1);
    g1.b16 = m.a1.as<uint16_t>();
  }
  g1.ldb = m.H;
  gs.act_side(g1, sc1);
  const k::ActScale sc2 = gs.scales(*p.w2, p.amax2, p.amax2_e);
  const bool quant_in_gemm1 = p.plan.tile128 && k::epilogue_quant_enabled() && gs.gemm2_input_static(*p.w2);
  gs.gemm1_epilogue(g1, *p.w2, p.amax2, p.amax2_e, quant_in_gemm1 ? &sc2 : nullptr);
  MXMOE_CUDA_CHECK(gemm(g1, *p.w13, p.plan.gemv1, p.plan.ksplit1));

  // GEMM2 input
  k::GemmArgs g2;
  const int64_t I = p.w2->K;
  if (quant_in_gemm1) {
    g2.b16 = m.a2q.as<uint16_t>();
  } else if (f32_gemm2 && p.plan.tile128) {  // float32 activations as three exact bf16 planes
    MXMOE_CUDA_CHECK(k::split_bf16x3(m.a2.as<float>(), p.rows * I, m.a2q.as<uint16_t>(), stream));
    g2.b16 = m.a2q.as<uint16_t>(), g2.b_terms = 3, g2.b_term_stride = p.rows * I;
  } else if (f32_gemm2) {
    g2.b32 = m.a2.as<float>();  // float32 activations: split into three bf16 terms in the kernel
  } else {
    k::QuantRowsArgs q;
    q.x = m.a2.p, q.x_bf16 = false, q.ldx = I, q.K = I, q.y = m.a2q.as<uint16_t>(), q.rows = p.rows;
    q.row_expert = p.row_expert, q.nrows_dev = p.nrows;
    quant(q, sc2);
    g2.b16 = m.a2q.as<uint16_t>();
  }
  g2.ldb = I;
  gs.act_side(g2, sc2);
  g2.y = p.y, g2.y16 = p.y16, g2.ldy = m.H;
  MXMOE_CUDA_CHECK(gemm(g2, *p.w2, p.plan.gemv2, p.plan.ksplit2));
}

void run_forward(const Impl& m, const void* x_dev, int64_t T, Emulation e, float* out_dev, int32_t* topk_ids_dev,
                 float* topk_w_dev, cudaStream_t stream) {
  MXMOE_CHECK(T >= 0 && T <= m.max_T, "CUDA MoE: T = {} outside [0, {}] (the workspace's max_tokens)", T, m.max_T);
  if (T == 0) return;
  MXMOE_CHECK(x_dev && out_dev && topk_ids_dev && topk_w_dev, "CUDA MoE: null device pointer");
  MXMOE_CHECK(reinterpret_cast<uintptr_t>(x_dev) % 16 == 0 && reinterpret_cast<uintptr_t>(out_dev) % 16 == 0,
              "CUDA MoE: x and out must be 16-byte aligned");
  const GemmSetup gs{m, e == Emulation::VLLM};
  const bool vllm = gs.vllm, ep = m.expert_map.p != nullptr;
  const int64_t P = T * m.topk, words = (T + 31) / 32;
  const bool f32_gemm2 = m.aq == k::AQ::None && !vllm;
  // With the router weight on the input, an a16 GEMM1 reads float32 x * w.
  const bool f32_gemm1 = m.on_input && m.aq == k::AQ::None;
  const k::GemmPlan plan = k::plan_gemms(m.wk, P, m.E, m.w13.N, m.w13.K, m.w2.N, m.w2.K, f32_gemm1, f32_gemm2, m.sms);
  const int TT = 8 * plan.nt;

  k::RouteArgs ra;
  ra.x = static_cast<const uint16_t*>(x_dev), ra.gate = m.gate.as<float>(), ra.gate3 = m.gate3.as<uint16_t>();
  ra.gate_terms = m.gate_terms == 1 && k::logits_one_term_enabled() ? 1 : 3;
  ra.gate_bias = m.gate_bias.as<float>();
  ra.T = T, ra.H = m.H, ra.E = m.E, ra.k = m.topk, ra.kind = int(m.router.kind), ra.renormalize = m.router.renormalize;
  ra.scaling = m.router.routed_scaling_factor;
  ra.corr_bias = m.corr_bias.as<float>(), ra.n_group = m.router.n_group, ra.topk_group = m.router.topk_group;
  ra.logits = m.logits.as<float>(), ra.rowamax = m.rowamax.as<float>(), ra.amax_x = m.amax_x();
  ra.ids = topk_ids_dev, ra.weights = topk_w_dev, ra.counts = m.counts(), ra.bitmap = m.bitmap(), ra.words = words;
  ra.tile_tokens = TT, ra.perm_token = m.perm_token.as<int32_t>(), ra.row_expert = m.row_expert.as<int32_t>();
  ra.slot_to_perm = m.slot_to_perm.as<int32_t>(), ra.amax1_e = m.amax1_e(), ra.tiles = m.tiles.as<int4>();
  ra.num_tiles = m.num_tiles();
  ra.expert_map = m.expert_map.as<int32_t>(), ra.zero_row = int32_t(m.zero_row), ra.amax_by_weight = m.on_input;
  // GEMM1's amax over the rows it reads, when those are not every token's x row.
  if (ep || m.on_input) ra.amax_routed = m.amax_routed();
  if (ep) ra.rows_routed = m.rows_routed();

  const k::FusedPlan fp = k::plan_fused(m.wk, f32_gemm2, T, m.topk, m.E, m.w13.N, m.w13.K, m.w2.N, m.w2.K, m.fused_T,
                                        m.fused_grid);
  if (fp.use) {
    k::FusedArgs fa;
    fa.r = ra;
    gs.weights(fa.g1, m.w13), gs.weights(fa.g2, m.w2);
    fa.sc1 = gs.scales(m.w13, nullptr, nullptr);
    fa.sc1_dyn = gs.nv() ? (vllm ? 1 : 2) : (m.aq == k::AQ::FP8 ? 1 : 0);
    gs.act_side(fa.g1, fa.sc1);
    gs.gemm1_epilogue(fa.g1, m.w2, m.amax2(), m.amax2_e());
    const k::ActScale sc2 = gs.scales(m.w2, m.amax2(), m.amax2_e());
    gs.act_side(fa.g2, sc2);
    fa.g2.a_sc = sc2;
    fa.g2.y = m.y.as<float>(), fa.g2.ldy = m.H;
    fa.aq = m.aq, fa.scale_rule = int(m.act_rule), fa.rounding = int(m.act_rounding);
    fa.ksplit1 = fp.ksplit1, fa.ksplit2 = fp.ksplit2, fa.out = out_dev;
    MXMOE_CUDA_CHECK(k::fused_moe(fa, m.fused_grid, stream));
    return;
  }

  MXMOE_CUDA_CHECK(cudaMemsetAsync(m.scratch.p, 0, size_t(Impl::kHead + 3 * m.E + m.E * words) * 4, stream));
  MXMOE_CUDA_CHECK(k::route(ra, stream));

  // Shared experts: every token, unweighted, one expert; GEMM1's input scale from the amax of all of x.
  if (m.shared) {
    Pass s;
    s.w13 = &m.s13, s.w2 = &m.s2;
    s.plan = k::plan_gemms(m.wk, T, 1, m.s13.N, m.s13.K, m.s2.N, m.s2.K, false, f32_gemm2, m.sms);
    const int stt = 8 * s.plan.nt;
    MXMOE_CUDA_CHECK(k::dense_tiles(T, stt, m.shared_tiles.as<int4>(), m.shared_num_tiles(), stream));
    s.rows = T, s.tiles = m.shared_tiles.as<int4>(), s.num_tiles = m.shared_num_tiles();
    s.max_tiles = int((T + stt - 1) / stt);
    s.x = x_dev, s.amax1 = m.amax_x(), s.amax1_e = m.amax_x();
    s.amax2 = m.shared_amax2(), s.amax2_e = m.shared_amax2_e(), s.y = m.ys.as<float>();
    run_pass(gs, s, T, stream);
  }

  Pass r;
  r.w13 = &m.w13, r.w2 = &m.w2, r.plan = plan, r.rows = P, r.nrows = ra.rows_routed;
  r.tiles = m.tiles.as<int4>(), r.num_tiles = m.num_tiles(), r.max_tiles = int(P / TT + std::min<int64_t>(m.E, P));
  r.perm_token = m.perm_token.as<int32_t>(), r.row_expert = m.row_expert.as<int32_t>();
  r.x = x_dev;
  if (m.on_input) {  // x * w in float32, as the ref's apply_router_weight_on_input
    MXMOE_CUDA_CHECK(k::scale_rows(ra.x, T, m.H, topk_w_dev, m.topk, m.xs.as<float>(), stream));
    r.x = m.xs.p, r.x_bf16 = false;
    if (m.aq == k::AQ::None) {
      MXMOE_CUDA_CHECK(k::split_bf16x3(m.xs.as<float>(), T * m.H, m.xs3.as<uint16_t>(), stream));
      r.x3 = m.xs3.as<uint16_t>();
    }
  }
  r.amax1 = ra.amax_routed ? ra.amax_routed : m.amax_x(), r.amax1_e = m.amax1_e();
  r.amax2 = m.amax2(), r.amax2_e = m.amax2_e(), r.y = m.y.as<float>();
  if (vllm && k::y_bf16_enabled()) r.y16 = m.y16();
  run_pass(gs, r, T, stream);

  k::FinalizeArgs f;
  f.y = m.y.as<float>(), f.y16 = r.y16, f.slot_to_perm = m.slot_to_perm.as<int32_t>();
  f.weights = m.on_input ? m.ones.as<float>() : topk_w_dev;  // weight 1: already on the input
  f.T = T, f.H = m.H, f.k = m.topk, f.vllm = vllm, f.out = out_dev;
  f.shared = m.shared ? m.ys.as<float>() : nullptr;
  MXMOE_CUDA_CHECK(k::finalize(f, stream));
}

}  // namespace

CudaMoeLayer::CudaMoeLayer(const MoeLayer& l, int64_t max_tokens, const MoeOptions& o)
    : impl_(std::make_unique<Impl>()) {
  init_layer(*impl_, l, max_tokens, o);
}

CudaMoeLayer::~CudaMoeLayer() = default;
int64_t CudaMoeLayer::hidden() const { return impl_->H; }
int CudaMoeLayer::top_k() const { return impl_->topk; }
int64_t CudaMoeLayer::max_tokens() const { return impl_->max_T; }
const std::vector<std::string>& CudaMoeLayer::warnings() const { return impl_->warnings; }
size_t CudaMoeLayer::device_bytes() const { return impl_->bytes; }
int64_t CudaMoeLayer::fused_tokens(Emulation e) const {
  const Impl& m = *impl_;
  const bool f32_gemm2 = m.aq == k::AQ::None && e != Emulation::VLLM;
  const k::FusedPlan p = k::plan_fused(m.wk, f32_gemm2, 1, m.topk, m.E, m.w13.N, m.w13.K, m.w2.N, m.w2.K, m.fused_T,
                                       m.fused_grid);
  return p.use ? m.fused_T : 0;
}

void CudaMoeLayer::forward(const void* x_dev, int64_t T, Emulation e, float* out_dev, int32_t* topk_ids_dev,
                           float* topk_w_dev, cudaStream_t stream) {
  run_forward(*impl_, x_dev, T, e, out_dev, topk_ids_dev, topk_w_dev, stream);
}

// The options (expert_map, weights on the input) reach the device layer here: CudaMoeLayer's public
// constructor takes the layer only.
void run_moe_cuda(const MoeLayer& l, const Tensor& hs, const MoeOptions& o, MoeResult& r) {
  std::string why;
  MXMOE_CHECK(cuda_moe_available(l, o, &why), "backend cuda: {}", why);
  const int64_t T = hs.shape[0], H = l.hidden;
  const int kk = l.router.top_k;
  // The device path reads bf16 hidden states; other dtypes must hold bf16 values exactly.
  std::vector<uint16_t> xb(size_t(T * H));
  if (hs.dtype == DType::BF16) {
    std::memcpy(xb.data(), hs.data.data(), xb.size() * 2);
  } else {
    std::vector<float> xf(size_t(T * H));
    to_f32(hs.data.data(), hs.dtype, T * H, xf.data());
    for (size_t i = 0; i < xf.size(); ++i) {
      xb[i] = f32_to_bf16(xf[i]);
      MXMOE_CHECK(bf16_to_f32(xb[i]) == xf[i], "backend cuda: hidden_states ({}) value at token {} is not a bf16 "
                  "value; the CUDA backend takes bf16 inputs", dtype_name(hs.dtype), int64_t(i) / H);
    }
  }
  Impl dev;
  init_layer(dev, l, T, o);
  r.warnings.insert(r.warnings.end(), dev.warnings.begin(), dev.warnings.end());
  r.out = Tensor(DType::F32, {T, H});
  r.topk_ids = Tensor(DType::I32, {T, kk});
  r.topk_weights = Tensor(DType::F32, {T, kk});
  if (T == 0) return;
  DevMem x, out, ids, w;
  x.upload(xb.data(), xb.size() * 2);
  out.alloc(size_t(T * H) * 4), ids.alloc(size_t(T * kk) * 4), w.alloc(size_t(T * kk) * 4);
  run_forward(dev, x.p, T, o.emulation, out.as<float>(), ids.as<int32_t>(), w.as<float>(), nullptr);
  MXMOE_CUDA_CHECK(cudaMemcpy(r.out.data.data(), out.p, size_t(T * H) * 4, cudaMemcpyDeviceToHost));
  MXMOE_CUDA_CHECK(cudaMemcpy(r.topk_ids.data.data(), ids.p, size_t(T * kk) * 4, cudaMemcpyDeviceToHost));
  MXMOE_CUDA_CHECK(cudaMemcpy(r.topk_weights.data.data(), w.p, size_t(T * kk) * 4, cudaMemcpyDeviceToHost));
}

}  // namespace mxmoe::moe
