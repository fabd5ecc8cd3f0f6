// tests/cuda/test_lazy_cublas.cc: a CUDA build loads cuBLAS and cuBLASLt only when a CUDA GEMM
// needs them (backends/cuda/cublas_loader.h). A CPU training step in a CUDA build must leave
// both unmapped, which fails as soon as libaccel links them again (each costs ~150 MB of
// resident memory at process start); a library that cannot be opened must give an error
// naming it, dlerror()'s text and the fix; on a GPU the first CUDA matmul loads them and
// computes what the CPU does. Each case runs in its own process under CTest.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>

#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/stream.h"
#include "core/ops.h"
#include "core/random.h"
#include "nn/optim.h"
#include "tests/test_util.h"

namespace accel {
namespace {

using ::testing::HasSubstr;

// The lines of /proc/self/maps that name `library`: empty while this process has not mapped it.
std::string mappings_of(const std::string& library) {
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  while (std::getline(maps, line)) {
    if (line.find(library) != std::string::npos) found += line + "\n";
  }
  return found;
}

TEST(LazyCublas, CpuTrainingStepLeavesCublasUnloaded) {
  manual_seed(3);
  auto model = std::make_shared<models::BertForSequenceClassification>(testing::tiny_config(0.1));
  model->train();
  nn::AdamW optimizer(model->parameters(), nn::AdamWOptions{.lr = 1e-3});
  Tensor input_ids = from_vector<int64_t>({5, 17, 42, 8, 3, 61, 29, 90}, {2, 4});  // (B, T)
  Tensor labels = from_vector<int64_t>({0, 1});                                  // (B)
  Tensor before = model->classifier->weight.clone();
  optimizer.zero_grad();
  Tensor loss = model->forward(input_ids, Tensor(), Tensor(), labels).loss;
  loss.backward();
  optimizer.step();
  ASSERT_TRUE(std::isfinite(loss.item<float>()));
  ASSERT_FALSE(allclose(before, model->classifier->weight)) << "the AdamW step left the classifier unchanged";

  EXPECT_EQ(mappings_of("libcublas"), "") << "a CPU-only process mapped cuBLAS";
  EXPECT_NE(mappings_of("libcudart"), "") << "not a CUDA build of libaccel, so this test proves nothing";
}

TEST(LazyCublas, MissingLibraryErrorNamesItDlerrorAndTheFix) {
  const std::string error = testing::error_of(
      [] { cuda::open_first_library("cuBLAS", {"libaccel_no_such_blas.so.99", "libaccel_no_such_blas.so"}); });
  EXPECT_THAT(error, HasSubstr("cuBLAS: could not load the library"));
  EXPECT_THAT(error, HasSubstr("libaccel_no_such_blas.so.99: libaccel_no_such_blas.so.99: cannot open shared object"));
  EXPECT_THAT(error, HasSubstr("libaccel_no_such_blas.so: libaccel_no_such_blas.so: cannot open shared object"));
  EXPECT_THAT(error, HasSubstr("LD_LIBRARY_PATH"));
}

TEST(LazyCublas, FirstCudaMatmulLoadsCublasAndMatchesTheCpu) {
  if (cuda::device_count() == 0) {
    GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount found none); the CUDA tests run on a machine with a GPU";
  }
  ASSERT_EQ(mappings_of("libcublas"), "") << "loaded before any CUDA GEMM";
  const Device gpu(DeviceType::CUDA, 0);
  manual_seed(11);
  Tensor x = randn({5, 8}), weight = randn({3, 8}), bias = randn({3});  // (M, K), (N, K), (N)
  Tensor expected = linear(x, weight, bias);                             // (M, N)
  // With a bias: cuBLASLt's epilogue; without: the strided-batched cuBLAS GEMM.
  Tensor with_bias = linear(x.to(gpu), weight.to(gpu), bias.to(gpu)).to(kCPU);
  Tensor product = matmul(x.to(gpu), weight.t().to(gpu)).to(kCPU);
  EXPECT_TRUE(allclose(with_bias, expected, 1e-5, 1e-5));
  EXPECT_TRUE(allclose(product, matmul(x, weight.t()), 1e-5, 1e-5));
  EXPECT_NE(mappings_of("libcublasLt.so"), "");
  EXPECT_NE(mappings_of("libcublas.so"), "");
}

}  // namespace
}  // namespace accel
