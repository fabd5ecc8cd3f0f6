// `accel tokenize`: WordPiece-encodes JSON Lines from stdin with a model directory's tokenizer
// (or a bare vocab.txt) and writes one JSON array of token ids per input line, e.g.
//   echo '"hello world"' | accel tokenize --vocab vocab.txt   ->   [101,7592,2088,102]
// A line is a JSON string, or an object {"text": ..., "text_pair": ...} (text_pair optional)
// encoded as a BERT pair. Output is flushed line by line, so it can serve as a co-process.
//
// It is not a batch encoder: it writes no padding, attention masks or token type ids.
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/error.h"
#include "models/pretrained.h"
#include "models/tokenizer.h"
#include "tools/commands.h"

namespace accel::tools {

namespace {

struct TokenizeArgs {
  std::string model_dir, vocab_file;
  bool no_special_tokens = false;
  int64_t max_length = 0;  // 0: no truncation
};

struct TextInput {
  std::string text;
  std::optional<std::string> text_pair;
};

// One JSON Lines record: "text" or {"text": "...", "text_pair": "..."}.
TextInput parse_record(const std::string& line) {
  nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (record.is_string()) return {record.get<std::string>(), std::nullopt};
  ACCEL_CHECK(record.is_object(), "expected a JSON string or an object with \"text\" (and optionally "
              "\"text_pair\"), got: ", line);
  auto text = record.find("text");
  ACCEL_CHECK(text != record.end() && text->is_string(), "the object has no string field \"text\": ", line);
  TextInput input{text->get<std::string>(), std::nullopt};
  if (auto pair = record.find("text_pair"); pair != record.end() && !pair->is_null()) {
    ACCEL_CHECK(pair->is_string(), "\"text_pair\" must be a string, got: ", pair->dump());
    input.text_pair = pair->get<std::string>();
  }
  return input;
}

int run_tokenize(const TokenizeArgs& args) {
  models::BertTokenizer tokenizer =
      args.model_dir.empty() ? models::BertTokenizer::from_vocab(args.vocab_file)
                             : models::BertTokenizer::from_pretrained(models::resolve_model_dir(args.model_dir));
  models::EncodeOptions options;
  options.add_special_tokens = !args.no_special_tokens;
  if (args.max_length > 0) {
    options.truncation = models::Truncation::longest_first;
    options.max_length = args.max_length;
  }
  std::string line;
  for (int64_t line_number = 1; std::getline(std::cin, line); ++line_number) {
    try {
      TextInput input = parse_record(line);
      models::Encoding encoding = tokenizer.encode(
          input.text, input.text_pair ? std::optional<std::string_view>(*input.text_pair) : std::nullopt, options);
      std::cout << nlohmann::json(encoding.input_ids).dump() << std::endl;
    } catch (const std::exception& e) {
      ACCEL_FAIL("stdin line ", line_number, ": ", e.what());
    }
  }
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Encode JSON Lines from stdin into token ids, one JSON array a line");
  auto args = std::make_shared<TokenizeArgs>();
  auto* source = cmd->add_option_group("tokenizer", "where the tokenizer comes from (one of)");
  source->add_option("--model", args->model_dir, "model directory (tokenizer.json or vocab.txt)");
  source->add_option("--vocab", args->vocab_file, "a vocab.txt (lower-cased WordPiece, as bert-base-uncased)")
      ->check(CLI::ExistingFile);
  source->require_option(1);
  cmd->add_flag("--no-special-tokens", args->no_special_tokens, "leave out [CLS] and [SEP]");
  cmd->add_option("--max-length", args->max_length, "truncate to this many tokens (longest first for pairs)")
      ->check(CLI::PositiveNumber);
  cmd->footer("Input: one JSON string, or {\"text\": ..., \"text_pair\": ...}, per line.");
  register_action(cmd, [args] { return run_tokenize(*args); });
}

}  // namespace accel::tools
