// CUDA GEMMs. out (B, M, N) row-major = a (B, M, K) @ b (B, K, N) is computed as the
// column-major product out^T (N, M) = b^T a^T, so row-major operands enter cuBLAS untouched
// and transposed views (weight.t()) enter with CUBLAS_OP_T: nothing is copied unless a
// layout has no unit stride at all. Batches go through cublasGemmStridedBatchedEx (batch
// stride 0 broadcasts); gemm_strided_batched (blas.h) hands the same call to other kernels,
// with an output that may be a strided view. Unbatched products with a bias use cuBLASLt's
// fused BIAS epilogue; where cuBLASLt offers no algorithm the bias is added by the
// elementwise kernels after the GEMM. linear_gelu does not use CUBLASLT_EPILOGUE_GELU(_BIAS):
// that epilogue is the tanh approximation (PyTorch fuses it only for
// gelu(approximate='tanh')), and the slot promises erf GELU, so it fuses the bias and runs
// erf GELU in place. 16-bit inputs accumulate in fp32. cuBLAS(Lt) is called through the
// table that loads it on first use (cublas_loader.h).
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>

#include "backends/cuda/blas.h"
#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/device_utils.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

constexpr size_t kLtWorkspaceBytes = 32 << 20;
constexpr int kMaxDevices = 64;

bool tf32_from_env() {
  const char* value = std::getenv("ACCEL_CUDA_TF32");
  return value != nullptr && std::strcmp(value, "1") == 0;
}
bool tf32_allowed = tf32_from_env();

struct BlasHandles {
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
};

// Created on first use per device, kept for the process (as PyTorch's handle pool).
BlasHandles& handles(int device) {
  static std::mutex mutex;
  static BlasHandles per_device[kMaxDevices];
  ACCEL_CHECK(device >= 0 && device < kMaxDevices, "cuBLAS: device index ", device, " out of range");
  std::lock_guard<std::mutex> lock(mutex);
  BlasHandles& h = per_device[device];
  if (h.blas == nullptr) {
    const CublasApi& api = cublas();
    ACCEL_CUBLAS_CHECK(api.create(&h.blas));
    ACCEL_CUBLAS_CHECK(api.lt_create(&h.lt));
    ACCEL_CUDA_CHECK(cudaMalloc(&h.lt_workspace, kLtWorkspaceBytes));
  }
  return h;
}

struct GemmTypes {
  cudaDataType_t data;
  cublasComputeType_t compute;
  cudaDataType_t scale;
};
GemmTypes gemm_types(DType dtype) {
  switch (dtype) {
    case kFloat32: return {CUDA_R_32F, tf32_allowed ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F};
    case kFloat16: return {CUDA_R_16F, CUBLAS_COMPUTE_32F, CUDA_R_32F};
    case kBFloat16: return {CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F};
    case kFloat64: return {CUDA_R_64F, CUBLAS_COMPUTE_64F, CUDA_R_64F};
    default: ACCEL_FAIL("matmul: no kernel for dtype ", dtype_name(dtype), " on cuda (use a floating dtype)");
  }
}

// alpha/beta in the scale type.
struct Scalars {
  float f[2];
  double d[2];
  const void* alpha(cudaDataType_t scale) const { return scale == CUDA_R_64F ? static_cast<const void*>(&d[0]) : &f[0]; }
  const void* beta(cudaDataType_t scale) const { return scale == CUDA_R_64F ? static_cast<const void*>(&d[1]) : &f[1]; }
};
Scalars scalars(double beta) { return {{1.0f, float(beta)}, {1.0, beta}}; }

// One (rows, cols) row-major-indexed operand seen as a column-major (cols, rows) matrix:
// op N with ld = row stride when columns are unit-stride, op T with ld = column stride when
// rows are. size-1 dims may carry any stride.
struct Operand {
  cublasOperation_t op;
  int64_t ld;
  int64_t batch_stride;
  const void* data;
  Tensor keep_alive;  // the dense copy, when one was needed
};

std::optional<Operand> describe(const Tensor& t, int64_t batch) {
  const int64_t rows = t.size(1), cols = t.size(2), s_row = t.stride(1), s_col = t.stride(2);
  const int64_t batch_stride = batch == 1 ? 0 : t.stride(0);
  if (s_col == 1 || cols == 1) {
    const int64_t ld = rows == 1 ? std::max<int64_t>(cols, 1) : s_row;
    if (ld >= std::max<int64_t>(cols, 1)) return Operand{CUBLAS_OP_N, ld, batch_stride, t.data_ptr(), Tensor()};
  }
  if (s_row == 1 || rows == 1) {
    const int64_t ld = cols == 1 ? std::max<int64_t>(rows, 1) : s_col;
    if (ld >= std::max<int64_t>(rows, 1)) return Operand{CUBLAS_OP_T, ld, batch_stride, t.data_ptr(), Tensor()};
  }
  return std::nullopt;
}

Operand operand_of(const Tensor& t, int64_t batch) {
  if (auto described = describe(t, batch)) return *described;
  Tensor dense = t.contiguous();  // e.g. a stride-0 row: no BLAS layout takes it
  Operand operand = *describe(dense, batch);
  operand.keep_alive = dense;
  return operand;
}

void check_int(int64_t value, const char* what) {
  ACCEL_CHECK(value <= INT_MAX, "matmul on cuda: ", what, " = ", value, " exceeds cuBLAS's int range");
}
// [snippet:gemm-batched]
// out = a @ b (+ beta * out) through cublasGemmStridedBatchedEx. out has unit stride along N;
// its row and batch strides may be larger than N and M * N (a view into a wider buffer).
void gemm_batched(const Tensor& a, const Tensor& b, const Tensor& out, double beta) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  check_int(M, "M"); check_int(N, "N"); check_int(K, "K"); check_int(B, "batch");
  ACCEL_CHECK(out.stride(2) == 1 || N == 1, "matmul on cuda: the output needs unit stride along N, got strides ",
              shape_str(out.strides()));
  const int64_t ld_out = M == 1 ? N : out.stride(1), batch_stride_out = B == 1 ? M * N : out.stride(0);
  Operand x = operand_of(b, B), y = operand_of(a, B);
  check_int(x.ld, "ld of b"); check_int(y.ld, "ld of a"); check_int(ld_out, "ld of out");
  GemmTypes types = gemm_types(out.dtype());
  KernelContext context(out);
  cublasHandle_t handle = handles(out.device().index).blas;
  const CublasApi& api = cublas();
  ACCEL_CUBLAS_CHECK(api.set_stream(handle, context.stream));
  Scalars s = scalars(beta);
  ACCEL_CUBLAS_CHECK(api.gemm_strided_batched_ex(
      handle, x.op, y.op, int(N), int(M), int(K), s.alpha(types.scale), x.data, types.data, int(x.ld),
      x.batch_stride, y.data, types.data, int(y.ld), y.batch_stride, s.beta(types.scale), out.data_ptr(), types.data,
      int(ld_out), batch_stride_out, int(B), types.compute, CUBLAS_GEMM_DEFAULT));
}
// [end]
struct LtDescriptors {
  const CublasApi& api;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t x = nullptr, y = nullptr, c = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~LtDescriptors() {
    if (preference) api.lt_matmul_preference_destroy(preference);
    if (c) api.lt_matrix_layout_destroy(c);
    if (y) api.lt_matrix_layout_destroy(y);
    if (x) api.lt_matrix_layout_destroy(x);
    if (op) api.lt_matmul_desc_destroy(op);
  }
};

// Unbatched out = epilogue(a @ b + bias) (+ beta * out) through cuBLASLt. Returns false when
// cuBLASLt has no algorithm for it, having done nothing.
bool lt_gemm(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out, double beta,
             cublasLtEpilogue_t epilogue) {
  const int64_t M = out.size(1), N = out.size(2), K = a.size(2);
  check_int(M, "M"); check_int(N, "N"); check_int(K, "K");
  Operand x = operand_of(b, 1), y = operand_of(a, 1);
  GemmTypes types = gemm_types(out.dtype());
  KernelContext context(out);
  BlasHandles& h = handles(out.device().index);
  const CublasApi& api = cublas();
  LtDescriptors d{api};
  ACCEL_CUBLAS_CHECK(api.lt_matmul_desc_create(&d.op, types.compute, types.scale));
  ACCEL_CUBLAS_CHECK(api.lt_matmul_desc_set_attribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &x.op, sizeof(x.op)));
  ACCEL_CUBLAS_CHECK(api.lt_matmul_desc_set_attribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &y.op, sizeof(y.op)));
  ACCEL_CUBLAS_CHECK(
      api.lt_matmul_desc_set_attribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (bias.defined()) {
    const void* bias_ptr = bias.data_ptr();
    ACCEL_CUBLAS_CHECK(api.lt_matmul_desc_set_attribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr,
                                                        sizeof(bias_ptr)));
  }
  // Stored shapes (rows, cols) of the column-major matrices: op N stores the operand as it
  // enters the product, op T its transpose.
  const bool x_n = x.op == CUBLAS_OP_N, y_n = y.op == CUBLAS_OP_N;
  ACCEL_CUBLAS_CHECK(api.lt_matrix_layout_create(&d.x, types.data, x_n ? N : K, x_n ? K : N, x.ld));
  ACCEL_CUBLAS_CHECK(api.lt_matrix_layout_create(&d.y, types.data, y_n ? K : M, y_n ? M : K, y.ld));
  ACCEL_CUBLAS_CHECK(api.lt_matrix_layout_create(&d.c, types.data, N, M, N));
  ACCEL_CUBLAS_CHECK(api.lt_matmul_preference_create(&d.preference));
  const size_t workspace = kLtWorkspaceBytes;
  ACCEL_CUBLAS_CHECK(api.lt_matmul_preference_set_attribute(d.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                            &workspace, sizeof(workspace)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t status =
      api.lt_matmul_algo_get_heuristic(h.lt, d.op, d.x, d.y, d.c, d.c, d.preference, 1, &result, &found);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  Scalars s = scalars(beta);
  ACCEL_CUBLAS_CHECK(api.lt_matmul(h.lt, d.op, s.alpha(types.scale), x.data, d.x, y.data, d.y, s.beta(types.scale),
                                   out.data_ptr(), d.c, out.data_ptr(), d.c, &result.algo, h.lt_workspace, workspace,
                                   context.stream));
  return true;
}

// out (B, M, N) += bias (N), broadcast, through the elementwise kernels.
void add_bias(const Tensor& bias, const Tensor& out) {
  kernels::add_scaled(out.device(), out, bias.expand(out.sizes()), 1.0, out);
}

// cuBLAS takes B as it is: b_use (a CPU packing hint) changes nothing here.
void matmul_kernel(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out, bool accumulate, GemmB) {
  if (out.numel() == 0) return;
  const double beta = accumulate ? 1.0 : 0.0;
  if (a.size(2) == 0) {  // empty inner dimension: the product is zero (plus bias)
    if (!accumulate) kernels::fill(out.device(), out, Scalar(0));
    if (bias.defined()) add_bias(bias, out);
    return;
  }
  if (bias.defined() && out.size(0) == 1 && out.dtype() != kFloat64 &&
      lt_gemm(a, b, bias, out, beta, CUBLASLT_EPILOGUE_BIAS)) {
    return;
  }
  gemm_batched(a, b, out, beta);
  if (bias.defined()) add_bias(bias, out);
}

void linear_gelu_kernel(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out) {
  if (out.numel() == 0) return;
  matmul_kernel(a, b, bias, out, false, GemmB::InferenceWeight);  // the bias fused where cuBLASLt can
  kernels::unary(out.device(), UnaryOp::Gelu, out, out);
}

}  // namespace

void gemm_strided_batched(const Tensor& a, const Tensor& b, const Tensor& out) { gemm_batched(a, b, out, 0.0); }

bool allow_tf32() { return tf32_allowed; }
void set_allow_tf32(bool allow) { tf32_allowed = allow; }

ACCEL_REGISTER_KERNEL(matmul, DeviceType::CUDA, matmul_kernel);
ACCEL_REGISTER_KERNEL(linear_gelu, DeviceType::CUDA, linear_gelu_kernel);

}  // namespace accel::cuda
