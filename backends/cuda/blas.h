/// @file
/// The CUDA GEMMs other CUDA kernels call, and their settings. float32 GEMMs run in full fp32
/// unless TF32 is allowed (env ACCEL_CUDA_TF32=1 at startup, or set_allow_tf32): TF32 tensor
/// cores are ~8x faster on Hopper at ~1e-3 relative error, PyTorch's allow_tf32 trade.
#pragma once

#include "core/tensor.h"

namespace accel::cuda {

bool allow_tf32();
void set_allow_tf32(bool allow);

/// out (B, M, N) = a (B, M, K) @ b (B, K, N) in one cublasGemmStridedBatchedEx on the current
/// stream of out's device, for kernels that write GEMM results into views (fused attention).
/// a and b as the matmul slot takes them (transposed views, batch stride 0); out with unit
/// stride along N and any row and batch strides, e.g. the H heads of one batch entry of a
/// (B, T, H, D) buffer seen as (H, T, D). K must be at least 1.
void gemm_strided_batched(const Tensor& a, const Tensor& b, const Tensor& out);

}  // namespace accel::cuda
