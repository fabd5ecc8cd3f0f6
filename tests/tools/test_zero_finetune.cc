// ZeRO end to end (label distributed): `accel launch --num_processes 2 --zero_stage 3`
// runs accel-finetune on the tiny BERT, its checkpoint holds per-rank shards, `accel
// merge-weights` consolidates them into a model.safetensors equal to the best model the run
// saved, and a single process loads it as a Hugging Face directory. Also merge-weights'
// errors: a checkpoint without ZeRO shards, a corrupt shard, a missing rank.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/safetensors.h"
#include "models/pretrained.h"
#include "tests/test_util.h"

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using namespace accel;

namespace {

using Result = accel::testing::CommandResult;

Result run(const std::string& command_line) { return accel::testing::run_command("OMP_NUM_THREADS=1 " + command_line); }

const std::string kBin = ACCEL_BIN_DIR;
const std::string kTinyBert = std::string(ACCEL_SHARED_DATA_DIR) + "/tiny-bert";

class ZeroFinetuneTest : public ::testing::Test {
 protected:
  // One ZeRO-3 run for the whole suite: 8 optimizer steps per rank, a checkpoint after the last.
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("accel_zero_finetune_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    training_ = run(kBin + "/accel launch --num_processes 2 --zero_stage 3 --cpu --num_cpu_threads_per_process 1 " + kBin +
                    "/accel-finetune --model " + kTinyBert + " --task mrpc --train " ACCEL_SOURCE_DIR
                    "/data/mrpc/train.tsv --eval " ACCEL_SOURCE_DIR "/data/mrpc/dev.tsv --epochs 1 "
                    "--max-train-samples 128 --batch-size 8 --max-seq-len 64 --checkpoint-every 8 --output-dir " +
                    (dir_ / "out").string());
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path checkpoint() { return dir_ / "out" / "checkpoints" / "checkpoint_0"; }
  static fs::path dir_;
  static Result training_;
};

fs::path ZeroFinetuneTest::dir_;
Result ZeroFinetuneTest::training_;

TEST_F(ZeroFinetuneTest, MergedShardsEqualTheBestModelAndLoadInOneProcess) {
  ASSERT_EQ(training_.exit_code, 0) << training_.output;
  ASSERT_TRUE(fs::exists(checkpoint() / "zero_model_rank_1.safetensors")) << training_.output;
  EXPECT_FALSE(fs::exists(checkpoint() / "model.safetensors")) << "ZeRO checkpoints hold shards only";

  fs::path merged = dir_ / "merged";
  Result merge = run(kBin + "/accel merge-weights " + checkpoint().string() + " " + merged.string() + " --config " +
                     kTinyBert + "/config.json");
  ASSERT_EQ(merge.exit_code, 0) << merge.output;
  EXPECT_THAT(merge.output, HasSubstr("from 2 ZeRO stage-3 shards"));

  // The checkpoint was taken after the last step, when the best model was also saved.
  auto merged_weights = safetensors::load((merged / "model.safetensors").string()).tensors;
  auto best = safetensors::load((dir_ / "out" / "best" / "model.safetensors").string()).tensors;
  ASSERT_EQ(merged_weights.size(), best.size());
  for (auto& [name, tensor] : best) {
    ASSERT_TRUE(merged_weights.count(name)) << name;
    EXPECT_TRUE(equal(merged_weights.at(name), tensor)) << name;
  }
  models::PretrainedOptions quiet;
  quiet.verbose = false;
  auto model = models::bert_classifier_from_pretrained(merged.string(), quiet);
  for (auto& [name, tensor] : model->state_dict()) {
    if (merged_weights.count(name)) {
      EXPECT_TRUE(equal(tensor, merged_weights.at(name))) << name;
    }
  }
}

TEST_F(ZeroFinetuneTest, MergeWeightsRefusesWhatItCannotMerge) {
  ASSERT_EQ(training_.exit_code, 0) << training_.output;
  // A plain (non-ZeRO) checkpoint.
  fs::path plain = dir_ / "plain";
  Result single = run(kBin + "/accel-finetune --model " + kTinyBert + " --task mrpc --train " ACCEL_SOURCE_DIR
                      "/data/mrpc/train.tsv --eval " ACCEL_SOURCE_DIR "/data/mrpc/dev.tsv --epochs 1 "
                      "--max-train-samples 16 --batch-size 8 --max-seq-len 32 --checkpoint-every 2 --threads 1 "
                      "--output-dir " + plain.string());
  ASSERT_EQ(single.exit_code, 0) << single.output;
  Result not_zero = run(kBin + "/accel merge-weights " + (plain / "checkpoints" / "checkpoint_0").string() + " " +
                        (dir_ / "m1").string());
  EXPECT_NE(not_zero.exit_code, 0);
  EXPECT_THAT(not_zero.output, HasSubstr("not a checkpoint saved under ZeRO"));

  // A corrupt shard: the checksum catches it before anything is written.
  fs::path copy = dir_ / "corrupt";
  fs::copy(checkpoint(), copy, fs::copy_options::recursive);
  {
    std::fstream shard(copy / "zero_model_rank_1.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    shard.seekp(-4, std::ios::end);
    shard.write("\x7f\x7f\x7f\x7f", 4);
  }
  Result corrupt = run(kBin + "/accel merge-weights " + copy.string() + " " + (dir_ / "m2").string());
  EXPECT_NE(corrupt.exit_code, 0);
  EXPECT_THAT(corrupt.output, HasSubstr("checksum mismatch for zero_model_rank_1.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "m2" / "model.safetensors"));
}

}  // namespace
