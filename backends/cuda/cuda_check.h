/// @file
/// Error checking for every CUDA runtime call: the failing expression, file, line and the
/// runtime's own message end up in the accel::Error.
#pragma once

#include <cuda_runtime_api.h>

#include "core/error.h"

#define ACCEL_CUDA_CHECK(expr)                                                               \
  do {                                                                                      \
    cudaError_t accel_cuda_status = (expr);                                                 \
    if (accel_cuda_status != cudaSuccess) [[unlikely]] {                                    \
      ACCEL_FAIL("CUDA error at ", __FILE__, ":", __LINE__, " in ", #expr, ": ",            \
                 cudaGetErrorString(accel_cuda_status), " (", int(accel_cuda_status), ")");  \
    }                                                                                       \
  } while (0)
