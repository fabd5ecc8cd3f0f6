// accel-finetune end to end on the tiny random BERT of the shared data: a short run writes
// metrics.json and a best model; a malformed data row stops with file and line (or is
// skipped and counted with --skip-bad-rows); a NaN loss stops with the step number; a bad
// flag exits non-zero with a message.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/test_util.h"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

using Result = accel::testing::CommandResult;

Result run(const std::string& args) {
  return accel::testing::run_command(std::string(ACCEL_BIN_DIR) + "/accel-finetune " + args);
}

class FinetuneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("accel_finetune_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  std::string common(const std::string& train, const std::string& eval) {
    return "--model " ACCEL_SHARED_DATA_DIR "/tiny-bert --task tsv --text-columns sentence --train " + train +
           " --eval " + eval + " --epochs 1 --batch-size 4 --threads 1 --output-dir " + (dir_ / "out").string();
  }
  fs::path dir_;
};

const char* kRows =
    "sentence\tlabel\n"
    "t5 t6 t7\t1\n"
    "t8 t9\t0\n"
    "t10 t11 t12 t13\t1\n"
    "t14\t0\n"
    "t15 t16\t1\n";

}  // namespace

TEST_F(FinetuneTest, ShortRunWritesMetricsAndBestModel) {
  std::string data = write("data.tsv", kRows);
  Result r = run(common(data, data));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("best dev metrics:"));
  std::ifstream in(dir_ / "out" / "metrics.json");
  nlohmann::json metrics = nlohmann::json::parse(in);
  EXPECT_EQ(metrics.at("eval_samples"), 5);
  EXPECT_GE(metrics.at("accuracy").get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(dir_ / "out" / "best" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "best" / "config.json"));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "checkpoints" / "checkpoint_0" / "accel_checkpoint.json"));
  // Resuming from the end-of-epoch checkpoint has nothing left to train, and still reports.
  Result resumed = run(common(data, data) + " --resume-from " + (dir_ / "out" / "checkpoints" / "checkpoint_0").string());
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_THAT(resumed.output, HasSubstr("epochs were already done; evaluating the resumed model"));
  nlohmann::json again = nlohmann::json::parse(std::ifstream(dir_ / "out" / "metrics.json"));
  EXPECT_EQ(again.at("eval_samples"), 5);
}

// scripts/finetune_mrpc.sh passes the user's arguments after its own: the last value wins.
TEST_F(FinetuneTest, RepeatedFlagTakesTheLastValue) {
  std::string data = write("data.tsv", kRows);
  Result r = run(common(data, data) + " --epochs 3 --epochs 2");  // common() gave --epochs 1 first
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json metrics = nlohmann::json::parse(std::ifstream(dir_ / "out" / "metrics.json"));
  EXPECT_EQ(metrics.at("epochs"), 2);
}

TEST_F(FinetuneTest, MalformedRowNamesFileAndLine) {
  std::string bad = write("bad.tsv", std::string(kRows) + "t17 t18\n" + "t19\t1\n");
  Result r = run(common(bad, bad));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("bad.tsv:7:"));
  Result skipped = run(common(bad, bad) + " --skip-bad-rows");
  EXPECT_EQ(skipped.exit_code, 0) << skipped.output;
  EXPECT_THAT(skipped.output, HasSubstr("skipped 1 bad training rows"));
}

TEST_F(FinetuneTest, NanLossStopsWithTheStepNumber) {
  std::string data = write("nan.tsv", "sentence\tlabel\nt5 t6\tnan\nt7\t0.5\nt8 t9\t1.5\n");
  Result r = run(common(data, data) + " --regression");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("training stopped: the loss is nan at step 1"));
}

TEST_F(FinetuneTest, BadFlagsAreRejected) {
  Result r = run("--model x --train /nonexistent --eval /nonexistent");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent"));
  std::string data = write("data.tsv", kRows);
  Result mp = run(common(data, data) + " --mixed-precision fp8");
  EXPECT_NE(mp.exit_code, 0);
  EXPECT_THAT(mp.output, HasSubstr("fp8"));
  Result model = run("--model /nonexistent-model --train " + data + " --eval " + data);
  EXPECT_NE(model.exit_code, 0);
  EXPECT_THAT(model.output, HasSubstr("/nonexistent-model"));
}
