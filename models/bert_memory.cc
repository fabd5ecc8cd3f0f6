// Closed-form BERT parameter count and saved-activation estimate. Each entry names the op
// that saves the tensor; where two ops save views of one storage it is counted once.
#include "models/bert_memory.h"

#include <numeric>

#include "core/error.h"

namespace accel::models {

int64_t bert_for_sequence_classification_num_parameters(const BertConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t layer_norm = 2 * H;  // weight + bias
  const int64_t embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * H + layer_norm;
  const int64_t attention = 4 * (H * H + H) + layer_norm;  // query, key, value, output dense
  const int64_t feed_forward = (H * I + I) + (I * H + H) + layer_norm;
  const int64_t pooler = H * H + H;
  const int64_t classifier = H * c.num_labels + c.num_labels;
  return embeddings + c.num_hidden_layers * (attention + feed_forward) + pooler + classifier;
}

namespace {
int64_t sum_bytes(const std::vector<SavedActivation>& list) {
  return std::accumulate(list.begin(), list.end(), int64_t{0},
                         [](int64_t total, const SavedActivation& a) { return total + a.bytes; });
}
}  // namespace

int64_t ActivationEstimate::per_layer_bytes() const { return sum_bytes(per_encoder_layer); }

int64_t ActivationEstimate::last_layer_bytes() const { return sum_bytes(last_encoder_layer); }

int64_t ActivationEstimate::total_bytes() const {
  return sum_bytes(embeddings) + (num_encoder_layers - 1) * per_layer_bytes() + last_layer_bytes() + sum_bytes(head);
}

ActivationEstimate bert_training_activations(const BertConfig& c, int64_t batch_size, int64_t seq_len,
                                             bool low_precision) {
  ACCEL_CHECK(batch_size >= 1 && seq_len >= 1, "activation estimate: expected a positive batch size and sequence "
              "length, got batch size ", batch_size, " and sequence length ", seq_len);
  ACCEL_CHECK(seq_len <= c.max_position_embeddings, "activation estimate: sequence length ", seq_len,
              " exceeds the config's max_position_embeddings ", c.max_position_embeddings);
  const int64_t B = batch_size, T = seq_len, H = c.hidden_size, I = c.intermediate_size;
  const int64_t heads = c.num_attention_heads, L = c.num_labels;
  const int64_t tokens = B * T;          // rows of every (B, T, ·) tensor
  const int64_t scores = B * heads * T * T;  // elements of (B, heads, T, T)
  const int64_t fp32 = 4, mask = 1, int64 = 8;
  const int64_t gemm = low_precision ? 2 : 4;  // bytes of a GEMM operand under autocast or in fp32
  const std::string gemm_name = low_precision ? "16-bit" : "fp32";
  const bool hidden_dropout = c.hidden_dropout_prob > 0.0;
  const bool classifier_dropout = c.classifier_dropout.value_or(c.hidden_dropout_prob) > 0.0;
  // layer_norm saves its fp32 input (rows, cols) and the per-row mean and rstd.
  const int64_t embedding_layer_norm_bytes = tokens * H * fp32 + 2 * tokens * fp32;

  ActivationEstimate estimate;
  estimate.num_encoder_layers = c.num_hidden_layers;

  auto& emb = estimate.embeddings;
  emb.push_back({"position ids (T) and token type ids (B, T), int64, saved by the embedding lookups",
                 T * int64 + tokens * int64});
  emb.push_back({"embedding LayerNorm input (B, T, hidden) fp32 + mean/rstd (B*T) fp32", embedding_layer_norm_bytes});
  if (hidden_dropout) emb.push_back({"embedding dropout mask (B, T, hidden) bool", tokens * H * mask});

  // Every layer but the last: query, key and value run as one Linear on their weights
  // concatenated (nn/attention.cc).
  auto& layer = estimate.per_encoder_layer;
  layer.push_back({std::string("stacked query/key/value dense input (B, T, hidden) ") +
                       (low_precision ? "16-bit cast of the layer input" : "fp32, the layer input"),
                   tokens * H * gemm});
  if (!low_precision) {  // under autocast the saved weight is the 16-bit cast, counted with the weights
    layer.push_back({"stacked query/key/value weight (3 hidden, hidden) fp32, the concatenation saved by its Linear",
                     3 * H * H * fp32});
  }
  // The fused kernel reads the dense output as it is (16-bit under autocast); it keeps no
  // dropout mask (the CPU kernel marks dropped probabilities by their sign bit, CUDA redraws).
  layer.push_back({"stacked query/key/value dense output (B, T, 3 hidden) " + gemm_name + ", saved by the fused "
                   "attention",
                   3 * tokens * H * gemm});
  layer.push_back({"attention probabilities (B, heads, T, T) fp32 before dropout, saved by the fused attention",
                   scores * fp32});

  // The last layer computes position 0 alone (BertModel::pooled_output): keys and values from
  // the B * T rows, everything after the attention on B rows. Its projections are three Linears.
  auto& last = estimate.last_encoder_layer;
  if (low_precision) {
    last.push_back({"key and value dense inputs: two 16-bit casts of the layer input (B, T, hidden)",
                    2 * tokens * H * gemm});
    last.push_back({"query dense input: the 16-bit cast of the layer input at position 0 (B, 1, hidden)",
                    B * H * gemm});
  } else {
    last.push_back({"query, key and value dense input (B, T, hidden) fp32, the layer input (the query reads a view "
                    "of it)",
                    tokens * H * fp32});
  }
  last.push_back({"query (B, 1, hidden), key and value (B, T, hidden) dense outputs " + gemm_name +
                      ", saved by the fused attention",
                  (B + 2 * tokens) * H * gemm});
  last.push_back({"attention probabilities (B, heads, 1, T) fp32 before dropout, saved by the fused attention",
                  B * heads * T * fp32});

  // What follows the attention, on `rows` rows: B * T, or B in the last layer.
  auto add_after_attention = [&](std::vector<SavedActivation>& list, int64_t rows, const std::string& positions) {
    const std::string shape = "(B, " + positions + ", hidden)", wide = "(B, " + positions + ", intermediate)";
    const int64_t layer_norm_bytes = rows * H * fp32 + 2 * rows * fp32;
    list.push_back({"attention context " + shape + " " + gemm_name + ", attention output dense input",
                    rows * H * gemm});
    if (hidden_dropout) list.push_back({"attention output dropout mask " + shape + " bool", rows * H * mask});
    list.push_back({"attention LayerNorm input " + shape + " fp32 + mean/rstd", layer_norm_bytes});
    list.push_back({"intermediate dense input " + shape + " " +
                        (low_precision ? "16-bit cast" : "fp32, the LayerNorm output"),
                    rows * H * gemm});
    if (c.hidden_act == "relu") {
      list.push_back({"ReLU output " + wide + " " + gemm_name + ", also the output dense input", rows * I * gemm});
    } else {
      list.push_back({"GELU derivative at its input " + wide + " " + gemm_name + ", from its forward",
                      rows * I * gemm});
      list.push_back({"GELU output " + wide + " " + gemm_name + ", output dense input", rows * I * gemm});
    }
    if (hidden_dropout) list.push_back({"output dropout mask " + shape + " bool", rows * H * mask});
    list.push_back({"output LayerNorm input " + shape + " fp32 + mean/rstd", layer_norm_bytes});
  };
  add_after_attention(layer, tokens, "T");
  add_after_attention(last, B, "1");

  auto& head = estimate.head;
  head.push_back({std::string("pooler dense input hidden[:, 0] (B, hidden) ") +
                      (low_precision ? "16-bit cast" : "fp32, the last layer's output"),
                  B * H * gemm});
  head.push_back({"pooler tanh output (B, hidden) " + gemm_name, B * H * gemm});
  if (classifier_dropout) {
    head.push_back({"classifier dropout mask (B, hidden) bool", B * H * mask});
    head.push_back({"classifier input (B, hidden) " + gemm_name + ", dropout output", B * H * gemm});
  }
  const bool regression = c.problem_type == "regression" || (c.problem_type.empty() && c.num_labels == 1);
  if (regression) {
    head.push_back({"MSE loss difference (B) fp32", B * fp32});
  } else {
    head.push_back({"cross-entropy (fused): its fp32 logits (B, num_labels) + per-sample log-sum-exp (B) fp32",
                    B * L * fp32 + B * fp32});
  }
  return estimate;
}

}  // namespace accel::models
