// tests/distributed/test_nccl.cc: the NCCL process group in one process (world size 1) on
// cuda:0. Each collective runs on CUDA tensors of every dtype NCCL takes, out of place where
// the collective allows it (so a wrong element type or count shows up in the copied bytes),
// and the results, copied back to the CPU, must equal the expected values; a collective must
// see the work queued on the default stream, and on a non-default current stream, before it; the errors for CPU tensors, bool
// reductions and integer averages must say what to do. CUDA builds only; without a GPU every
// test skips and says why.
#include "distributed/nccl.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "backends/cuda/stream.h"
#include "core/ops.h"
#include "tests/test_util.h"

namespace accel::distributed {
namespace {

using testing::contains;
using testing::error_of;

// Empty when a CUDA device is usable, else why not.
std::string missing_gpu_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) return std::string("cudaGetDeviceCount says ") + cudaGetErrorString(status);
  if (count == 0) return "cudaGetDeviceCount found 0 devices";
  return "";
}

#define SKIP_WITHOUT_GPU()                                                                               \
  do {                                                                                                   \
    if (const std::string reason = missing_gpu_reason(); !reason.empty()) {                              \
      GTEST_SKIP() << "no CUDA device: " << reason << "; the NCCL tests run on a machine with a GPU";    \
    }                                                                                                    \
  } while (0)

// One group for the whole program: NCCL builds a communicator in a fraction of a second, but
// there is no reason to do it per test.
ProcessGroup& group() {
  static std::shared_ptr<ProcessGroup> nccl = make_nccl_group();
  return *nccl;
}

const Device kCuda0(DeviceType::CUDA, 0);
const std::vector<DType> kDTypes = {kFloat32, kFloat64, kFloat16, kBFloat16, kInt32, kInt64};

// (n,) on cuda:0: start, start + 1, ... (exact in every dtype for n <= 256).
Tensor counting(int64_t n, double start, DType dtype) {
  std::vector<double> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = start + static_cast<double>(i);
  return from_vector(values, {n}, dtype).to(kCuda0);
}

// A CUDA tensor whose every byte is 0xAB, so that elements a collective failed to write show.
Tensor garbage(const Shape& sizes, DType dtype) {
  Tensor tensor = Tensor::empty(sizes, dtype, kCuda0);
  EXPECT_EQ(cudaMemset(tensor.data_ptr(), 0xAB, tensor.nbytes()), cudaSuccess);
  return tensor;
}

std::vector<double> on_cpu(const Tensor& tensor) { return tensor.to(kCPU).to_vector<double>(); }

TEST(NcclGroup, DescribesItself) {
  SKIP_WITHOUT_GPU();
  EXPECT_EQ(group().backend(), "nccl");
  EXPECT_EQ(group().rank(), 0);
  EXPECT_EQ(group().size(), 1);
  EXPECT_EQ(group().local_rank(), 0);
  EXPECT_TRUE(contains(nccl_version(), "(headers "));
}

TEST(NcclGroup, AllReduceEachDTypeAndOp) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kDTypes) {
    const bool floating = is_floating(dtype);
    for (Reduce op : {Reduce::Sum, Reduce::Avg, Reduce::Max}) {
      if (op == Reduce::Avg && !floating) continue;
      Tensor tensor = counting(100, -7, dtype);
      auto work = group().all_reduce(tensor, op);
      work->wait();
      EXPECT_TRUE(work->is_completed());
      EXPECT_EQ(tensor.dtype(), dtype);
      EXPECT_EQ(on_cpu(tensor), on_cpu(counting(100, -7, dtype))) << dtype << " op " << static_cast<int>(op);
    }
  }
}

TEST(NcclGroup, AllGatherEachDType) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kDTypes) {
    Tensor input = counting(65, 3, dtype);
    Tensor output = garbage({65}, dtype);
    group().all_gather(input, output)->wait();
    EXPECT_EQ(on_cpu(output), on_cpu(input)) << dtype;
  }
}

TEST(NcclGroup, ReduceScatterEachDType) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kDTypes) {
    Tensor input = counting(48, 1, dtype).reshape({6, 8});
    Tensor output = garbage({6, 8}, dtype);
    group().reduce_scatter(input, output, Reduce::Sum)->wait();
    EXPECT_EQ(on_cpu(output), on_cpu(input)) << dtype;
  }
}

TEST(NcclGroup, BroadcastEachDTypeAndBool) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kDTypes) {
    Tensor tensor = counting(33, 2, dtype);
    group().broadcast(tensor, 0)->wait();
    EXPECT_EQ(on_cpu(tensor), on_cpu(counting(33, 2, dtype))) << dtype;
  }
  Tensor flags = from_vector(std::vector<double>{1, 0, 1}, {3}, kBool).to(kCuda0);
  Tensor gathered = garbage({3}, kBool);
  group().all_gather(flags, gathered)->wait();
  EXPECT_EQ(on_cpu(gathered), (std::vector<double>{1, 0, 1}));
  EXPECT_TRUE(contains(error_of([&] { group().broadcast(flags, 1); }), "root 1 does not exist in a group of 1"));
}

// 256 MiB written by the default stream just before the collective: without the group's
// stream waiting for it, NCCL would copy memory the memset has not reached yet.
TEST(NcclGroup, SeesWorkQueuedOnTheDefaultStream) {
  SKIP_WITHOUT_GPU();
  const int64_t n = int64_t{1} << 26;  // 64 Mi int32
  Tensor input = garbage({n}, kInt32);
  Tensor output = garbage({n}, kInt32);
  group().barrier();
  ASSERT_EQ(cudaMemsetAsync(input.data_ptr(), 0x01, input.nbytes(), cudaStreamLegacy), cudaSuccess);
  group().all_gather(input, output)->wait();
  const std::vector<int32_t> result = output.to(kCPU).to_vector<int32_t>();
  const int64_t stale = std::count_if(result.begin(), result.end(), [](int32_t v) { return v != 0x01010101; });
  EXPECT_EQ(stale, 0) << "of " << n << " elements";
}

// The same with a non-default current stream (backends/cuda/stream.h), the one accel's kernels
// run on under a StreamGuard: the group must wait for that stream, not the legacy default one
// (a non-blocking stream does not synchronize with it). The fill is an accel kernel.
TEST(NcclGroup, SeesWorkQueuedOnTheCurrentStream) {
  SKIP_WITHOUT_GPU();
  const int64_t n = int64_t{1} << 26;  // 64 Mi int32
  Tensor input = garbage({n}, kInt32);
  Tensor output = garbage({n}, kInt32);
  group().barrier();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the garbage is in place before the stream starts
  cuda::Stream stream(0);
  {
    cuda::StreamGuard on_stream(stream);
    for (int i = 0; i < 8; ++i) input.fill_(i + 1);  // several passes keep the stream busy
    group().all_gather(input, output)->wait();
  }
  stream.synchronize();
  const std::vector<int32_t> result = output.to(kCPU).to_vector<int32_t>();
  const int64_t stale = std::count_if(result.begin(), result.end(), [](int32_t v) { return v != 8; });
  EXPECT_EQ(stale, 0) << "of " << n << " elements";
}

TEST(NcclGroup, ErrorsSayWhatToDo) {
  SKIP_WITHOUT_GPU();
  Tensor cpu = ones({4});
  EXPECT_TRUE(contains(error_of([&] { group().all_reduce(cpu, Reduce::Sum); }),
                       "all_reduce: the NCCL process group takes CUDA tensors, got one on cpu (CPU tensors go "
                       "through the MPI process group"));
  Tensor flags = garbage({4}, kBool);
  EXPECT_TRUE(contains(error_of([&] { group().all_reduce(flags, Reduce::Max); }),
                       "all_reduce: the NCCL process group cannot reduce a bool tensor; convert it to int32"));
  Tensor counts = garbage({4}, kInt64);
  EXPECT_TRUE(contains(error_of([&] { group().all_reduce(counts, Reduce::Avg); }),
                       "all_reduce: avg needs a floating-point tensor, got int64"));
  Tensor small = garbage({3}, kFloat32);
  EXPECT_TRUE(contains(error_of([&] { group().all_gather(counting(4, 0, kFloat32), small); }),
                       "all_gather: output of shape"));
}

}  // namespace
}  // namespace accel::distributed
