#!/usr/bin/env bash
# CUDA benchmarks on the device machine: builds like test.sh when needed, then
#  1. bench_quant_cuda (quantizer bandwidth; skipped with --moe-only),
#  2. the MoE layer: scripts/device/vllm_recipe_baseline.py (PyTorch: vLLM's emulation recipe and an
#     unquantized bf16 MoE) and bench_moe_cuda (mxmoe's CUDA layer, CUDA graphs, median of events) on
#     the Qwen3-30B-A3B shape (and gpt-oss-20b with MOE_SHAPES), on the same GPU in one run,
#  3. the table: tokens | vLLM recipe | bf16 torch | mxmoe vllm | mxmoe exact | floor | x floor.
# Output in $OUT (bench.txt, moe.txt, baseline.txt). Results are recorded by hand in bench/RESULTS.md.
#   run: bash scripts/device/bench.sh [--moe-only]   (carry: [".devdeps"])
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/device}
BUILD=${BUILD:-/tmp/mxmoe-build-cuda}
TOKENS=${TOKENS:-1,64,4096}
mkdir -p "$OUT"
[ -x "$BUILD/bench_moe_cuda" ] || bash scripts/device/test.sh --build-only || exit 1
LIB=/tmp/mxmoe-deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$LIB:$LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ "${1:-}" != "--moe-only" ]; then
  { echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  date: $(date -u +%FT%TZ)"
    timeout 240 "$BUILD/bench_quant_cuda"; } 2>&1 | tee "$OUT/bench.txt"
fi
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  date: $(date -u +%FT%TZ)" | tee "$OUT/moe.txt"
PYTHONUNBUFFERED=1 timeout 200 python3 scripts/device/vllm_recipe_baseline.py --tokens "$TOKENS" 2>&1 | tee "$OUT/baseline.txt"
for shape in ${MOE_SHAPES:-qwen3-30b-a3b}; do
  timeout 300 "$BUILD/bench_moe_cuda" --shape "$shape" --tokens "$TOKENS" \
    --schemes "${MOE_SCHEMES:-w_nvfp4_a_nvfp4,w_mxfp4_a_mxfp4,w_nvfp4_a16}" 2>&1 | tee -a "$OUT/moe.txt"
done
python3 - "$OUT/baseline.txt" "$OUT/moe.txt" <<'PY'
import sys
base = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 3 and p[0].isdigit(): base[int(p[0])] = (float(p[1]), float(p[2]))
mx = {}
for line in open(sys.argv[2]):
    p = line.split()
    if len(p) >= 8 and p[0] == "qwen3-30b-a3b" and p[1] == "w_nvfp4_a_nvfp4":
        mx[(p[2], int(p[3]))] = (float(p[4]), float(p[5]))
print("\nQwen3-30B-A3B layer, w_nvfp4_a_nvfp4 (us, median)")
print(f"{'tokens':>6} | {'vLLM recipe':>11} | {'bf16 torch':>10} | {'mxmoe vllm':>10} | {'mxmoe exact':>11} | {'floor':>6} | x floor")
for T in sorted(base):
    v, b = base[T]
    mv = mx.get(("vllm", T), (float("nan"), float("nan")))
    me = mx.get(("exact", T), (float("nan"), float("nan")))
    fl = mv[1]
    print(f"{T:>6} | {v:>11.1f} | {b:>10.1f} | {mv[0]:>10.1f} | {me[0]:>11.1f} | {fl:>6.1f} | {max(mv[0], me[0]) / fl:.2f}")
PY
