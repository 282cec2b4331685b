#!/usr/bin/env bash
# One call of diagnostics that write many files, packed into $OUT/diag.tgz after each stage (the device
# returns at most 8 files, and a call cut short keeps what ran): the weight-stream probe
# (probe_weight_stream.cu), bench runs under each env setting in BENCH_ENVS, tile128's stall reasons at
# T = 4096, the SASS opcode histograms of the GEMV and tile128 kernels, and per-kernel durations at TOKENS
# (profile.sh); TEST_FILTER: those CUDA tests in quick mode after the bench. A stage starts only while
# less than STOP_AFTER seconds (default 420) have passed.
#   run: BENCH_ENVS="base MXMOE_CUDA_X=0 base" bash scripts/device/diag.sh   (carry: [".devdeps"])
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=${OUT:-$PWD/out/device}
export OUT=/tmp/diag-out
rm -rf "$OUT" && mkdir -p "$OUT" "$FINAL"
pack() { tar czf "$FINAL/diag.tgz" -C "$OUT" .; }
more() { [ "$SECONDS" -lt "${STOP_AFTER:-420}" ] || { echo "== skipped from here: ${SECONDS}s"; exit 0; }; }
export PATH=/usr/local/cuda/bin:$PATH
nvcc -O3 -std=c++20 -arch=sm_90a -Isrc -Iinclude scripts/device/probe_weight_stream.cu -o /tmp/probe_ws && /tmp/probe_ws > "$OUT/probe.txt" 2>&1
pack; cat "$OUT/probe.txt"
source scripts/device/build_env.sh build.log
for envs in ${BENCH_ENVS:-base}; do
  echo "== bench $envs" >> "$OUT/bench.txt"
  [ "$envs" = base ] && envs=
  env ${envs//,/ } "$BUILD/bench_moe_cuda" --shape qwen3-30b-a3b --schemes "${BENCH_SCHEMES:-w_nvfp4_a_nvfp4}" \
    --modes vllm --tokens "${BENCH_TOKENS:-1,8,64,512,4096}" >> "$OUT/bench.txt" 2>&1
done
pack; grep -vE '^\s*$' "$OUT/bench.txt" | tail -40
if [ -n "${TEST_FILTER:-}" ]; then  # quick mode
  (cd "$BUILD" && MXMOE_TEST_QUICK=1 timeout 150 ./mxmoe_cuda_tests --gtest_filter="$TEST_FILTER") > "$OUT/tests.txt" 2>&1
  pack; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|tests ran" "$OUT/tests.txt" | tail -12
fi
more
SASS_FN=tile128_kernelILNS1_5WKindE0ELb1ELb1E KERNEL=${KERNEL:-tile128} T=4096 SOURCE_PAGE=1 \
  timeout 200 bash scripts/device/stalls.sh > "$OUT/stalls.txt" 2>&1
pack; tail -45 "$OUT/stalls.txt"
more
FNS=${FNS:-'gemv_kernelILNS1_5WKindE0ELb1ELi4E tile128_kernelILNS1_5WKindE0ELb1ELb1E'} \
  bash scripts/device/sass.sh > "$OUT/sass.txt" 2>&1
pack; cat "$OUT/sass.txt"
more
TOKENS=${TOKENS:-64 4096} DETAIL=${DETAIL:-64:gemv 4096:tile128} timeout 200 bash scripts/device/profile.sh > "$OUT/profile.txt" 2>&1
pack
tail -60 "$OUT/profile.txt"
grep -hE "^  [A-Z].*(Shared|Tensor|Pipe|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Mem Pipes)" "$OUT"/ncu-detail-*.txt | head -30
