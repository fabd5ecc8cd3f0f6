/// @file
/// Hugging Face Hub downloads into the Hugging Face cache, so that from_pretrained takes a
/// Hub id ("sentence-transformers/all-MiniLM-L6-v2") as transformers does, and shares its
/// downloads with Python tools both ways.
///
/// Files come from {endpoint}/{repo_id}/resolve/{revision}/{filename} over libcurl and land
/// in the cache layout huggingface_hub uses:
/// @verbatim
/// {cache}/models--{org}--{name}/refs/{revision}           the commit hash the revision is at
/// {cache}/models--{org}--{name}/blobs/{etag}              file contents, named by ETag
/// {cache}/models--{org}--{name}/snapshots/{commit}/{file} symlinks to ../../blobs/{etag}
/// @endverbatim
/// Downloaded: config.json; model.safetensors, else model.safetensors.index.json and its
/// shards, else pytorch_model.bin; and whichever of vocab.txt, tokenizer.json,
/// tokenizer_config.json, special_tokens_map.json the repository has.
///
/// Environment, as huggingface_hub reads it:
/// @verbatim
/// HF_ENDPOINT      the Hub (default https://huggingface.co)
/// HF_HUB_CACHE     the cache (default $HF_HOME/hub; HF_HOME defaults to ~/.cache/huggingface)
/// HF_HUB_OFFLINE   1: never touch the network; use the cache or fail (TRANSFORMERS_OFFLINE too)
/// HF_TOKEN         sent as "Authorization: Bearer" for private and gated repositories (else
///                  the token file $HF_TOKEN_PATH, default $HF_HOME/token, that `hf auth login` writes)
/// HF_REVISION      the default revision (branch, tag or commit; else "main"); accel's own
/// @endverbatim
///
/// What it is not: an update checker. A snapshot already complete in the cache (config.json and
/// weights) is used without asking the Hub whether the revision has moved; delete its refs/
/// file to fetch the newest commit.
#pragma once

#include <string>

namespace accel::models {

struct HubOptions {
  std::string revision;  ///< a branch, tag or commit hash; empty: $HF_REVISION, else "main"
};

/// True for strings shaped like a Hub repository id, "name" or "org/name": letters, digits,
/// '-', '_' and '.', parts neither starting nor ending with '-' or '.', no "--" or "..", at
/// most 96 characters (the Hub's own rule).
bool is_hub_repo_id(const std::string& text);

/// The cache root: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
std::string hub_cache_dir();

/// The cache's snapshot directory for repo_id at the revision, holding the files listed
/// above: found in the cache when complete there, else downloaded (unless offline).
std::string hub_snapshot_download(const std::string& repo_id, const HubOptions& options = {});

}  // namespace accel::models
