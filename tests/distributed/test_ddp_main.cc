// Data parallelism under mpirun (CTest: ddp_np2, ddp_np3; label distributed):
//   mpirun -np 2 build/bin/test_ddp
// Every rank trains a tiny BERT with DDP on its shard and, beside it, the single-process
// reference on the full global batch; the final weights must agree to 1e-5 (relative), with
// and without gradient accumulation (no_sync). Also: the MPI collectives, gather_for_metrics
// on a dataset that does not divide evenly, unused-parameter detection, the collective
// timeout, and which device and group an Accelerator without a group picks. Not a gtest binary: each check runs on every rank, the ranks agree on the
// verdict, and rank 0 prints "N passed, M failed" (exit status 1 on any failure).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <random>
#include <thread>

#include "accelerate/accelerator.h"
#include "accelerate/device_choice.h"
#include "core/autograd/grad_mode.h"
#include "core/random.h"
#include "distributed/ddp.h"
#include "distributed/mpi.h"
#include "models/bert.h"
#include "tests/distributed/mpi_test.h"

using namespace accel;
using namespace accel::testing;
using distributed::ProcessGroup;
using distributed::Reduce;

namespace {

constexpr double kTolerance = 1e-5;  // max relative difference of final weights

using AfterBackward = std::function<void(Accelerator&, models::BertForSequenceClassification&)>;

// Trains for `steps` optimizer steps (whole epochs) with SGD + momentum, which is linear in
// the gradients: differences stay at rounding level (Adam would amplify the rounding noise
// of gradients that are zero in exact arithmetic).
std::shared_ptr<models::BertForSequenceClassification> train(
    std::shared_ptr<ProcessGroup> group, std::shared_ptr<const std::vector<data::Features>> features,
    int64_t batch_size, int64_t accumulation, int64_t steps, const AfterBackward& after_backward = nullptr) {
  AcceleratorOptions options;
  options.cpu = true;  // the single-process reference and the MPI runs on one device, GPU or not
  options.gradient_accumulation_steps = accumulation;
  options.ddp.bucket_bytes = 16 * 1024;  // several buckets even for this tiny model
  Accelerator accelerator(options, std::move(group));
  manual_seed(1234);
  auto model = std::make_shared<models::BertForSequenceClassification>(tiny_config(0.0));
  data::DataLoaderOptions loader_options;
  loader_options.batch_size = batch_size;
  loader_options.shuffle = true;
  loader_options.seed = 7;
  auto loader = std::make_shared<data::DataLoader>(features, loader_options);
  auto sgd = std::make_shared<nn::SGD>(model->parameters(), nn::SGDOptions{.lr = 0.02, .momentum = 0.9});
  auto [prepared, optimizer, batches] = accelerator.prepare(model, sgd, loader);
  ACCEL_CHECK((steps * accumulation) % batches->size() == 0, "train: ", steps, " steps are not whole epochs");
  for (int64_t epoch = 0; epoch < steps * accumulation / batches->size(); ++epoch) {
    for (auto& batch : *batches) {
      auto scope = accelerator.accumulate(*prepared);
      Tensor loss = prepared->forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.labels).loss;
      accelerator.backward(loss);
      if (after_backward) after_backward(accelerator, *prepared);
      optimizer->step();
      optimizer->zero_grad();
    }
  }
  return prepared;
}

// Rank r's copy of `tensor`, gathered from every rank: (world, numel).
Tensor gather_rows(ProcessGroup& group, const Tensor& tensor) {
  Tensor flat = tensor.contiguous().reshape({1, tensor.numel()});
  Tensor all = empty({group.size(), tensor.numel()}, {tensor.dtype()});
  group.all_gather(flat, all)->wait();
  return all;
}

class TwoBranches : public nn::Module {
 public:
  TwoBranches() : Module("TwoBranches") {
    used = register_parameter("used", ones({4}));
    sometimes = register_parameter("sometimes", ones({3}));
    never = register_parameter("never", ones({2}));
  }
  Tensor used, sometimes, never;
};

// ---- the tests ----

void test_collectives(ProcessGroup& group) {
  const int world = group.size(), rank = group.rank();
  for (DType dtype : {kFloat32, kFloat64, kInt64, kInt32, kBFloat16, kFloat16}) {
    Tensor x = full({5}, rank + 1, {dtype});
    group.all_reduce(x, Reduce::Sum)->wait();
    ACCEL_CHECK(x.to(kFloat64).sum().item<double>() == 5.0 * world * (world + 1) / 2, "all_reduce sum ", dtype);
    Tensor m = full({3}, rank, {dtype});
    group.all_reduce(m, Reduce::Max)->wait();
    ACCEL_CHECK(m.to(kFloat64).min().item<double>() == world - 1, "all_reduce max ", dtype);
  }
  Tensor avg = full({4, 4}, static_cast<double>(rank), {kFloat32}).transpose(0, 1);  // strided: staged
  group.all_reduce(avg, Reduce::Avg)->wait();
  ACCEL_CHECK(allclose(avg, full({4, 4}, (world - 1) / 2.0)), "all_reduce avg on a strided view");
  ACCEL_CHECK(contains(error_of([&] { Tensor i = ones({2}, {kInt64}); group.all_reduce(i, Reduce::Avg); }),
                       "avg needs a floating-point tensor"), "avg of int64 is refused");

  Tensor mine = full({2, 3}, static_cast<double>(rank), {kFloat64});
  Tensor gathered = empty({2 * world, 3}, {kFloat64});
  group.all_gather(mine, gathered)->wait();
  for (int r = 0; r < world; ++r) ACCEL_CHECK(equal(gathered.narrow(0, 2 * r, 2), full({2, 3}, r, {kFloat64})), "all_gather");

  Tensor input = arange(world * 3, kFloat32) + static_cast<double>(rank);  // rank r's slice of rank q: 3r..3r+2 + q
  Tensor output = empty({3}, {kFloat32});
  group.reduce_scatter(input, output, Reduce::Sum)->wait();
  Tensor expected = (arange(3, kFloat32) + 3.0 * rank) * static_cast<double>(world) + world * (world - 1) / 2.0;
  ACCEL_CHECK(allclose(output, expected), "reduce_scatter");

  Tensor value = full({7}, rank == world - 1 ? 42.0 : -1.0, {kBFloat16});
  group.broadcast(value, world - 1)->wait();
  ACCEL_CHECK(equal(value, full({7}, 42.0, {kBFloat16})), "broadcast from the last rank");
  group.barrier();
}

void test_accelerator_collectives(std::shared_ptr<ProcessGroup> group) {
  Accelerator accelerator(AcceleratorOptions{}, group);
  const int world = accelerator.num_processes(), rank = accelerator.process_index();
  Tensor sum = accelerator.reduce(full({2}, rank + 1.0), "sum");
  ACCEL_CHECK(allclose(sum, full({2}, world * (world + 1) / 2.0)), "Accelerator::reduce");
  Tensor ragged = full({rank + 1}, 1.0);
  Tensor padded = accelerator.pad_across_processes(ragged, 0, -1);
  ACCEL_CHECK(padded.size(0) == world, "pad_across_processes pads to the longest");
  ACCEL_CHECK(accelerator.gather(padded).size(0) == world * world, "gather after padding");
  accelerator.wait_for_everyone();
}

// n examples do not fill the last round of world * batch_size: it is padded with repeats.
void test_options_from_environment() {
  ::setenv("ACCEL_DDP_BUCKET_MB", "0.5", 1);
  AcceleratorOptions options = AcceleratorOptions::from_env();
  ::setenv("ACCEL_DDP_BUCKET_MB", "many", 1);
  std::string message = error_of([] { AcceleratorOptions::from_env(); });
  ::unsetenv("ACCEL_DDP_BUCKET_MB");
  ACCEL_CHECK(options.ddp.bucket_bytes == 512 * 1024, "ACCEL_DDP_BUCKET_MB=0.5 gave ", options.ddp.bucket_bytes, " bytes");
  ACCEL_CHECK(contains(message, "ACCEL_DDP_BUCKET_MB=\"many\" is not a positive number"), "bad bucket size: ", message);
  ACCEL_CHECK(distributed::make_default_group()->backend() == "mpi", "under mpirun the default group is MPI");
}

// Under mpirun with cpu set (or no GPU), an Accelerator given no group keeps the CPU and the
// MPI group, as before the GPU was ever picked; with a GPU per rank it is NCCL on cuda:LOCAL_RANK.
void test_default_placement(int world) {
  Accelerator on_cpu(AcceleratorOptions{.cpu = true});
  ACCEL_CHECK(on_cpu.device() == kCPU && on_cpu.process_group().backend() == "mpi" &&
                  on_cpu.num_processes() == world,
              "cpu under mpirun: got ", on_cpu.device(), " and a ", on_cpu.process_group().backend(), " group of ",
              on_cpu.num_processes());
  if (visible_cuda_devices() == 0) {
    Accelerator chosen;
    ACCEL_CHECK(chosen.device() == kCPU && chosen.process_group().backend() == "mpi",
                "no GPU under mpirun: got ", chosen.device(), " and a ", chosen.process_group().backend(), " group");
  } else if (visible_cuda_devices() >= world) {
    Accelerator chosen;
    const Device expected(DeviceType::CUDA, chosen.local_process_index());
    ACCEL_CHECK(chosen.device() == expected && chosen.process_group().backend() == "nccl",
                "a GPU per rank under mpirun: got ", chosen.device(), " and a ", chosen.process_group().backend(),
                " group, expected ", expected, " and nccl");
    Tensor sum = chosen.reduce(full({2}, chosen.process_index() + 1.0), "sum");
    ACCEL_CHECK(allclose(sum, full({2}, world * (world + 1) / 2.0)), "reduce over NCCL of CPU tensors");
  }
}

void test_gather_for_metrics(std::shared_ptr<ProcessGroup> group, int64_t n) {
  Accelerator accelerator(AcceleratorOptions{}, group);
  const int64_t batch_size = 2;
  data::DataLoaderOptions options;
  options.batch_size = batch_size;
  auto loader = std::make_shared<data::DataLoader>(synthetic_features(n, 5), options);
  auto [batches] = accelerator.prepare(loader);
  std::vector<int64_t> seen;
  int64_t labels = 0;
  for (auto& batch : *batches) {
    Tensor indices = accelerator.gather_for_metrics(from_vector<int64_t>(batch.indices));
    for (int64_t index : indices.to_vector<int64_t>()) seen.push_back(index);
    labels += accelerator.gather_for_metrics(batch.labels).size(0);
  }
  ACCEL_CHECK(static_cast<int64_t>(seen.size()) == n && labels == n, "gather_for_metrics returned ", seen.size(),
              " samples (", labels, " labels) of ", n);
  std::sort(seen.begin(), seen.end());
  for (int64_t i = 0; i < n; ++i) ACCEL_CHECK(seen[i] == i, "gather_for_metrics lost or repeated sample ", i);
}

void test_ddp_matches_single_process(std::shared_ptr<ProcessGroup> group) {
  const int64_t world = group->size(), batch_size = 2, steps = 20;
  auto features = synthetic_features(world * batch_size * 10, 11);  // 10 batches per rank per epoch
  std::vector<distributed::BucketTiming> timings;  // of the last step
  auto distributed_model = train(group, features, batch_size, 1, steps, [&](Accelerator& a, nn::Module& m) {
    const distributed::DistributedDataParallel* ddp = a.ddp_of(m);
    ACCEL_CHECK(ddp != nullptr && ddp->num_buckets() > 1, "DDP attached with several buckets");
    ACCEL_CHECK(ddp->bucket_parameter_names(0).front() == "classifier.bias" &&
                    ddp->bucket_parameter_names(ddp->num_buckets() - 1).back() == "bert.embeddings.word_embeddings.weight",
                "buckets hold the parameters in reverse registration order");
    timings = ddp->last_bucket_timings();
    ACCEL_CHECK(static_cast<int64_t>(timings.size()) == ddp->num_buckets(), "one timing per bucket");
    for (const auto& timing : timings) {
      ACCEL_CHECK(timing.overlapped_seconds <= timing.communication_seconds, "overlap within communication time");
    }
  });
  auto reference = train(distributed::make_single_process_group(), features, world * batch_size, 1, steps);
  double difference = max_relative_difference(*distributed_model, *reference);
  ACCEL_CHECK(difference <= kTolerance, "DDP and single-process weights differ by ", difference, " (relative)");
  if (group->rank() == 0) {
    double communication = 0, overlapped = 0;
    for (const auto& timing : timings) {
      communication += timing.communication_seconds;
      overlapped += timing.overlapped_seconds;
    }
    std::cout << "  max relative difference " << difference << "; last step: " << timings.size()
              << " buckets, " << communication * 1e3 << " ms of all_reduce, " << overlapped * 1e3
              << " ms of it during backward" << std::endl;
  }
  ACCEL_CHECK(max_relative_difference(*distributed_model, *train(distributed::make_single_process_group(), features,
                                                                 batch_size, 1, 0)) > 1e-3,
              "training moved the weights");  // guards against a vacuous comparison
}

void test_accumulation_with_no_sync(std::shared_ptr<ProcessGroup> group) {
  const int64_t world = group->size(), batch_size = 2, steps = 20;
  auto features = synthetic_features(world * batch_size * 10, 13);
  int64_t local_steps = 0, synced_steps = 0;
  auto distributed_model = train(group, features, batch_size, 2, steps, [&](Accelerator& a, nn::Module& m) {
    ACCEL_CHECK(a.ddp_of(m)->require_backward_grad_sync() == a.sync_gradients(), "no_sync follows sync_gradients");
    // Inside no_sync each rank keeps its own gradient; after a sync they are all equal.
    Tensor rows = gather_rows(*group, m.named_parameters().back().second.grad());
    bool all_equal = true;
    for (int64_t r = 1; r < world; ++r) all_equal = all_equal && equal(rows[r], rows[0]);
    ACCEL_CHECK(all_equal == a.sync_gradients(), a.sync_gradients() ? "synchronized gradients differ across ranks"
                                                                      : "gradients were synchronized inside no_sync");
    (a.sync_gradients() ? synced_steps : local_steps) += 1;
  });
  ACCEL_CHECK(local_steps == steps && synced_steps == steps, "expected ", steps, " local and ", steps,
              " synchronizing micro-steps, got ", local_steps, " and ", synced_steps);
  // Accumulating 2 micro-batches of world * batch_size equals one batch of twice that.
  auto reference = train(distributed::make_single_process_group(), features, 2 * world * batch_size, 1, steps);
  double difference = max_relative_difference(*distributed_model, *reference);
  ACCEL_CHECK(difference <= kTolerance, "DDP with accumulation and single-process weights differ by ", difference);
  if (group->rank() == 0) std::cout << "  max relative difference " << difference << std::endl;
}

void test_unused_parameters(std::shared_ptr<ProcessGroup> group) {
  TwoBranches strict_model;
  distributed::DistributedDataParallel strict(strict_model, group);
  std::string message = error_of([&] { (strict_model.used * 2.0).sum().backward(); });
  ACCEL_CHECK(contains(message, "parameter(s) sometimes, never received no gradient") &&
                  contains(message, "find_unused_parameters"),
              "unused parameters are named: got \"", message, "\"");

  // With find_unused_parameters, rank 0 also uses `sometimes`; no rank uses `never`.
  TwoBranches model;
  distributed::DistributedDataParallel ddp(model, group, {.find_unused_parameters = true});
  Tensor loss = (model.used * 2.0).sum();
  if (group->rank() == 0) loss = loss + (model.sometimes * 3.0).sum();
  loss.backward();
  ACCEL_CHECK(allclose(model.used.grad(), full({4}, 2.0)), "used: averaged gradient");
  ACCEL_CHECK(allclose(model.sometimes.grad(), full({3}, 3.0 / group->size())), "sometimes: rank 0's gradient / world");
  ACCEL_CHECK(!model.never.grad().defined(), "never: no rank used it, so it keeps no gradient");
}

// Rank r's loss gives every parameter the gradient r + 1, so the average is (world + 1) / 2.
// With gradient_as_bucket_view, .grad is a view into the bucket (both parameters in one bucket
// sit side by side there); without it, the parameters' own tensors. Either way a second
// backward without zero_grad accumulates onto the average, and zero_grad(false) zeroes in place.
void test_gradients_as_bucket_views(std::shared_ptr<ProcessGroup> group) {
  const double world = group->size(), rank = group->rank();
  for (bool as_view : {true, false}) {
    TwoBranches model;
    distributed::DistributedDataParallel ddp(model, group, {.gradient_as_bucket_view = as_view});
    ACCEL_CHECK(ddp.num_buckets() == 1, "the three small parameters share one bucket");
    auto backward = [&] {
      ((model.used + model.sometimes.sum() + model.never.sum()) * (rank + 1.0)).sum().backward();
    };
    const std::string mode = as_view ? "as bucket views" : "copied";
    backward();
    const double average = (world + 1) / 2;
    ACCEL_CHECK(allclose(model.used.grad(), full({4}, average)), mode, ": the averaged gradient");
    // The bucket holds the parameters newest first: never, sometimes, used.
    const auto* never_grad = static_cast<const float*>(model.never.grad().data_ptr());
    const bool adjacent = static_cast<const float*>(model.sometimes.grad().data_ptr()) == never_grad + 2 &&
                          static_cast<const float*>(model.used.grad().data_ptr()) == never_grad + 5;
    ACCEL_CHECK(adjacent == as_view, mode, ": gradients ", adjacent ? "are" : "are not", " views into one bucket");
    backward();  // accumulates into .grad, which already holds the average
    ACCEL_CHECK(allclose(model.used.grad(), full({4}, 2 * average)), mode, ": accumulated without zero_grad");
    ACCEL_CHECK(allclose(model.never.grad(), full({2}, 4 * 2 * average)), mode, ": a sum of 4 elements each step");
    for (Tensor* p : {&model.used, &model.sometimes, &model.never}) p->mutable_grad().zero_();
    backward();
    ACCEL_CHECK(allclose(model.sometimes.grad(), full({3}, 4 * average)), mode, ": after zeroing in place");
  }
}

void test_timeout(ProcessGroup& group) {
  ::setenv("ACCEL_COLLECTIVE_TIMEOUT", "1", 1);
  Tensor x = ones({3});
  if (group.rank() == 0) {
    auto work = group.all_reduce(x, Reduce::Sum);
    std::string message = error_of([&] { work->wait(); });
    ACCEL_CHECK(contains(message, "all_reduce timed out after 1 s on rank 0: ") && contains(message, "did not join it"),
                "timeout message: \"", message, "\"");
    ::setenv("ACCEL_COLLECTIVE_TIMEOUT", "60", 1);
    work->wait();  // the late peers arrive: the same handle completes
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    group.all_reduce(x, Reduce::Sum)->wait();
  }
  ::setenv("ACCEL_COLLECTIVE_TIMEOUT", "60", 1);
  ACCEL_CHECK(allclose(x, full({3}, static_cast<double>(group.size()))), "the late all_reduce's result");
}

}  // namespace

int main() {
  ::setenv("ACCEL_COLLECTIVE_TIMEOUT", "60", 0);  // a broken test fails in a minute, not five
  std::shared_ptr<ProcessGroup> group = distributed::make_mpi_group();
  if (group->rank() == 0) std::cout << "test_ddp: " << group->size() << " processes" << std::endl;
  MpiTestRunner runner(group);
  auto run = [&](const char* name, const std::function<void()>& test) { runner.run(name, test); };
  run("collectives", [&] { test_collectives(*group); });
  run("accelerator_collectives", [&] { test_accelerator_collectives(group); });
  // Padding on every rank's last batch; padding only on the ranks after rank 0.
  run("options_from_environment", [&] { test_options_from_environment(); });
  run("default_placement", [&] { test_default_placement(group->size()); });
  run("gather_for_metrics_uneven_dataset", [&] { test_gather_for_metrics(group, group->size() * 2 * 3 + 1); });
  run("gather_for_metrics_padding_on_some_ranks", [&] { test_gather_for_metrics(group, group->size() * 2 * 3 + 2); });
  run("ddp_matches_single_process", [&] { test_ddp_matches_single_process(group); });
  run("accumulation_with_no_sync", [&] { test_accumulation_with_no_sync(group); });
  run("unused_parameters", [&] { test_unused_parameters(group); });
  run("gradients_as_bucket_views", [&] { test_gradients_as_bucket_views(group); });
  run("collective_timeout", [&] { test_timeout(*group); });
  return runner.finish();
}
