// tests/tools/test_cli.cc: the command-line programs run as a user runs them, through a
// shell (popen), on the shared fixtures: `accel tokenize` must give the tokenizer's ids,
// `accel inspect` must list a checkpoint's tensors, `accel estimate-memory` must give the ZeRO
// paper's figures and the built model's parameter count, bad flags and bad input must fail with a
// message, and accel-embed must write one row per sentence, in input order whatever the
// batching, with unit norm when normalizing. No network.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/bert.h"
#include "models/bert_memory.h"
#include "models/tokenizer.h"

namespace accel::tools {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

const std::string kBinDir = ACCEL_BIN_DIR;
const std::string kAccel = kBinDir + "/accel";
const std::string kEmbed = kBinDir + "/accel-embed";
const std::string kVocab = std::string(ACCEL_SHARED_DATA_DIR) + "/vocab/bert-base-uncased-vocab.txt";
const std::string kTinyBertDir = std::string(ACCEL_SHARED_DATA_DIR) + "/tiny-bert";

struct Result {
  int exit_code = -1;
  std::string out, err;
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs `command < input` through the shell and collects its exit code, stdout and stderr.
Result run(const std::string& command, const std::string& input = "") {
  const fs::path dir = fs::temp_directory_path() / ("accel_test_cli_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path stdin_path = dir / "stdin", stderr_path = dir / "stderr";
  std::ofstream(stdin_path) << input;
  std::string full = command + " < '" + stdin_path.string() + "' 2> '" + stderr_path.string() + "'";
  FILE* pipe = popen(full.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << full;
  Result result;
  if (!pipe) return result;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) result.out.append(buffer, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = read_file(stderr_path);
  fs::remove_all(dir);
  return result;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::vector<double>> parse_rows(const std::string& text) {
  std::vector<std::vector<double>> rows;
  for (const std::string& line : lines_of(text)) rows.push_back(json::parse(line).get<std::vector<double>>());
  return rows;
}

TEST(AccelTokenize, MatchesTheTokenizer) {
  models::BertTokenizer tokenizer = models::BertTokenizer::from_vocab(kVocab);
  Result r = run(kAccel + " tokenize --vocab '" + kVocab + "'",
                 "\"hello world\"\n"
                 "\"Héllo, WORLD! Don't panic.\"\n"
                 "{\"text\": \"the first sentence\", \"text_pair\": \"and the second\"}\n"
                 "{\"text\": \"no pair here\"}\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_EQ(lines[0], "[101,7592,2088,102]");
  EXPECT_EQ(json::parse(lines[1]).get<std::vector<int64_t>>(),
            tokenizer.encode("Héllo, WORLD! Don't panic.").input_ids);
  EXPECT_EQ(json::parse(lines[2]).get<std::vector<int64_t>>(),
            tokenizer.encode("the first sentence", std::string_view("and the second")).input_ids);
  EXPECT_EQ(json::parse(lines[3]).get<std::vector<int64_t>>(), tokenizer.encode("no pair here").input_ids);
}

TEST(AccelTokenize, SpecialTokensAndTruncation) {
  Result bare = run(kAccel + " tokenize --no-special-tokens --vocab '" + kVocab + "'", "\"hello world\"\n");
  ASSERT_EQ(bare.exit_code, 0) << bare.err;
  EXPECT_EQ(bare.out, "[7592,2088]\n");
  Result truncated = run(kAccel + " tokenize --max-length 3 --vocab '" + kVocab + "'", "\"hello world\"\n");
  ASSERT_EQ(truncated.exit_code, 0) << truncated.err;
  EXPECT_EQ(truncated.out, "[101,7592,102]\n");
}

TEST(AccelTokenize, ModelDirectoryUsesItsTokenizerJson) {
  models::BertTokenizer tokenizer = models::BertTokenizer::from_pretrained(kTinyBertDir);
  Result r = run(kAccel + " tokenize --model '" + kTinyBertDir + "'", "\"t5 t6 t7\"\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out).get<std::vector<int64_t>>(), tokenizer.encode("t5 t6 t7").input_ids);
}

TEST(AccelTokenize, BadLineNamesItsNumber) {
  Result r = run(kAccel + " tokenize --vocab '" + kVocab + "'", "\"fine\"\nnot json\n\"never reached\"\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("line 2"));
  EXPECT_EQ(lines_of(r.out).size(), 1u) << "the good line before the bad one is written";
  Result no_text = run(kAccel + " tokenize --vocab '" + kVocab + "'", "{\"txt\": \"typo\"}\n");
  EXPECT_NE(no_text.exit_code, 0);
  EXPECT_THAT(no_text.err, HasSubstr("\"text\""));
}

TEST(AccelCli, BadFlagsFailWithAMessage) {
  Result unknown = run(kAccel + " tokenize --vocab '" + kVocab + "' --bogus");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_THAT(unknown.err, HasSubstr("--bogus"));
  Result no_source = run(kAccel + " tokenize");
  EXPECT_NE(no_source.exit_code, 0);
  EXPECT_THAT(no_source.err, HasSubstr("--vocab"));
  Result both = run(kAccel + " tokenize --vocab '" + kVocab + "' --model '" + kTinyBertDir + "'");
  EXPECT_NE(both.exit_code, 0);
  EXPECT_FALSE(both.err.empty());
  Result no_command = run(kAccel);
  EXPECT_NE(no_command.exit_code, 0);
  EXPECT_FALSE(no_command.err.empty());
  Result batch = run(kEmbed + " --model '" + kTinyBertDir + "' --batch-size 0");
  EXPECT_NE(batch.exit_code, 0);
  EXPECT_THAT(batch.err, HasSubstr("--batch-size"));
  Result no_model = run(kEmbed + " --model /nonexistent/model/dir", "a sentence\n");
  EXPECT_NE(no_model.exit_code, 0);
  EXPECT_THAT(no_model.err, HasSubstr("/nonexistent/model/dir"));
}

TEST(AccelInspect, ListsTheTensors) {
  const std::string file = kTinyBertDir + "/model.safetensors";
  Result r = run(kAccel + " inspect '" + file + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<safetensors::TensorInfo> infos = safetensors::read_header(file);
  ASSERT_FALSE(infos.empty());
  for (const auto& info : infos) {
    EXPECT_THAT(r.out, HasSubstr(info.name + "\t" + dtype_name(info.dtype) + "\t" + shape_str(info.shape)));
  }
  EXPECT_THAT(r.err, HasSubstr(std::to_string(infos.size()) + " tensors"));
  Result missing = run(kAccel + " inspect /nonexistent.safetensors");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent.safetensors"));
}

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> objects;
  for (const std::string& line : lines_of(text)) objects.push_back(json::parse(line));
  return objects;
}

// The ZeRO paper's example (figure 1): 7.5B parameters, 64 ranks, mixed-precision Adam.
TEST(AccelEstimateMemory, ZeroPapersExample) {
  for (const std::string& dtype : {std::string(" --dtype fp16"), std::string("")}) {  // fp16 is the default
    Result table = run(kAccel + " estimate-memory --params 7.5e9 --num_processes 64" + dtype);
    ASSERT_EQ(table.exit_code, 0) << table.err;
    EXPECT_THAT(table.out, HasSubstr("7,500,000,000"));
    EXPECT_THAT(table.out, HasSubstr("p = 2, g = 2, K = 12"));
    std::vector<std::string> rows;
    for (const std::string& line : lines_of(table.out)) {
      if (!line.empty() && std::isdigit(static_cast<unsigned char>(line[0]))) rows.push_back(line);
    }
    ASSERT_EQ(rows.size(), 4u) << table.out;
    const std::vector<std::string> totals = {"120.0 GB", "31.4 GB", "16.6 GB", "1.9 GB"};
    for (size_t stage = 0; stage < 4; ++stage) {
      EXPECT_EQ(rows[stage].substr(0, 1), std::to_string(stage));
      EXPECT_EQ(rows[stage].substr(rows[stage].size() - totals[stage].size()), totals[stage]) << rows[stage];
    }
  }
  Result one = run(kAccel + " estimate-memory --params 7.5B --num_processes 64 --zero_stage 1 --json");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  std::vector<json> objects = json_lines(one.out);
  ASSERT_EQ(objects.size(), 1u) << one.out;
  EXPECT_EQ(objects[0]["zero_stage"], 1);
  EXPECT_EQ(objects[0]["num_parameters"], 7'500'000'000);
  EXPECT_EQ(objects[0]["optimizer_states_bytes"], 1'406'250'000);
  EXPECT_EQ(objects[0]["total_bytes"], 31'406'250'000);
  EXPECT_FALSE(objects[0].contains("activations_bytes"));
}

TEST(AccelEstimateMemory, CountsTheModelAndItsActivations) {
  const models::BertConfig config = models::BertConfig::from_file(kTinyBertDir + "/config.json");
  const int64_t num_parameters = models::BertForSequenceClassification(config).num_parameters();
  Result r = run(kAccel + " estimate-memory --model '" + kTinyBertDir +
                 "' --dtype fp32 --num_processes 2 --batch-size 4 --seq-len 16 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<json> objects = json_lines(r.out);
  ASSERT_EQ(objects.size(), 4u) << r.out;
  const int64_t activations = models::bert_training_activations(config, 4, 16, false).total_bytes();
  for (const json& stage : objects) {
    EXPECT_EQ(stage["num_parameters"], num_parameters);
    EXPECT_EQ(stage["activations_bytes"], activations);
    EXPECT_EQ(stage["total_bytes"], stage["model_states_bytes"].get<int64_t>() + activations);
  }
  EXPECT_EQ(objects[0]["model_states_bytes"], 16 * num_parameters);  // fp32 Adam: 4 + 4 + 8 bytes
  Result table = run(kAccel + " estimate-memory --model '" + kTinyBertDir + "' --batch-size 4 --seq-len 16");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("an estimate"));
  EXPECT_THAT(table.out, HasSubstr("attention probabilities (B, heads, T, T)"));
  EXPECT_THAT(table.out, HasSubstr("activations"));
}

TEST(AccelEstimateMemory, BadInputFailsWithAMessage) {
  const fs::path dir = fs::temp_directory_path() / ("accel_test_estimate_" + std::to_string(getpid()));
  fs::create_directories(dir / "not_json");
  fs::create_directories(dir / "no_hidden_size");
  std::ofstream(dir / "not_json" / "config.json") << "{ not json";
  std::ofstream(dir / "no_hidden_size" / "config.json")
      << R"({"vocab_size": 10, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4})";
  const std::string estimate = kAccel + " estimate-memory ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--model /nonexistent/dir", "/nonexistent/dir/config.json"},
      {"--model '" + (dir / "not_json").string() + "'", "invalid JSON"},
      {"--model '" + (dir / "no_hidden_size").string() + "'", "hidden_size"},
      {"--params seven", "expected a number such as 7.5e9"},
      {"--params 0", "between 1 and 1e15"},
      {"--params -2B", "between 1 and 1e15"},
      {"--params 1e9 --num_processes 0", "--num_processes must be at least 1, got 0"},
      {"--params 1e9 --zero_stage 4", "--zero_stage must be 0, 1, 2 or 3, got 4"},
      {"--params 1e9 --dtype int8", "unknown dtype \"int8\""},
      {"", "exactly one of --model DIR"},
      {"--params 1e9 --batch-size 2 --seq-len 8", "need --model DIR"},
      {"--model '" + kTinyBertDir + "' --seq-len 8", "got only --seq-len"},
  };
  for (const auto& [args, message] : cases) {
    Result r = run(estimate + args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_THAT(r.err, HasSubstr(message)) << args;
  }
  fs::remove_all(dir);
}

// Sentences of 1 to 12 toy tokens, in an order that length sorting changes.
const std::vector<std::string> kSentences = {
    "t5 t6 t7",
    "t8",
    "t9 t10 t11 t12 t13 t14 t15 t16 t17 t18 t19 t20",
    "t21 t22",
    "t23 t24 t25 t26 t27 t28",
    "t29 t30 t31 t32",
    "t33 t34 t35 t36 t37 t38 t39 t40 t41",
};

std::string join_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

TEST(AccelEmbed, OneRowPerSentenceInInputOrder) {
  const std::string embed = kEmbed + " --model '" + kTinyBertDir + "' --threads 1";
  Result batched = run(embed + " --batch-size 3", join_lines(kSentences));
  ASSERT_EQ(batched.exit_code, 0) << batched.err;
  EXPECT_THAT(batched.err, HasSubstr("sentences/s"));
  std::vector<std::vector<double>> rows = parse_rows(batched.out);
  ASSERT_EQ(rows.size(), kSentences.size());
  for (size_t i = 0; i < kSentences.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 32u) << "row " << i << " has the hidden size of tiny-bert";
    Result alone = run(embed, kSentences[i] + "\n");
    ASSERT_EQ(alone.exit_code, 0) << alone.err;
    std::vector<std::vector<double>> expected = parse_rows(alone.out);
    ASSERT_EQ(expected.size(), 1u);
    for (size_t h = 0; h < 32; ++h) {
      EXPECT_NEAR(rows[i][h], expected[0][h], 1e-5) << "sentence " << i << ", component " << h;
    }
  }
  // The same sentences as JSON Lines give the same rows.
  std::vector<std::string> records;
  for (const std::string& s : kSentences) records.push_back(json(s).dump());
  Result jsonl = run(embed + " --batch-size 3", join_lines(records));
  ASSERT_EQ(jsonl.exit_code, 0) << jsonl.err;
  EXPECT_EQ(jsonl.out, batched.out);
}

TEST(AccelEmbed, NormalizeGivesUnitRows) {
  const std::string embed = kEmbed + " --model '" + kTinyBertDir + "' --threads 1 --batch-size 2";
  auto norms = [](const std::vector<std::vector<double>>& rows) {
    std::vector<double> result;
    for (const auto& row : rows) {
      double sum = 0;
      for (double v : row) sum += v * v;
      result.push_back(std::sqrt(sum));
    }
    return result;
  };
  for (const char* pooling : {"mean", "cls"}) {
    Result normalized = run(embed + " --normalize --pooling " + pooling, join_lines(kSentences));
    ASSERT_EQ(normalized.exit_code, 0) << normalized.err;
    std::vector<double> unit = norms(parse_rows(normalized.out));
    ASSERT_EQ(unit.size(), kSentences.size());
    for (double n : unit) EXPECT_NEAR(n, 1.0, 1e-5) << pooling;
  }
  // tiny-bert has no modules.json, so the default is not to normalize.
  Result plain = run(embed, join_lines(kSentences));
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  for (double n : norms(parse_rows(plain.out))) EXPECT_GT(std::fabs(n - 1.0), 1e-3);
}

TEST(AccelEmbed, BadJsonLineNamesItsNumber) {
  Result r = run(kEmbed + " --model '" + kTinyBertDir + "' --jsonl", "\"t5\"\n\"t6\"\n{\"text\": 3}\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("line 3"));
  EXPECT_TRUE(r.out.empty()) << "nothing is written when the input is bad";
}

// One sentence per batch: the second batch packs the weights (core/weight_packing.h) and later
// ones multiply the packed copies wherever oneDNN wants that layout for their row count; the
// rows must match those of a run with packing off.
TEST(AccelEmbed, PackedWeightsGiveTheRowsOfPlainOnes) {
  const std::string embed = kEmbed + " --model '" + kTinyBertDir + "' --threads 1 --batch-size 1";
  Result packed = run(embed, join_lines(kSentences));
  Result plain = run("ACCEL_PACK_WEIGHTS=0 " + embed, join_lines(kSentences));
  ASSERT_EQ(packed.exit_code, 0) << packed.err;
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  std::vector<std::vector<double>> rows = parse_rows(packed.out), expected = parse_rows(plain.out);
  ASSERT_EQ(rows.size(), kSentences.size());
  ASSERT_EQ(expected.size(), kSentences.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), expected[i].size());
    for (size_t h = 0; h < rows[i].size(); ++h) {
      EXPECT_NEAR(rows[i][h], expected[i][h], 1e-5) << "sentence " << i << ", component " << h;
    }
  }
}

TEST(AccelEmbed, BadPackWeightsSettingIsAClearError) {
  Result r = run("ACCEL_PACK_WEIGHTS=yes " + kEmbed + " --model '" + kTinyBertDir + "'", "t5 t6\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("ACCEL_PACK_WEIGHTS: expected 0 (off) or 1 (on), found 'yes'"));
  EXPECT_TRUE(r.out.empty());
}

}  // namespace
}  // namespace accel::tools
