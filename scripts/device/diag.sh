#!/usr/bin/env bash
# One call of diagnostics that write many files, packed into $OUT/diag.tgz (the device returns at most 8
# files): the weight-stream probe (probe_weight_stream.cu), tile128's stall reasons at T = 4096, the
# SASS opcode histograms of the GEMV and tile128 kernels, bench runs under each env setting in BENCH_ENVS,
# and per-kernel durations at TOKENS (profile.sh).
#   run: bash scripts/device/diag.sh   (carry: [".devdeps"])
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=${OUT:-$PWD/out/device}
export OUT=/tmp/diag-out
rm -rf "$OUT" && mkdir -p "$OUT" "$FINAL"
pack() { tar czf "$FINAL/diag.tgz" -C "$OUT" .; }  # after each stage: a call cut short keeps what ran
export PATH=/usr/local/cuda/bin:$PATH
nvcc -O3 -std=c++17 -arch=sm_90a scripts/device/probe_weight_stream.cu -o /tmp/probe_ws && /tmp/probe_ws > "$OUT/probe.txt" 2>&1
pack; cat "$OUT/probe.txt"
source scripts/device/build_env.sh build.log
SASS_FN=tile128_kernelILNS1_5WKindE0ELb1ELb1E KERNEL=${KERNEL:-tile128} T=4096 SOURCE_PAGE=1 \
  timeout 400 bash scripts/device/stalls.sh > "$OUT/stalls.txt" 2>&1
pack; tail -45 "$OUT/stalls.txt"
FNS=${FNS:-'gemv_kernelILNS1_5WKindE0ELb1ELi4E tile128_kernelILNS1_5WKindE0ELb1ELb1E'} \
  bash scripts/device/sass.sh > "$OUT/sass.txt" 2>&1
pack; cat "$OUT/sass.txt"
for envs in ${BENCH_ENVS:-base}; do
  echo "== bench $envs" >> "$OUT/bench.txt"
  [ "$envs" = base ] && envs=
  env ${envs//,/ } "$BUILD/bench_moe_cuda" --shape qwen3-30b-a3b --schemes w_nvfp4_a_nvfp4 --modes vllm \
    --tokens "${BENCH_TOKENS:-64,128,256,512}" >> "$OUT/bench.txt" 2>&1
done
pack; grep -vE '^\s*$' "$OUT/bench.txt" | tail -30
TOKENS=${TOKENS:-64 4096} DETAIL=${DETAIL:-64:gemv 4096:tile128} timeout 400 bash scripts/device/profile.sh > "$OUT/profile.txt" 2>&1
pack
tail -60 "$OUT/profile.txt"
grep -hE "^  [A-Z].*(Shared|Tensor|Pipe|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Mem Pipes)" "$OUT"/ncu-detail-*.txt | head -30
