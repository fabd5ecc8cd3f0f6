// Fuzz target: arbitrary bytes as the JSON files accel reads besides config.json.
// The same input is written as (1) a Hugging Face tokenizer.json for
// BertTokenizer::from_tokenizer_json, (2) a model.safetensors.index.json in an otherwise
// empty model directory for models::load_checkpoint_weights (the sharded-checkpoint index),
// and (3) a JSON Lines dataset for data::read_jsonl (text/label fields).
// A bug: anything but an accel::Error (crash, ASan/UBSan report, an nlohmann::json
// exception escaping, hang), or a tokenizer that loads but cannot tokenize.
#include <filesystem>

#include "accelerate/data.h"
#include "fuzz/fuzz_util.h"
#include "models/pretrained.h"
#include "models/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  using accel::fuzz::expect_only_accel_errors;

  const std::string tokenizer_json = accel::fuzz::write_scratch_file("tokenizer.json", data, size);
  expect_only_accel_errors([&] {
    accel::models::BertTokenizer tok = accel::models::BertTokenizer::from_tokenizer_json(tokenizer_json);
    FUZZ_ASSERT(tok.vocab_size() > 0);
    (void)tok.encode("Hello, world! naïve 東京", std::string_view("second"));
  });

  static const fs::path model_dir = [] {
    fs::path dir = accel::fuzz::scratch_dir() / "model";
    fs::create_directories(dir);
    return dir;
  }();
  accel::fuzz::write_scratch_file("model/model.safetensors.index.json", data, size);
  expect_only_accel_errors([&] { (void)accel::models::load_checkpoint_weights(model_dir.string()); });

  const std::string jsonl = accel::fuzz::write_scratch_file("data.jsonl", data, size);
  for (bool skip_bad_rows : {false, true}) {
    accel::data::TableOptions options;
    options.text_columns = {"sentence1", "sentence2"};
    options.skip_bad_rows = skip_bad_rows;
    expect_only_accel_errors([&] { (void)accel::data::read_jsonl(jsonl, options); });
    options.text_columns = {"text"};
    options.regression = true;
    expect_only_accel_errors([&] { (void)accel::data::read_jsonl(jsonl, options); });
  }
  return 0;
}
