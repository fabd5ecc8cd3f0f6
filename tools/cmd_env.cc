// `accel env`: the facts a bug report needs, as `accelerate env` prints them: accel's
// version and build, compiler, platform, CPU model and SIMD features, threads, the MPI
// library, CUDA and NCCL (where built with CUDA), GPUs, the device an Accelerator would pick,
// and the launch config file.
#include <omp.h>
#include <sys/utsname.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "accelerate/accelerator.h"
#include "accelerate/device_choice.h"
#include "distributed/mpi.h"
#include "distributed/rendezvous.h"
#include "tools/commands.h"
#include "tools/launch_config.h"

#ifdef ACCEL_WITH_CUDA
#include <cuda_runtime.h>

#include "distributed/nccl.h"
#endif

namespace accel::tools {

namespace {

std::string compiler() {
#if defined(__clang__)
  return std::string("Clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::string platform() {
  utsname name{};
  if (::uname(&name) != 0) return "unknown";
  return std::string(name.sysname) + " " + name.release + " " + name.machine;
}

// "model name" and the SIMD flags kernels care about, from /proc/cpuinfo.
std::pair<std::string, std::string> cpu_model_and_features() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown", features;
  std::set<std::string> flags;
  while (std::getline(cpuinfo, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && model == "unknown") model = value;
    if (key == "flags" && flags.empty()) {
      std::istringstream words(value);
      for (std::string word; words >> word;) flags.insert(word);
    }
  }
  for (const char* flag : {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                           "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8"}) {
    if (flags.count(flag)) features += (features.empty() ? "" : " ") + std::string(flag);
  }
  return {model, features.empty() ? "none of sse4_2/avx/avx2/fma/avx512*/amx*" : features};
}

void print_cuda(std::ostream& out) {
#ifdef ACCEL_WITH_CUDA
  int runtime = 0, driver = 0, count = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  out << "- CUDA runtime: " << runtime / 1000 << "." << runtime % 1000 / 10 << " (driver supports " << driver / 1000
      << "." << driver % 1000 / 10 << ")\n";
  out << "- NCCL: " << distributed::nccl_version() << "\n";
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  out << "- GPUs: " << count << "\n";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp properties{};
    cudaGetDeviceProperties(&properties, i);
    out << "    cuda:" << i << " " << properties.name << ", " << properties.totalGlobalMem / (1 << 20) << " MiB, compute "
        << properties.major << "." << properties.minor << "\n";
  }
#else
  out << "- CUDA: not built (configure where nvcc exists, without -DACCEL_CUDA=OFF)\n";
  out << "- NCCL: not built\n";
  out << "- GPUs: not visible to a CPU-only build\n";
#endif
}

// What an Accelerator started here would run on (accelerate/device_choice.h), and why.
void print_accelerator_device(std::ostream& out) {
  try {
    const bool use_cpu = AcceleratorOptions::from_env().cpu;
    const int visible = use_cpu ? 0 : visible_cuda_devices();
    const int local_rank = distributed::local_rank_from_environment(0);
    const Device device = accelerator_device(use_cpu, visible, local_rank);
    out << "- Accelerator device: " << device;
    if (use_cpu) out << " (ACCEL_USE_CPU is set)\n";
    else if (device.is_cpu()) out << " (no CUDA device visible)\n";
    else out << " (local rank " << local_rank << ", " << visible << " visible CUDA device(s))\n";
  } catch (const Error& e) {
    out << "- Accelerator device: none, it would fail: " << e.what() << "\n";
  }
}

int run_env(const std::string& config_file) {
  std::ostream& out = std::cout;
  auto [model, features] = cpu_model_and_features();
  const char* omp_env = std::getenv("OMP_NUM_THREADS");
  out << "Copy-and-paste the text below in your bug report.\n\n";
  out << "- accel version: " << ACCEL_VERSION << " (" << ACCEL_BUILD_TYPE << " build)\n";
  out << "- Platform: " << platform() << "\n";
  out << "- Compiler: " << compiler() << "\n";
  out << "- CPU: " << model << "\n";
  out << "- CPU features: " << features << "\n";
  out << "- Hardware threads: " << std::thread::hardware_concurrency() << "\n";
  out << "- OpenMP threads: " << omp_get_max_threads() << " (OMP_NUM_THREADS " << (omp_env ? omp_env : "unset")
      << ")\n";
  out << "- MPI: " << distributed::mpi_library_version() << "\n";
  print_cuda(out);
  print_accelerator_device(out);
  const std::string path = config_file.empty() ? default_config_path() : config_file;
  std::ifstream file(path);
  if (!file.good()) {
    out << "- Config file: " << path << " (not found)\n";
    return 0;
  }
  out << "- Config file: " << path << "\n";
  for (std::string line; std::getline(file, line);) out << "    " << line << "\n";
  return 0;
}

}  // namespace

void add_env_command(CLI::App& app) {
  auto config_file = std::make_shared<std::string>();
  CLI::App* env = app.add_subcommand("env", "Print versions, hardware and the launch config (for bug reports)");
  env->add_option("--config_file", *config_file, "Config file to show (default: " + default_config_path() + ")");
  register_action(env, [config_file] { return run_env(*config_file); });
}

}  // namespace accel::tools
