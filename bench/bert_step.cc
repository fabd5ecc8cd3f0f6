// bench_bert_step: times one BERT training step (forward, backward, AdamW) or one forward
// (inference) of accel at BERT-base or MiniLM shapes, and prints milliseconds per step (the
// median over the timed steps), peak memory and a JSON line. bench/bert_step.sh runs it
// beside the same step in PyTorch (bert_step_torch.py) and prints the comparison.
// Random weights and full-length random token ids: the speed of the math, not of a dataset.
// --gradient-checkpointing measures what recomputing each layer in backward saves in memory.
// --full-last-layer runs the last encoder layer at every position, as transformers'
// BertForSequenceClassification does, instead of at position 0 alone (BertModel::pooled_output):
// what the step would cost without that.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/autocast.h"
#include "core/autograd/grad_mode.h"
#include "core/parallel.h"
#include "core/profiler.h"
#include "models/bert.h"
#include "nn/optim.h"

using namespace accel;

namespace {

struct Options {
  std::string model = "minilm", dtype = "f32", mode = "train";
  int64_t batch = 0, seq = 128, steps = 5, warmup = 2, threads = 0;
  bool checkpointing = false;    // recompute each encoder layer in backward
  bool full_last_layer = false;  // the last layer at every position, not at position 0 alone
};

models::BertConfig config_for(const std::string& name) {
  models::BertConfig c;  // BERT-base by default
  if (name == "minilm") {
    c.hidden_size = 384;
    c.num_hidden_layers = 6;
    c.intermediate_size = 1536;
  } else if (name != "bert-base") {
    std::fprintf(stderr, "bench_bert_step: unknown --model %s (expected minilm or bert-base)\n", name.c_str());
    std::exit(2);
  }
  return c;
}

// BertForSequenceClassification::forward's logits with the last encoder layer computed at every
// position: the pooler output taken from BertModel::forward's full last hidden state.
Tensor logits_with_full_last_layer(const models::BertForSequenceClassification& model, const Tensor& ids,
                                   const Tensor& mask, const Tensor& types) {
  Tensor pooled = model.bert->forward(ids, mask, types).pooler_output;  // (B, hidden)
  return model.classifier->forward(model.dropout->forward(pooled));     // (B, num_labels)
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_bert_step: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--model") o.model = value();
    else if (arg == "--dtype") o.dtype = value();
    else if (arg == "--mode") o.mode = value();
    else if (arg == "--batch") o.batch = std::stoll(value());
    else if (arg == "--seq") o.seq = std::stoll(value());
    else if (arg == "--steps") o.steps = std::stoll(value());
    else if (arg == "--warmup") o.warmup = std::stoll(value());
    else if (arg == "--threads") o.threads = std::stoll(value());
    else if (arg == "--gradient-checkpointing") o.checkpointing = true;
    else if (arg == "--full-last-layer") o.full_last_layer = true;
    else {
      std::fprintf(stderr, "usage: bench_bert_step [--model minilm|bert-base] [--dtype f32|bf16] [--mode train|infer] "
                           "[--batch B] [--seq T] [--steps N] [--warmup N] [--threads N] [--gradient-checkpointing] "
                           "[--full-last-layer]\n");
      return 2;
    }
  }
  if (o.batch == 0) o.batch = o.model == "minilm" ? 32 : 8;
  if (o.threads > 0) set_num_threads(static_cast<int>(o.threads));
  bool bf16 = o.dtype == "bf16", train = o.mode == "train";

  manual_seed(0);
  models::BertConfig config = config_for(o.model);
  auto model = std::make_shared<models::BertForSequenceClassification>(config);
  Tensor ids = randint(1, config.vocab_size, {o.batch, o.seq});
  Tensor mask = ones({o.batch, o.seq}, kInt64);
  Tensor types = zeros({o.batch, o.seq}, kInt64);
  Tensor labels = randint(0, 2, {o.batch});
  nn::AdamW optimizer(nn::decay_groups(*model, 1e-4, 0.01), nn::AdamWOptions{.lr = 1e-4});
  if (o.checkpointing) model->bert->gradient_checkpointing_enable();
  if (train) model->train();
  else model->eval();

  std::vector<double> times;
  for (int64_t step = 0; step < o.warmup + o.steps; ++step) {
    if (step == o.warmup) profiler::reset();  // ACCEL_PROFILE's table covers the timed steps only
    auto start = std::chrono::steady_clock::now();
    if (train) {
      Tensor loss;
      {
        AutocastGuard autocast(kBFloat16, bf16);
        loss = o.full_last_layer ? cross_entropy(logits_with_full_last_layer(*model, ids, mask, types), labels)
                                 : model->forward(ids, mask, types, labels).loss;
      }
      loss.backward();
      optimizer.step();
      optimizer.zero_grad();
    } else {
      NoGradGuard no_grad;
      AutocastGuard autocast(kBFloat16, bf16);
      Tensor logits = o.full_last_layer ? logits_with_full_last_layer(*model, ids, mask, types)
                                        : model->forward(ids, mask, types).logits;
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (step >= o.warmup) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  double median = times[times.size() / 2];
  std::printf("accel %s %s %s%s%s batch %lld seq %lld threads %d: %.1f ms/step (min %.1f), peak RSS %.0f MB\n",
              o.model.c_str(), o.dtype.c_str(), o.mode.c_str(), o.checkpointing ? " (checkpointing)" : "",
              o.full_last_layer ? " (full last layer)" : "",
              static_cast<long long>(o.batch),
              static_cast<long long>(o.seq), get_num_threads(), median, times.front(), peak_rss_mb());
  std::printf("{\"impl\":\"accel\",\"model\":\"%s\",\"dtype\":\"%s\",\"mode\":\"%s\",\"ms\":%.2f,\"peak_mb\":%.0f}\n",
              o.model.c_str(), o.dtype.c_str(), o.mode.c_str(), median, peak_rss_mb());
  return 0;
}
