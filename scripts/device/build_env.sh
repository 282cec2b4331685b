# Sourced by the device scripts that time or profile (fused_ab.sh, profile.sh, quick.sh): repository
# root, $OUT, a build in $BUILD (sm_90a unless ARCHS says otherwise) made by test.sh --build-only with its
# log in $OUT/$1, and test.sh's private library prefix on the loader path.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-$PWD/out/device}
export BUILD=${BUILD:-/tmp/mxmoe-build-cuda} ARCHS=${ARCHS:-90a}
mkdir -p "$OUT"
bash scripts/device/test.sh --build-only > "$OUT/$1" 2>&1 || { tail -30 "$OUT/$1"; exit 1; }
# kernel_sass 'PAT ...': the SASS of the kernels in bench_moe_cuda whose mangled names contain one of
# the space-separated patterns, on stdout.
kernel_sass() {
  cuobjdump -sass "$BUILD/bench_moe_cuda" 2>/dev/null | awk -v pats="$1" 'BEGIN{n = split(pats, P, " ")}
    /Function :/{p = 0; for (i = 1; i <= n; ++i) if (index($0, P[i]) > 0) p = 1} p'
}
LIB=/tmp/mxmoe-deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$LIB:$LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
