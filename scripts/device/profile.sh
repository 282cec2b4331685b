#!/usr/bin/env bash
# Where one forward's time goes, with Nsight Compute (the device image has ncu; no nsys):
#  1. per kernel of the forward at each T in TOKENS: its duration (graph nodes, in launch order);
#  2. for the kernels matched by DETAIL ("T:regex", space separated): ncu's speed-of-light, warp-state,
#     scheduler, occupancy and memory sections, to see what bounds them.
# Clocks are left alone (--clock-control none, device/METHOD.md). Logs in $OUT; a table is printed last.
#   run: bash scripts/device/profile.sh   (carry: [".devdeps"])
set -uo pipefail
source "$(dirname "$0")/build_env.sh" build-profile.log
B=("$BUILD/bench_moe_cuda" --shape "${SHAPE:-qwen3-30b-a3b}" --schemes "${SCHEME:-w_nvfp4_a_nvfp4}" --modes vllm)
NCU=(ncu --clock-control none --graph-profiling node)

for T in ${TOKENS:-1 64 4096}; do
  # Launches before the first replayed forward are the layer's setup; 40 covers setup + two forwards.
  timeout 240 "${NCU[@]}" --metrics gpu__time_duration.sum --launch-count 40 --csv --page raw \
    "${B[@]}" --tokens "$T" > "$OUT/ncu-times-T$T.csv" 2> "$OUT/ncu-times-T$T.err"
done
for d in ${DETAIL-4096:tile128 64:gemv 1:fused}; do
  T=${d%%:*} re=${d#*:}
  timeout 240 "${NCU[@]}" -k "regex:$re" --launch-count 1 --section SpeedOfLight --section WarpStateStats \
    --section SchedulerStats --section Occupancy --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    --section LaunchStats "${B[@]}" --tokens "$T" > "$OUT/ncu-detail-T$T-$re.txt" 2>&1
done

python3 - "$OUT" ${TOKENS:-1 64 4096} <<'PY'
import csv, sys, os, re
out = sys.argv[1]
for T in sys.argv[2:]:
    path = os.path.join(out, f"ncu-times-T{T}.csv")
    rows = []
    try:
        lines = [l for l in open(path) if l.startswith('"')]
        rd = csv.DictReader(lines)
        for r in rd:
            v = r.get("gpu__time_duration.sum", "")
            if v and re.match(r"^[0-9.,]+$", v):
                rows.append((r.get("Kernel Name", "?")[:70], float(v.replace(",", ""))))
    except Exception as ex:
        print(f"T={T}: no timings ({ex})"); continue
    print(f"\nT={T}: kernel durations in launch order (unit as ncu reports, usually ns)")
    for name, v in rows: print(f"  {v:>10.0f}  {name}")
PY
for f in "$OUT"/ncu-detail-*.txt; do
  echo "== $(basename "$f")"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Issue Slots Busy|Achieved Occupancy|Registers Per|No Eligible|Warp Cycles Per Issued|Active Warps Per Scheduler|Eligible Warps" "$f" | head -16
done
