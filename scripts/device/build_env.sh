# Sourced by the device scripts that time or profile (fused_ab.sh, profile.sh, quick.sh): repository
# root, $OUT, a build in $BUILD (sm_90a unless ARCHS says otherwise) made by test.sh --build-only with its
# log in $OUT/$1, and test.sh's private library prefix on the loader path.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-$PWD/out/device}
export BUILD=${BUILD:-/tmp/mxmoe-build-cuda} ARCHS=${ARCHS:-90a}
mkdir -p "$OUT"
bash scripts/device/test.sh --build-only > "$OUT/$1" 2>&1 || { tail -30 "$OUT/$1"; exit 1; }
LIB=/tmp/mxmoe-deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$LIB:$LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
