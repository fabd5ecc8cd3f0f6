// tests/models/test_minilm.cc: accel's BERT with the real all-MiniLM-L6-v2 weights against
// transformers and sentence-transformers. The reference (tests/golden/minilm/
// reference.safetensors, made by tests/golden/make_minilm_reference.py) holds 64 varied
// sentences as the HF tokenizer encoded them, AutoModel's last hidden state at the real
// tokens, and sentence-transformers' embeddings (mean pooling + L2 normalization).
//
// The weights (90 MB) are not in the repository: scripts/fetch_minilm.sh downloads them.
// The test looks in $ACCEL_MINILM_DIR, else in the script's default directory, and skips
// with a message when neither holds the model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "core/autograd/grad_mode.h"
#include "core/safetensors.h"
#include "core/weight_packing.h"
#include "models/bert.h"
#include "models/pretrained.h"

namespace accel::models {
namespace {

namespace fs = std::filesystem;

const std::string kReference = std::string(ACCEL_GOLDEN_DIR) + "/../minilm/reference.safetensors";

// Where scripts/fetch_minilm.sh puts the model.
std::string minilm_dir() {
  if (const char* dir = std::getenv("ACCEL_MINILM_DIR")) return dir;
  if (const char* cache = std::getenv("ACCEL_CACHE")) return std::string(cache) + "/models/all-MiniLM-L6-v2";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/accel/models/all-MiniLM-L6-v2";
}

// The last hidden state at the real tokens (the reference stores them sentence after sentence)
// and the sentence embeddings against the reference's.
void expect_matches_reference(const Tensor& hidden, const std::map<std::string, Tensor>& reference) {
  const Tensor& mask = reference.at("attention_mask");
  const Tensor& expected_hidden = reference.at("last_hidden_state");  // (real tokens, 384)
  const Tensor& expected_embeddings = reference.at("embeddings");     // (N, 384)
  Tensor embeddings = l2_normalize(mean_pooling(hidden, mask));        // (N, 384)
  ASSERT_EQ(embeddings.sizes(), expected_embeddings.sizes());

  const int64_t N = mask.size(0), T = mask.size(1), H = hidden.size(2);
  std::vector<float> actual = hidden.contiguous().to_vector<float>();
  std::vector<float> expected = expected_hidden.to_vector<float>();
  std::vector<int64_t> keep = mask.to_vector<int64_t>();
  ASSERT_EQ(static_cast<int64_t>(expected.size()), std::count(keep.begin(), keep.end(), 1) * H);
  double max_abs_error = 0;
  int64_t worst_sentence = -1;
  size_t next = 0;  // position in the packed reference
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t t = 0; t < T; ++t) {
      if (!keep[n * T + t]) continue;
      for (int64_t h = 0; h < H; ++h, ++next) {
        double error = std::fabs(actual[(n * T + t) * H + h] - expected[next]);
        if (error > max_abs_error) {
          max_abs_error = error;
          worst_sentence = n;
        }
      }
    }
  }
  EXPECT_LE(max_abs_error, 1e-4) << "last hidden state, worst in sentence " << worst_sentence;
  std::cout << "[          ] last hidden state: max abs error " << max_abs_error << "\n";

  // Cosine of each embedding with sentence-transformers', in float64.
  Tensor a = embeddings.to(kFloat64), b = expected_embeddings.to(kFloat64);
  Tensor cosines = (a * b).sum({1}) / (sqrt((a * a).sum({1})) * sqrt((b * b).sum({1})));
  std::vector<double> cos = cosines.to_vector<double>();
  double min_cosine = 1;
  for (int64_t n = 0; n < N; ++n) {
    EXPECT_GE(cos[n], 0.99999) << "embedding of sentence " << n;
    min_cosine = std::min(min_cosine, cos[n]);
  }
  std::cout << "[          ] embeddings: min cosine " << std::setprecision(12) << min_cosine << "\n";
}

TEST(MiniLM, MatchesTransformersAndSentenceTransformers) {
  const std::string dir = minilm_dir();
  if (!fs::exists(fs::path(dir) / "model.safetensors")) {
    GTEST_SKIP() << "all-MiniLM-L6-v2 not found in " << dir
                 << "; run scripts/fetch_minilm.sh (or set ACCEL_MINILM_DIR) to enable this test";
  }
  auto reference = safetensors::load(kReference).tensors;
  const Tensor& ids = reference.at("input_ids");  // (N, T)
  const Tensor& mask = reference.at("attention_mask");

  PretrainedOptions options;
  options.verbose = false;
  auto model = bert_from_pretrained(dir, options);
  model->eval();
  EXPECT_EQ(model->config.hidden_size, 384);
  EXPECT_EQ(model->encoder->layer->size(), 6u);
  auto forward = [&] { return model->forward(ids, mask, reference.at("token_type_ids")).last_hidden_state; };
  expect_matches_reference(forward(), reference);  // (N, T, 384), autograd on (the weights require grad)

  // Inference: the first forward remembers the weights, the second packs them (weight_packing.h),
  // the third runs on the packed copies alone.
  NoGradGuard no_grad;
  const size_t packs_before = cpu_packed_weight_stats().packs;
  forward();
  forward();
  EXPECT_GT(cpu_packed_weight_stats().packs, packs_before) << "inference packed no weight";
  SCOPED_TRACE("packed weights");
  expect_matches_reference(forward(), reference);
}

}  // namespace
}  // namespace accel::models
