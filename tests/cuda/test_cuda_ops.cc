// tests/cuda/test_cuda_ops.cc: the cross-backend harness. Every op runs on the CPU and on
// cuda:0 with the same random inputs, in float32, float16 and bfloat16 (and the integer and
// bool dtypes where the op has them), forward and, for differentiable ops, backward through
// autograd; CUDA results, copied back, must match the CPU's within the CUDA issue's
// tolerances (f32 1e-5 relative, TF32 1e-3, 16-bit 1e-2). Inputs come contiguous, transposed
// and broadcast. Random draws and dropout must give the CPU's Philox stream, in dropout() and
// inside fused attention (checked with and without masks, padded keys, Tq != Tk). Then the
// runtime: the caching allocator's statistics and reuse, streams and events, chunked host
// copies, and the tiny BERT forward and backward against the CPU. Each failure names the
// op, dtype and shapes, and the worst element with its index and error. Without a GPU every
// test skips and says why.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cuda/allocator.h"
#include "backends/cuda/blas.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/stream.h"
#include "core/kernels.h"
#include "core/ops.h"
#include "core/random.h"
#include "nn/module.h"
#include "tests/core/tensor_compare.h"
#include "tests/test_util.h"

// Surfaces asynchronous kernel faults at the op that caused them, not at a later copy.
#define ACCEL_CUDA_SYNC_FOR_TEST()                                                                      \
  do {                                                                                                  \
    const cudaError_t accel_sync_status = harness_self_test() ? cudaSuccess : cudaDeviceSynchronize();  \
    if (accel_sync_status != cudaSuccess) {                                                             \
      throw std::runtime_error(std::string("kernel fault: ") + cudaGetErrorString(accel_sync_status));  \
    }                                                                                                   \
  } while (0)

namespace accel {
namespace {

// Empty when a CUDA device is usable, else why not.
std::string missing_gpu_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return std::string("cudaGetDeviceCount says ") + cudaGetErrorString(status);
  }
  if (count == 0) return "cudaGetDeviceCount found 0 devices";
  return "";
}

// ACCEL_CUDA_HARNESS_SELF_TEST=1 runs the op comparisons CPU against CPU on a machine
// without a GPU: it proves the harness itself (inputs, references, autograd plumbing) sound
// before a GPU session spends its minutes on it. Runtime and model tests still skip.
bool harness_self_test() {
  const char* value = std::getenv("ACCEL_CUDA_HARNESS_SELF_TEST");
  return value != nullptr && std::string(value) == "1";
}

#define SKIP_WITHOUT_GPU()                                                                                   \
  do {                                                                                                       \
    if (const std::string reason = missing_gpu_reason(); !reason.empty()) {                                  \
      GTEST_SKIP() << "no CUDA device: " << reason << "; the CUDA tests run on a machine with a GPU";        \
    }                                                                                                        \
  } while (0)

// For the CPU-vs-CUDA op comparisons: these also run in the self-test mode.
#define SKIP_WITHOUT_GPU_UNLESS_SELF_TEST()       \
  do {                                           \
    if (!harness_self_test()) SKIP_WITHOUT_GPU(); \
  } while (0)

const Device kCuda = harness_self_test() ? kCPU : Device(DeviceType::CUDA, 0);  // the device under test
const std::vector<DType> kFloatTypes = {kFloat32, kFloat16, kBFloat16};

struct Tolerance {
  double rtol, atol;
};
Tolerance tolerance(DType dtype) {
  if (dtype == kFloat32 || dtype == kFloat64) return {1e-5, 1e-5};
  return {1e-2, 1e-2};
}

std::string describe(const std::string& op, DType dtype, const std::vector<Tensor>& inputs) {
  std::ostringstream out;
  out << op << " in " << dtype_name(dtype) << " on inputs";
  for (const Tensor& t : inputs) {
    out << " " << t.shape_string() << (t.is_contiguous() ? "" : "(strided)") << ":" << dtype_name(t.dtype());
  }
  return out.str();
}

// (sizes) float32 normal values from a fixed seed, converted to dtype, on the CPU.
Tensor random_input(const Shape& sizes, DType dtype, uint64_t seed) {
  Generator generator(seed);
  return randn(sizes, TensorOptions(kFloat32), &generator).to(dtype);
}

// The same tensor on cuda:0: same values, same layout (a transposed CPU view arrives as a
// transposed CUDA view), detached, so each side is its own autograd leaf.
Tensor on_cuda(const Tensor& cpu) {
  if (cpu.is_contiguous()) return cpu.detach().to(kCuda);
  // Rebuild the view over a CUDA copy of the whole underlying buffer.
  Tensor whole = Tensor::view_of(cpu.storage(), {static_cast<int64_t>(cpu.storage()->nbytes() / cpu.element_size())},
                                 {1}, 0, cpu.dtype());
  Tensor device_whole = whole.to(kCuda);
  return Tensor::view_of(device_whole.storage(), cpu.sizes(), cpu.strides(), cpu.storage_offset(), cpu.dtype());
}

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs op on CPU and CUDA copies of inputs; compares the output and, when backward is set,
// the gradients of every floating input for a random output gradient.
void check_op(const std::string& name, DType dtype, const std::vector<Tensor>& inputs, const OpFn& op,
              bool backward, Tolerance tol) {
  std::vector<Tensor> cpu_inputs, cuda_inputs;
  for (const Tensor& t : inputs) {
    Tensor c = t.detach(), g = on_cuda(t);
    if (backward && t.is_floating_point()) {
      c.requires_grad_();
      g.requires_grad_();
    }
    cpu_inputs.push_back(c);
    cuda_inputs.push_back(g);
  }
  const std::string what = describe(name, dtype, inputs);
  Tensor expected;
  try {
    expected = op(cpu_inputs);
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": the CPU reference threw (a harness bug): " << e.what();
    return;
  }
  Tensor actual;
  try {
    actual = op(cuda_inputs);
    ACCEL_CUDA_SYNC_FOR_TEST();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": the CUDA forward threw: " << e.what();
    return;
  }
  ASSERT_EQ(actual.device(), kCuda) << what << ": the result is on " << actual.device().str();
  EXPECT_EQ(actual.dtype(), expected.dtype()) << what;
  EXPECT_TRUE(tensors_close(actual.cpu(), expected, tol.rtol, tol.atol)) << what << ", forward";
  if (!backward) return;
  Tensor grad = random_input(expected.sizes(), expected.dtype(), 99);
  try {
    expected.backward(grad);
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": the CPU reference backward threw (a harness bug): " << e.what();
    return;
  }
  try {
    actual.backward(grad.to(kCuda));
    ACCEL_CUDA_SYNC_FOR_TEST();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": the CUDA backward threw: " << e.what();
    return;
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!cpu_inputs[i].requires_grad()) continue;
    ASSERT_TRUE(cuda_inputs[i].grad().defined()) << what << ": no CUDA gradient for input " << i;
    EXPECT_TRUE(tensors_close(cuda_inputs[i].grad().cpu(), cpu_inputs[i].grad(), tol.rtol, tol.atol))
        << what << ", gradient of input " << i;
  }
}

Tensor positive(const Tensor& t) { return t.abs() + 0.5; }  // for log, sqrt, pow bases

// ---- pointwise --------------------------------------------------------------------------

TEST(CudaOps, UnaryForwardAndBackward) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const std::vector<std::pair<std::string, OpFn>> ops = {
      {"neg", [](auto& x) { return neg(x[0]); }},
      {"abs", [](auto& x) { return abs(x[0]); }},
      {"exp", [](auto& x) { return exp(x[0]); }},
      {"log", [](auto& x) { return log(positive(x[0])); }},
      {"sqrt", [](auto& x) { return sqrt(positive(x[0])); }},
      {"rsqrt", [](auto& x) { return rsqrt(positive(x[0])); }},
      {"tanh", [](auto& x) { return tanh(x[0]); }},
      {"sigmoid", [](auto& x) { return sigmoid(x[0]); }},
      {"relu", [](auto& x) { return relu(x[0]); }},
      {"gelu", [](auto& x) { return gelu(x[0]); }},
      {"gelu_tanh", [](auto& x) { return gelu(x[0], "tanh"); }},
      {"erf", [](auto& x) { return erf(x[0]); }},
  };
  for (DType dtype : kFloatTypes) {
    const Tensor contiguous = random_input({33, 65}, dtype, 1);  // odd sizes: vector tails
    const Tensor transposed = random_input({65, 33}, dtype, 2).t();
    for (const auto& [name, fn] : ops) {
      check_op(name, dtype, {contiguous}, fn, true, tolerance(dtype));
      check_op(name + " (transposed)", dtype, {transposed}, fn, true, tolerance(dtype));
    }
  }
}

TEST(CudaOps, BinaryForwardAndBackwardWithBroadcasting) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const std::vector<std::pair<std::string, OpFn>> ops = {
      {"add", [](auto& x) { return x[0] + x[1]; }},
      {"add alpha", [](auto& x) { return add(x[0], x[1], 0.25); }},
      {"sub", [](auto& x) { return x[0] - x[1]; }},
      {"mul", [](auto& x) { return x[0] * x[1]; }},
      {"div", [](auto& x) { return x[0] / positive(x[1]); }},
      {"pow", [](auto& x) { return pow(positive(x[0]), x[1]); }},
      {"maximum", [](auto& x) { return maximum(x[0], x[1]); }},
      {"minimum", [](auto& x) { return minimum(x[0], x[1]); }},
      {"where", [](auto& x) { return where(x[0] > x[1], x[0], x[1] * 2.0); }},
      {"clamp", [](auto& x) { return clamp(x[0] + x[1], -0.5, 0.75); }},
      {"masked_fill", [](auto& x) { return masked_fill(x[0] * x[1], x[1] < 0.0, -3.0); }},
  };
  for (DType dtype : kFloatTypes) {
    const Tensor a = random_input({4, 1, 37}, dtype, 3), b = random_input({5, 37}, dtype, 4);  // -> (4, 5, 37)
    const Tensor c = random_input({37, 20}, dtype, 5).t(), d = random_input({20, 37}, dtype, 6);
    for (const auto& [name, fn] : ops) {
      check_op(name + " (broadcast)", dtype, {a, b}, fn, true, tolerance(dtype));
      check_op(name + " (transposed)", dtype, {c, d}, fn, true, tolerance(dtype));
    }
  }
}

TEST(CudaOps, ComparisonsAndLogicalOpsAreExact) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const std::vector<std::pair<std::string, OpFn>> ops = {
      {"eq", [](auto& x) { return eq(x[0], x[1]); }},  {"ne", [](auto& x) { return ne(x[0], x[1]); }},
      {"lt", [](auto& x) { return lt(x[0], x[1]); }},  {"le", [](auto& x) { return le(x[0], x[1]); }},
      {"gt", [](auto& x) { return gt(x[0], x[1]); }},  {"ge", [](auto& x) { return ge(x[0], x[1]); }},
      {"logical_and", [](auto& x) { return logical_and(x[0] > 0, x[1] > 0); }},
      {"logical_or", [](auto& x) { return logical_or(x[0] > 0, x[1] > 0); }},
      {"logical_not", [](auto& x) { return logical_not(x[0] > 0); }},
  };
  for (DType dtype : {kFloat32, kFloat16, kBFloat16, kInt64, kInt32}) {
    // Rounded to a few values so that equal elements occur.
    const Tensor a = (random_input({6, 40}, kFloat32, 7) * 2.0).clamp(-2, 2).to(kInt64).to(dtype);
    const Tensor b = (random_input({40}, kFloat32, 8) * 2.0).clamp(-2, 2).to(kInt64).to(dtype);
    for (const auto& [name, fn] : ops) check_op(name, dtype, {a, b.expand({6, 40})}, fn, false, {0, 0});
  }
}

TEST(CudaOps, IntegerArithmetic) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : {kInt64, kInt32}) {
    const Tensor a = (random_input({7, 9}, kFloat32, 9) * 10.0).to(dtype);
    const Tensor b = (random_input({7, 9}, kFloat32, 10) * 3.0).clamp(0, 3).to(dtype);
    check_op("int add/mul/max", dtype, {a, b}, [](auto& x) { return maximum(x[0] * x[1] + x[0], x[1] - x[0]); },
             false, {0, 0});
    check_op("int pow", dtype, {a, b}, [](auto& x) { return pow(x[0], x[1]); }, false, {0, 0});
    check_op("int neg/abs/clamp", dtype, {a}, [](auto& x) { return clamp(abs(neg(x[0])), 1, 7); }, false, {0, 0});
  }
}

// ---- copies, casts, fills -----------------------------------------------------------------

TEST(CudaOps, CastsBetweenEveryDtypePairOnStridedInputs) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const std::vector<DType> all = {kFloat32, kFloat64, kFloat16, kBFloat16, kInt64, kInt32, kBool};
  for (DType from : all) {
    const Tensor source = (random_input({17, 6}, kFloat32, 11) * 3.0).to(from).t();  // (6, 17) strided
    for (DType to : all) {
      check_op(std::string("cast to ") + dtype_name(to), from, {source}, [to](auto& x) { return x[0].to(to); },
               false, {0, 0});
    }
    check_op("contiguous of a permuted view", from, {(random_input({3, 4, 5}, kFloat32, 12) * 3.0).to(from)},
             [](auto& x) { return x[0].permute({2, 0, 1}).contiguous(); }, false, {0, 0});
    check_op("copy_ broadcast into a slice", from, {(random_input({5}, kFloat32, 13) * 3.0).to(from)},
             [](auto& x) {
               Tensor out = zeros({4, 10}, TensorOptions(x[0].dtype(), x[0].device()));
               Tensor slice = out.slice(1, 2, 7);
               slice.copy_(x[0]);
               return out;
             }, false, {0, 0});
  }
}

TEST(CudaOps, FillFullAndArange) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : {kFloat32, kFloat16, kBFloat16, kInt64, kInt32, kBool}) {
    EXPECT_TRUE(tensors_close(full({3, 130}, 1.5, TensorOptions(dtype, kCuda)).cpu(), full({3, 130}, 1.5, dtype), 0, 0))
        << "full in " << dtype_name(dtype);
  }
  for (DType dtype : {kFloat32, kFloat16, kBFloat16, kInt64, kInt32}) {
    Tensor expected = arange(Scalar(-3), Scalar(500), Scalar(2), dtype);
    EXPECT_TRUE(tensors_close(arange(Scalar(-3), Scalar(500), Scalar(2), dtype).to(kCuda).cpu(), expected, 0, 0));
    Tensor on_device = empty({expected.numel()}, TensorOptions(dtype, kCuda));
    kernels::arange(kCuda, on_device, -3.0, 2.0);
    EXPECT_TRUE(tensors_close(on_device.cpu(), expected, 0, 0)) << "arange kernel in " << dtype_name(dtype);
  }
}

// ---- reductions ---------------------------------------------------------------------------

TEST(CudaOps, ReductionsOverDimsForwardAndBackward) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const std::vector<Shape> dim_sets = {{0}, {1}, {2}, {0, 2}, {0, 1, 2}};
  for (DType dtype : kFloatTypes) {
    const Tensor x = random_input({6, 300, 7}, dtype, 14);
    const Tensor xt = random_input({7, 300, 6}, dtype, 15).permute({2, 1, 0});
    Tolerance tol = tolerance(dtype);
    for (const Shape& dims : dim_sets) {
      std::ostringstream name;
      name << "over dims " << shape_str(dims);
      for (const Tensor& input : {x, xt}) {
        check_op("sum " + name.str(), dtype, {input}, [dims](auto& v) { return sum(v[0], dims); }, true, tol);
        check_op("mean " + name.str(), dtype, {input}, [dims](auto& v) { return mean(v[0], dims, true); }, true, tol);
        check_op("var " + name.str(), dtype, {input}, [dims](auto& v) { return var(v[0], dims); }, true, tol);
        check_op("amax " + name.str(), dtype, {input}, [dims](auto& v) { return amax(v[0], dims); }, true, tol);
        check_op("amin " + name.str(), dtype, {input}, [dims](auto& v) { return amin(v[0], dims); }, false, tol);
      }
    }
    for (int64_t dim : {0, 1, 2}) {
      check_op("argmax dim " + std::to_string(dim), dtype, {x}, [dim](auto& v) { return argmax(v[0], dim); }, false, {0, 0});
      check_op("argmin dim " + std::to_string(dim), dtype, {xt}, [dim](auto& v) { return argmin(v[0], dim); }, false, {0, 0});
      check_op("max values dim " + std::to_string(dim), dtype, {x}, [dim](auto& v) { return max(v[0], dim).values; }, true, tol);
      check_op("max indices dim " + std::to_string(dim), dtype, {x}, [dim](auto& v) { return max(v[0], dim).indices; }, false, {0, 0});
    }
  }
  for (DType dtype : {kInt64, kInt32}) {
    const Tensor x = (random_input({5, 70}, kFloat32, 16) * 50.0).to(dtype);
    check_op("integer sum", dtype, {x}, [](auto& v) { return sum(v[0], {1}); }, false, {0, 0});
    check_op("integer argmax", dtype, {x}, [](auto& v) { return argmax(v[0], 0); }, false, {0, 0});
  }
}

TEST(CudaOps, MaxAndArgmaxFollowTheCpuRulesForNaNAndTies) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  std::vector<float> values(600, 1.0f);  // ties everywhere: the first index wins
  values[250] = 2.0f;
  values[400] = 2.0f;
  values[300 + 77] = NAN;  // row 1 has a NaN: it wins
  const Tensor x = from_vector(values, {2, 300});
  check_op("argmax with ties and NaN", kFloat32, {x}, [](auto& v) { return argmax(v[0], 1); }, false, {0, 0});
  check_op("max with ties and NaN", kFloat32, {x}, [](auto& v) { return max(v[0], 1).values; }, false, {0, 0});
  // The scaler's inf/NaN check: amax(abs(g)) must not be finite.
  Tensor with_inf = random_input({1000}, kFloat16, 17);
  with_inf.slice(0, 500, 501).fill_(INFINITY);
  EXPECT_FALSE(std::isfinite(amax(abs(with_inf.to(kCuda))).item_double())) << "the inf check missed an inf";
  EXPECT_TRUE(std::isfinite(amax(abs(random_input({1000}, kFloat16, 18).to(kCuda))).item_double()));
}

// ---- GEMMs --------------------------------------------------------------------------------

Tolerance gemm_tolerance(DType dtype, int64_t k) {
  Tolerance t = tolerance(dtype);
  t.atol *= std::sqrt(static_cast<double>(k));  // sums of k products of O(1) values
  return t;
}

TEST(CudaOps, MatmulLayoutsBatchesAndBias) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    const Tolerance tol = gemm_tolerance(dtype, 70);
    const Tensor a = random_input({3, 33, 70}, dtype, 20), b = random_input({3, 70, 45}, dtype, 21);
    const Tensor a_t = random_input({3, 70, 33}, dtype, 22).transpose(1, 2);
    const Tensor b_t = random_input({3, 45, 70}, dtype, 23).transpose(1, 2);
    const Tensor b2 = random_input({70, 45}, dtype, 24);  // broadcast over the batch (stride 0)
    auto mm = [](auto& x) { return matmul(x[0], x[1]); };
    check_op("matmul", dtype, {a, b}, mm, true, tol);
    check_op("matmul a^T", dtype, {a_t, b}, mm, true, tol);
    check_op("matmul b^T", dtype, {a, b_t}, mm, true, tol);
    check_op("matmul a^T b^T", dtype, {a_t, b_t}, mm, true, tol);
    check_op("matmul broadcast b", dtype, {a, b2}, mm, true, tol);
    check_op("matmul 2-D", dtype, {random_input({1, 70}, dtype, 25), b2}, mm, true, tol);
    const Tensor x = random_input({4, 9, 70}, dtype, 26), w = random_input({45, 70}, dtype, 27);
    const Tensor bias = random_input({45}, dtype, 28);
    check_op("linear with bias", dtype, {x, w, bias}, [](auto& v) { return linear(v[0], v[1], v[2]); }, true, tol);
    check_op("linear without bias", dtype, {x, w}, [](auto& v) { return linear(v[0], v[1]); }, true, tol);
    check_op("linear_gelu", dtype, {x, w, bias}, [](auto& v) { return linear_gelu(v[0], v[1], v[2]); }, false, tol);
    // Recording: float32 takes the one-node training path (gelu_with_derivative with the bias,
    // mul_column_sum in backward), the 16-bit floats the composition.
    check_op("linear_gelu training", dtype, {x, w, bias}, [](auto& v) { return linear_gelu(v[0], v[1], v[2]); }, true,
             tol);
  }
}

TEST(CudaOps, MatmulKernelAccumulatesAndHandlesEmptyK) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const Tensor a = random_input({2, 8, 16}, kFloat32, 30), b = random_input({2, 16, 5}, kFloat32, 31);
  const Tensor start = random_input({2, 8, 5}, kFloat32, 32), bias = random_input({5}, kFloat32, 33);
  for (bool with_bias : {false, true}) {
    Tensor expected = start.clone(), actual = start.to(kCuda);
    kernels::matmul(kCPU, a, b, with_bias ? bias : Tensor(), expected, true, GemmB::Transient);
    kernels::matmul(kCuda, a.to(kCuda), b.to(kCuda), with_bias ? bias.to(kCuda) : Tensor(), actual, true,
                    GemmB::Transient);
    EXPECT_TRUE(tensors_close(actual.cpu(), expected, 1e-5, 1e-4)) << "accumulate, bias " << with_bias;
  }
  Tensor empty_k = random_input({1, 4, 5}, kFloat32, 34).to(kCuda);
  kernels::matmul(kCuda, empty({1, 4, 0}, TensorOptions(kFloat32, kCuda)), empty({1, 0, 5}, TensorOptions(kFloat32, kCuda)),
                  bias.to(kCuda), empty_k, false, GemmB::Transient);
  EXPECT_TRUE(tensors_close(empty_k.cpu(), bias.expand({1, 4, 5}), 0, 0)) << "K = 0 gives the bias";
}

TEST(CudaOps, Tf32MatmulWithinItsTolerance) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const bool before = cuda::allow_tf32();
  cuda::set_allow_tf32(true);
  const Tensor a = random_input({2, 64, 256}, kFloat32, 35), b = random_input({2, 256, 48}, kFloat32, 36);
  check_op("matmul tf32", kFloat32, {a, b}, [](auto& x) { return matmul(x[0], x[1]); }, true, {1e-3, 1e-3 * 16});
  cuda::set_allow_tf32(before);
}

// ---- softmax, layer norm, losses, embedding ---------------------------------------------

TEST(CudaOps, SoftmaxAndLogSoftmaxForwardAndBackward) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    const Tensor x = random_input({4, 6, 1000}, dtype, 40) * 3.0;
    for (int64_t dim : {2, 1, 0}) {
      const std::string at = " over dim " + std::to_string(dim);
      check_op("softmax" + at, dtype, {x}, [dim](auto& v) { return softmax(v[0], dim); }, true, tolerance(dtype));
      check_op("log_softmax" + at, dtype, {x}, [dim](auto& v) { return log_softmax(v[0], dim); }, true, tolerance(dtype));
    }
    // A fully masked row (all -inf) must give what the CPU gives, not a fault.
    Tensor masked = x.clone();
    masked.slice(0, 0, 1).fill_(-INFINITY);
    check_op("softmax of a -inf row", dtype, {masked}, [](auto& v) { return softmax(v[0], 2); }, false, tolerance(dtype));
  }
}

TEST(CudaOps, LayerNormForwardAndBackward) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    for (int64_t cols : {32, 768, 1030}) {
      const Tensor x = random_input({20, cols}, dtype, 41) * 2.0 + 0.5;
      const Tensor w = random_input({cols}, dtype, 42), b = random_input({cols}, dtype, 43);
      const std::string name = "layer_norm cols " + std::to_string(cols);
      check_op(name, dtype, {x, w, b}, [cols](auto& v) { return layer_norm(v[0], {cols}, v[1], v[2], 1e-5); }, true,
               tolerance(dtype));
      check_op(name + " no affine", dtype, {x}, [cols](auto& v) { return layer_norm(v[0], {cols}); }, true,
               tolerance(dtype));
    }
  }
}

TEST(CudaOps, AddLayerNormForwardAndGradientsOfAllFourInputs) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    for (int64_t cols : {32, 768, 1030}) {
      const Tensor x = random_input({4, 5, cols}, dtype, 140) * 2.0 + 0.5;
      const Tensor residual = random_input({4, 5, cols}, dtype, 141);
      const Tensor w = random_input({cols}, dtype, 142), b = random_input({cols}, dtype, 143);
      const std::string name = "add_layer_norm cols " + std::to_string(cols);
      check_op(name, dtype, {x, residual, w, b},
               [cols](auto& v) { return add_layer_norm(v[0], v[1], {cols}, v[2], v[3], 1e-5); }, true,
               tolerance(dtype));
      // Nothing recorded: the kernel keeps no sum for backward.
      check_op(name + " no affine, inference", dtype, {x, residual},
               [cols](auto& v) { return add_layer_norm(v[0], v[1], {cols}); }, false, tolerance(dtype));
    }
  }
}

TEST(CudaOps, CrossEntropyEmbeddingGatherScatter) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const Tensor targets = from_vector(std::vector<int64_t>{3, 0, 9, 9, -100, 1, 4, 2}, {8});
  const Tensor ids = from_vector(std::vector<int64_t>{5, 1, 5, 0, 7, 5, 2, 1, 1, 3}, {2, 5});  // repeats
  for (DType dtype : kFloatTypes) {
    const Tolerance tol = tolerance(dtype);
    check_op("cross_entropy", dtype, {random_input({8, 10}, dtype, 44), targets},
             [](auto& v) { return cross_entropy(v[0], v[1]); }, true, tol);
    check_op("embedding", dtype, {random_input({8, 24}, dtype, 45), ids},
             [](auto& v) { return embedding(v[0], v[1]); }, true, tol);
    check_op("index_select dim 1", dtype, {random_input({3, 8, 5}, dtype, 46), ids.flatten()},
             [](auto& v) { return index_select(v[0], 1, v[1]); }, true, tol);
    const Tensor gather_index = from_vector(std::vector<int64_t>{0, 2, 2, 1, 0, 0, 3, 3, 1, 2, 0, 1}, {3, 4});
    check_op("gather dim 1", dtype, {random_input({3, 4}, dtype, 47), gather_index},
             [](auto& v) { return gather(v[0], 1, v[1]); }, true, tol);
    check_op("scatter_add dim 1", dtype,
             {random_input({3, 4}, dtype, 48), gather_index, random_input({3, 4}, dtype, 49)},
             [](auto& v) { return scatter_add(v[0], 1, v[1], v[2]); }, true, tol);
    check_op("index_add dim 0", dtype,
             {random_input({8, 6}, dtype, 50), ids.flatten(), random_input({10, 6}, dtype, 51)},
             [](auto& v) { return index_add(v[0], 0, v[1], v[2]); }, true, tol);
  }
}

TEST(CudaOps, CrossEntropyFusedKernelReductionsSmoothingAndWideRows) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    const Tolerance tol = tolerance(dtype);
    for (int64_t C : {10, 1030}) {  // 1030: more classes than a block has threads
      const Tensor logits = random_input({13, C}, dtype, 52) * 3.0;
      std::vector<int64_t> classes;
      for (int64_t r = 0; r < 13; ++r) classes.push_back(r == 4 || r == 9 ? -100 : (r * 37 + 5) % C);
      classes[12] = C - 1;
      const Tensor targets = from_vector(classes, {13});
      for (Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
        for (double smoothing : {0.0, 0.1}) {
          const std::string name = "cross_entropy C " + std::to_string(C) + " reduction " +
                                   std::to_string(static_cast<int>(reduction)) + " smoothing " +
                                   std::to_string(smoothing);
          check_op(name, dtype, {logits, targets},
                   [=](auto& v) { return cross_entropy(v[0], v[1], -100, reduction, smoothing); }, true, tol);
        }
      }
      std::vector<int64_t> class_5_ignored = classes;  // the rows that held -100 hold the ignored class 5
      for (int64_t& c : class_5_ignored) c = c < 0 ? 5 : c;
      check_op("cross_entropy C " + std::to_string(C) + " ignore_index 5", dtype,
               {logits, from_vector(class_5_ignored, {13})},
               [](auto& v) { return cross_entropy(v[0], v[1], 5, Reduction::Mean, 0.2); }, true, tol);
    }
  }
}

// ---- fused attention ---------------------------------------------------------------------
// float32 takes the fused kernels on both devices; float16 and bfloat16 take core's
// composition on both.

// (B, H, T, D) as the split-head view of a (B, T, H * D) projection, the layout
// MultiHeadSelfAttention passes: its batch entries do not fold into one GEMM batch.
Tensor split_heads(int64_t B, int64_t T, int64_t H, int64_t D, DType dtype, uint64_t seed) {
  return random_input({B, T, H, D}, dtype, seed).transpose(1, 2);
}

// Additive key-padding mask (B, 1, 1, Tk) in dtype: sequence b has pads[b] padded keys, at the
// end, holding float's lowest value (-inf once in a 16-bit dtype).
Tensor key_padding_mask(const std::vector<int64_t>& pads, int64_t Tk, DType dtype) {
  const int64_t B = static_cast<int64_t>(pads.size());
  Tensor keep = ones({B, Tk});
  for (int64_t b = 0; b < B; ++b) keep.select(0, b).slice(0, Tk - pads[b], Tk).fill_(0.0);
  return ((1.0 - keep) * std::numeric_limits<float>::lowest()).view({B, 1, 1, Tk}).to(dtype);
}

// Attention of the inputs v[0..2] with `mask` moved to their device (the mask takes no
// gradient: one that requires grad would send both devices through the composition).
OpFn attention_with(const Tensor& mask, double dropout_p = 0.0, std::optional<double> scale = std::nullopt,
                    uint64_t dropout_seed = 0) {
  return [=](const std::vector<Tensor>& v) {
    Generator generator(dropout_seed);  // the same stream for each device's call
    const Tensor on_device = mask.defined() ? mask.to(v[0].device()) : Tensor();
    return scaled_dot_product_attention(v[0], v[1], v[2], on_device, dropout_p, dropout_p > 0.0, scale, true,
                                        &generator);
  };
}

TEST(CudaOps, AttentionWithoutMaskAndWithKeyPadding) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    const Tolerance tol = tolerance(dtype);
    check_op("attention, no mask", dtype,
             {split_heads(2, 7, 3, 16, dtype, 150), split_heads(2, 7, 3, 16, dtype, 151),
              split_heads(2, 7, 3, 16, dtype, 152)},
             attention_with(Tensor()), true, tol);
    // Tq 5, Tk 11; sequence 2 is all padding in float32, which the CPU kernel does not cut
    // (uniform over its keys, as the composition); in 16 bits -inf would make it NaN.
    const std::vector<int64_t> pads = {0, 4, dtype == kFloat32 ? 11 : 10};
    check_op("attention, key padding, Tq 5, Tk 11", dtype,
             {split_heads(3, 5, 2, 8, dtype, 153), split_heads(3, 11, 2, 8, dtype, 154),
              split_heads(3, 11, 2, 8, dtype, 155)},
             attention_with(key_padding_mask(pads, 11, dtype)), true, tol);
    // One batch entry, rows longer than a block (Tk 600 > 512 threads).
    check_op("attention, B 1, Tk 600", dtype,
             {split_heads(1, 3, 2, 8, dtype, 156), split_heads(1, 600, 2, 8, dtype, 157),
              split_heads(1, 600, 2, 8, dtype, 158)},
             attention_with(key_padding_mask({37}, 600, dtype)), true, tol);
  }
}

TEST(CudaOps, AttentionWithAFullMaskContiguousHeadsAndAScale) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    const Tolerance tol = tolerance(dtype);
    // A (B, 1, Tq, Tk) mask, Tq 6 > Tk 4; in float32 query 1 of batch 0 sees no key.
    Tensor mask = random_input({2, 1, 6, 4}, kFloat32, 160);
    if (dtype == kFloat32) mask.select(0, 0).select(0, 0).select(0, 1).fill_(std::numeric_limits<float>::lowest());
    check_op("attention, full mask, Tq 6, Tk 4", dtype,
             {split_heads(2, 6, 3, 8, dtype, 161), split_heads(2, 4, 3, 8, dtype, 162),
              split_heads(2, 4, 3, 8, dtype, 163)},
             attention_with(mask.to(dtype)), true, tol);
    // Contiguous (B, H, T, D) heads and one query: every operand folds into one GEMM batch.
    check_op("attention, contiguous heads, Tq 1, scale 0.5", dtype,
             {random_input({2, 4, 1, 8}, dtype, 164), random_input({2, 4, 9, 8}, dtype, 165),
              random_input({2, 4, 9, 8}, dtype, 166)},
             attention_with(Tensor(), 0.0, 0.5), true, tol);
    // One head: the batch stride is the head stride, whatever the layout.
    check_op("attention, one head, key padding", dtype,
             {split_heads(3, 4, 1, 8, dtype, 167), split_heads(3, 6, 1, 8, dtype, 168),
              split_heads(3, 6, 1, 8, dtype, 169)},
             attention_with(key_padding_mask({0, 2, 5}, 6, dtype)), true, tol);
  }
}

TEST(CudaOps, AttentionDropoutDrawsTheCpuStream) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    const Tolerance tol = tolerance(dtype);
    const Tensor q = split_heads(2, 9, 3, 8, dtype, 170), k = split_heads(2, 13, 3, 8, dtype, 171);
    const Tensor v = split_heads(2, 13, 3, 8, dtype, 172);
    const Tensor mask = key_padding_mask({0, 5}, 13, dtype);
    check_op("attention, dropout 0.25, key padding", dtype, {q, k, v}, attention_with(mask, 0.25, std::nullopt, 2024),
             true, tol);
    // Call after call from one generator, started mid-stream: both devices draw the same
    // elements and advance their generators alike.
    Generator cpu_gen(31), cuda_gen(31);
    cpu_gen.reserve(3);
    cuda_gen.reserve(3);
    const Tensor q_dev = on_cuda(q), k_dev = on_cuda(k), v_dev = on_cuda(v);
    for (int call = 0; call < 2; ++call) {
      const Tensor expected = scaled_dot_product_attention(q, k, v, Tensor(), 0.4, true, std::nullopt, true, &cpu_gen);
      const Tensor actual =
          scaled_dot_product_attention(q_dev, k_dev, v_dev, Tensor(), 0.4, true, std::nullopt, true, &cuda_gen);
      ACCEL_CUDA_SYNC_FOR_TEST();
      EXPECT_TRUE(tensors_close(actual.cpu(), expected, tol.rtol, tol.atol))
          << "attention dropout, call " << call << ", in " << dtype_name(dtype);
    }
    EXPECT_EQ(cpu_gen.offset(), cuda_gen.offset()) << "both devices must advance the generator equally";
  }
}

// ---- random, dropout, optimizer -----------------------------------------------------------

TEST(CudaOps, RandomDrawsReproduceTheCpuPhiloxStream) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    for (int64_t n : {1, 7, 4097}) {
      Generator cpu_gen(1234), cuda_gen(1234);
      cpu_gen.reserve(5);  // start mid-stream: the offset must be honored
      cuda_gen.reserve(5);
      EXPECT_TRUE(tensors_close(rand({n}, TensorOptions(dtype, kCuda), &cuda_gen).cpu(),
                                rand({n}, TensorOptions(dtype), &cpu_gen), 0, 0))
          << "rand of " << n << " in " << dtype_name(dtype);
      EXPECT_TRUE(tensors_close(randn({n}, TensorOptions(dtype, kCuda), &cuda_gen).cpu(),
                                randn({n}, TensorOptions(dtype), &cpu_gen), 1e-6, 1e-6))
          << "randn of " << n << " in " << dtype_name(dtype) << " (Box-Muller in double on both sides)";
      EXPECT_EQ(cpu_gen.offset(), cuda_gen.offset()) << "both draws must advance the generator equally";
    }
  }
}

TEST(CudaOps, DropoutDropsTheSameElementsForwardAndBackward) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : kFloatTypes) {
    const Tensor x = random_input({37, 129}, dtype, 60);
    Generator cpu_gen(77), cuda_gen(77);
    Tensor cpu_in = x.detach().requires_grad_(), cuda_in = x.to(kCuda).detach().requires_grad_();
    Tensor expected = dropout(cpu_in, 0.3, true, &cpu_gen);
    Tensor actual = dropout(cuda_in, 0.3, true, &cuda_gen);
    EXPECT_TRUE(tensors_close(actual.cpu(), expected, 0, 0)) << "dropout forward in " << dtype_name(dtype);
    Tensor grad = random_input(x.sizes(), dtype, 61);
    expected.backward(grad);
    actual.backward(grad.to(kCuda));
    EXPECT_TRUE(tensors_close(cuda_in.grad().cpu(), cpu_in.grad(), 0, 0)) << "dropout backward in " << dtype_name(dtype);
  }
}

TEST(CudaOps, FusedAdamWMatchesTheCpuStep) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  const kernels::AdamWHyper hyper{1e-3, 0.9, 0.999, 1e-8, 0.01, 3};
  for (DType dtype : {kFloat32, kBFloat16}) {
    Tensor p = random_input({1001}, dtype, 70), g = random_input({1001}, dtype, 71);
    Tensor m = random_input({1001}, dtype, 72) * 0.1, v = random_input({1001}, dtype, 73).abs() * 0.01;
    // Clones, so that in the self test (the "device" is the CPU) the two steps update two tensors.
    Tensor dp = p.clone().to(kCuda), dg = g.to(kCuda), dm = m.clone().to(kCuda), dv = v.clone().to(kCuda);
    kernels::adamw(kCPU, p, g, m, v, hyper);
    kernels::adamw(kCuda, dp, dg, dm, dv, hyper);
    const Tolerance tol = tolerance(dtype);
    EXPECT_TRUE(tensors_close(dp.cpu(), p, tol.rtol, tol.atol)) << "adamw param in " << dtype_name(dtype);
    EXPECT_TRUE(tensors_close(dm.cpu(), m, tol.rtol, tol.atol)) << "adamw exp_avg in " << dtype_name(dtype);
    EXPECT_TRUE(tensors_close(dv.cpu(), v, tol.rtol, tol.atol)) << "adamw exp_avg_sq in " << dtype_name(dtype);
  }
}

TEST(CudaOps, FusedAdamWMultiTensorMatchesThePerTensorKernelAndTheCpu) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  // 40 tensor sets fill the 36 slots of a launch's table; in float32 (the masters' dtype) a
  // last set of 321 chunks fills the 320 block entries and continues into the next launch.
  const kernels::AdamWHyper hyper{1e-3, 0.9, 0.999, 1e-8, 0.01, 3};
  for (DType dtype : {kFloat32, kBFloat16}) {
    std::vector<int64_t> sizes;
    for (int64_t i = 0; i < 40; ++i) sizes.push_back(i % 5 == 0 ? 65537 : 1 + 97 * i);
    if (dtype == kFloat32) sizes.push_back(65536 * 320 + 3);
    std::vector<kernels::AdamWTensors> cpu, multi, single;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const uint64_t seed = 200 + 4 * i;
      Tensor p = random_input({sizes[i]}, dtype, seed), g = random_input({sizes[i]}, dtype, seed + 1);
      Tensor m = random_input({sizes[i]}, dtype, seed + 2) * 0.1, v = random_input({sizes[i]}, dtype, seed + 3).abs() * 0.01;
      cpu.push_back({p, g, m, v});
      // Copies of their own also where the "device" is the CPU (the self test), or the three
      // updates would land on one tensor.
      multi.push_back({p.clone().to(kCuda), g.to(kCuda), m.clone().to(kCuda), v.clone().to(kCuda)});
      single.push_back({p.clone().to(kCuda), g.to(kCuda), m.clone().to(kCuda), v.clone().to(kCuda)});
    }
    kernels::adamw_multi_tensor(kCPU, cpu, hyper);
    kernels::adamw_multi_tensor(kCuda, multi, hyper);
    for (const kernels::AdamWTensors& t : single) kernels::adamw(kCuda, t.param, t.grad, t.exp_avg, t.exp_avg_sq, hyper);
    ACCEL_CUDA_SYNC_FOR_TEST();
    const Tolerance tol = tolerance(dtype);
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string what = std::string("adamw_multi_tensor in ") + dtype_name(dtype) + ", tensor " +
                               std::to_string(i) + " of " + std::to_string(sizes[i]) + " elements";
      EXPECT_TRUE(tensors_close(multi[i].param.cpu(), single[i].param.cpu(), 0, 0)) << what << ": param vs per-tensor";
      EXPECT_TRUE(tensors_close(multi[i].exp_avg.cpu(), single[i].exp_avg.cpu(), 0, 0))
          << what << ": exp_avg vs per-tensor";
      EXPECT_TRUE(tensors_close(multi[i].exp_avg_sq.cpu(), single[i].exp_avg_sq.cpu(), 0, 0))
          << what << ": exp_avg_sq vs per-tensor";
      EXPECT_TRUE(tensors_close(multi[i].param.cpu(), cpu[i].param, tol.rtol, tol.atol)) << what << ": param vs cpu";
      EXPECT_TRUE(tensors_close(multi[i].exp_avg.cpu(), cpu[i].exp_avg, tol.rtol, tol.atol)) << what << ": exp_avg vs cpu";
      EXPECT_TRUE(tensors_close(multi[i].exp_avg_sq.cpu(), cpu[i].exp_avg_sq, tol.rtol, tol.atol))
          << what << ": exp_avg_sq vs cpu";
    }
  }
}

// The gradient norm's sum of squares: tensors of several chunks and of none, in every
// floating dtype. Both sides square and add in double (in other chunk orders), so even
// float32 agrees to 1e-12; the CUDA result must also be the same bits on a second run.
TEST(CudaOps, SumOfSquaresMatchesTheCpu) {
  SKIP_WITHOUT_GPU_UNLESS_SELF_TEST();
  for (DType dtype : {kFloat32, kFloat16, kBFloat16}) {
    std::vector<Tensor> cpu, device;
    for (int64_t size : {int64_t(1), int64_t(0), int64_t(65536 * 3 + 17), int64_t(1001), int64_t(65536)}) {
      cpu.push_back(random_input({size}, dtype, 300 + size % 97));
      device.push_back(cpu.back().to(kCuda));
    }
    Tensor expected = sum_of_squares(cpu);
    Tensor got = sum_of_squares(device), again = sum_of_squares(device);
    ACCEL_CUDA_SYNC_FOR_TEST();
    EXPECT_EQ(got.dtype(), kFloat64);
    EXPECT_TRUE(tensors_close(got.cpu(), expected, 1e-12, 0)) << "sum_of_squares in " << dtype_name(dtype);
    EXPECT_EQ(got.cpu().item<double>(), again.cpu().item<double>()) << "sum_of_squares in " << dtype_name(dtype);
  }
}

// ---- runtime: allocator, streams, copies --------------------------------------------------

TEST(CudaRuntime, CachingAllocatorRoundsReusesAndReportsStatistics) {
  SKIP_WITHOUT_GPU();
  EXPECT_EQ(cuda::round_allocation_size(1), 512u);
  EXPECT_EQ(cuda::round_allocation_size(4000), 4096u);
  EXPECT_EQ(cuda::round_allocation_size((1 << 20) + 1), size_t(2) << 20);
  EXPECT_EQ(cuda::round_allocation_size((3 << 20)), size_t(4) << 20);
  cuda::empty_cache();
  cuda::MemoryStats before = cuda::memory_stats(0);
  {
    Tensor t = empty({1000}, TensorOptions(kFloat32, kCuda));  // 4000 B -> 4096 B
    cuda::MemoryStats during = cuda::memory_stats(0);
    EXPECT_EQ(during.allocated_bytes - before.allocated_bytes, 4096);
    EXPECT_GE(during.reserved_bytes, during.allocated_bytes);
    EXPECT_GE(during.peak_allocated_bytes, during.allocated_bytes);
  }
  cuda::MemoryStats after_free = cuda::memory_stats(0);
  EXPECT_EQ(after_free.allocated_bytes, before.allocated_bytes) << "a freed tensor's block is no longer allocated";
  EXPECT_EQ(after_free.reserved_bytes - before.reserved_bytes, 4096) << "but stays cached";
  {
    Tensor again = empty({1010}, TensorOptions(kFloat32, kCuda));  // same size class
    cuda::MemoryStats reuse = cuda::memory_stats(0);
    EXPECT_EQ(reuse.num_device_mallocs, after_free.num_device_mallocs) << "the cached block must be reused";
    EXPECT_EQ(reuse.num_cache_hits, after_free.num_cache_hits + 1);
  }
  {
    cuda::Stream side(0);
    cuda::StreamGuard guard(side);
    Tensor other_stream = empty({1000}, TensorOptions(kFloat32, kCuda));
    EXPECT_EQ(cuda::memory_stats(0).num_device_mallocs, after_free.num_device_mallocs + 1)
        << "a block cached for one stream is not handed to another";
    side.synchronize();
  }
  cuda::empty_cache();
  cuda::MemoryStats emptied = cuda::memory_stats(0);
  EXPECT_EQ(emptied.reserved_bytes, emptied.allocated_bytes) << "empty_cache returns every cached block";
  cuda::reset_peak_stats(0);
  EXPECT_EQ(cuda::memory_stats(0).peak_allocated_bytes, emptied.allocated_bytes);
}

TEST(CudaRuntime, OpsOnASideStreamAndEventsOrderWork) {
  SKIP_WITHOUT_GPU();
  const Tensor x = random_input({1 << 16}, kFloat32, 80);
  Tensor expected = exp(x) * 2.0;
  cuda::Stream side(0);
  cuda::Event start(true), stop(true);
  Tensor result;
  {
    cuda::StreamGuard guard(side);
    EXPECT_EQ(cuda::current_stream(0), side.get());
    Tensor on_device = x.to(kCuda);  // the copy runs on the side stream too
    start.record(side.get());
    result = exp(on_device) * 2.0;
    stop.record(side.get());
  }
  EXPECT_EQ(cuda::current_stream(0), nullptr) << "the guard restores the default stream";
  stop.synchronize();
  EXPECT_TRUE(stop.query());
  EXPECT_GE(start.elapsed_ms(stop), 0.0f);
  EXPECT_TRUE(tensors_close(result.cpu(), expected, 1e-5, 1e-5));
}

TEST(CudaRuntime, LargeHostCopiesGoThroughTheStagingBufferInChunks) {
  SKIP_WITHOUT_GPU();
  const int64_t n = (40 << 20) / 4 + 3;  // 40 MiB and a bit: two 32 MiB chunks
  Tensor host = arange(Scalar(0), Scalar(n), Scalar(1), kInt32);
  Tensor back = host.to(kCuda).cpu();
  EXPECT_TRUE(equal(back, host)) << "a chunked round trip changed the bytes";
  EXPECT_EQ(back.data_ptr<int32_t>()[n - 1], n - 1);
}

TEST(CudaRuntime, PinnedHostBuffersAreCachedBySize) {
  SKIP_WITHOUT_GPU();
  void* first = cuda::allocate_pinned(1000);
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, first), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeHost) << "allocate_pinned must return page-locked host memory";
  cuda::free_pinned(first);
  void* second = cuda::allocate_pinned(900);  // the same 1 KiB size class
  EXPECT_EQ(second, first) << "a freed pinned buffer of the same size class is reused";
  cuda::free_pinned(second);
  EXPECT_TRUE(testing::contains(testing::error_of([&] { cuda::free_pinned(&attributes); }), "not allocated by allocate_pinned"));
}

TEST(CudaRuntime, ErrorsNameTheDeviceAndTheFailingCall) {
  SKIP_WITHOUT_GPU();
  const std::string missing = testing::error_of([] { empty({4}, TensorOptions(kFloat32, Device(DeviceType::CUDA, 63))); });
  EXPECT_TRUE(testing::contains(missing, "cuda:63")) << missing;
  EXPECT_TRUE(testing::contains(missing, "CUDA device(s) present")) << missing;
  const std::string bad_call = testing::error_of([] { ACCEL_CUDA_CHECK(cudaSetDevice(-5)); });
  cudaGetLastError();  // clear the error the failed call left, or the next launch check reports it
  EXPECT_TRUE(testing::contains(bad_call, "test_cuda_ops.cc:")) << "the error names file and line: " << bad_call;
  EXPECT_TRUE(testing::contains(bad_call, "cudaSetDevice(-5)")) << bad_call;
}

// ---- a model end to end -------------------------------------------------------------------

TEST(CudaModel, TinyBertForwardAndBackwardMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  const models::BertConfig config = testing::tiny_config(0.0);
  manual_seed(5);
  auto cpu_model = std::make_shared<models::BertForSequenceClassification>(config);
  manual_seed(5);
  auto cuda_model = std::make_shared<models::BertForSequenceClassification>(config);
  cuda_model->to(kCuda);
  Generator generator(6);
  const Tensor ids = randint(0, config.vocab_size, {3, 12}, kInt64, &generator);
  Tensor mask = ones({3, 12}, kInt64);
  mask.slice(1, 9, 12).slice(0, 0, 1).zero_();  // padding in one row
  const Tensor types = zeros({3, 12}, kInt64), labels = from_vector(std::vector<int64_t>{0, 1, 1}, {3});
  auto expected = cpu_model->forward(ids, mask, types, labels);
  auto actual = cuda_model->forward(ids.to(kCuda), mask.to(kCuda), types.to(kCuda), labels.to(kCuda));
  EXPECT_TRUE(tensors_close(actual.logits.cpu(), expected.logits, 1e-4, 1e-5)) << "tiny BERT logits";
  EXPECT_TRUE(tensors_close(actual.loss.cpu(), expected.loss, 1e-4, 1e-6)) << "tiny BERT loss";
  expected.loss.backward();
  actual.loss.backward();
  std::map<std::string, Tensor> cuda_params;
  for (auto& [name, p] : cuda_model->named_parameters()) cuda_params[name] = p;
  for (auto& [name, p] : cpu_model->named_parameters()) {
    const Tensor& cuda_grad = cuda_params.at(name).grad();
    ASSERT_TRUE(cuda_grad.defined()) << "no CUDA gradient for " << name;
    EXPECT_TRUE(tensors_close(cuda_grad.cpu(), p.grad(), 1e-3, 1e-5)) << "gradient of " << name;
  }
}

}  // namespace
}  // namespace accel
