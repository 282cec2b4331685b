#!/usr/bin/env bash
# Why a kernel waits: ncu's per-reason stall ratios (warps stalled per issued instruction) and its
# source counters (the SASS lines with the most stall samples) for the first launch matching KERNEL
# (regex) at T tokens, plus the SASS of that kernel. Logs in $OUT; the stall table is printed last.
# SOURCE_PAGE=1 also writes ncu's source page (stall samples per SASS instruction, CSV, gzipped) to
# $OUT/stalls-sass.csv.gz, for finding where a reason (say no_instruction) concentrates.
#   run: KERNEL='tile128_kernel<0, true, true>' T=4096 bash scripts/device/stalls.sh   (carry: [".devdeps"])
set -uo pipefail
source "$(dirname "$0")/build_env.sh" build-stalls.log
K=${KERNEL:-tile128} T=${T:-4096}
B=("$BUILD/bench_moe_cuda" --shape "${SHAPE:-qwen3-30b-a3b}" --schemes "${SCHEME:-w_nvfp4_a_nvfp4}" --modes vllm --tokens "$T")
timeout 300 ncu --clock-control none --graph-profiling node -k "regex:$K" --launch-count 1 --page raw \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,sm__cycles_elapsed.avg,smsp__inst_executed_pipe_.*\.sum" \
  "${B[@]}" > "$OUT/stalls-raw.txt" 2>&1
timeout 300 ncu --clock-control none --graph-profiling node -k "regex:$K" --launch-count 1 --section SourceCounters \
  "${B[@]}" > "$OUT/stalls-source.txt" 2>&1
if [ "${SOURCE_PAGE:-0}" = 1 ]; then
  timeout 300 ncu --clock-control none --graph-profiling node -k "regex:$K" --launch-count 1 --section SourceCounters \
    --section WarpStateStats --page source --print-source sass --csv "${B[@]}" 2> "$OUT/stalls-sass.err" | gzip > "$OUT/stalls-sass.csv.gz"
fi
kernel_sass "${SASS_FN:-tile128_kernelILNS1_5WKindE0ELb1ELb1E}" > "$OUT/kernel.sass"
echo "== SASS lines $(wc -l < "$OUT/kernel.sass")"; grep -cE "HGMMA" "$OUT/kernel.sass"
grep -E "Source|stall|Stall" "$OUT/stalls-source.txt" | head -30
grep -E "stalled|inst_executed|cycles_elapsed" "$OUT/stalls-raw.txt" | awk '$NF+0 > 0.05 || /inst_executed.sum|cycles/' | sort -k3 -g | tail -40
