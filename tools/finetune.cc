// accel-finetune: fine-tunes a Hugging Face BERT directory for sequence classification
// (GLUE MRPC, SST-2, or any TSV) with the Accelerator, evaluates after every epoch, keeps
// the best model, and writes the final metrics as JSON (also printed). The training loop is
// the one of ../shared/ACCELERATE_GUIDE.md, in C++.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "accelerate/accelerator.h"
#include "accelerate/metrics.h"
#include "core/autograd/grad_mode.h"
#include "core/parallel.h"
#include "models/pretrained.h"
#include "models/tokenizer.h"

using namespace accel;
namespace fs = std::filesystem;

namespace {

struct Args {
  std::string model, task = "mrpc", train_file, eval_file, output_dir = "finetune-output", resume_from;
  std::vector<std::string> text_columns;
  std::string label_column = "label";
  int64_t epochs = 3, batch_size = 16, eval_batch_size = 64, max_seq_len = 128, gradient_accumulation_steps = 1;
  int64_t max_train_samples = 0, max_eval_samples = 0, checkpoint_every = 0, threads = 0;
  double lr = 2e-5, warmup_ratio = 0.1, weight_decay = 0.01, max_grad_norm = 1.0;
  std::string mixed_precision = "no", log_with;
  uint64_t seed = 42;
  bool skip_bad_rows = false, regression = false;
};

data::TextDataset read_dataset(const Args& args, const std::string& path) {
  if (args.task == "mrpc") return data::read_glue_mrpc(path, args.skip_bad_rows);
  if (args.task == "sst2") return data::read_glue_sst2(path, args.skip_bad_rows);
  data::TableOptions options{args.text_columns, args.label_column, args.skip_bad_rows, args.regression};
  if (path.ends_with(".jsonl")) return data::read_jsonl(path, options);
  if (path.ends_with(".csv")) return data::read_csv(path, options);
  return data::read_tsv(path, options);
}

void truncate(data::TextDataset& dataset, int64_t max_samples) {
  if (max_samples > 0 && static_cast<int64_t>(dataset.examples.size()) > max_samples) {
    dataset.examples.resize(static_cast<size_t>(max_samples));
  }
}

struct EvalResult {
  double loss = 0, accuracy = 0, f1 = 0, mcc = 0, pearson = 0, spearman = 0;
  int64_t samples = 0;
  double main_metric(bool regression) const { return regression ? pearson : accuracy; }
};

EvalResult evaluate(Accelerator& accelerator, models::BertForSequenceClassification& model,
                    PreparedDataLoader& loader, bool regression) {
  model.eval();
  NoGradGuard no_grad;
  std::vector<int64_t> predictions, labels;
  std::vector<double> scores, targets;
  double loss_sum = 0;
  int64_t batches = 0;
  for (auto& batch : loader) {
    auto autocast = accelerator.autocast();
    models::SequenceClassifierOutput out =
        model.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels);
    loss_sum += out.loss.item_double();
    ++batches;
    Tensor logits = out.logits.to(kFloat32);
    if (regression) {
      for (double v : accelerator.gather_for_metrics(logits.reshape({-1})).to_vector<double>()) scores.push_back(v);
      for (double v : accelerator.gather_for_metrics(batch.labels).to_vector<double>()) targets.push_back(v);
    } else {
      for (int64_t v : accelerator.gather_for_metrics(argmax(logits, -1)).to_vector<int64_t>()) predictions.push_back(v);
      for (int64_t v : accelerator.gather_for_metrics(batch.labels).to_vector<int64_t>()) labels.push_back(v);
    }
  }
  EvalResult r;
  r.loss = batches ? loss_sum / static_cast<double>(batches) : 0;
  if (regression) {
    r.samples = static_cast<int64_t>(scores.size());
    r.pearson = metrics::pearson(scores, targets);
    r.spearman = metrics::spearman(scores, targets);
  } else {
    r.samples = static_cast<int64_t>(predictions.size());
    r.accuracy = metrics::accuracy(predictions, labels);
    r.f1 = metrics::f1(predictions, labels);
    r.mcc = metrics::matthews_corrcoef(predictions, labels);
  }
  return r;
}

nlohmann::json to_json(const EvalResult& r, bool regression) {
  nlohmann::json j = {{"eval_loss", r.loss}, {"eval_samples", r.samples}};
  if (regression) {
    j["pearson"] = r.pearson;
    j["spearman"] = r.spearman;
  } else {
    j["accuracy"] = r.accuracy;
    j["f1"] = r.f1;
    j["matthews_correlation"] = r.mcc;
  }
  return j;
}

void write_json_file(const fs::path& path, const nlohmann::json& json) {
  fs::path temp = path;
  temp += ".tmp";
  {
    std::ofstream out(temp);
    ACCEL_CHECK(out.good(), temp.string(), ": cannot write");
    out << json.dump(2) << "\n";
  }
  fs::rename(temp, path);
}

int run(const Args& args) {
  if (args.threads > 0) set_num_threads(static_cast<int>(args.threads));
  AcceleratorOptions options;
  options.mixed_precision = args.mixed_precision;
  options.gradient_accumulation_steps = args.gradient_accumulation_steps;
  options.seed = args.seed;
  options.project_config.project_dir = args.output_dir;
  options.project_config.automatic_checkpoint_naming = true;
  options.project_config.total_limit = 2;
  if (!args.log_with.empty()) options.log_with = {args.log_with};
  Accelerator accelerator(AcceleratorOptions::from_env(options));

  std::string model_dir = models::resolve_model_dir(args.model);
  models::BertTokenizer tokenizer = models::BertTokenizer::from_pretrained(model_dir);
  data::TextDataset train = read_dataset(args, args.train_file), eval = read_dataset(args, args.eval_file);
  truncate(train, args.max_train_samples);
  truncate(eval, args.max_eval_samples);
  if (train.skipped_rows + eval.skipped_rows > 0) {
    accelerator.print("skipped ", train.skipped_rows, " bad training rows and ", eval.skipped_rows, " bad eval rows");
  }
  bool regression = train.num_labels == 1;
  int64_t num_labels = regression ? 1 : std::max(train.num_labels, eval.num_labels);

  models::EncodeOptions encode;
  encode.truncation = models::Truncation::longest_first;
  encode.max_length = args.max_seq_len;
  auto tokenize = [&](const data::Example& ex) {
    models::Encoding e = tokenizer.encode(ex.text_a, ex.text_b ? std::optional<std::string_view>(*ex.text_b)
                                                               : std::nullopt, encode);
    return data::Features{e.input_ids, e.token_type_ids, ex.label};
  };
  auto train_features = std::make_shared<const std::vector<data::Features>>(data::map_examples(train, tokenize));
  auto eval_features = std::make_shared<const std::vector<data::Features>>(data::map_examples(eval, tokenize));

  models::PretrainedOptions pretrained;
  pretrained.num_labels = num_labels;
  pretrained.verbose = accelerator.is_main_process();
  auto model = models::bert_classifier_from_pretrained(model_dir, pretrained);
  if (regression) model->config.problem_type = "regression";

  data::DataLoaderOptions train_options;
  train_options.batch_size = args.batch_size;
  train_options.shuffle = true;
  train_options.seed = args.seed;
  train_options.pad_token_id = tokenizer.pad_token_id();
  train_options.regression = regression;
  data::DataLoaderOptions eval_options = train_options;
  eval_options.batch_size = args.eval_batch_size;
  eval_options.shuffle = false;
  auto train_loader_raw = std::make_shared<data::DataLoader>(train_features, train_options);
  auto eval_loader_raw = std::make_shared<data::DataLoader>(eval_features, eval_options);

  auto optimizer_raw = std::make_shared<nn::AdamW>(nn::decay_groups(*model, args.lr, args.weight_decay),
                                                   nn::AdamWOptions{.lr = args.lr, .weight_decay = args.weight_decay});
  int64_t updates_per_epoch = (train_loader_raw->size() + args.gradient_accumulation_steps - 1) /
                              args.gradient_accumulation_steps;
  int64_t total_steps = updates_per_epoch * args.epochs;
  auto scheduler_raw = std::make_shared<nn::LRScheduler>(nn::linear_schedule_with_warmup(
      *optimizer_raw, static_cast<int64_t>(args.warmup_ratio * static_cast<double>(total_steps)), total_steps));

  auto [prepared_model, optimizer, train_loader, eval_loader, scheduler] =
      accelerator.prepare(model, optimizer_raw, train_loader_raw, eval_loader_raw, scheduler_raw);

  int64_t start_epoch = 0;
  if (!args.resume_from.empty()) {
    accelerator.load_state(args.resume_from);
    start_epoch = train_loader->next_epoch();
    accelerator.print("resumed from ", args.resume_from);
  }

  accelerator.init_trackers("finetune", {{"task", args.task}, {"lr", args.lr}, {"epochs", args.epochs},
                                         {"batch_size", args.batch_size}, {"mixed_precision", args.mixed_precision}});
  accelerator.print("training ", model->type_name(), " (", model->num_parameters(), " parameters) on ",
                    train_features->size(), " examples, evaluating on ", eval_features->size(), "; ", args.epochs,
                    " epochs of ", train_loader->size(), " batches, ", get_num_threads(), " threads, mixed precision ",
                    accelerator.mixed_precision());

  // This process's micro-batches (each rank sees 1/N of every epoch's batches).
  trackers::Progress progress(train_loader->size() * args.epochs, accelerator.is_main_process());
  nlohmann::json history = nlohmann::json::array();
  EvalResult best;
  bool have_best = false;
  int64_t global_step = start_epoch * train_loader->size() + train_loader->skip_pending();
  int64_t optimizer_steps = global_step / args.gradient_accumulation_steps;
  for (int64_t epoch = start_epoch; epoch < args.epochs; ++epoch) {
    model->train();
    for (auto& batch : *train_loader) {
      auto scope = accelerator.accumulate(*model);
      Tensor loss;
      {
        auto autocast = accelerator.autocast();
        loss = model->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
      }
      double loss_value = loss.item_double();
      ACCEL_CHECK(std::isfinite(loss_value) || accelerator.mixed_precision() == "fp16", "training stopped: the loss is ",
                  loss_value, " at step ", global_step + 1, " (epoch ", epoch + 1, "); lower the learning rate or check "
                  "the data");
      accelerator.backward(loss);
      if (accelerator.sync_gradients() && args.max_grad_norm > 0) {
        accelerator.clip_grad_norm_(model->parameters(), args.max_grad_norm);
      }
      optimizer->step();
      scheduler->step();
      optimizer->zero_grad();
      ++global_step;
      double lr = scheduler->get_last_lr().front();
      progress.update(global_step, epoch + 1, loss_value, lr, batch.input_ids.size(0) * accelerator.num_processes());
      if (global_step % 10 == 0) accelerator.log({{"train_loss", loss_value}, {"lr", lr}}, global_step);
      if (accelerator.sync_gradients()) ++optimizer_steps;
      // Only between optimizer steps: gradients in the middle of accumulation are not saved.
      if (args.checkpoint_every > 0 && accelerator.sync_gradients() && optimizer_steps % args.checkpoint_every == 0) {
        accelerator.save_state();
      }
    }
    EvalResult result = evaluate(accelerator, *model, *eval_loader, regression);
    nlohmann::json row = to_json(result, regression);
    row["epoch"] = epoch + 1;
    history.push_back(row);
    accelerator.print("epoch ", epoch + 1, ": ", row.dump());
    accelerator.log({{"eval_loss", result.loss}, {regression ? "eval_pearson" : "eval_accuracy",
                                                    result.main_metric(regression)}}, global_step);
    if (!have_best || result.main_metric(regression) > best.main_metric(regression)) {
      best = result;
      have_best = true;
      // Every process takes part: under ZeRO stage 3 this gathers the sharded weights.
      std::map<std::string, Tensor> weights = accelerator.get_state_dict(*model);
      if (accelerator.is_main_process()) {
        // A complete Hugging Face directory: config, weights and the tokenizer files.
        fs::path best_dir = fs::path(args.output_dir) / "best";
        models::save_pretrained(weights, model->config, model->type_name(), best_dir.string());
        for (const char* name : {"vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
          if (fs::exists(fs::path(model_dir) / name)) {
            fs::copy_file(fs::path(model_dir) / name, best_dir / name, fs::copy_options::overwrite_existing);
          }
        }
      }
    }
    accelerator.save_state();
  }
  progress.finish();
  if (!have_best) {
    // Resumed after the last epoch: nothing left to train, so report the model as it is.
    accelerator.print("all ", args.epochs, " epochs were already done; evaluating the resumed model");
    best = evaluate(accelerator, *model, *eval_loader, regression);
  }
  accelerator.end_training();

  nlohmann::json final_metrics = to_json(best, regression);
  final_metrics["task"] = args.task;
  final_metrics["epochs"] = args.epochs;
  final_metrics["history"] = history;
  if (accelerator.is_main_process()) {
    fs::create_directories(args.output_dir);
    write_json_file(fs::path(args.output_dir) / "metrics.json", final_metrics);
  }
  accelerator.print("best dev metrics: ", to_json(best, regression).dump());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fine-tune a BERT model for sequence classification with accel", "accel-finetune"};
  // A flag given twice takes its last value, so wrappers (scripts/finetune_mrpc.sh) can pass
  // the user's extra arguments after their own defaults and have them win.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Args args;
  app.add_option("--model", args.model, "Hugging Face model directory (config.json, model.safetensors, vocab)")->required();
  app.add_option("--task", args.task, "mrpc, sst2, or tsv (any TSV/CSV/JSONL with --text-columns)")
      ->check(CLI::IsMember({"mrpc", "sst2", "tsv"}));
  app.add_option("--train", args.train_file, "training file")->required()->check(CLI::ExistingFile);
  app.add_option("--eval", args.eval_file, "evaluation file")->required()->check(CLI::ExistingFile);
  app.add_option("--text-columns", args.text_columns, "one or two text columns (task tsv)")->delimiter(',');
  app.add_option("--label-column", args.label_column, "label column (task tsv)");
  app.add_flag("--regression", args.regression, "labels are real numbers (task tsv)");
  app.add_option("--epochs", args.epochs, "training epochs")->check(CLI::PositiveNumber);
  app.add_option("--lr", args.lr, "peak learning rate")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", args.batch_size, "per-process training batch size")->check(CLI::PositiveNumber);
  app.add_option("--eval-batch-size", args.eval_batch_size, "evaluation batch size")->check(CLI::PositiveNumber);
  app.add_option("--max-seq-len", args.max_seq_len, "truncate pairs to this many tokens")->check(CLI::Range(8, 512));
  app.add_option("--warmup-ratio", args.warmup_ratio, "share of steps for linear warm-up")->check(CLI::Range(0.0, 1.0));
  app.add_option("--weight-decay", args.weight_decay, "AdamW weight decay (not on biases and LayerNorm)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-grad-norm", args.max_grad_norm, "clip gradients to this norm (0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--gradient-accumulation-steps", args.gradient_accumulation_steps, "micro-batches per update")
      ->check(CLI::PositiveNumber);
  app.add_option("--mixed-precision", args.mixed_precision, "no, bf16 or fp16")->check(CLI::IsMember({"no", "bf16", "fp16"}));
  app.add_option("--seed", args.seed, "seed for initialization, shuffling and dropout");
  app.add_option("--output-dir", args.output_dir, "where checkpoints, the best model and metrics.json go");
  app.add_option("--resume-from", args.resume_from, "a checkpoint directory written by an earlier run");
  app.add_option("--checkpoint-every", args.checkpoint_every, "also save_state every N optimizer steps")->check(CLI::NonNegativeNumber);
  app.add_option("--max-train-samples", args.max_train_samples, "use only the first N training examples");
  app.add_option("--max-eval-samples", args.max_eval_samples, "use only the first N evaluation examples");
  app.add_option("--threads", args.threads, "CPU threads (default: OMP_NUM_THREADS or all cores)");
  app.add_option("--log-with", args.log_with, "jsonl, tensorboard or all")->check(CLI::IsMember({"jsonl", "tensorboard", "all"}));
  app.add_flag("--skip-bad-rows", args.skip_bad_rows, "skip and count malformed data rows instead of stopping");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::cerr << "accel-finetune: error: " << e.what() << "\n";
    return 1;
  }
}
