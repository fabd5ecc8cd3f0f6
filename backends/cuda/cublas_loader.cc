// Loads cuBLAS and cuBLASLt on first use (cublas_loader.h) and resolves the functions
// accel calls. libcublasLt is opened first: libcublas needs it, and then finds it already
// loaded under its soname instead of searching for it again.
#include "backends/cuda/cublas_loader.h"

#include <dlfcn.h>

#include <string>

#include "core/error.h"

namespace accel::cuda {

namespace {

#define ACCEL_STRINGIFY_VALUE(x) ACCEL_STRINGIFY(x)
#define ACCEL_STRINGIFY(x) #x
#define ACCEL_CUBLAS_MAJOR ACCEL_STRINGIFY_VALUE(CUBLAS_VER_MAJOR)
// The major version of the headers compiled against: its libraries carry it in their soname.
constexpr const char* kCublasSoname = "libcublas.so." ACCEL_CUBLAS_MAJOR;
constexpr const char* kCublasLtSoname = "libcublasLt.so." ACCEL_CUBLAS_MAJOR;
constexpr const char* kFix = "CUDA GEMMs need cuBLAS from the CUDA " ACCEL_CUBLAS_MAJOR
                             " toolkit accel was built against: install it (the toolkit's libcublas package) and "
                             "put the directory holding libcublas.so." ACCEL_CUBLAS_MAJOR
                             " on LD_LIBRARY_PATH or in the ldconfig cache";

// dlerror()'s text for the last dlopen/dlsym failure (it may have none).
std::string dlerror_text() {
  const char* text = dlerror();
  return text != nullptr ? text : "(no dlerror text)";
}

template <typename Function>
void resolve(void* library, const char* soname, const char* symbol, Function& function) {
  dlerror();  // clear a stale error, so the one read below is dlsym's
  void* address = dlsym(library, symbol);
  ACCEL_CHECK(address != nullptr, "cuBLAS: ", soname, " has no function ", symbol, " (dlerror: ", dlerror_text(),
              "); it is older than the headers accel was built with. ", kFix);
  function = reinterpret_cast<Function>(address);
}

CublasApi load_cublas() {
  void* lt = open_first_library("cuBLASLt", {kCublasLtSoname, "libcublasLt.so"});
  void* blas = open_first_library("cuBLAS", {kCublasSoname, "libcublas.so"});
  CublasApi api{};
  resolve(blas, kCublasSoname, "cublasCreate_v2", api.create);
  resolve(blas, kCublasSoname, "cublasSetStream_v2", api.set_stream);
  resolve(blas, kCublasSoname, "cublasGemmStridedBatchedEx", api.gemm_strided_batched_ex);
  resolve(blas, kCublasSoname, "cublasGetStatusString", api.get_status_string);
  resolve(lt, kCublasLtSoname, "cublasLtCreate", api.lt_create);
  resolve(lt, kCublasLtSoname, "cublasLtMatmulDescCreate", api.lt_matmul_desc_create);
  resolve(lt, kCublasLtSoname, "cublasLtMatmulDescSetAttribute", api.lt_matmul_desc_set_attribute);
  resolve(lt, kCublasLtSoname, "cublasLtMatmulDescDestroy", api.lt_matmul_desc_destroy);
  resolve(lt, kCublasLtSoname, "cublasLtMatrixLayoutCreate", api.lt_matrix_layout_create);
  resolve(lt, kCublasLtSoname, "cublasLtMatrixLayoutDestroy", api.lt_matrix_layout_destroy);
  resolve(lt, kCublasLtSoname, "cublasLtMatmulPreferenceCreate", api.lt_matmul_preference_create);
  resolve(lt, kCublasLtSoname, "cublasLtMatmulPreferenceSetAttribute", api.lt_matmul_preference_set_attribute);
  resolve(lt, kCublasLtSoname, "cublasLtMatmulPreferenceDestroy", api.lt_matmul_preference_destroy);
  resolve(lt, kCublasLtSoname, "cublasLtMatmulAlgoGetHeuristic", api.lt_matmul_algo_get_heuristic);
  resolve(lt, kCublasLtSoname, "cublasLtMatmul", api.lt_matmul);
  return api;
}

// The table, or the error that loading it gave.
struct LoadResult {
  CublasApi api{};
  std::string error;
};

LoadResult load_once() {
  try {
    return {load_cublas(), ""};
  } catch (const Error& e) {
    return {CublasApi{}, e.what()};
  }
}

}  // namespace

void* open_first_library(const char* library, std::initializer_list<const char*> sonames) {
  std::string tried;
  for (const char* soname : sonames) {
    if (void* handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL)) return handle;
    tried += detail::concat("\n  ", soname, ": ", dlerror_text());
  }
  ACCEL_FAIL(library, ": could not load the library; tried", tried, "\n", kFix);
}

const CublasApi& cublas() {
  // A function-local static is initialized once, by the first caller, while any others wait
  // (C++11 [stmt.dcl]): the call_once of the loader, and a failure is kept, not retried.
  static const LoadResult loaded = load_once();
  ACCEL_CHECK(loaded.error.empty(), loaded.error);
  return loaded.api;
}

}  // namespace accel::cuda
