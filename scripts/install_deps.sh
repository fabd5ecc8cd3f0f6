#!/usr/bin/env bash
# Installs every system dependency accel needs on a fresh Debian (bookworm) machine.
# Python packages (PyTorch, transformers) are only needed to regenerate golden files and
# run benchmarks; pass --python to install them too.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(
  build-essential cmake ninja-build pkg-config git
  libdnnl-dev libeigen3-dev
  libgtest-dev libgmock-dev
  openmpi-bin libopenmpi-dev
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libutf8proc-dev
  libcurl4-openssl-dev libssl-dev
  doxygen
  clang llvm libclang-rt-dev libomp-dev  # scripts/sanitize.sh: clang, its sanitizer runtimes, llvm-symbolizer
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install_deps: all system packages present"
fi

if [ "${1:-}" = "--python" ]; then
  python3 -m pip install -q torch numpy safetensors
fi
