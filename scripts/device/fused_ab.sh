#!/usr/bin/env bash
# A/B runs of the fused small-T kernel (sm90_fp4_moe_fused.cu): build, then the Qwen3 layer at small T
# with per-stage times (--stages 1) for the default plan and the K-split variants, and the multi-kernel
# forward beside it.   run: bash scripts/device/fused_ab.sh  (carry: [".devdeps"])
set -uo pipefail
source "$(dirname "$0")/build_env.sh" build-ab.log
B="$BUILD/bench_moe_cuda --shape ${SHAPE:-qwen3-30b-a3b} --tokens ${TOKENS:-1,2,4} --schemes ${SCHEMES:-w_nvfp4_a_nvfp4} --modes vllm"
run() { echo "== $1"; shift; env "$@" timeout 60 $B --paths auto --stages 1 | grep -v "^shape\|^copy"; }
{
  run default
  for ks in 1 2 4 8; do run "ksplit $ks" MXMOE_CUDA_FUSED_KSPLIT=$ks; done
  echo "== multi"; timeout 60 $B --paths multi | grep -v "^shape\|^copy"
} 2>&1 | tee "$OUT/fused_ab.txt"
