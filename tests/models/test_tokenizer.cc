// tests/models/test_tokenizer.cc: BertTokenizer against Hugging Face's slow BertTokenizer.
// The golden cases (tests/golden/tokenizer/cases.jsonl, made by
// tests/golden/make_tokenizer_goldens.py) hold hard Unicode strings (also on a one-character-
// per-token vocab that exposes every normalized character), MRPC and SST-2 sentences,
// pair encodings with both truncation strategies, batches, decodes and the tiny-bert fixture's
// tokenizer.json; every one must match token for token. The rest checks loading paths and
// that each error says what was expected and what was found.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/tokenizer.h"

namespace accel::models {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

const std::string kSharedData = ACCEL_SHARED_DATA_DIR;
const std::string kVocab = kSharedData + "/vocab/bert-base-uncased-vocab.txt";
const std::string kTinyBertDir = kSharedData + "/tiny-bert";
const std::string kGoldenDir = std::string(ACCEL_GOLDEN_DIR) + "/../tokenizer";
const std::string kCases = kGoldenDir + "/cases.jsonl";

struct GoldenCase {
  int line;  // in cases.jsonl, for failure messages
  json data;
};

const std::vector<GoldenCase>& golden_cases() {
  static const std::vector<GoldenCase> cases = [] {
    std::ifstream in(kCases);
    EXPECT_TRUE(in.good()) << "cannot open " << kCases;
    std::vector<GoldenCase> loaded;
    std::string line;
    for (int number = 1; std::getline(in, line); ++number)
      loaded.push_back({number, json::parse(line)});
    return loaded;
  }();
  return cases;
}

// The tokenizers the golden script ran, by the name its cases carry.
const BertTokenizer& tokenizer_named(const std::string& name) {
  static const std::map<std::string, BertTokenizer> tokenizers = [] {
    BertTokenizerOptions keep_accents;
    keep_accents.strip_accents = false;
    BertTokenizerOptions cased_strip_accents;
    cased_strip_accents.lowercase = false;
    cased_strip_accents.strip_accents = true;
    std::map<std::string, BertTokenizer> made;
    made.emplace("uncased", BertTokenizer::from_vocab(kVocab, true));
    made.emplace("cased", BertTokenizer::from_vocab(kVocab, false));
    made.emplace("uncased_keep_accents", BertTokenizer::from_vocab(kVocab, keep_accents));
    made.emplace("cased_strip_accents", BertTokenizer::from_vocab(kVocab, cased_strip_accents));
    made.emplace("chars_uncased", BertTokenizer::from_vocab(kGoldenDir + "/char_vocab.txt", true));
    made.emplace("chars_cased", BertTokenizer::from_vocab(kGoldenDir + "/char_vocab.txt", false));
    made.emplace("tiny-bert", BertTokenizer::from_tokenizer_json(kTinyBertDir + "/tokenizer.json"));
    return made;
  }();
  return tokenizers.at(name);
}

EncodeOptions encode_options(const json& c) {
  EncodeOptions options;
  options.add_special_tokens = c.value("add_special_tokens", true);
  if (!c["max_length"].is_null()) options.max_length = c["max_length"].get<int64_t>();
  const json& truncation = c["truncation"];
  if (!truncation.is_null()) {
    options.truncation =
        truncation == "longest_first" ? Truncation::longest_first : Truncation::only_second;
  }
  const json& padding = c["padding"];
  if (!padding.is_null())
    options.padding = padding == "max_length" ? Padding::max_length : Padding::longest;
  return options;
}

std::string describe(const GoldenCase& golden) {
  return "cases.jsonl line " + std::to_string(golden.line) + ": " + golden.data.dump();
}

// Counts the cases of `kind`, so a test cannot pass by finding none.
int count_cases(const std::string& kind) {
  int count = 0;
  for (const GoldenCase& golden : golden_cases()) count += golden.data["kind"] == kind;
  return count;
}

TEST(BertTokenizerGolden, TokenizeMatchesHuggingFace) {
  ASSERT_GE(count_cases("tokenize"), 1500);
  for (const GoldenCase& golden : golden_cases()) {
    const json& c = golden.data;
    if (c["kind"] != "tokenize") continue;
    const BertTokenizer& tokenizer = tokenizer_named(c["tokenizer"]);
    const std::vector<std::string> tokens = tokenizer.tokenize(c["text"].get<std::string>());
    ASSERT_EQ(tokens, c["tokens"].get<std::vector<std::string>>()) << describe(golden);
    ASSERT_EQ(tokenizer.convert_tokens_to_ids(tokens), c["ids"].get<std::vector<int64_t>>())
        << describe(golden);
  }
}

TEST(BertTokenizerGolden, EncodeMatchesHuggingFace) {
  ASSERT_GE(count_cases("encode"), 200);
  for (const GoldenCase& golden : golden_cases()) {
    const json& c = golden.data;
    if (c["kind"] != "encode") continue;
    std::optional<std::string> pair;
    if (!c["text_pair"].is_null()) pair = c["text_pair"].get<std::string>();
    const Encoding encoding =
        tokenizer_named(c["tokenizer"])
            .encode(c["text"].get<std::string>(),
                    pair ? std::optional<std::string_view>(*pair) : std::nullopt,
                    encode_options(c));
    ASSERT_EQ(encoding.input_ids, c["input_ids"].get<std::vector<int64_t>>()) << describe(golden);
    ASSERT_EQ(encoding.token_type_ids, c["token_type_ids"].get<std::vector<int64_t>>())
        << describe(golden);
    ASSERT_EQ(encoding.attention_mask, c["attention_mask"].get<std::vector<int64_t>>())
        << describe(golden);
  }
}

TEST(BertTokenizerGolden, EncodeBatchMatchesHuggingFace) {
  ASSERT_GE(count_cases("batch"), 5);
  using Matrix = std::vector<std::vector<int64_t>>;
  for (const GoldenCase& golden : golden_cases()) {
    const json& c = golden.data;
    if (c["kind"] != "batch") continue;
    const BertTokenizer& tokenizer = tokenizer_named(c["tokenizer"]);
    const auto texts = c["texts"].get<std::vector<std::string>>();
    const BatchEncoding batch =
        c["text_pairs"].is_null()
            ? tokenizer.encode_batch(texts, encode_options(c))
            : tokenizer.encode_batch(texts, c["text_pairs"].get<std::vector<std::string>>(),
                                     encode_options(c));
    ASSERT_EQ(batch.input_ids, c["input_ids"].get<Matrix>()) << describe(golden);
    ASSERT_EQ(batch.token_type_ids, c["token_type_ids"].get<Matrix>()) << describe(golden);
    ASSERT_EQ(batch.attention_mask, c["attention_mask"].get<Matrix>()) << describe(golden);
  }
}

TEST(BertTokenizerGolden, DecodeMatchesHuggingFace) {
  ASSERT_GE(count_cases("decode"), 100);
  for (const GoldenCase& golden : golden_cases()) {
    const json& c = golden.data;
    if (c["kind"] != "decode") continue;
    const std::string text =
        tokenizer_named(c["tokenizer"])
            .decode(c["ids"].get<std::vector<int64_t>>(), c["skip_special_tokens"].get<bool>());
    ASSERT_EQ(text, c["text"].get<std::string>()) << describe(golden);
  }
}

TEST(BertTokenizer, RoundTripsThroughDecode) {
  const BertTokenizer tokenizer = BertTokenizer::from_vocab(kVocab);
  for (const std::string text :
       {"hello world, this is a test.", "the unaffable tokenizer's output!",
        "embeddings and transformers", "naive cafe"}) {
    const Encoding encoding = tokenizer.encode(text);
    EXPECT_EQ(tokenizer.decode(encoding.input_ids, /*skip_special_tokens=*/true), text);
    EXPECT_EQ(tokenizer.decode(encoding.input_ids), "[CLS] " + text + " [SEP]");
  }
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("Naïve CAFÉ").input_ids, true), "naive cafe");
}

TEST(BertTokenizer, KnownIdsAndSpecialTokens) {
  const BertTokenizer tokenizer = BertTokenizer::from_vocab(kVocab);
  EXPECT_EQ(tokenizer.vocab_size(), 30522);
  EXPECT_EQ(tokenizer.pad_token_id(), 0);
  EXPECT_EQ(tokenizer.unk_token_id(), 100);
  EXPECT_EQ(tokenizer.cls_token_id(), 101);
  EXPECT_EQ(tokenizer.sep_token_id(), 102);
  EXPECT_EQ(tokenizer.mask_token_id(), 103);
  EXPECT_EQ(tokenizer.token_to_id("hello"), 7592);
  EXPECT_EQ(tokenizer.token_to_id("no-such-token"), 100);
  EXPECT_EQ(tokenizer.id_to_token(30521), "##～");
  EXPECT_EQ(tokenizer.tokenize("unaffable"), (std::vector<std::string>{"una", "##ffa", "##ble"}));
}

TEST(BertTokenizer, NeverSplitKeepsWordsWhole) {
  BertTokenizerOptions options;
  options.never_split = {"Hello!"};
  const BertTokenizer tokenizer = BertTokenizer::from_vocab(kVocab, options);
  // As HF: the word is neither lowercased, split nor looked up piecewise; its id is [UNK].
  EXPECT_EQ(tokenizer.tokenize("Hello! world Hello!x"),
            (std::vector<std::string>{"Hello!", "world", "hello", "!", "x"}));
}

TEST(BertTokenizer, AddedTokensMatchLeftmostLongest) {
  BertTokenizerOptions options;
  options.added_tokens = {"extra_id_1", "extra_id_100"};
  const BertTokenizer tokenizer = BertTokenizer::from_vocab(kVocab, options);
  // What HF's slow tokenizer gives with additional_special_tokens=["extra_id_1", "extra_id_100"].
  EXPECT_EQ(tokenizer.tokenize("a extra_id_100 extra_id_1extra_id_10"),
            (std::vector<std::string>{"a", "extra_id_100", "extra_id_1", "extra_id_1", "0"}));
}

TEST(BertTokenizer, TinyBertTokenizerJson) {
  const BertTokenizer from_json =
      BertTokenizer::from_tokenizer_json(kTinyBertDir + "/tokenizer.json");
  EXPECT_EQ(from_json.vocab_size(), 256);
  EXPECT_EQ(from_json.cls_token_id(), 2);
  EXPECT_EQ(from_json.sep_token_id(), 3);
  EXPECT_FALSE(from_json.options().lowercase);  // "normalizer": null
  EXPECT_EQ(from_json.options().pre_tokenizer, PreTokenizer::whitespace);
  EXPECT_TRUE(from_json.options().added_tokens.empty());

  const BertTokenizer from_dir = BertTokenizer::from_pretrained(kTinyBertDir);
  EXPECT_FALSE(from_dir.options().lowercase);  // tokenizer_config.json: do_lower_case false
  const Encoding encoding = from_dir.encode("t5 t6", "t7");
  EXPECT_EQ(encoding.input_ids, (std::vector<int64_t>{2, 5, 6, 3, 7, 3}));
  EXPECT_EQ(encoding.token_type_ids, (std::vector<int64_t>{0, 0, 0, 0, 1, 1}));
}

// A temporary directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("accel_tokenizer_" + std::to_string(::getpid()) + "_" + info->name());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& name, const std::string& contents) const {
    const std::filesystem::path file = path_ / name;
    std::ofstream(file, std::ios::binary) << contents;
    return file.string();
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A tokenizer.json for the bert-base-uncased vocab, as HF's BertTokenizerFast saves it.
json bert_tokenizer_json() {
  const std::vector<std::string> vocab = read_lines(kVocab);
  json vocab_map = json::object();
  for (size_t id = 0; id < vocab.size(); ++id) vocab_map[vocab[id]] = id;
  json added = json::array();
  for (const std::string token : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    added.push_back({{"id", vocab_map[token]}, {"content", token}, {"special", true}});
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "BertNormalizer"},
            {"clean_text", true},
            {"handle_chinese_chars", true},
            {"strip_accents", nullptr},
            {"lowercase", true}}},
          {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
          {"model",
           {{"type", "WordPiece"},
            {"unk_token", "[UNK]"},
            {"continuing_subword_prefix", "##"},
            {"max_input_chars_per_word", 100},
            {"vocab", vocab_map}}}};
}

TEST(BertTokenizer, TokenizerJsonAgreesWithVocabTxt) {
  TempDir dir;
  const BertTokenizer from_json =
      BertTokenizer::from_tokenizer_json(dir.write("tokenizer.json", bert_tokenizer_json().dump()));
  const BertTokenizer& from_vocab = tokenizer_named("uncased");
  int compared = 0;
  for (const GoldenCase& golden : golden_cases()) {
    const json& c = golden.data;
    if (c["kind"] != "tokenize" || c["tokenizer"] != "uncased") continue;
    const auto text = c["text"].get<std::string>();
    ASSERT_EQ(from_json.tokenize(text), from_vocab.tokenize(text)) << describe(golden);
    ++compared;
  }
  EXPECT_GE(compared, 900);
}

TEST(BertTokenizer, FromPretrainedReadsVocabAndConfig) {
  TempDir dir;
  std::filesystem::copy_file(kVocab, dir.path() + "/vocab.txt");
  dir.write("tokenizer_config.json", R"({"do_lower_case": false})");
  const BertTokenizer tokenizer = BertTokenizer::from_pretrained(dir.path());
  EXPECT_FALSE(tokenizer.options().lowercase);
  EXPECT_EQ(tokenizer.tokenize("Hello hello"), (std::vector<std::string>{"[UNK]", "hello"}));
}

// ---- errors: each says what was expected and what was found ----

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an accel::Error, found none";
  return "";
}

TEST(BertTokenizerErrors, MissingVocabFileNamesThePath) {
  const std::string message = error_of([] { BertTokenizer::from_vocab("/no/such/dir/vocab.txt"); });
  EXPECT_THAT(message, HasSubstr("/no/such/dir/vocab.txt"));
  EXPECT_THAT(message, HasSubstr("found no such file"));
  EXPECT_THAT(error_of([] { BertTokenizer::from_pretrained("/no/such/model"); }),
              HasSubstr("/no/such/model"));
}

TEST(BertTokenizerErrors, VocabWithoutRequiredTokenNamesIt) {
  TempDir dir;
  const std::string no_unk = dir.write("no_unk.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
  std::string message = error_of([&] { BertTokenizer::from_vocab(no_unk); });
  EXPECT_THAT(message, HasSubstr("expected the vocab to contain the unk_token \"[UNK]\""));
  EXPECT_THAT(message, HasSubstr("found 4 tokens without it"));
  EXPECT_THAT(message, HasSubstr(no_unk));

  const std::string no_cls = dir.write("no_cls.txt", "[PAD]\n[UNK]\n[SEP]\n");
  EXPECT_THAT(error_of([&] { BertTokenizer::from_vocab(no_cls); }),
              HasSubstr("cls_token \"[CLS]\""));
  const std::string no_sep = dir.write("no_sep.txt", "[PAD]\n[UNK]\n[CLS]\n");
  EXPECT_THAT(error_of([&] { BertTokenizer::from_vocab(no_sep); }),
              HasSubstr("sep_token \"[SEP]\""));
  const std::string no_pad = dir.write("no_pad.txt", "[UNK]\n[CLS]\n[SEP]\n");
  EXPECT_THAT(error_of([&] { BertTokenizer::from_vocab(no_pad); }),
              HasSubstr("pad_token \"[PAD]\""));
  // [MASK] is optional: a vocab without it loads.
  const std::string no_mask = dir.write("no_mask.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n");
  EXPECT_FALSE(BertTokenizer::from_vocab(no_mask).mask_token_id().has_value());
}

TEST(BertTokenizerErrors, MalformedTokenizerJsonNamesTheField) {
  TempDir dir;
  auto error_for = [&](const json& document) {
    const std::string path = dir.write("tokenizer.json", document.dump());
    return error_of([&] { BertTokenizer::from_tokenizer_json(path); });
  };
  const std::string not_json = dir.write("broken.json", "{\"model\": ");
  EXPECT_THAT(error_of([&] { BertTokenizer::from_tokenizer_json(not_json); }),
              HasSubstr("to be valid JSON"));
  // A number past double's range is nlohmann's out_of_range, not a parse_error (found by fuzz_json).
  const std::string huge_number = dir.write("huge.json", "{\"version\": 1e9999}");
  EXPECT_THAT(error_of([&] { BertTokenizer::from_tokenizer_json(huge_number); }),
              HasSubstr("to be valid JSON, found a parse error: [json.exception.out_of_range.406]"));

  json document = bert_tokenizer_json();
  document["model"].erase("vocab");
  EXPECT_THAT(error_for(document), HasSubstr("expected field 'model.vocab', found none"));

  EXPECT_THAT(error_for(document), HasSubstr(dir.path() + "/tokenizer.json"));

  document = bert_tokenizer_json();
  document["model"]["type"] = "BPE";
  EXPECT_THAT(error_for(document), HasSubstr("expected model.type \"WordPiece\""));
  EXPECT_THAT(error_for(document), HasSubstr("found \"BPE\""));

  document = bert_tokenizer_json();
  document["model"]["unk_token"] = 5;
  EXPECT_THAT(error_for(document), HasSubstr("'model.unk_token' to be string, found number 5"));

  document = bert_tokenizer_json();
  document["model"]["vocab"]["hello"] = 0;
  EXPECT_THAT(error_for(document), HasSubstr("found id 0 for \"hello\""));

  document = bert_tokenizer_json();
  document["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THAT(error_for(document), HasSubstr("expected normalizer.type \"BertNormalizer\""));

  document = bert_tokenizer_json();
  document["pre_tokenizer"] = nullptr;
  EXPECT_THAT(error_for(document), HasSubstr("found \"null\""));

  document = bert_tokenizer_json();
  document["added_tokens"][0]["id"] = 7;
  EXPECT_THAT(error_for(document),
              HasSubstr("added_tokens[0] \"[PAD]\" to have its model.vocab id, found id 7"));
}

TEST(BertTokenizerErrors, InvalidUtf8NamesTheByteOffset) {
  const BertTokenizer& tokenizer = tokenizer_named("uncased");
  auto message_for = [&](const std::string& text) {
    return error_of([&] { tokenizer.tokenize(text); });
  };
  EXPECT_THAT(message_for("ab\xC3(cd"),
              HasSubstr("byte offset 2: expected a continuation byte after 0xC3, found 0x28"));
  EXPECT_THAT(message_for("\xFF"),
              HasSubstr("byte offset 0: byte 0xFF cannot start a UTF-8 sequence"));
  EXPECT_THAT(message_for("caf\xC3"),
              HasSubstr("byte offset 3: the sequence starting with 0xC3 is cut off"));
  EXPECT_THAT(message_for("x\xC0\xAF"), HasSubstr("byte offset 1: byte 0xC0 cannot start"));
  EXPECT_THAT(message_for("x\xE0\x80\xAF"), HasSubstr("byte offset 1: overlong encoding"));
  EXPECT_THAT(message_for("\xED\xA0\x80"), HasSubstr("UTF-16 surrogate"));
  EXPECT_THAT(message_for("\xF4\x90\x80\x80"), HasSubstr("past U+10FFFF"));
  EXPECT_THAT(message_for("[CLS]\x80"), HasSubstr("byte offset 5"));
  EXPECT_THAT(message_for("\x80"), HasSubstr("expected UTF-8 in the input text"));
}

TEST(BertTokenizerErrors, ImpossibleTruncationAndBadIds) {
  const BertTokenizer& tokenizer = tokenizer_named("uncased");
  EncodeOptions options;
  options.truncation = Truncation::only_second;
  options.max_length = 6;
  EXPECT_THAT(error_of([&] { tokenizer.encode("a b c d e", "f", options); }),
              HasSubstr("must remove 3 tokens, but the second text has only 1"));
  options.max_length = 4;
  EXPECT_THAT(error_of([&] { tokenizer.encode("a b c", std::nullopt, options); }),
              HasSubstr("expected a text pair with only_second truncation"));
  options.truncation = Truncation::longest_first;
  options.max_length = 2;
  EXPECT_THAT(error_of([&] { tokenizer.encode("a", "b", options); }),
              HasSubstr("leave room for the 3 special tokens, found max_length 2"));
  options.max_length.reset();
  EXPECT_THAT(error_of([&] { tokenizer.encode("a", "b", options); }),
              HasSubstr("EncodeOptions::max_length"));
  // A negative max_length with max_length padding (found by fuzz/fuzz_tokenizer) once became
  // a resize to SIZE_MAX.
  EncodeOptions negative;
  negative.padding = Padding::max_length;
  negative.max_length = -1;
  EXPECT_THAT(error_of([&] { tokenizer.encode("a", std::nullopt, negative); }),
              HasSubstr("expected EncodeOptions::max_length >= 0, found -1"));
  EXPECT_THAT(error_of([&] { tokenizer.encode_batch({"a", "b"}, negative); }),
              HasSubstr("expected EncodeOptions::max_length >= 0, found -1"));
  EXPECT_THAT(error_of([&] {
                tokenizer.decode({101, 30522});
              }),
              HasSubstr("[0, 30522), found 30522"));
  EXPECT_THAT(error_of([&] {
                tokenizer.encode_batch({"a", "b"}, std::vector<std::string>{"c"});
              }),
              HasSubstr("one text pair per text (2), found 1"));
}

}  // namespace
}  // namespace accel::models
