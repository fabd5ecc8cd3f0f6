// accel-embed: sentence embeddings from a BERT model directory, as sentence-transformers'
// encode() computes them. Reads one sentence per line from stdin (or JSON Lines), writes
// one JSON array of floats per sentence to stdout, in input order, and reports the
// throughput on stderr:
//   accel-embed --model all-MiniLM-L6-v2 < sentences.txt > embeddings.jsonl
//
// Sentences are sorted by token count and batched in that order, so a batch pads to the
// length of similar sentences instead of the longest one in the input; the rows are put
// back in input order before writing. With a sentence-transformers directory, the defaults
// follow its modules: pooling from the Pooling module's config.json, L2 normalization when a
// Normalize module is listed, max length from sentence_bert_config.json.
//
// What it is not: a server, nor a general sentence-transformers runtime (Transformer,
// Pooling with mean or CLS, Normalize; other modules such as Dense are reported, not applied).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "core/autograd/grad_mode.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "models/pretrained.h"
#include "models/tokenizer.h"

using namespace accel;
namespace fs = std::filesystem;

namespace {

struct Args {
  std::string model;
  std::string pooling;  // empty: from the model directory
  bool normalize = false, no_normalize = false;
  int64_t batch_size = 32, max_length = 0, threads = 0;  // max_length 0: from the model directory
  bool jsonl = false, text = false;
};

// What a sentence-transformers directory says about turning hidden states into embeddings.
struct ModelDefaults {
  std::string pooling = "mean";
  bool normalize = false;
  std::optional<int64_t> max_seq_length;
};

nlohmann::json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  ACCEL_CHECK(in.good(), path.string(), ": cannot open");
  nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ACCEL_CHECK(!json.is_discarded(), path.string(), ": not valid JSON");
  return json;
}

// modules.json lists the pipeline (Transformer, Pooling, Normalize, ...); without one, a
// 1_Pooling/config.json alone still sets the pooling.
ModelDefaults read_model_defaults(const fs::path& dir) {
  ModelDefaults defaults;
  fs::path pooling_config = dir / "1_Pooling" / "config.json";
  if (fs::exists(dir / "modules.json")) {
    for (const auto& module : read_json_file(dir / "modules.json")) {
      std::string type = module.value("type", "");
      if (type.ends_with(".Pooling")) {
        pooling_config = dir / module.value("path", "") / "config.json";
      } else if (type.ends_with(".Normalize")) {
        defaults.normalize = true;
      } else if (!type.ends_with(".Transformer")) {
        std::cerr << "accel-embed: warning: modules.json lists " << type << ", which accel-embed does not apply; "
                  << "the embeddings will differ from sentence-transformers'\n";
      }
    }
  }
  if (fs::exists(pooling_config)) {
    nlohmann::json config = read_json_file(pooling_config);
    bool cls = config.value("pooling_mode_cls_token", false), mean = config.value("pooling_mode_mean_tokens", false);
    ACCEL_CHECK(cls != mean, pooling_config.string(), ": expected exactly one of pooling_mode_cls_token and "
                "pooling_mode_mean_tokens to be true (the poolings accel-embed implements); override with --pooling");
    defaults.pooling = cls ? "cls" : "mean";
  }
  if (fs::exists(dir / "sentence_bert_config.json")) {
    nlohmann::json config = read_json_file(dir / "sentence_bert_config.json");
    if (config.contains("max_seq_length")) defaults.max_seq_length = config["max_seq_length"].get<int64_t>();
  }
  return defaults;
}

struct Sentence {
  std::string text;
  std::optional<std::string> text_pair;
};

// A JSON Lines record: "text" or {"text": "...", "text_pair": "..."}.
Sentence parse_record(const std::string& line) {
  nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (record.is_string()) return {record.get<std::string>(), std::nullopt};
  ACCEL_CHECK(record.is_object(), "expected a JSON string or an object with \"text\" (and optionally "
              "\"text_pair\"), got: ", line);
  auto text = record.find("text");
  ACCEL_CHECK(text != record.end() && text->is_string(), "the object has no string field \"text\": ", line);
  Sentence sentence{text->get<std::string>(), std::nullopt};
  if (auto pair = record.find("text_pair"); pair != record.end() && !pair->is_null()) {
    ACCEL_CHECK(pair->is_string(), "\"text_pair\" must be a string, got: ", pair->dump());
    sentence.text_pair = pair->get<std::string>();
  }
  return sentence;
}

bool looks_like_json_record(const std::string& line) {
  if (line.empty() || (line[0] != '"' && line[0] != '{')) return false;
  nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  return record.is_string() || record.is_object();
}

// All of stdin. Without --jsonl or --text, the first line decides: JSON Lines when it is a
// JSON string or object, plain text otherwise.
std::vector<Sentence> read_sentences(std::istream& in, const Args& args) {
  std::vector<Sentence> sentences;
  std::optional<bool> jsonl;
  if (args.jsonl) jsonl = true;
  if (args.text) jsonl = false;
  std::string line;
  for (int64_t line_number = 1; std::getline(in, line); ++line_number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!jsonl) jsonl = looks_like_json_record(line);
    if (!*jsonl) {
      sentences.push_back({line, std::nullopt});
      continue;
    }
    try {
      sentences.push_back(parse_record(line));
    } catch (const Error& e) {
      ACCEL_FAIL("stdin line ", line_number, ": ", e.what(),
                 args.jsonl ? "" : " (the input is read as JSON Lines because line 1 is JSON; pass --text to read "
                                   "lines as plain sentences)");
    }
  }
  return sentences;
}

// Embeds sentences[order[begin..end)] as one batch and stores row i at embeddings[order[i]].
void embed_batch(const models::BertModel& model, const std::vector<models::Encoding>& encodings,
                 const std::vector<size_t>& order, size_t begin, size_t end, const std::string& pooling,
                 bool normalize, std::vector<std::vector<float>>& embeddings) {
  const int64_t B = static_cast<int64_t>(end - begin);
  int64_t T = 0;
  for (size_t i = begin; i < end; ++i) T = std::max<int64_t>(T, encodings[order[i]].input_ids.size());
  std::vector<int64_t> ids(B * T, 0), types(B * T, 0), mask(B * T, 0);  // (B, T), padded on the right
  for (int64_t b = 0; b < B; ++b) {
    const models::Encoding& e = encodings[order[begin + b]];
    std::copy(e.input_ids.begin(), e.input_ids.end(), ids.begin() + b * T);
    std::copy(e.token_type_ids.begin(), e.token_type_ids.end(), types.begin() + b * T);
    std::copy(e.attention_mask.begin(), e.attention_mask.end(), mask.begin() + b * T);
  }
  Tensor attention_mask = from_vector(mask, {B, T});
  Tensor hidden = model.forward(from_vector(ids, {B, T}), attention_mask, from_vector(types, {B, T}))
                      .last_hidden_state;  // (B, T, hidden)
  Tensor pooled = pooling == "cls" ? models::cls_pooling(hidden) : models::mean_pooling(hidden, attention_mask);
  if (normalize) pooled = models::l2_normalize(pooled);
  std::vector<float> rows = pooled.contiguous().to_vector<float>();  // (B, hidden)
  const int64_t H = pooled.size(1);
  for (int64_t b = 0; b < B; ++b) {
    embeddings[order[begin + b]].assign(rows.begin() + b * H, rows.begin() + (b + 1) * H);
  }
}

void write_embeddings(const std::vector<std::vector<float>>& embeddings) {
  std::string line;
  char number[32];
  for (const auto& row : embeddings) {
    line = "[";
    for (size_t i = 0; i < row.size(); ++i) {
      int length = std::snprintf(number, sizeof(number), i ? ",%.7g" : "%.7g", static_cast<double>(row[i]));
      line.append(number, static_cast<size_t>(length));
    }
    line += "]\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
  }
  std::fflush(stdout);
}

int run(const Args& args) {
  using Clock = std::chrono::steady_clock;
  if (args.threads > 0) set_num_threads(static_cast<int>(args.threads));
  const std::string dir = models::resolve_model_dir(args.model);
  const ModelDefaults defaults = read_model_defaults(dir);
  const std::string pooling = args.pooling.empty() ? defaults.pooling : args.pooling;
  const bool normalize = args.normalize || (defaults.normalize && !args.no_normalize);

  models::BertTokenizer tokenizer = models::BertTokenizer::from_pretrained(dir);
  models::PretrainedOptions load_options;
  auto model = models::bert_from_pretrained(dir, load_options);
  model->eval();
  NoGradGuard no_grad;
  const int64_t max_length =
      args.max_length > 0 ? args.max_length : defaults.max_seq_length.value_or(model->config.max_position_embeddings);
  ACCEL_CHECK(max_length <= model->config.max_position_embeddings, "--max-length ", max_length, " is longer than the "
              "model's max_position_embeddings (", model->config.max_position_embeddings, ")");

  std::vector<Sentence> sentences = read_sentences(std::cin, args);

  const auto start = Clock::now();
  models::EncodeOptions encode;
  encode.truncation = models::Truncation::longest_first;
  encode.max_length = max_length;
  std::vector<models::Encoding> encodings;
  encodings.reserve(sentences.size());
  for (size_t i = 0; i < sentences.size(); ++i) {
    const Sentence& s = sentences[i];
    try {
      encodings.push_back(tokenizer.encode(s.text, s.text_pair ? std::optional<std::string_view>(*s.text_pair)
                                                                : std::nullopt, encode));
    } catch (const Error& e) {
      ACCEL_FAIL("stdin line ", i + 1, ": ", e.what());
    }
  }
  const auto tokenized = Clock::now();

  // Longest first, as sentence-transformers: the first batch shows the peak memory.
  std::vector<size_t> order(sentences.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return encodings[a].input_ids.size() > encodings[b].input_ids.size();
  });
  std::vector<std::vector<float>> embeddings(sentences.size());
  for (size_t begin = 0; begin < order.size(); begin += static_cast<size_t>(args.batch_size)) {
    size_t end = std::min(order.size(), begin + static_cast<size_t>(args.batch_size));
    embed_batch(*model, encodings, order, begin, end, pooling, normalize, embeddings);
  }
  const auto embedded = Clock::now();

  write_embeddings(embeddings);
  const double seconds = std::chrono::duration<double>(embedded - start).count();
  const double tokenize_seconds = std::chrono::duration<double>(tokenized - start).count();
  std::fprintf(stderr, "accel-embed: %zu sentences in %.3f s (tokenization %.3f s): %.1f sentences/s; batch %lld, "
               "%d threads, %s pooling%s\n", sentences.size(), seconds, tokenize_seconds,
               seconds > 0 ? static_cast<double>(sentences.size()) / seconds : 0.0,
               static_cast<long long>(args.batch_size), get_num_threads(), pooling.c_str(),
               normalize ? ", normalized" : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sentence embeddings with a BERT model: one sentence per stdin line, one JSON array per stdout line",
               "accel-embed"};
  Args args;
  app.add_option("--model", args.model, "model directory (sentence-transformers or plain Hugging Face BERT)")
      ->required();
  app.add_option("--pooling", args.pooling, "mean or cls (default: the model's Pooling module, else mean)")
      ->check(CLI::IsMember({"mean", "cls"}));
  auto* normalize = app.add_flag("--normalize", args.normalize,
                                 "L2-normalize the embeddings (default: when modules.json lists Normalize)");
  app.add_flag("--no-normalize", args.no_normalize, "do not normalize")->excludes(normalize);
  app.add_option("--batch-size", args.batch_size, "sentences per forward pass (default 32)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-length", args.max_length,
                 "truncate to this many tokens (default: sentence_bert_config.json, else the model's limit)")
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", args.threads, "CPU threads (default: OMP_NUM_THREADS or all cores)")
      ->check(CLI::PositiveNumber);
  auto* jsonl =
      app.add_flag("--jsonl", args.jsonl, "input is JSON Lines: \"text\" or {\"text\": ..., \"text_pair\": ...}");
  app.add_flag("--text", args.text, "input is plain text, one sentence per line, even if a line looks like JSON")
      ->excludes(jsonl);
  app.footer("Without --jsonl or --text, the input is JSON Lines when its first line is a JSON string or object.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::cerr << "accel-embed: error: " << e.what() << "\n";
    return 1;
  }
}
