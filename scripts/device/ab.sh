#!/usr/bin/env bash
# A/B of code variants in one device call: builds the tree (sm_90a), then for each variant copies its
# files over the tree, rebuilds bench_moe_cuda (only what changed) and runs the same benchmark, so the
# variants meet the same GPU, clocks and process order. Prints one block per variant.
#
# A variant is a folder ab/<name>/ holding replacement files at their repository paths (for example
# ab/quarter/src/moe/cuda/sm90_fp4_gemv.cuh, taken with `git show branch:path`); leave ab/ untracked
# (it travels to the device; do not commit it). "base" is the tree as it is. name@VAR=value runs a
# variant with an environment variable set, name@A=1,B=2 with several (no rebuild if only those differ).
#   run: VARIANTS="base quarter quarter@MXMOE_CUDA_GEMV_DEPTH=3 base" \
#        BENCH_ARGS="--schemes w_nvfp4_a_nvfp4 --tokens 1,8,64 --modes vllm" bash scripts/device/ab.sh
#        (carry: [".devdeps"]; ab_prepare.sh fills ab/<name> from a branch, here before the call);
#        SASS='pattern ...' also keeps the SASS of matching kernels per variant in $OUT/<name>.sass
#        (mangled-name substrings, as in sass.sh; $OUT returns at most 8 files);
#        TEST_FILTER='*Fused*:...' also runs those device tests on every variant folder but base, once, with
#        the first spec that names it (MXMOE_TEST_QUICK=1, under compute-sanitizer memcheck with MEMCHECK=1,
#        racecheck with RACECHECK=1),
#        so a variant that wins can land tested (TEST_VARIANTS='a b' limits that to those folders, and
#        may name base: a change under test in the tree itself, switched off by an environment variable);
#        each bench and test run is cut at STEP_TIMEOUT seconds (default 240).
set -uo pipefail
source "$(dirname "$0")/build_env.sh" build-ab.log
B=$BUILD/bench_moe_cuda
BASE=/tmp/mxmoe-ab-base
rm -rf "$BASE" && mkdir -p "$BASE"
# Every path any variant replaces, saved once so each variant starts from the tree as it was.
# Paths no base file has (files a variant adds) are listed in $BASE.added and removed again, so a later
# variant does not build another's new sources.
: > "$BASE.added"
if [ -d ab ]; then
  (cd ab && find . -mindepth 2 -type f | cut -d/ -f3- | sort -u) | while read -r f; do
    if [ -f "$f" ]; then mkdir -p "$BASE/$(dirname "$f")" && cp "$f" "$BASE/$f"; else echo "$f" >> "$BASE.added"; fi
  done
fi
restore() {  # copies only what differs: a copy renews the file's time, and ninja would rebuild it
  (cd "$BASE" && find . -type f) | while read -r f; do cmp -s "$BASE/$f" "$f" || cp "$BASE/$f" "$f"; done
  while read -r f; do rm -f "$f"; done < "$BASE.added"
}
tested=""  # variant folders whose tests ran (once per folder, with the first spec that names it)
for spec in ${VARIANTS:-base}; do
  name=${spec%%@*}
  envset=""; [ "$spec" != "$name" ] && envset=${spec#*@} && envset=${envset//,/ }
  restore
  if [ "$name" != base ]; then
    [ -d "ab/$name" ] || { echo "=== $spec: no folder ab/$name"; continue; }
    cp -r "ab/$name/." .
  fi
  if ! (cd "$BUILD" && ninja bench_moe_cuda > "$OUT/build-$name.log" 2>&1); then
    echo "=== $spec: build failed"; tail -20 "$OUT/build-$name.log"; continue
  fi
  [ -n "${SASS:-}" ] && kernel_sass "$SASS" > "$OUT/$name.sass"
  echo "=== $spec"
  # A variant that hangs (a pipeline deadlock) costs STEP_TIMEOUT seconds, not the whole call.
  timeout "${STEP_TIMEOUT:-240}" env $envset "$B" ${BENCH_ARGS:-} 2>&1 | grep -v "^shape" | tail -40
  if [ -n "${TEST_FILTER:-}" ] && [[ " $tested " != *" $name "* ]] &&
     { [[ -n "${TEST_VARIANTS:-}" && " $TEST_VARIANTS " == *" $name "* ]] ||
       [[ -z "${TEST_VARIANTS:-}" && "$name" != base ]]; }; then
    tested="$tested $name"
    T=$BUILD/mxmoe_cuda_tests
    if ! (cd "$BUILD" && ninja mxmoe_cuda_tests >> "$OUT/build-$name.log" 2>&1); then
      echo "tests: build failed"; tail -20 "$OUT/build-$name.log"; continue
    fi
    run_tests() { timeout "${STEP_TIMEOUT:-240}" env $envset MXMOE_TEST_QUICK=1 "$@" "$T" --gtest_filter="$TEST_FILTER" --gtest_brief=1 2>&1; }
    run_tests > "$OUT/test-$name.log"; echo "tests: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/test-$name.log" | tr '\n' ' ')"
    grep -E "Failure|FAILED" "$OUT/test-$name.log" | head -10
    for tool in memcheck racecheck; do
      flag=${tool^^}; [ "${!flag:-0}" = 1 ] || continue
      run_tests compute-sanitizer --tool "$tool" > "$OUT/$tool-$name.log"
      echo "$tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool-$name.log" | tail -1)"
    done
  fi
done
restore
