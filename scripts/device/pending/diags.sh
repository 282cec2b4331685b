#!/usr/bin/env bash
# Makes the timing-only diagnostic variants (wrong results; never commit ab/) from the checked-out tree:
#   ab/now     tile128 without weight loads: the non-ring load_w builds its raw words from k0 instead
#              (codes that depend on k0, so the decode is not folded away). Run it as now@MXMOE_CUDA_TILE128_RING=0
#              against base@MXMOE_CUDA_TILE128_RING=0 (with the ring on, it is the ring).
#   ab/gnodec  the FP4 GEMV decode (decode8) reduced to one XOR per output word: the decode's share of the
#              GEMV kernel at T = 8-64 (and of the fused kernel and tile128, which share it).
# Stops with a message if the code it edits is not there (the tree moved on: update the patterns).
#   bash scripts/device/pending/diags.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
python3 - <<'EOF'
import os, sys

def variant(name, path, edit):
    src = open(path).read()
    out = edit(src)
    if out is None or out == src:
        sys.exit(f"diags.sh: {path} no longer has the code ab/{name} replaces; update the pattern")
    os.makedirs(os.path.dirname(f"ab/{name}/{path}"), exist_ok=True)
    open(f"ab/{name}/{path}", "w").write(out)
    print(f"ab/{name}: {path}")

def now(s):
    lut = "      gemv::load_raw<W>(rc, rs, k0, row_ok && k0 < a.K, raw);\n"
    gen = "      gemm::load_raw<W>(a, rc, rs, k0, row_ok && k0 < a.K, raw);\n"
    if s.count(lut) != 1 or s.count(gen) != 1:
        return None
    v = "      const uint32_t v = uint32_t(k0) * 2654435761u;\n"
    s = s.replace(lut, v + "      raw.c = make_uint4(v, v ^ 0x5555u, v + 7u, v >> 3), raw.s = 0x3838u;\n")
    return s.replace(gen, v + "      for (int i = 0; i < Raw<W>::words; ++i) raw.w[i] = v + uint32_t(i);\n"
                             "      raw.s = 0x3838u;\n")

def gnodec(s):
    head = "__device__ __forceinline__ void decode8(uint32_t w, const uint4& L, uint32_t* out) {\n"
    i = s.find(head)
    if i < 0:
        return None
    j = s.index("\n}\n", i)
    return s[:i] + head + "  out[0] = w ^ L.x, out[1] = w ^ L.y, out[2] = w ^ L.z, out[3] = w ^ L.w;" + s[j:]

variant("now", "src/moe/cuda/sm80_moe_gemm_tile128.cuh", now)
variant("gnodec", "src/moe/cuda/sm90_fp4_gemv.cuh", gnodec)
EOF
