// The settings of `accel launch` and `accel config`: Accelerate-compatible YAML config files
// (the keys `accelerate config` writes: a config made for `accelerate launch` works here),
// validation with messages naming the bad key, the interactive questionnaire, and the
// command a launch runs: `mpirun ... PROGRAM ARGS` with the settings passed as ACCEL_*
// environment variables (what AcceleratorOptions::from_env reads).
//
// It does not start processes itself (cmd_launch.cc execs the command) and knows nothing of
// training: a launched program may be any executable.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace accel::tools {

struct LaunchConfig {
  std::string compute_environment = "LOCAL_MACHINE";
  std::string distributed_type = "NO";  // NO, MULTI_CPU, MULTI_GPU, DEEPSPEED
  std::string mixed_precision = "no";   // no, fp16, bf16
  int64_t num_processes = 1;            // over all machines together
  int64_t num_machines = 1;
  int64_t machine_rank = 0;
  std::string main_process_ip;          // "" = not set
  int64_t main_process_port = 0;        // 0 = not set
  std::string hostfile;                 // mpirun_config.mpirun_hostfile
  int64_t gradient_accumulation_steps = 1;
  int64_t zero_stage = 0;               // deepspeed_config.zero_stage
  bool use_cpu = false;
  int64_t num_cpu_threads_per_process = 0;  // 0 = the machine's threads shared among its processes
};

// $ACCEL_HOME/default_config.yaml, else $XDG_CACHE_HOME/accel/default_config.yaml, else
// ~/.cache/accel/default_config.yaml.
std::string default_config_path();

// Reads YAML text; `source` names it in errors. Unknown keys are errors; Accelerate keys
// that accel has no use for (tpu_*, fsdp_config, ...) are accepted and ignored.
LaunchConfig parse_config(const std::string& yaml, const std::string& source);
LaunchConfig load_config(const std::string& path);
std::string config_to_yaml(const LaunchConfig& config);
void save_config(const LaunchConfig& config, const std::string& path);  // creates parent dirs

// Throws an accel::Error naming the first value out of range.
void validate(const LaunchConfig& config);

// `accel config`: asks `accelerate config`'s questions on `out`, reads answers from `in`
// (an empty answer takes the default shown in brackets); returns a validated config.
LaunchConfig ask_config(std::istream& in, std::ostream& out);

// What a launch runs. One process on this machine runs the program directly; anything
// else goes through mpirun, which carries the environment to every rank with -x.
struct LaunchCommand {
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> environment;  // set before exec
};
struct LaunchHost {
  bool is_root = false;       // mpirun refuses root without --allow-run-as-root
  int hardware_threads = 1;   // this machine's, for the OMP_NUM_THREADS default
};
LaunchCommand build_launch_command(const LaunchConfig& config, const std::vector<std::string>& program,
                                   const LaunchHost& host);

// The command as one shell line (quoted where needed), environment first: what --dry_run prints.
std::string shell_line(const LaunchCommand& command);

}  // namespace accel::tools
