#!/usr/bin/env bash
# Sets up, builds and runs the CPU test suite (CTest label `cpu`; CUDA tests run on a GPU machine
# through scripts/device/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" -L cpu --output-on-failure -j"$(nproc)"
