// ACCEL_TRACE under mpirun (CTest: trace_np2; label distributed). Two modes:
//   ACCEL_TRACE=DIR mpirun -np 2 build/bin/test_trace_ddp    trains a tiny BERT with DDP for a
//       few steps; every rank writes DIR/trace_rank<R>.json at exit
//   build/bin/test_trace_ddp --check DIR 2                  checks those files: each rank's has
//       its process name, the compute / data loader / communication / ddp tracks, the MPI
//       collectives with their byte counts, the DDP bucket all-reduces, and the step spans;
//       prints "N passed, M failed" (exit status 1 on any failure)
// The first mode is also how docs/tracing.md's trace was made.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "accelerate/accelerator.h"
#include "core/random.h"
#include "models/bert.h"
#include "tests/test_util.h"

using namespace accel;

namespace {

void train(int64_t steps) {
  std::mt19937_64 rng(5);
  auto features = std::make_shared<std::vector<data::Features>>();
  for (int64_t i = 0; i < 64; ++i) {
    data::Features f;
    for (int64_t t = 0; t < 16; ++t) {
      f.input_ids.push_back(1 + static_cast<int64_t>(rng() % 98));
      f.token_type_ids.push_back(0);
    }
    f.label = static_cast<double>(rng() % 2);
    features->push_back(std::move(f));
  }
  // ACCEL_ZERO_STAGE=3 (and the other ACCEL_* settings) apply, for pictures of other setups.
  AcceleratorOptions options = AcceleratorOptions::from_env();
  options.cpu = true;  // the picture of the MPI path, also where a GPU is visible
  options.ddp.bucket_bytes = 16 * 1024;  // several buckets even for this tiny model
  Accelerator accelerator(options);
  manual_seed(1234);
  auto model = std::make_shared<models::BertForSequenceClassification>(accel::testing::tiny_config(0.1));
  data::DataLoaderOptions loader_options;
  loader_options.batch_size = 8;
  auto loader = std::make_shared<data::DataLoader>(features, loader_options);
  auto adamw = std::make_shared<nn::AdamW>(model->parameters(), nn::AdamWOptions{.lr = 1e-3});
  auto [prepared, optimizer, batches] = accelerator.prepare(model, adamw, loader);
  int64_t step = 0;
  for (auto& batch : *batches) {
    if (step++ == steps) break;
    Tensor loss = prepared->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
    accelerator.backward(loss);
    optimizer->step();
    optimizer->zero_grad();
  }
}

int check(const std::string& dir, int world) {
  int passed = 0, failed = 0;
  auto expect = [&](bool ok, const std::string& what) {
    (ok ? passed : failed) += 1;
    std::cout << (ok ? "[  OK  ] " : "[ FAIL ] ") << what << std::endl;
  };
  std::vector<int64_t> bucket_spans;
  for (int rank = 0; rank < world; ++rank) {
    const std::string path = dir + "/trace_rank" + std::to_string(rank) + ".json";
    const std::string who = "rank " + std::to_string(rank) + ": ";
    std::ifstream in(path);
    expect(in.good(), who + path + " exists");
    if (!in.good()) continue;
    nlohmann::json trace = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    expect(!trace.is_discarded() && trace.contains("traceEvents"), who + "valid Chrome trace JSON");
    if (trace.is_discarded()) continue;
    std::string process_name;
    std::map<int, std::string> tracks;
    std::map<std::string, int64_t> count_by_name;
    int64_t collectives_with_bytes = 0, buckets_with_index = 0;
    for (const auto& event : trace["traceEvents"]) {
      if (event["ph"] == "M" && event["name"] == "process_name") process_name = event["args"]["name"];
      if (event["ph"] == "M" && event["name"] == "thread_name") tracks[event["tid"]] = event["args"]["name"];
      if (event["ph"] != "X") continue;
      count_by_name[event["name"]] += 1;
      const nlohmann::json args = event.value("args", nlohmann::json::object());
      if (event["cat"] == "communication" && event["name"] == "all_reduce" && args.value("bytes", 0) > 0) {
        collectives_with_bytes += 1;
      }
      if (event["cat"] == "ddp" && args.contains("bucket") && args.value("bytes", 0) > 0) buckets_with_index += 1;
    }
    std::set<std::string> track_names;
    for (const auto& [tid, name] : tracks) track_names.insert(name);
    expect(process_name == "rank " + std::to_string(rank), who + "process named \"" + process_name + "\"");
    for (const char* track : {"compute", "data loader", "communication", "ddp"}) {
      expect(track_names.count(track) == 1, who + "a track named \"" + track + "\"");
    }
    expect(collectives_with_bytes > 0, who + std::to_string(collectives_with_bytes) + " all_reduce spans with bytes");
    expect(buckets_with_index > 0, who + std::to_string(buckets_with_index) + " DDP bucket spans");
    bucket_spans.push_back(buckets_with_index);
    for (const char* name : {"forward", "backward", "optimizer.step", "matmul", "prefetch batch", "broadcast"}) {
      expect(count_by_name[name] > 0, who + std::to_string(count_by_name[name]) + " \"" + name + "\" spans");
    }
  }
  expect(bucket_spans.size() == static_cast<size_t>(world) &&
             std::equal(bucket_spans.begin() + 1, bucket_spans.end(), bucket_spans.begin()),
         "every rank traced the same number of bucket all-reduces");
  std::cout << passed << " passed, " << failed << " failed" << std::endl;
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 4 && std::string(argv[1]) == "--check") return check(argv[2], std::atoi(argv[3]));
    const char* dir = std::getenv("ACCEL_TRACE");
    ACCEL_CHECK(dir != nullptr && *dir != '\0', "test_trace_ddp: set ACCEL_TRACE=DIR (or pass --check DIR WORLD)");
    train(3);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "test_trace_ddp: " << e.what() << std::endl;
    return 1;
  }
}
