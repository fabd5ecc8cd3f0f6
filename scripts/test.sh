#!/usr/bin/env bash
# Configures, builds and runs the whole test suite (CTest over GoogleTest) in build/.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L golden`.
# The suite runs on the build that ships: with the CUDA backend wherever nvcc exists (no GPU
# is needed to build or load it; tests that need a GPU skip with a message without one).
# ACCEL_CUDA=OFF scripts/test.sh tests a CPU-only build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
if [ -z "${ACCEL_CUDA:-}" ]; then
  # The same search as CMakeLists.txt's find_program(nvcc): PATH, then /usr/local/cuda/bin.
  if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then ACCEL_CUDA=ON; else ACCEL_CUDA=OFF; fi
fi
# Real BERT weights for the MiniLM parity tests; they skip with a message if this fails.
bash scripts/fetch_minilm.sh >/dev/null || echo "test.sh: could not fetch all-MiniLM-L6-v2; its tests will skip"
echo "test.sh: ACCEL_CUDA=$ACCEL_CUDA"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DACCEL_CUDA="$ACCEL_CUDA"
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" "$@"
