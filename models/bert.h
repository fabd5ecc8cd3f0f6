/// @file
/// BERT (Devlin et al. 2018) as transformers' BertModel, module for module and name for name,
/// so Hugging Face checkpoints load directly: embeddings (word + position + token type,
/// LayerNorm, dropout), a stack of post-LayerNorm encoder layers, an optional tanh pooler,
/// and BertForSequenceClassification on top. Plus sentence-embedding pooling.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "models/bert_config.h"
#include "nn/attention.h"
#include "nn/layers.h"

namespace accel::models {

class BertEmbeddings : public nn::Module {
 public:
  explicit BertEmbeddings(const BertConfig& config);
  /// input_ids, token_type_ids (B, T) -> (B, T, hidden)
  Tensor forward(const Tensor& input_ids, const Tensor& token_type_ids) const;
  std::shared_ptr<nn::Embedding> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<nn::LayerNorm> LayerNorm;
  std::shared_ptr<nn::Dropout> dropout;
};

/// dense + dropout + residual + LayerNorm: BertSelfOutput and BertOutput share this shape.
class BertResidualOutput : public nn::Module {
 public:
  BertResidualOutput(int64_t in_features, const BertConfig& config);
  Tensor forward(const Tensor& hidden, const Tensor& residual) const;
  std::shared_ptr<nn::Linear> dense;
  std::shared_ptr<nn::LayerNorm> LayerNorm;
  std::shared_ptr<nn::Dropout> dropout;
};

class BertAttention : public nn::Module {
 public:
  explicit BertAttention(const BertConfig& config);
  /// (B, T, hidden) -> (B, T, hidden), or (B, 1, hidden) for position 0 alone.
  Tensor forward(const Tensor& hidden, const Tensor& additive_mask, bool first_position_only = false) const;
  std::shared_ptr<nn::MultiHeadSelfAttention> self;
  std::shared_ptr<BertResidualOutput> output;
};

class BertIntermediate : public nn::Module {
 public:
  explicit BertIntermediate(const BertConfig& config);
  Tensor forward(const Tensor& hidden) const;
  std::shared_ptr<nn::Linear> dense;
  std::string activation;
};

class BertLayer : public nn::Module {
 public:
  explicit BertLayer(const BertConfig& config);
  /// (B, T, hidden) -> (B, T, hidden). first_position_only: the output at position 0 alone,
  /// (B, 1, hidden), attending over every position but computing nothing else for the others.
  Tensor forward(const Tensor& hidden, const Tensor& additive_mask, bool first_position_only = false) const;
  std::shared_ptr<BertAttention> attention;
  std::shared_ptr<BertIntermediate> intermediate;
  std::shared_ptr<BertResidualOutput> output;
};

class BertEncoder : public nn::Module {
 public:
  explicit BertEncoder(const BertConfig& config);
  /// (B, T, hidden) -> (B, T, hidden); with first_position_only the last layer computes
  /// position 0 alone and the result is (B, 1, hidden).
  Tensor forward(const Tensor& hidden, const Tensor& additive_mask, bool first_position_only = false) const;
  std::shared_ptr<nn::ModuleList<BertLayer>> layer;
  bool gradient_checkpointing = false;
};

class BertPooler : public nn::Module {
 public:
  explicit BertPooler(const BertConfig& config);
  /// tanh(dense(hidden[:, 0])): (B, T, hidden) -> (B, hidden)
  Tensor forward(const Tensor& hidden) const;
  std::shared_ptr<nn::Linear> dense;
};

struct BertOutput {
  Tensor last_hidden_state;  ///< (B, T, hidden)
  Tensor pooler_output;      ///< (B, hidden), undefined without a pooler
};

/// transformers' BertPreTrainedModel._init_weights over `root` and every module below it:
/// N(0, initializer_range) for Linear and Embedding weights (the padding row zero), zero biases,
/// unit LayerNorms. Other modules' parameters are left alone.
void init_bert_weights(nn::Module& root, double initializer_range);

class BertModel : public nn::Module {
 public:
  BertModel(const BertConfig& config, bool add_pooling_layer = true);
  /// input_ids (B, T) int64; attention_mask (B, T) of 1/0 and token_type_ids (B, T) optional.
  BertOutput forward(const Tensor& input_ids, const Tensor& attention_mask = Tensor(),
                     const Tensor& token_type_ids = Tensor()) const;
  /// forward(...).pooler_output alone, (B, hidden), for less work: the pooler reads position 0
  /// of the last hidden state only, so the last encoder layer computes that position alone
  /// (keys and values from every position; its query, attention output, LayerNorms and
  /// feed-forward for position 0). That skips 5/6 of one layer's GEMMs. Equal to forward's
  /// pooler output up to rounding, gradients included; with dropout on it draws fewer
  /// random numbers than forward, so the masks differ. Needs the pooling layer.
  Tensor pooled_output(const Tensor& input_ids, const Tensor& attention_mask = Tensor(),
                       const Tensor& token_type_ids = Tensor()) const;
  /// Recompute each encoder layer's activations in backward instead of keeping them.
  void gradient_checkpointing_enable(bool on = true) { encoder->gradient_checkpointing = on; }
  /// BERT's initialization: N(0, initializer_range) weights, zero biases, unit LayerNorms.
  void init_weights();

  BertConfig config;
  std::shared_ptr<BertEmbeddings> embeddings;
  std::shared_ptr<BertEncoder> encoder;
  std::shared_ptr<BertPooler> pooler;  ///< null without a pooling layer

 private:
  struct Embedded {
    Tensor hidden;         ///< (B, T, hidden), the embeddings' output
    Tensor additive_mask;  ///< (B, 1, 1, T), undefined without an attention mask
  };
  Embedded embed(const Tensor& input_ids, const Tensor& attention_mask, const Tensor& token_type_ids) const;
};

struct SequenceClassifierOutput {
  Tensor logits;  ///< (B, num_labels)
  Tensor loss;    ///< scalar, defined when labels were given
};

class BertForSequenceClassification : public nn::Module {
 public:
  explicit BertForSequenceClassification(const BertConfig& config);
  /// labels (B): class indices (int64), or targets (float) for regression (num_labels == 1).
  /// The encoder runs through BertModel::pooled_output, the classifier reading position 0 only.
  SequenceClassifierOutput forward(const Tensor& input_ids, const Tensor& attention_mask = Tensor(),
                                   const Tensor& token_type_ids = Tensor(), const Tensor& labels = Tensor()) const;
  void init_weights();

  BertConfig config;
  std::shared_ptr<BertModel> bert;
  std::shared_ptr<nn::Dropout> dropout;
  std::shared_ptr<nn::Linear> classifier;
};

/// Sentence embeddings from the last hidden state (B, T, hidden) -> (B, hidden).
Tensor mean_pooling(const Tensor& last_hidden_state, const Tensor& attention_mask);
Tensor cls_pooling(const Tensor& last_hidden_state);
Tensor l2_normalize(const Tensor& embeddings, double eps = 1e-12);

}  // namespace accel::models
