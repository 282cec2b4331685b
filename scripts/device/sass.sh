#!/usr/bin/env bash
# The SASS of chosen kernels (no profiling): build (sm_90a), then cuobjdump of every kernel whose mangled
# name contains one of FNS (space separated) into $OUT/<pattern>.sass, and per file an opcode histogram
# (the first 40 lines of `opcodes.txt`) to see what a loop spends its instructions on.
#   run: FNS='tile128_kernelILNS1_5WKindE0ELb1ELb1E gemv_kernelILNS1_5WKindE0ELb1E' bash scripts/device/sass.sh
#        (carry: [".devdeps"]; a mangled pattern: W = 0 NVFP4, GATED, then WG or DEPTH)
set -uo pipefail
source "$(dirname "$0")/build_env.sh" build-sass.log
for k in ${FNS:-tile128_kernelILNS1_5WKindE0ELb1ELb1E}; do
  kernel_sass "$k" > "$OUT/$k.sass"
  echo "== $k: $(grep -c 'Function :' "$OUT/$k.sass") function(s), $(grep -cE '^ +/\*[0-9a-f]{4,}\*/' "$OUT/$k.sass") instructions"
  grep -oE '^ +/\*[0-9a-f]{4,}\*/ +(@!?U?P[0-9T] +)?[A-Z0-9_]+' "$OUT/$k.sass" | awk '{print $NF}' | sort | uniq -c |
    sort -rn | head -40 > "$OUT/$k.opcodes.txt"
  head -12 "$OUT/$k.opcodes.txt"
done
