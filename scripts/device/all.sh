#!/usr/bin/env bash
# One device call for the CUDA MoE work: build (sm_90a only), the CUDA MoE tests, the MoE bench on a trimmed
# sweep (auto path and the tiled kernel forced, same layer), then compute-sanitizer memcheck + racecheck
# on the MoE tests of the GEMV kernel. Each stage has a timeout so the call ends inside 9 minutes.
#   run: bash scripts/device/all.sh     (carry: [".devdeps"])
#   env: GTEST_FILTER, TEST_TIMEOUT, DEPTH8=1 (also bench GEMV depth 8), SAN_TIMEOUT, TOKENS (1,8,64), MOE_SCHEMES (w_nvfp4_a_nvfp4,w_mxfp4_a_mxfp4), PATHS (auto,tiled),
#        SAN_FILTER ('*GemmPaths*:*Graphs*:*Fused*:*MoeDevice.PoisonDeterminism*')
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/device}
export BUILD=${BUILD:-/tmp/mxmoe-build-cuda} ARCHS=${ARCHS:-90a}
mkdir -p "$OUT"
t0=$(date +%s)
bash scripts/device/test.sh --build-only || exit 1
LIB=/tmp/mxmoe-deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$LIB:$LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "build done at $(( $(date +%s) - t0 ))s"
# The MoE device tests (GTEST_FILTER, default all CudaMoe*; the quantizer tests are test.sh's).
timeout "${TEST_TIMEOUT:-150}" stdbuf -oL "$BUILD/mxmoe_cuda_tests" --gtest_filter="${GTEST_FILTER:-*CudaMoe*}" > "$OUT/gtest.log" 2>&1
echo "gtest rc=$? $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/gtest.log" | tr '\n' ' ') at $(( $(date +%s) - t0 ))s"
grep -E "Failure|FAILED|Expected|rel L2 gemv vs tiled" "$OUT/gtest.log" | head -24
{ echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
  timeout 150 "$BUILD/bench_moe_cuda" --shape qwen3-30b-a3b --tokens "${TOKENS:-1,8,64}" \
    --schemes "${MOE_SCHEMES:-w_nvfp4_a_nvfp4,w_mxfp4_a_mxfp4}" --paths "${PATHS:-auto,tiled}"
  if [ -n "${DEPTH8:-}" ]; then echo "MXMOE_CUDA_GEMV_DEPTH=8:"; MXMOE_CUDA_GEMV_DEPTH=8 timeout 60 "$BUILD/bench_moe_cuda" \
    --shape qwen3-30b-a3b --tokens "${TOKENS:-1,8,64}" --schemes w_nvfp4_a_nvfp4 --paths auto; fi; } 2>&1 | tee "$OUT/moe.txt"
echo "bench done at $(( $(date +%s) - t0 ))s"
for tool in memcheck racecheck; do
  extra=(); [ $tool = memcheck ] && extra=(--leak-check full)
  MXMOE_TEST_QUICK=1 timeout "${SAN_TIMEOUT:-100}" stdbuf -oL compute-sanitizer --tool $tool "${extra[@]}" --error-exitcode 97 \
    "$BUILD/mxmoe_cuda_tests" --gtest_filter="${SAN_FILTER:-*GemmPaths*:*Graphs*:*Fused*:*MoeDevice.PoisonDeterminism*}" --gtest_brief=1 \
    > "$OUT/$tool-moe.log" 2>&1
  echo "san $tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool-moe.log" | tail -1) $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/$tool-moe.log" | tr '\n' ' ') at $(( $(date +%s) - t0 ))s"
done
