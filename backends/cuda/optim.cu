// CUDA optimizer kernels: one fused AdamW pass per parameter tensor (PyTorch semantics, the
// order of operations of backends/cpu/optim.cc), over fp32 masters or any floating dtype, and
// the multi-tensor form after PyTorch's multi_tensor_apply: the tensors are cut into chunks of
// 65536 elements, and a table passed by value as the kernel argument (pointers of up to 36
// tensor sets, up to 320 (tensor, chunk) entries, about 3 KB of the 4 KB a kernel argument may
// take) gives each block its chunk. A launch goes out whenever the table is full, so a BERT's
// ~200 parameter tensors take a handful of launches instead of ~200. Both kernels run
// adamw_element, so their results are equal bit for bit.
#include <cmath>

#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/math.cuh"
#include "core/kernels.h"

namespace accel::cuda {

namespace {

template <typename T>
struct AdamWConstants {
  compute_t<T> beta1, beta2, eps, decay, step_size, sqrt_bias2;
};

template <typename T>
AdamWConstants<T> adamw_constants(const kernels::AdamWHyper& h) {
  using M = compute_t<T>;
  return {M(h.beta1), M(h.beta2), M(h.eps), M(1.0 - h.lr * h.weight_decay),
          M(h.lr / (1.0 - std::pow(h.beta1, double(h.step)))), M(std::sqrt(1.0 - std::pow(h.beta2, double(h.step))))};
}

// AdamW on element i of one tensor set, in place.
template <typename T>
__device__ __forceinline__ void adamw_element(T* p, const T* g, T* m, T* v, int64_t i, const AdamWConstants<T>& k) {
  using M = compute_t<T>;
  const M gi = load_compute(g[i]);
  const M mi = k.beta1 * load_compute(m[i]) + (M(1) - k.beta1) * gi;
  const M vi = k.beta2 * load_compute(v[i]) + (M(1) - k.beta2) * gi * gi;
  const M denom = dsqrt(vi) / k.sqrt_bias2 + k.eps;
  p[i] = store_compute<T>(load_compute(p[i]) * k.decay - k.step_size * mi / denom);
  m[i] = store_compute<T>(mi);
  v[i] = store_compute<T>(vi);
}

template <typename T>
__global__ void adamw_kernel_device(T* p, const T* g, T* m, T* v, int64_t n, AdamWConstants<T> k) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    adamw_element(p, g, m, v, i, k);
  }
}

void adamw_kernel(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                  const kernels::AdamWHyper& h) {
  const int64_t n = param.numel();
  if (n == 0) return;
  visit_floating_device(param.dtype(), "adamw", [&]<typename T>() {
    KernelContext context(param);
    adamw_kernel_device<T><<<grid_for(n), kBlockSize, 0, context.stream>>>(
        device_ptr<T>(param), device_ptr<const T>(grad), device_ptr<T>(exp_avg), device_ptr<T>(exp_avg_sq), n,
        adamw_constants<T>(h));
    ACCEL_CUDA_CHECK_LAUNCH();
  });
}

// ---- multi-tensor ----

inline constexpr int64_t kChunkElements = 65536;
inline constexpr int kMaxTensorSets = 36;
inline constexpr int kMaxChunks = 320;
inline constexpr int kMultiTensorThreads = 512;

// What one launch covers: tensor sets 0..count-1 (a set's pointers and element count) and, for
// block b, the set and the chunk of it that the block updates.
template <typename T>
struct ChunkTable {
  T* params[kMaxTensorSets];
  const T* grads[kMaxTensorSets];
  T* exp_avgs[kMaxTensorSets];
  T* exp_avg_sqs[kMaxTensorSets];
  int64_t numels[kMaxTensorSets];
  uint8_t block_set[kMaxChunks];     // index into the arrays above
  int32_t block_chunk[kMaxChunks];   // chunk of that set: elements [chunk * 65536, +65536)
};
static_assert(sizeof(ChunkTable<double>) <= 4096, "a kernel argument may take at most 4 KB");

template <typename T>
__global__ void adamw_multi_tensor_kernel_device(ChunkTable<T> table, AdamWConstants<T> k) {
  const int set = table.block_set[blockIdx.x];
  const int64_t begin = int64_t(table.block_chunk[blockIdx.x]) * kChunkElements;
  const int64_t end = min(begin + kChunkElements, table.numels[set]);
  T* p = table.params[set];
  const T* g = table.grads[set];
  T* m = table.exp_avgs[set];
  T* v = table.exp_avg_sqs[set];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) adamw_element(p, g, m, v, i, k);
}

void adamw_multi_tensor_kernel(const std::vector<kernels::AdamWTensors>& tensors, const kernels::AdamWHyper& h) {
  if (tensors.empty()) return;
  visit_floating_device(tensors.front().param.dtype(), "adamw_multi_tensor", [&]<typename T>() {
    KernelContext context(tensors.front().param);
    const AdamWConstants<T> k = adamw_constants<T>(h);
    ChunkTable<T> table{};
    int sets = 0, blocks = 0;  // filled entries of the table
    auto launch = [&] {
      adamw_multi_tensor_kernel_device<T><<<blocks, kMultiTensorThreads, 0, context.stream>>>(table, k);
      ACCEL_CUDA_CHECK_LAUNCH();
      blocks = 0;
    };
    for (const kernels::AdamWTensors& set : tensors) {
      const int64_t n = set.param.numel();
      if (n == 0) continue;
      table.params[sets] = device_ptr<T>(set.param);
      table.grads[sets] = device_ptr<const T>(set.grad);
      table.exp_avgs[sets] = device_ptr<T>(set.exp_avg);
      table.exp_avg_sqs[sets] = device_ptr<T>(set.exp_avg_sq);
      table.numels[sets] = n;
      ++sets;
      const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        table.block_set[blocks] = static_cast<uint8_t>(sets - 1);
        table.block_chunk[blocks] = static_cast<int32_t>(chunk);
        ++blocks;
        const bool last_chunk = chunk + 1 == chunks;
        if (blocks == kMaxChunks || (last_chunk && sets == kMaxTensorSets)) {
          launch();
          if (last_chunk) {
            sets = 0;
          } else {  // this set continues in the next launch: it becomes entry 0
            table.params[0] = table.params[sets - 1];
            table.grads[0] = table.grads[sets - 1];
            table.exp_avgs[0] = table.exp_avgs[sets - 1];
            table.exp_avg_sqs[0] = table.exp_avg_sqs[sets - 1];
            table.numels[0] = table.numels[sets - 1];
            sets = 1;
          }
        }
      }
    }
    if (blocks > 0) launch();
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(adamw, DeviceType::CUDA, adamw_kernel);
ACCEL_REGISTER_KERNEL(adamw_multi_tensor, DeviceType::CUDA, adamw_multi_tensor_kernel);

}  // namespace accel::cuda
