// A training job that fails on purpose, for tests/distributed/test_faults.cc (which runs it
// under mpirun and checks how the whole job ends). Not a test by itself.
//   mpirun -np 2 build/bin/fault_worker MODE [FAIL_STEP [TAG]]
// (TAG is ignored: the test puts a unique word there to find the job's processes in /proc.)
// Every rank trains a tiny BERT with the Accelerator (DDP) for many steps, all-reducing the
// loss after each one for logging. At FAIL_STEP (default 3) rank 1 fails, by MODE:
//   kill              SIGKILL before the step's forward: the peers are left in DDP's all-reduces
//   kill_in_allreduce SIGKILL right after launching the loss all-reduce, before waiting on it
//   throw             throws an accel::Error out of the training loop, uncaught by main
//   throw_caught      the same error, caught by main, which prints it and returns 1
//   stall             stops participating without dying (sleeps); meant with ACCEL_COLLECTIVE_TIMEOUT
//   none              no failure: the job must finish and exit 0
// The step loop is long enough (1000 steps) that a job that failed to stop shows as a hang.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>

#include "accelerate/accelerator.h"
#include "distributed/mpi.h"
#include "models/bert.h"
#include "tests/test_util.h"

using namespace accel;

namespace {

void train(const std::string& mode, int64_t fail_step) {
  const int64_t total_steps = mode == "none" ? 5 : 1000;

  Accelerator accelerator(AcceleratorOptions{}, distributed::make_mpi_group());
  const bool failing_rank = accelerator.process_index() == 1 && mode != "none";
  auto model = std::make_shared<models::BertForSequenceClassification>(accel::testing::tiny_config(0.1));
  data::DataLoaderOptions loader_options;
  loader_options.batch_size = 2;
  auto loader =
      std::make_shared<data::DataLoader>(accel::testing::synthetic_features(16 * accelerator.num_processes(), 11), loader_options);
  auto sgd = std::make_shared<nn::SGD>(model->parameters(), nn::SGDOptions{.lr = 0.01});
  auto [prepared, optimizer, batches] = accelerator.prepare(model, sgd, loader);

  int64_t step = 0;
  while (step < total_steps) {
    for (auto& batch : *batches) {
      if (step == total_steps) break;
      if (failing_rank && step == fail_step) {
        if (mode == "kill") ::raise(SIGKILL);
        if (mode == "throw" || mode == "throw_caught")
          ACCEL_FAIL("fault_worker: rank 1 fails on purpose at step ", step);
        if (mode == "stall") {
          std::cerr << "fault_worker: rank 1 stops participating at step " << step << std::endl;
          for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
        }
      }
      Tensor loss = prepared->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
      accelerator.backward(loss);
      optimizer->step();
      optimizer->zero_grad();
      Tensor logged = loss.detach().reshape({1});  // (1,)
      auto work = accelerator.process_group().all_reduce(logged, distributed::Reduce::Avg);
      if (failing_rank && step == fail_step && mode == "kill_in_allreduce") ::raise(SIGKILL);
      work->wait();
      ++step;
    }
  }
  accelerator.print("fault_worker: finished ", step, " steps");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "none";
  const int64_t fail_step = argc > 2 ? std::atoll(argv[2]) : 3;
  ACCEL_CHECK(mode == "none" || mode == "kill" || mode == "kill_in_allreduce" || mode == "throw" ||
                  mode == "throw_caught" || mode == "stall",
              "fault_worker: unknown mode \"", mode,
              "\" (expected none, kill, kill_in_allreduce, throw, throw_caught or stall)");
  if (mode != "throw_caught") {
    train(mode, fail_step);
    return 0;
  }
  try {
    train(mode, fail_step);
  } catch (const Error& e) {
    std::cerr << "fault_worker: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
