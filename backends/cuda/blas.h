/// @file
/// Settings of the CUDA GEMMs. float32 GEMMs run in full fp32 unless TF32 is allowed (env
/// ACCEL_CUDA_TF32=1 at startup, or set_allow_tf32): TF32 tensor cores are ~8x faster on
/// Hopper at ~1e-3 relative error, PyTorch's allow_tf32 trade.
#pragma once

namespace accel::cuda {

bool allow_tf32();
void set_allow_tf32(bool allow);

}  // namespace accel::cuda
