/// @file
/// cuBLAS and cuBLASLt, opened with dlopen the first time a CUDA GEMM needs them instead of
/// linked: loading them costs about 150 MB of resident memory before any call, which a
/// linked libaccel paid in every process, CPU-only training included. The headers are used for types and
/// enums only; every call goes through the function pointers of cublas(), resolved from the
/// sonames of the toolkit accel is compiled against (`libcublas.so.` + CUBLAS_VER_MAJOR, then
/// the unversioned name).
#pragma once

#include <cublasLt.h>
#include <cublas_api.h>

#include <initializer_list>

namespace accel::cuda {

/// The cuBLAS(Lt) functions accel calls, by their C names without the prefix.
struct CublasApi {
  // libcublas
  decltype(&::cublasCreate_v2) create;
  decltype(&::cublasSetStream_v2) set_stream;
  // cublas_api.h also declares a C++ overload taking cudaDataType as the compute type.
  cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                            const void*, const void*, cudaDataType, int, long long, const void*,
                                            cudaDataType, int, long long, const void*, void*, cudaDataType, int,
                                            long long, int, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&::cublasGetStatusString) get_status_string;
  // libcublasLt
  decltype(&::cublasLtCreate) lt_create;
  decltype(&::cublasLtMatmulDescCreate) lt_matmul_desc_create;
  decltype(&::cublasLtMatmulDescSetAttribute) lt_matmul_desc_set_attribute;
  decltype(&::cublasLtMatmulDescDestroy) lt_matmul_desc_destroy;
  decltype(&::cublasLtMatrixLayoutCreate) lt_matrix_layout_create;
  decltype(&::cublasLtMatrixLayoutDestroy) lt_matrix_layout_destroy;
  decltype(&::cublasLtMatmulPreferenceCreate) lt_matmul_preference_create;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) lt_matmul_preference_set_attribute;
  decltype(&::cublasLtMatmulPreferenceDestroy) lt_matmul_preference_destroy;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) lt_matmul_algo_get_heuristic;
  decltype(&::cublasLtMatmul) lt_matmul;
};

/// The table, loading both libraries on the first call (once per process, thread-safe).
/// Throws accel::Error naming the library, dlerror()'s text and the fix when one cannot be
/// loaded or lacks a function; every later call throws the same error.
const CublasApi& cublas();

/// dlopen (RTLD_NOW | RTLD_LOCAL) of the first of `sonames` that loads; `library` names it
/// in the error ("cuBLAS"), which lists each soname tried with dlerror()'s text.
void* open_first_library(const char* library, std::initializer_list<const char*> sonames);

}  // namespace accel::cuda
