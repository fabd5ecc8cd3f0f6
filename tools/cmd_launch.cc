// `accel launch`: runs a training program on N processes through mpirun, as
// `accelerate launch` does through torchrun:
//   accel launch --num_processes 4 --mixed_precision bf16 ./build/bin/accel-finetune --task mrpc ...
// Settings come from the config file (--config_file, else the default one if it exists),
// then the command-line flags override them; the program reads them from ACCEL_*
// environment variables. --dry_run prints the command instead of running it.
//
// It replaces itself with mpirun (exec), so signals and the exit status are mpirun's.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include "core/error.h"
#include "tools/commands.h"
#include "tools/launch_config.h"

namespace accel::tools {

namespace {

struct LaunchArgs {
  std::string config_file;
  LaunchConfig flags;  // the flags' values; only those the user gave override the config
  bool cpu = false;
  bool dry_run = false;
};

// The config file's settings (or the defaults), overridden by each flag the user gave.
LaunchConfig resolve_config(const LaunchArgs& args, CLI::App& launch) {
  LaunchConfig config;
  if (!args.config_file.empty()) {
    config = load_config(args.config_file);
  } else if (std::filesystem::exists(default_config_path())) {
    config = load_config(default_config_path());
  }
  auto given = [&](const char* name) { return launch.get_option(name)->count() > 0; };
  const LaunchConfig& f = args.flags;
  if (given("--num_processes")) config.num_processes = f.num_processes;
  if (given("--num_machines")) config.num_machines = f.num_machines;
  if (given("--machine_rank")) config.machine_rank = f.machine_rank;
  if (given("--main_process_ip")) config.main_process_ip = f.main_process_ip;
  if (given("--main_process_port")) config.main_process_port = f.main_process_port;
  if (given("--hostfile")) config.hostfile = f.hostfile;
  if (given("--mixed_precision")) config.mixed_precision = f.mixed_precision;
  if (given("--zero_stage")) config.zero_stage = f.zero_stage;
  if (given("--gradient_accumulation_steps")) config.gradient_accumulation_steps = f.gradient_accumulation_steps;
  if (given("--num_cpu_threads_per_process")) config.num_cpu_threads_per_process = f.num_cpu_threads_per_process;
  if (args.cpu) config.use_cpu = true;
  if (config.num_processes > 1 && config.distributed_type == "NO") {
    config.distributed_type = config.use_cpu ? "MULTI_CPU" : "MULTI_GPU";
  }
  return config;
}

int run_launch(const LaunchArgs& args, CLI::App& launch) {
  LaunchConfig config = resolve_config(args, launch);
  const unsigned threads = std::thread::hardware_concurrency();
  LaunchCommand command = build_launch_command(config, launch.remaining(),
                                               {::geteuid() == 0, static_cast<int>(threads == 0 ? 1 : threads)});
  if (args.dry_run) {
    std::cout << shell_line(command) << std::endl;
    return 0;
  }
  for (const auto& [name, value] : command.environment) ::setenv(name.c_str(), value.c_str(), 1);
  std::vector<char*> argv;
  for (std::string& word : command.argv) argv.push_back(word.data());
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  ACCEL_FAIL("accel launch: cannot run ", command.argv[0], ": ", std::strerror(errno),
             command.argv[0] == "mpirun" ? " (is Open MPI installed and on PATH?)" : "");
}

}  // namespace

void add_launch_command(CLI::App& app) {
  auto args = std::make_shared<LaunchArgs>();
  CLI::App* launch = app.add_subcommand("launch", "Run a training program on several processes (through mpirun)");
  launch->prefix_command();  // everything from PROGRAM on belongs to the program
  launch->footer("Usage: accel launch [options] PROGRAM [ARGS...]\n"
                 "Flags override the config file; the program sees them as ACCEL_* environment variables.");
  launch->add_option("--config_file", args->config_file, "Config file (default: " + default_config_path() + ")")
      ->check(CLI::ExistingFile);
  LaunchConfig& f = args->flags;
  launch->add_option("--num_processes", f.num_processes, "Processes in all (over all machines)")
      ->check(CLI::PositiveNumber);
  launch->add_option("--num_machines", f.num_machines, "Machines (needs --hostfile when above 1)")
      ->check(CLI::PositiveNumber);
  launch->add_option("--machine_rank", f.machine_rank, "Rank of this machine (0: the main one)")
      ->check(CLI::NonNegativeNumber);
  launch->add_option("--main_process_ip", f.main_process_ip, "IP of the main machine (MASTER_ADDR)");
  launch->add_option("--main_process_port", f.main_process_port, "Port of the main process (MASTER_PORT)")
      ->check(CLI::Range(1, 65535));
  launch->add_option("--hostfile", f.hostfile, "mpirun hostfile listing the machines")->check(CLI::ExistingFile);
  launch->add_option("--mixed_precision", f.mixed_precision, "no, fp16 or bf16")
      ->check(CLI::IsMember({"no", "fp16", "bf16"}));
  launch->add_option("--zero_stage", f.zero_stage, "ZeRO stage 0-3")->check(CLI::Range(0, 3));
  launch->add_option("--gradient_accumulation_steps", f.gradient_accumulation_steps, "Micro-batches per optimizer step")
      ->check(CLI::PositiveNumber);
  launch->add_flag("--cpu", args->cpu, "Train on the CPU even where a GPU exists");
  launch->add_option("--num_cpu_threads_per_process", f.num_cpu_threads_per_process,
                     "OMP_NUM_THREADS of each process (default: this machine's threads / its processes)")
      ->check(CLI::PositiveNumber);
  launch->add_flag("--dry_run", args->dry_run, "Print the command instead of running it");
  register_action(launch, [args, launch] { return run_launch(*args, *launch); });
}

}  // namespace accel::tools
