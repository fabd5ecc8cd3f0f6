/// @file
/// Error checking for every CUDA runtime and cuBLAS(Lt) call: the failing expression, file,
/// line and the library's own message end up in the accel::Error. ACCEL_CUDA_CHECK_LAUNCH
/// follows each kernel launch, so a bad launch configuration names the launching line.
/// cuBLAS's message comes from the library loaded on first use (cublas_loader.h): a status
/// exists only once a call through it has returned one.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/cublas_loader.h"
#include "core/error.h"

#define ACCEL_CUDA_CHECK(expr)                                                               \
  do {                                                                                      \
    cudaError_t accel_cuda_status = (expr);                                                 \
    if (accel_cuda_status != cudaSuccess) [[unlikely]] {                                    \
      ACCEL_FAIL("CUDA error at ", __FILE__, ":", __LINE__, " in ", #expr, ": ",            \
                 cudaGetErrorString(accel_cuda_status), " (", int(accel_cuda_status), ")");  \
    }                                                                                       \
  } while (0)

/// After a <<<...>>> launch: launch-configuration errors surface here, with this line.
#define ACCEL_CUDA_CHECK_LAUNCH() ACCEL_CUDA_CHECK(cudaGetLastError())

#define ACCEL_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                           \
    cublasStatus_t accel_cublas_status = (expr);                                                 \
    if (accel_cublas_status != CUBLAS_STATUS_SUCCESS) [[unlikely]] {                             \
      ACCEL_FAIL("cuBLAS error at ", __FILE__, ":", __LINE__, " in ", #expr, ": ",               \
                 ::accel::cuda::cublas().get_status_string(accel_cublas_status), " (",           \
                 int(accel_cublas_status), ")");                                                 \
    }                                                                                            \
  } while (0)
