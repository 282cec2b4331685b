#!/usr/bin/env bash
# Builds the CUDA backend on the device machine and checks it: ctest -L cuda, then compute-sanitizer
# memcheck and racecheck on mxmoe_cuda_tests (device tests only, MXMOE_TEST_QUICK=1), once for the
# quantizers and once for the MoE layer (CudaMoeDevice*, CudaMoeRouting*). Logs go to
# $OUT (the device tool's folder; ./out/device elsewhere); a short summary table is printed last.
#
# The device image has nvcc, cmake, ninja and a host compiler but not GoogleTest, fmt, nlohmann_json or
# CLI11 (nor, perhaps, OpenBLAS): the call carries Debian packages of those in .devdeps/deb (made here
# with `cd .devdeps/deb && apt-get download libgtest-dev libgmock-dev libfmt-dev libfmt9
# nlohmann-json3-dev libcli11-dev libopenblas-pthread-dev libopenblas0-pthread libgfortran5
# libquadmath0`), unpacked with dpkg -x into a private prefix. Golden files: ../shared when present,
# else .devdeps/shared (a copy of shared/golden: the *.safetensors files and the moe_* checkpoint folders),
# else the golden tests skip.
#
#   run: bash scripts/device/test.sh            (carry: [".devdeps"])
#        bash scripts/device/test.sh --build-only
#   env: ARCHS (90a;80), PARTS (quant moe: which sanitizer runs), SAN_TIMEOUT (200 s per sanitizer run)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out/device}
BUILD=${BUILD:-/tmp/mxmoe-build-cuda}
ARCHS=${ARCHS:-90a;80}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
declare -a SUMMARY=()
note() { SUMMARY+=("$(printf '%-22s %-6s %s' "$1" "$2" "$3")"); }

# ---- dependencies ------------------------------------------------------------------------------
PREFIX=/tmp/mxmoe-deps
if compgen -G ".devdeps/deb/*.deb" > /dev/null; then
  mkdir -p "$PREFIX"
  for f in .devdeps/deb/*.deb; do dpkg -x "$f" "$PREFIX"; done
  PREFIX_ARG=(-DCMAKE_PREFIX_PATH="$PREFIX/usr")
  LIB=$PREFIX/usr/lib/x86_64-linux-gnu
  # OpenBLAS (mxmoe_core needs it): Debian ships it behind update-alternatives links, which dpkg -x
  # does not make; link the pthread flavour where FindBLAS and the loader look, and its cblas.h.
  if [ -d "$LIB/openblas-pthread" ]; then
    ln -sf openblas-pthread/libopenblas.so "$LIB/libopenblas.so"
    ln -sf openblas-pthread/libopenblas.so.0 "$LIB/libopenblas.so.0"
    export CPATH="$PREFIX/usr/include/x86_64-linux-gnu/openblas-pthread${CPATH:+:$CPATH}"
  fi
  export LD_LIBRARY_PATH="$LIB:$LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  PREFIX_ARG=()
fi
if [ -d "$ROOT/../shared/golden" ]; then SHARED="$ROOT/../shared"
elif [ -d "$ROOT/.devdeps/shared/golden" ]; then SHARED="$ROOT/.devdeps/shared"
else SHARED="$ROOT/../shared"; fi
GEN=(-G Ninja); command -v ninja > /dev/null || GEN=()

{
  # The device's .git may be older than the tree that was sent: name the sent files' git tree too (ab/ and
  # the carried paths left out), to match with `git log --format='%h %T'` here.
  echo "date: $(date -u +%FT%TZ)"; echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  idx=$(mktemp); rm -f "$idx"
  echo "tree: $(GIT_INDEX_FILE=$idx git add -A -- . ':!ab' ':!.devdeps' 2>/dev/null &&
    GIT_INDEX_FILE=$idx git write-tree 2>/dev/null || echo unknown)"; rm -f "$idx"
  nvidia-smi -L 2>&1; nvidia-smi --query-gpu=driver_version,clocks.sm,clocks.mem --format=csv 2>&1
  nvcc --version 2>&1 | tail -2; cmake --version 2>&1 | head -1; c++ --version 2>&1 | head -1
  compute-sanitizer --version 2>&1 | head -2; echo "shared: $SHARED"; nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# ---- configure + build -------------------------------------------------------------------------
t0=$(date +%s)
if cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DMXMOE_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$ARCHS" \
     -DMXMOE_BENCH=OFF -DMXMOE_TESTS=ON "-DMXMOE_SHARED_DIR=$SHARED" "${PREFIX_ARG[@]}" > "$OUT/build.log" 2>&1 &&
   cmake --build "$BUILD" -j "$(nproc)" --target mxmoe_cuda_tests bench_quant_cuda bench_moe_cuda >> "$OUT/build.log" 2>&1; then
  note build ok "$(( $(date +%s) - t0 ))s, archs $ARCHS"
  BUILD_OK=1
else
  note build FAIL "see build.log"; BUILD_OK=0
  tail -40 "$OUT/build.log"
fi
if [ "${1:-}" = "--build-only" ]; then printf '%s\n' "${SUMMARY[@]}"; [ $BUILD_OK = 1 ]; exit; fi

# ---- tests -------------------------------------------------------------------------------------
STATUS=0
if [ $BUILD_OK = 1 ]; then
  t0=$(date +%s)
  (cd "$BUILD" && ctest -L cuda --output-on-failure --timeout 300) > "$OUT/ctest.log" 2>&1
  rc=$?
  line=$(grep -E "tests passed|tests failed" "$OUT/ctest.log" | tail -1)
  note "ctest -L cuda" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$line ($(( $(date +%s) - t0 ))s)"
  [ $rc = 0 ] || { STATUS=1; grep -E "Failure|FAILED|mismatch" "$OUT/ctest.log" | head -20; }
  skipped=$(grep -c "\*\*\*Skipped" "$OUT/ctest.log" || true)
  [ "$skipped" = 0 ] || note "  skipped" "-" "$skipped (see ctest.log)"

  for part in ${PARTS:-quant moe}; do
    if [ $part = quant ]; then filter='*Device*:-*MoeDevice*'; else filter='*MoeDevice*:*CudaMoeRouting*'; fi
    for tool in memcheck racecheck; do
      t0=$(date +%s)
      extra=(); [ $tool = memcheck ] && extra=(--leak-check full)
      MXMOE_TEST_QUICK=1 timeout "${SAN_TIMEOUT:-200}" compute-sanitizer --tool $tool "${extra[@]}" --error-exitcode 97 \
        "$BUILD/mxmoe_cuda_tests" --gtest_filter="$filter" --gtest_brief=1 > "$OUT/$tool-$part.log" 2>&1
      rc=$?
      errs=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/$tool-$part.log" | tail -1)
      gt=$(grep -E "^\[  (PASSED|FAILED)  \]" "$OUT/$tool-$part.log" | tr '\n' ' ')
      case $rc in 0) s=ok ;; 124) s=TIME ;; *) s=FAIL ;; esac
      note "san $tool $part" "$s" "${errs:-no summary} ${gt}($(( $(date +%s) - t0 ))s)"
      [ $rc = 0 ] || { STATUS=1; tail -25 "$OUT/$tool-$part.log"; }
    done
  done
else
  STATUS=1
fi

echo
echo "==== scripts/device/test.sh summary (logs in $OUT) ===="
printf '%s\n' "${SUMMARY[@]}"
exit $STATUS
