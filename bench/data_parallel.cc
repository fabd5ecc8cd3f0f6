// bench_data_parallel: training throughput of data parallelism. Every rank of an mpirun job
// (or the single process) trains a BERT at MiniLM-L6 shapes through the Accelerator (DDP, or
// ZeRO with --zero-stage) on its own batches of random full-length tokens, and rank 0 prints
// samples/s over the timed steps, milliseconds per step, and for DDP the share of bucket
// all-reduce time that ran during backward (hidden) rather than after it. One JSON line at
// the end. bench/data_parallel.sh runs 1 rank and then 2 ranks, one thread each, and prints
// the scaling efficiency: throughput(2) / (2 x throughput(1)).
//
//   OMP_NUM_THREADS=1 mpirun -np 2 build/bin/bench_data_parallel [--batch 8] [--steps 4] [--zero-stage 0-3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "accelerate/accelerator.h"
#include "core/parallel.h"
#include "core/random.h"
#include "models/bert.h"

using namespace accel;

namespace {

struct Options {
  int64_t batch = 8, seq = 128, steps = 4, warmup = 1;
  int zero_stage = 0;
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: bench_data_parallel [--batch B] [--seq T] [--steps N] [--warmup N] [--zero-stage 0-3]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) usage();
    int64_t value = std::stoll(argv[++i]);
    if (arg == "--batch") o.batch = value;
    else if (arg == "--seq") o.seq = value;
    else if (arg == "--steps") o.steps = value;
    else if (arg == "--warmup") o.warmup = value;
    else if (arg == "--zero-stage") o.zero_stage = static_cast<int>(value);
    else usage();
  }
  if (o.batch < 1 || o.seq < 1 || o.steps < 1 || o.warmup < 0) usage();

  AcceleratorOptions options;
  options.zero_stage = o.zero_stage;
  Accelerator accelerator(options);
  models::BertConfig config;  // all-MiniLM-L6-v2's shapes
  config.hidden_size = 384;
  config.num_hidden_layers = 6;
  config.intermediate_size = 1536;
  manual_seed(0);
  auto model = std::make_shared<models::BertForSequenceClassification>(config);
  auto adamw = std::make_shared<nn::AdamW>(nn::decay_groups(*model, 1e-4, 0.01), nn::AdamWOptions{.lr = 1e-4});
  auto [prepared, optimizer] = accelerator.prepare(model, adamw);
  manual_seed(100 + static_cast<uint64_t>(accelerator.process_index()));  // each rank its own batches
  Tensor ids = randint(1, config.vocab_size, {o.batch, o.seq});  // (B, T)
  Tensor mask = ones({o.batch, o.seq}, kInt64);
  Tensor types = zeros({o.batch, o.seq}, kInt64);
  Tensor labels = randint(0, 2, {o.batch});

  std::vector<double> step_ms;
  double communication = 0, hidden = 0;
  for (int64_t step = 0; step < o.warmup + o.steps; ++step) {
    accelerator.wait_for_everyone();
    auto start = std::chrono::steady_clock::now();
    Tensor loss = prepared->forward(ids, mask, types, labels).loss;
    accelerator.backward(loss);
    optimizer->step();
    optimizer->zero_grad();
    accelerator.wait_for_everyone();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (step < o.warmup) continue;
    step_ms.push_back(ms);
    if (const auto* ddp = accelerator.ddp_of(*prepared)) {
      for (const auto& bucket : ddp->last_bucket_timings()) {
        communication += bucket.communication_seconds;
        hidden += bucket.overlapped_seconds;
      }
    }
  }
  std::sort(step_ms.begin(), step_ms.end());
  const double median = step_ms[step_ms.size() / 2];
  const int world = accelerator.num_processes();
  const double samples_per_second = 1000.0 * static_cast<double>(o.batch * world) / median;
  const double hidden_share = communication > 0 ? hidden / communication : 0.0;
  if (accelerator.is_main_process()) {
    std::printf("accel data parallel: %d rank(s) x %d thread(s), ZeRO stage %d, batch %lld x %lld per rank: "
                "%.0f ms/step (median of %lld), %.2f samples/s", world, get_num_threads(), o.zero_stage,
                static_cast<long long>(o.batch), static_cast<long long>(o.seq), median,
                static_cast<long long>(o.steps), samples_per_second);
    if (communication > 0) {
      std::printf("; all-reduce %.0f ms/step, %.0f%% of it hidden behind backward",
                  1000.0 * communication / static_cast<double>(o.steps), 100.0 * hidden_share);
    }
    std::printf("\n{\"ranks\":%d,\"threads\":%d,\"zero_stage\":%d,\"batch\":%lld,\"seq\":%lld,\"ms\":%.1f,"
                "\"samples_per_s\":%.3f,\"allreduce_ms\":%.1f,\"hidden_share\":%.3f}\n",
                world, get_num_threads(), o.zero_stage, static_cast<long long>(o.batch),
                static_cast<long long>(o.seq), median, samples_per_second,
                1000.0 * communication / static_cast<double>(o.steps), hidden_share);
  }
  return 0;
}
