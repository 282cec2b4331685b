#!/usr/bin/env bash
# The main job on its built-in default: set up, build, then write a small Qwen3-MoE NVFP4 checkpoint,
# run it in both emulation modes and report accuracy against bf16 and speed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh -DMXMOE_TESTS=OFF -DMXMOE_BENCH=OFF
"${BUILD_DIR:-build}/mxmoe" demo --dir "${DEMO_DIR:-build/mxmoe-demo}" "$@"
