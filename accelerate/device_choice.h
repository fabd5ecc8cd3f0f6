/// @file
/// Which device an Accelerator runs on, and making it current. The rule is a pure function
/// (accelerator_device) so that it is tested on machines without a GPU; this is the one file
/// of accelerate/ that talks to the CUDA runtime (through backends/cuda/stream.h, CUDA builds
/// only). It does not choose the process group: Accelerator's constructor does, by the device.
#pragma once

#include "core/device.h"

namespace accel {

/// CUDA devices this process can use: 0 in a build without CUDA, and where no GPU or driver
/// is visible (never an error).
int visible_cuda_devices();

/// The Accelerator's device, as Hugging Face Accelerate picks it:
///   - the CPU when use_cpu (options.cpu, ACCEL_USE_CPU, `accel launch --cpu`) or when
///     cuda_devices is 0;
///   - otherwise cuda:local_rank, one GPU per process of a node.
/// A local rank without a GPU of its own (local_rank >= cuda_devices) is an error, not
/// local_rank % cuda_devices: NCCL refuses two ranks on one GPU, and two processes sharing one
/// would each get half its memory without being told. Throws on a negative local rank too.
Device accelerator_device(bool use_cpu, int cuda_devices, int local_rank);

/// Makes a CUDA `device` the calling thread's current device for good (cudaSetDevice), so
/// that what the program allocates without naming a device lands there; nothing for the CPU.
void make_device_current(Device device);

}  // namespace accel
