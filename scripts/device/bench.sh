#!/usr/bin/env bash
# CUDA quantizer bandwidth on the device machine: builds like test.sh when needed, then runs
# bench_quant_cuda (quantize / dequantize / qdq of bf16 tensors per scheme, GB/s against the measured
# device copy bandwidth). Output: $OUT/bench.txt. Results are recorded by hand in bench/RESULTS.md.
#   run: bash scripts/device/bench.sh   (carry: [".devdeps"])
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/device}
BUILD=${BUILD:-/tmp/mxmoe-build-cuda}
mkdir -p "$OUT"
[ -x "$BUILD/bench_quant_cuda" ] || bash scripts/device/test.sh --build-only || exit 1
LIB=/tmp/mxmoe-deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$LIB:$LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{ echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  date: $(date -u +%FT%TZ)"
  timeout 240 "$BUILD/bench_quant_cuda"; } 2>&1 | tee "$OUT/bench.txt"
