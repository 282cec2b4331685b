#!/usr/bin/env bash
# One device call for a kernel change: build (sm_90a), the CUDA tests matching FILTER (gtest filter),
# then bench_moe_cuda with BENCH_ARGS, and optionally the per-kernel times of profile.sh (PROFILE=1).
# Logs in $OUT; the test summary and the bench table are printed last.
#   run: FILTER='*Router*' BENCH_ARGS='--tokens 64,4096' bash scripts/device/quick.sh   (carry: [".devdeps"])
#   (parameterized suites are named Prefix/Suite.Test: 'CudaMoe*' misses them, '*CudaMoe*' does not)
set -uo pipefail
source "$(dirname "$0")/build_env.sh" build-quick.log
rc=0
if [ -n "${FILTER:-}" ]; then
  timeout "${TEST_TIMEOUT:-300}" "$BUILD/mxmoe_cuda_tests" --gtest_filter="$FILTER" --gtest_brief=1 > "$OUT/tests.log" 2>&1
  rc=$?
fi
timeout 400 "$BUILD/bench_moe_cuda" ${BENCH_ARGS:-} > "$OUT/bench.txt" 2>&1
[ "${PROFILE:-0}" = 1 ] && DETAIL="${DETAIL:-}" bash scripts/device/profile.sh > "$OUT/profile.txt" 2>&1
echo "== tests (rc $rc)"; grep -E -A4 "Failure|exception" "$OUT/tests.log" 2>/dev/null | head -40; grep -E "^\[  (PASSED|FAILED)" "$OUT/tests.log" 2>/dev/null
echo "== bench"; cat "$OUT/bench.txt"
[ "${PROFILE:-0}" = 1 ] && { echo "== profile"; grep -v "^ *$" "$OUT/profile.txt" | tail -40; }
exit $rc
