// Fuzz target: arbitrary bytes as a Hugging Face BERT config.json.
// Feeds the input as a file to models::BertConfig::from_file (JSON parse, field reading,
// validate()); a config that loads is written with to_json() and read back with from_json().
// A bug: anything but an accel::Error (crash, ASan/UBSan report such as a float-to-int
// overflow, an nlohmann::json type_error escaping, hang), or a round trip that does not give
// back the same config.
#include <optional>

#include "fuzz/fuzz_util.h"
#include "models/bert_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using accel::models::BertConfig;
  const std::string path = accel::fuzz::write_scratch_file("config.json", data, size);
  std::optional<BertConfig> config;
  accel::fuzz::expect_only_accel_errors([&] { config = BertConfig::from_file(path); });
  if (!config) return 0;
  const nlohmann::json written = config->to_json();
  const BertConfig again = BertConfig::from_json(written, "round trip");  // must not throw
  FUZZ_ASSERT(again.to_json() == written);
  return 0;
}
