#!/usr/bin/env bash
# Configures, builds and runs the whole test suite (CTest over GoogleTest) in build/.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L golden`.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# Real BERT weights for the MiniLM parity tests; they skip with a message if this fails.
bash scripts/fetch_minilm.sh >/dev/null || echo "test.sh: could not fetch all-MiniLM-L6-v2; its tests will skip"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" "$@"
