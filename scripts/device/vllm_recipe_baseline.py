"""Baselines for the CUDA MoE benchmark, plain PyTorch on the same GPU (written for mxmoe, not vLLM code).

1. vLLM's NVFP4 W4A4 emulation recipe (PR #35737 style): every forward dequantizes every expert's FP4
   weights to bf16 (code LUT * e4m3 block scale / global scale), quantize-dequantizes the activations
   (NVFP4 block 16 with a static global scale), then runs per-expert bf16 GEMMs (torch._grouped_mm when
   available, else a loop over the experts that got tokens).
2. An unquantized bf16 MoE with the same routing and grouped GEMMs.

Prints one line per T: "T vllm_recipe_us bf16_us" (median of CUDA-event timings, 4 rotating inputs).
    python3 vllm_recipe_baseline.py [--tokens 1,64,4096] [--hidden 2048 --inter 768 --experts 128 --topk 8]
"""
import argparse

import torch
import torch.nn.functional as F

E2M1 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float32)
# rounding thresholds between consecutive E2M1 magnitudes
E2M1_MID = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
E2M1_POS = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6])


def make_fp4_weight(E, N, K, dev):
    codes = torch.randint(0, 256, (E, N, K // 2), dtype=torch.uint8, device=dev)
    scales = (torch.rand(E, N, K // 16, device=dev) * 2 + 0.5).to(torch.float8_e4m3fn)
    gs = torch.full((E,), 448.0 * 6 / 3.0, device=dev)
    return codes, scales, gs


def dequant_fp4(codes, scales, gs, lut2):
    """bf16(code value * (e4m3 scale / gs)) of every element: one 256-entry byte LUT (two codes a byte)."""
    E, N, KB = codes.shape
    vals = torch.index_select(lut2, 0, codes.reshape(-1).int()).view(E, N, KB * 2 // 16, 16)
    s = (scales.float() / gs.view(E, 1, 1)).unsqueeze(-1)
    return (vals * s).view(E, N, KB * 2).to(torch.bfloat16)


def qdq_nvfp4(x, gs, mid, pos):
    T, H = x.shape
    xb = x.float().view(T, H // 16, 16)
    amax = xb.abs().amax(-1, keepdim=True)
    s = (gs * amax / 6.0).clamp(max=448.0).to(torch.float8_e4m3fn).float()
    inv = torch.where(s == 0, torch.zeros_like(s), gs / s)
    v = (xb * inv).clamp(-6, 6)
    q = pos[torch.bucketize(v.abs(), mid)] * torch.sign(v)
    return (q * s / gs).view(T, H).to(torch.bfloat16)


def route(x, gate, k):
    logits = x.float() @ gate.float().t()
    p = torch.softmax(logits, dim=-1)
    w, ids = torch.topk(p, k, dim=-1)
    return w / w.sum(-1, keepdim=True), ids


USE_GROUPED = [hasattr(torch, "_grouped_mm")]


def gmm(xs, w, offs, counts):
    """Grouped xs[rows of expert e] @ w[e].T: torch._grouped_mm, or a loop over the experts with rows."""
    if USE_GROUPED[0]:
        try:
            return torch._grouped_mm(xs, w.transpose(1, 2), offs=offs)
        except Exception as exc:  # noqa: BLE001 - fall back once, say why
            print(f"# _grouped_mm unavailable ({exc}); per-expert loop")
            USE_GROUPED[0] = False
    out = torch.empty(xs.shape[0], w.shape[1], dtype=torch.bfloat16, device=xs.device)
    start = 0
    for e, c in enumerate(counts.tolist()):
        if c:
            out[start:start + c] = xs[start:start + c] @ w[e].t()
        start += c
    return out


def experts(xq, w13, w2, ids, w, E, act_q=None):
    T, k = ids.shape
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    tok = order // k
    counts = torch.bincount(flat, minlength=E)
    xs = xq[tok]
    offs = torch.cumsum(counts, 0).to(torch.int32)
    h = gmm(xs, w13, offs, counts)
    I = w13.shape[1] // 2
    a = (F.silu(h[:, :I].float()) * h[:, I:].float()).to(torch.bfloat16)
    if act_q is not None:
        a = act_q(a)
    y = gmm(a, w2, offs, counts)
    out = torch.zeros(T, w2.shape[1], dtype=torch.float32, device=xq.device)
    out.index_add_(0, tok, y.float() * w.reshape(-1)[order].unsqueeze(1))
    return out.to(torch.bfloat16)


def timeit(fn, inputs, reps=20):
    for x in inputs:
        fn(x)
    torch.cuda.synchronize()
    ts = []
    for i in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(inputs[i % len(inputs)])
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="1,64,4096")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=768)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--topk", type=int, default=8)
    a = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    H, I, E, k = a.hidden, a.inter, a.experts, a.topk
    mid, pos = E2M1_MID.to(dev), E2M1_POS.to(dev)
    byte = torch.arange(256)
    lut = torch.stack((E2M1[byte & 0xF], E2M1[byte >> 4]), dim=-1).to(dev)  # [256, 2] float32
    c13, s13, g13 = make_fp4_weight(E, 2 * I, H, dev)
    c2, s2, g2 = make_fp4_weight(E, H, I, dev)
    gate = (torch.randn(E, H, device=dev) / H**0.5).to(torch.bfloat16)
    w13_bf = (torch.randn(E, 2 * I, H, device=dev) / H**0.5).to(torch.bfloat16)
    w2_bf = (torch.randn(E, H, I, device=dev) / I**0.5).to(torch.bfloat16)
    in_gs1, in_gs2 = torch.tensor(2688.0 / 4, device=dev), torch.tensor(2688.0, device=dev)

    def vllm_recipe(x):
        w13 = dequant_fp4(c13, s13, g13, lut)  # every expert, every forward
        w2 = dequant_fp4(c2, s2, g2, lut)
        w, ids = route(x, gate, k)
        xq = qdq_nvfp4(x, in_gs1, mid, pos)
        return experts(xq, w13, w2, ids, w, E, act_q=lambda t: qdq_nvfp4(t, in_gs2, mid, pos))

    def bf16_moe(x):
        w, ids = route(x, gate, k)
        return experts(x, w13_bf, w2_bf, ids, w, E)

    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}, grouped_mm={hasattr(torch, '_grouped_mm')}")
    with torch.no_grad():
        for T in [int(t) for t in a.tokens.split(",")]:
            inputs = [torch.randn(T, H, device=dev).to(torch.bfloat16) for _ in range(4)]
            v = timeit(vllm_recipe, inputs)
            b = timeit(bf16_moe, inputs)
            print(f"{T} {v:.1f} {b:.1f}", flush=True)


if __name__ == "__main__":
    main()
