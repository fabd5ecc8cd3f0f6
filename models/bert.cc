// BERT modules. Names of members registered with register_module/register_parameter are
// transformers' names; the forward passes follow modeling_bert.py line for line.
#include "models/bert.h"

#include "core/autograd/grad_mode.h"
#include "core/trace.h"
#include "nn/checkpoint.h"
#include "nn/init.h"

namespace accel::models {

namespace {
Tensor activate(const Tensor& x, const std::string& activation) {
  if (activation == "gelu") return gelu(x, "none");
  if (activation == "relu") return relu(x);
  return gelu(x, "tanh");  // gelu_new, gelu_pytorch_tanh
}
}  // namespace

BertEmbeddings::BertEmbeddings(const BertConfig& c) : Module("BertEmbeddings") {
  word_embeddings = register_module("word_embeddings",
                                    std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, c.pad_token_id));
  position_embeddings = register_module("position_embeddings",
                                        std::make_shared<nn::Embedding>(c.max_position_embeddings, c.hidden_size));
  token_type_embeddings = register_module("token_type_embeddings",
                                          std::make_shared<nn::Embedding>(c.type_vocab_size, c.hidden_size));
  LayerNorm = register_module("LayerNorm", std::make_shared<nn::LayerNorm>(c.hidden_size, c.layer_norm_eps));
  dropout = register_module("dropout", std::make_shared<nn::Dropout>(c.hidden_dropout_prob));
}

Tensor BertEmbeddings::forward(const Tensor& input_ids, const Tensor& token_type_ids) const {
  const int64_t T = input_ids.size(1);
  ACCEL_CHECK(T <= position_embeddings->weight.size(0), "BertModel: sequence length ", T,
              " exceeds max_position_embeddings ", position_embeddings->weight.size(0));
  Tensor positions = arange(T).to(input_ids.device()).unsqueeze(0);  // (1, T)
  Tensor types = token_type_ids.defined() ? token_type_ids : zeros(input_ids.sizes(), {kInt64, input_ids.device()});
  Tensor x = word_embeddings->forward(input_ids) + token_type_embeddings->forward(types) +
             position_embeddings->forward(positions);  // (B, T, hidden)
  return dropout->forward(LayerNorm->forward(x));
}

BertResidualOutput::BertResidualOutput(int64_t in_features, const BertConfig& c) : Module("BertOutput") {
  dense = register_module("dense", std::make_shared<nn::Linear>(in_features, c.hidden_size));
  LayerNorm = register_module("LayerNorm", std::make_shared<nn::LayerNorm>(c.hidden_size, c.layer_norm_eps));
  dropout = register_module("dropout", std::make_shared<nn::Dropout>(c.hidden_dropout_prob));
}

Tensor BertResidualOutput::forward(const Tensor& hidden, const Tensor& residual) const {
  return LayerNorm->forward_add(dropout->forward(dense->forward(hidden)), residual);
}

BertAttention::BertAttention(const BertConfig& c) : Module("BertAttention") {
  self = register_module("self", std::make_shared<nn::MultiHeadSelfAttention>(c.hidden_size, c.num_attention_heads,
                                                                                c.attention_probs_dropout_prob));
  output = register_module("output", std::make_shared<BertResidualOutput>(c.hidden_size, c));
}

Tensor BertAttention::forward(const Tensor& hidden, const Tensor& additive_mask, bool first_position_only) const {
  if (!first_position_only) return output->forward(self->forward(hidden, additive_mask), hidden);
  return output->forward(self->forward_leading(hidden, additive_mask, 1), hidden.slice(1, 0, 1));
}

BertIntermediate::BertIntermediate(const BertConfig& c) : Module("BertIntermediate"), activation(c.hidden_act) {
  dense = register_module("dense", std::make_shared<nn::Linear>(c.hidden_size, c.intermediate_size));
}

Tensor BertIntermediate::forward(const Tensor& hidden) const {
  if (activation == "gelu") return dense->forward_gelu(hidden);
  return activate(dense->forward(hidden), activation);
}

BertLayer::BertLayer(const BertConfig& c) : Module("BertLayer") {
  attention = register_module("attention", std::make_shared<BertAttention>(c));
  intermediate = register_module("intermediate", std::make_shared<BertIntermediate>(c));
  output = register_module("output", std::make_shared<BertResidualOutput>(c.intermediate_size, c));
}

Tensor BertLayer::forward(const Tensor& hidden, const Tensor& additive_mask, bool first_position_only) const {
  trace::Span span("BertLayer", "model");
  Tensor attended = attention->forward(hidden, additive_mask, first_position_only);  // (B, T or 1, hidden)
  return output->forward(intermediate->forward(attended), attended);
}

BertEncoder::BertEncoder(const BertConfig& c) : Module("BertEncoder") {
  layer = register_module("layer", std::make_shared<nn::ModuleList<BertLayer>>());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layer->push_back(std::make_shared<BertLayer>(c));
}

Tensor BertEncoder::forward(const Tensor& hidden, const Tensor& additive_mask, bool first_position_only) const {
  Tensor h = hidden;
  for (size_t i = 0; i < layer->size(); ++i) {
    const BertLayer* l = &(*layer)[i];
    const bool first_only = first_position_only && i + 1 == layer->size();
    if (gradient_checkpointing && is_training()) {
      h = nn::checkpoint([l, first_only](const std::vector<Tensor>& in) { return l->forward(in[0], in[1], first_only); },
                         {h, additive_mask});
    } else {
      h = l->forward(h, additive_mask, first_only);
    }
  }
  return h;
}

BertPooler::BertPooler(const BertConfig& c) : Module("BertPooler") {
  dense = register_module("dense", std::make_shared<nn::Linear>(c.hidden_size, c.hidden_size));
}

Tensor BertPooler::forward(const Tensor& hidden) const { return tanh(dense->forward(hidden.select(1, 0))); }

BertModel::BertModel(const BertConfig& c, bool add_pooling_layer) : Module("BertModel"), config(c) {
  config.validate("BertModel config");
  embeddings = register_module("embeddings", std::make_shared<BertEmbeddings>(c));
  encoder = register_module("encoder", std::make_shared<BertEncoder>(c));
  if (add_pooling_layer) pooler = register_module("pooler", std::make_shared<BertPooler>(c));
  init_weights();
}

void init_bert_weights(nn::Module& root, double initializer_range) {
  for (auto& [name, module] : root.named_modules()) {
    if (auto* linear = dynamic_cast<nn::Linear*>(module)) {
      nn::init::normal_(linear->weight, 0.0, initializer_range);
      if (linear->bias.defined()) nn::init::zeros_(linear->bias);
    } else if (auto* emb = dynamic_cast<nn::Embedding*>(module)) {
      nn::init::normal_(emb->weight, 0.0, initializer_range);
      if (emb->padding_idx) {
        NoGradGuard no_grad;
        emb->weight.select(0, *emb->padding_idx).zero_();
      }
    } else if (auto* norm = dynamic_cast<nn::LayerNorm*>(module)) {
      nn::init::ones_(norm->weight);
      nn::init::zeros_(norm->bias);
    }
  }
}

void BertModel::init_weights() { init_bert_weights(*this, config.initializer_range); }

BertModel::Embedded BertModel::embed(const Tensor& input_ids, const Tensor& attention_mask,
                                     const Tensor& token_type_ids) const {
  ACCEL_CHECK(input_ids.dim() == 2, "BertModel: expected input_ids of shape (batch, seq) but got ",
              input_ids.shape_string());
  for (const Tensor* t : {&attention_mask, &token_type_ids}) {
    ACCEL_CHECK(!t->defined() || t->sizes() == input_ids.sizes(), "BertModel: ",
                t == &attention_mask ? "attention_mask" : "token_type_ids", " of shape ", t->shape_string(),
                " does not match input_ids of shape ", input_ids.shape_string());
  }
  Tensor hidden = embeddings->forward(input_ids, token_type_ids);
  Tensor additive_mask = attention_mask.defined() ? nn::additive_attention_mask(attention_mask, hidden.dtype()) : Tensor();
  return {hidden, additive_mask};
}

BertOutput BertModel::forward(const Tensor& input_ids, const Tensor& attention_mask, const Tensor& token_type_ids) const {
  const Embedded in = embed(input_ids, attention_mask, token_type_ids);
  BertOutput out;
  out.last_hidden_state = encoder->forward(in.hidden, in.additive_mask);
  if (pooler) out.pooler_output = pooler->forward(out.last_hidden_state);
  return out;
}

Tensor BertModel::pooled_output(const Tensor& input_ids, const Tensor& attention_mask,
                                const Tensor& token_type_ids) const {
  ACCEL_CHECK(pooler != nullptr, "BertModel::pooled_output: this model was built without a pooling layer");
  const Embedded in = embed(input_ids, attention_mask, token_type_ids);
  return pooler->forward(encoder->forward(in.hidden, in.additive_mask, /*first_position_only=*/true));
}

BertForSequenceClassification::BertForSequenceClassification(const BertConfig& c)
    : Module("BertForSequenceClassification"), config(c) {
  bert = register_module("bert", std::make_shared<BertModel>(c, true));
  dropout = register_module("dropout", std::make_shared<nn::Dropout>(c.classifier_dropout.value_or(c.hidden_dropout_prob)));
  classifier = register_module("classifier", std::make_shared<nn::Linear>(c.hidden_size, c.num_labels));
  init_weights();
}

void BertForSequenceClassification::init_weights() { init_bert_weights(*this, config.initializer_range); }

SequenceClassifierOutput BertForSequenceClassification::forward(const Tensor& input_ids, const Tensor& attention_mask,
                                                                const Tensor& token_type_ids, const Tensor& labels) const {
  trace::Span span("forward", "step");
  SequenceClassifierOutput out;
  Tensor pooled = bert->pooled_output(input_ids, attention_mask, token_type_ids);  // (B, hidden)
  out.logits = classifier->forward(dropout->forward(pooled));                      // (B, num_labels)
  if (!labels.defined()) return out;
  bool regression = config.problem_type == "regression" || (config.problem_type.empty() && config.num_labels == 1);
  if (regression) {
    out.loss = mse_loss(out.logits.squeeze(-1), labels.to(out.logits.dtype()).reshape({-1}));
  } else {
    ACCEL_CHECK(!labels.is_floating_point(), "BertForSequenceClassification: classification labels must be integer "
                "class indices but have dtype ", dtype_name(labels.dtype()));
    out.loss = cross_entropy(out.logits.reshape({-1, config.num_labels}).to(kFloat32), labels.reshape({-1}));
  }
  return out;
}

Tensor mean_pooling(const Tensor& last_hidden_state, const Tensor& attention_mask) {
  Tensor mask = attention_mask.to(last_hidden_state.dtype()).unsqueeze(-1);  // (B, T, 1)
  Tensor summed = (last_hidden_state * mask).sum({1});                        // (B, hidden)
  Tensor counts = clamp(mask.sum({1}), 1e-9);                                 // (B, 1)
  return summed / counts;
}

Tensor cls_pooling(const Tensor& last_hidden_state) { return last_hidden_state.select(1, 0); }

Tensor l2_normalize(const Tensor& embeddings, double eps) {
  Tensor norms = clamp(sqrt((embeddings * embeddings).sum({-1}, true)), eps);
  return embeddings / norms;
}

}  // namespace accel::models
