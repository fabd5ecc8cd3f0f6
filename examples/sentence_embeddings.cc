// Sentence embeddings with the C++ API, quoted by docs/getting-started.md: what accel-embed
// does for one batch. Tokenize, run the BERT encoder without autograd, mean-pool over the
// real tokens, L2-normalize, and compare sentences by cosine similarity.
//
//   build/bin/example_sentence_embeddings MODEL_DIR
// With all-MiniLM-L6-v2 (scripts/fetch_minilm.sh) the vectors equal sentence-transformers';
// CI runs it on the random-weight tiny-bert fixture, which only exercises the plumbing.
#include <cmath>
#include <cstdio>
#include <iostream>

#include "core/autograd/grad_mode.h"
#include "models/pretrained.h"
#include "models/tokenizer.h"

using namespace accel;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR\n";
    return 2;
  }
  try {
    // [snippet:embed]
    std::string model_dir = argv[1];
    models::BertTokenizer tokenizer = models::BertTokenizer::from_pretrained(model_dir);
    auto model = models::bert_from_pretrained(model_dir, {.verbose = false});  // BertModel, no head
    model->eval();  // no dropout

    std::vector<std::string> sentences = {"A man is playing a guitar.", "Someone plays an instrument.",
                                          "The stock market fell sharply today."};
    models::BatchEncoding batch = tokenizer.encode_batch(
        sentences, {.truncation = models::Truncation::longest_first, .padding = models::Padding::longest,
                    .max_length = 256});
    const int64_t B = static_cast<int64_t>(sentences.size()), T = static_cast<int64_t>(batch.input_ids[0].size());
    auto to_tensor = [&](const std::vector<std::vector<int64_t>>& rows) {  // (B, T) int64
      std::vector<int64_t> flat;
      for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
      return from_vector(flat, {B, T});
    };
    Tensor mask = to_tensor(batch.attention_mask);

    NoGradGuard no_grad;  // inference: record nothing
    Tensor hidden = model->forward(to_tensor(batch.input_ids), mask, to_tensor(batch.token_type_ids))
                        .last_hidden_state;                                        // (B, T, hidden)
    Tensor embeddings = models::l2_normalize(models::mean_pooling(hidden, mask));  // (B, hidden), unit length
    Tensor cosine = matmul(embeddings, embeddings.t());                           // (B, B)
    // [end]
    std::cout << "embeddings " << shape_str(embeddings.sizes()) << "\n";
    std::vector<float> c = cosine.to_vector<float>();
    for (int64_t i = 0; i < B; ++i) {
      for (int64_t j = 0; j < B; ++j) std::printf("%8.4f", c[i * B + j]);
      std::printf("   %s\n", sentences[i].c_str());
    }
    for (int64_t i = 0; i < B; ++i) {
      if (std::abs(c[i * B + i] - 1.0f) > 1e-4f) {
        std::cerr << "CHECK FAILED: embedding " << i << " is not unit length\n";
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
