// Fuzz target: arbitrary bytes (valid and invalid UTF-8) as text for the BERT tokenizer.
// The tokenizer is the bundled bert-base-uncased vocab.txt (lower-casing, and a cased
// variant); the input's first bytes choose the options (cased or not, pair or single,
// truncation, padding, max_length), the rest is split into text A and text B. It is fed to
// tokenize(), encode() (single and pair), encode_batch() and decode().
// A bug: anything but an accel::Error (crash, ASan/UBSan report, other exception, hang), or
// an accepted encoding that breaks the contract: the three rows of different lengths, ids
// outside the vocab, more than max_length tokens under truncation, not exactly max_length
// under Padding::max_length, or a batch row that differs from the single encode.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <optional>

#include "fuzz/fuzz_util.h"
#include "models/tokenizer.h"

namespace {

using namespace accel::models;

const BertTokenizer& tokenizer(bool lowercase) {
  static const BertTokenizer uncased = BertTokenizer::from_vocab(ACCEL_FUZZ_VOCAB, true);
  static const BertTokenizer cased = BertTokenizer::from_vocab(ACCEL_FUZZ_VOCAB, false);
  return lowercase ? uncased : cased;
}

void check_encoding(const BertTokenizer& tok, const Encoding& encoding, const EncodeOptions& options) {
  const size_t length = encoding.input_ids.size();
  FUZZ_ASSERT(encoding.token_type_ids.size() == length && encoding.attention_mask.size() == length);
  for (int64_t id : encoding.input_ids) FUZZ_ASSERT(id >= 0 && id < tok.vocab_size());
  if (options.truncation != Truncation::none) FUZZ_ASSERT(int64_t(length) <= *options.max_length);
  if (options.padding == Padding::max_length) FUZZ_ASSERT(int64_t(length) >= *options.max_length);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  const bool lowercase = input.ConsumeBool();
  const bool pair = input.ConsumeBool();
  EncodeOptions options;
  options.add_special_tokens = input.ConsumeBool();
  options.truncation = input.PickValueInArray({Truncation::none, Truncation::longest_first, Truncation::only_second});
  options.padding = input.PickValueInArray({Padding::none, Padding::longest, Padding::max_length});
  if (input.ConsumeBool()) options.max_length = input.ConsumeIntegralInRange<int64_t>(-2, 64);
  const std::string text_a = input.ConsumeRandomLengthString(4096);
  const std::string text_b = input.ConsumeRemainingBytesAsString();

  const BertTokenizer& tok = tokenizer(lowercase);
  accel::fuzz::expect_only_accel_errors([&] {  // invalid UTF-8 is refused
    std::vector<std::string> tokens = tok.tokenize(text_a);
    std::vector<int64_t> ids = tok.convert_tokens_to_ids(tokens);
    FUZZ_ASSERT(tok.convert_ids_to_tokens(ids).size() == tokens.size());
    (void)tok.decode(ids, /*skip_special_tokens=*/lowercase);
  });

  std::optional<Encoding> single;
  accel::fuzz::expect_only_accel_errors([&] {
    single = pair ? tok.encode(text_a, text_b, options) : tok.encode(text_a, std::nullopt, options);
  });
  if (single) check_encoding(tok, *single, options);

  std::optional<BatchEncoding> batch;
  accel::fuzz::expect_only_accel_errors([&] {
    batch = pair ? tok.encode_batch({text_a, text_b}, {text_b, text_a}, options)
                 : tok.encode_batch({text_a, text_b}, options);
  });
  if (batch) {
    FUZZ_ASSERT(batch->input_ids.size() == 2 && batch->attention_mask.size() == 2);
    FUZZ_ASSERT(batch->input_ids[0].size() == batch->input_ids[1].size());
  }
  // The batch's first row is text A's encoding, padded to the longer row.
  if (single && batch) {
    const std::vector<int64_t>& row = batch->input_ids[0];
    FUZZ_ASSERT(row.size() >= single->input_ids.size());
    FUZZ_ASSERT(std::equal(single->input_ids.begin(), single->input_ids.end(), row.begin()));
  }
  return 0;
}
