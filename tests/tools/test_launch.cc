// tests/tools/test_launch.cc: `accel launch`, `accel config` and `accel env`. The config
// functions directly (Accelerate's YAML keys, round trip, bad values, the questionnaire, the
// mpirun command line), then the accel binary as a user runs it: flags overriding a config
// file (--dry_run), a real two-process launch of a shell command that prints its rank and
// ACCEL_* environment, and bad flags failing with a message.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "accelerate/device_choice.h"
#include "core/error.h"
#include "tools/launch_config.h"
#include "tests/test_util.h"

namespace accel::tools {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kAccel = std::string(ACCEL_BIN_DIR) + "/accel";

// A config as `accelerate config` writes it for two CPU processes with DeepSpeed ZeRO-2.
const char* kAccelerateConfig = R"(compute_environment: LOCAL_MACHINE
debug: false
deepspeed_config:
  gradient_accumulation_steps: 4
  offload_optimizer_device: none
  zero3_init_flag: false
  zero_stage: 2
distributed_type: DEEPSPEED
downcast_bf16: 'no'
machine_rank: 0
main_process_ip: null
main_process_port: null
main_training_function: main
mixed_precision: bf16
mpirun_config:
  mpirun_hostfile: /etc/hosts
num_machines: 1
num_processes: 2
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: true
)";

using Result = accel::testing::CommandResult;

Result run(const std::string& command) { return accel::testing::run_command(command); }

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an accel::Error";
  return "";
}

class LaunchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("accel_test_launch_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // The default config lives here, never in the user's home.
    ::setenv("ACCEL_HOME", dir_.c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("ACCEL_HOME");
    fs::remove_all(dir_);
  }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

TEST_F(LaunchTest, ReadsAccelerateConfigFiles) {
  LaunchConfig c = parse_config(kAccelerateConfig, "accelerate.yaml");
  EXPECT_EQ(c.distributed_type, "DEEPSPEED");
  EXPECT_EQ(c.mixed_precision, "bf16");
  EXPECT_EQ(c.num_processes, 2);
  EXPECT_EQ(c.num_machines, 1);
  EXPECT_EQ(c.main_process_ip, "");
  EXPECT_EQ(c.main_process_port, 0);
  EXPECT_EQ(c.zero_stage, 2);
  EXPECT_EQ(c.gradient_accumulation_steps, 4);
  EXPECT_EQ(c.hostfile, "/etc/hosts");
  EXPECT_TRUE(c.use_cpu);
  EXPECT_NO_THROW(validate(c));
  // A bare `no` stays the string "no"; an empty file is the defaults.
  EXPECT_EQ(parse_config("mixed_precision: no\n", "x").mixed_precision, "no");
  EXPECT_EQ(parse_config("", "x").num_processes, 1);
}

TEST_F(LaunchTest, ConfigRoundTripsThroughYaml) {
  LaunchConfig c;
  c.distributed_type = "MULTI_CPU";
  c.mixed_precision = "fp16";
  c.num_processes = 8;
  c.num_machines = 2;
  c.machine_rank = 1;
  c.main_process_ip = "10.0.0.1";
  c.main_process_port = 29501;
  c.hostfile = "hosts.txt";
  c.gradient_accumulation_steps = 3;
  c.zero_stage = 1;
  c.use_cpu = true;
  c.num_cpu_threads_per_process = 4;
  std::string path = (dir_ / "sub" / "config.yaml").string();
  save_config(c, path);
  LaunchConfig back = load_config(path);
  EXPECT_EQ(config_to_yaml(back), config_to_yaml(c));
  EXPECT_THAT(config_to_yaml(LaunchConfig{}), HasSubstr("mixed_precision: 'no'"));
}

TEST_F(LaunchTest, BadConfigValuesAreRejectedWithTheirKey) {
  EXPECT_THAT(error_of([] { parse_config("num_processes: 2\nnum_gpus: 2\n", "c.yaml"); }),
              HasSubstr("c.yaml: unknown key \"num_gpus\""));
  EXPECT_THAT(error_of([] { parse_config("num_processes: two\n", "c.yaml"); }),
              HasSubstr("c.yaml: num_processes must be an integer, got two"));
  EXPECT_THAT(error_of([] { parse_config("use_cpu: maybe\n", "c.yaml"); }), HasSubstr("use_cpu must be true or false"));
  EXPECT_THAT(error_of([] { parse_config("- a\n- b\n", "c.yaml"); }), HasSubstr("expected a mapping"));
  EXPECT_THAT(error_of([] { parse_config("a: [1, 2\n", "c.yaml"); }), HasSubstr("c.yaml: not valid YAML"));
  // A mapping or sequence as a key (found by fuzz/fuzz_launch_config) names no setting.
  EXPECT_THAT(error_of([] { parse_config("num_processes: 4\n? mixed_precision: 'no'\n", "c.yaml"); }),
              HasSubstr("c.yaml: the keys of the config must be setting names, got mixed_precision: no"));
  EXPECT_THAT(error_of([] { parse_config("deepspeed_config:\n  ? [zero_stage]\n  : 2\n", "c.yaml"); }),
              HasSubstr("c.yaml: the keys of deepspeed_config must be setting names"));
  EXPECT_THAT(error_of([&] { load_config(write("fp8.yaml", "mixed_precision: fp8\n")); }),
              HasSubstr("fp8.yaml: mixed_precision must be no, fp16 or bf16, got \"fp8\""));
  EXPECT_THAT(error_of([&] { load_config(write("z.yaml", "deepspeed_config:\n  zero_stage: 5\n")); }),
              HasSubstr("zero_stage must be 0, 1, 2 or 3, got 5"));
  EXPECT_THAT(error_of([&] { load_config(write("r.yaml", "num_machines: 2\nnum_processes: 2\nmachine_rank: 2\n")); }),
              HasSubstr("machine_rank must be from 0 to 1, got 2"));
  EXPECT_THAT(error_of([&] { load_config(write("t.yaml", "distributed_type: FSDP\n")); }),
              HasSubstr("distributed_type must be one of NO, MULTI_CPU, MULTI_GPU, DEEPSPEED"));
  EXPECT_THAT(error_of([&] { load_config((dir_ / "missing.yaml").string()); }), HasSubstr("accel config default"));
  // Bytes YAML cannot carry back (found by fuzz/fuzz_launch_config: invalid UTF-8 in the
  // address came back changed from config_to_yaml), and addresses no resolver takes.
  EXPECT_THAT(error_of([&] { load_config(write("ip.yaml", "main_process_ip: host\x8f\x8f\n")); }),
              HasSubstr("main_process_ip must be an IP address or a host name (letters, digits, '-', '.', ':'), "
                        "got \"host\\x8f\\x8f\""));
  EXPECT_THAT(error_of([&] { load_config(write("ip2.yaml", "main_process_ip: 'node 1'\n")); }),
              HasSubstr("got \"node 1\""));
  EXPECT_THAT(error_of([&] { load_config(write("h.yaml", "mpirun_config:\n  mpirun_hostfile: \"a\\tb\"\n")); }),
              HasSubstr("mpirun_config.mpirun_hostfile must be a path in UTF-8 without control characters, "
                        "got \"a\\x09b\""));
  for (const char* host : {"10.0.0.1", "node-1.cluster.local", "fe80::1%eth0"}) {
    LaunchConfig config;
    config.main_process_ip = host;
    EXPECT_NO_THROW(validate(config)) << host;
  }
}

TEST_F(LaunchTest, DefaultConfigPathFollowsTheEnvironment) {
  EXPECT_EQ(default_config_path(), (dir_ / "default_config.yaml").string());
  ::unsetenv("ACCEL_HOME");
  ::setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(default_config_path(), "/tmp/xdg/accel/default_config.yaml");
  ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(default_config_path(), std::string(std::getenv("HOME")) + "/.cache/accel/default_config.yaml");
}

TEST_F(LaunchTest, BuildsTheMpirunCommandLine) {
  LaunchConfig c;
  c.num_processes = 4;
  c.mixed_precision = "bf16";
  c.gradient_accumulation_steps = 2;
  LaunchCommand command = build_launch_command(c, {"./train", "--epochs", "3"}, {.is_root = true, .hardware_threads = 8});
  EXPECT_EQ(shell_line(command),
            "mpirun --allow-run-as-root --oversubscribe --bind-to none -np 4 -x ACCEL_MIXED_PRECISION=bf16 "
            "-x ACCEL_GRADIENT_ACCUMULATION_STEPS=2 -x ACCEL_ZERO_STAGE=0 -x ACCEL_USE_CPU=false "
            "-x OMP_NUM_THREADS=2 ./train --epochs 3");
  EXPECT_TRUE(command.environment.empty());

  LaunchConfig single;
  LaunchCommand direct = build_launch_command(single, {"./train", "it's"}, {.is_root = false, .hardware_threads = 8});
  EXPECT_EQ(shell_line(direct), "ACCEL_MIXED_PRECISION=no ACCEL_GRADIENT_ACCUMULATION_STEPS=1 ACCEL_ZERO_STAGE=0 "
                                "ACCEL_USE_CPU=false ./train 'it'\\''s'");

  c.num_machines = 2;
  EXPECT_THAT(error_of([&] { build_launch_command(c, {"./train"}, {}); }), HasSubstr("2 machines need --hostfile"));
  c.hostfile = write("hosts", "node1 slots=2\nnode2 slots=2\n");
  c.machine_rank = 1;
  EXPECT_THAT(error_of([&] { build_launch_command(c, {"./train"}, {}); }), HasSubstr("main machine only"));
  c.machine_rank = 0;
  c.main_process_ip = "10.0.0.1";
  c.main_process_port = 29500;
  c.num_cpu_threads_per_process = 3;
  std::string line = shell_line(build_launch_command(c, {"./train"}, {.is_root = false, .hardware_threads = 8}));
  EXPECT_THAT(line, HasSubstr("--hostfile " + c.hostfile));
  EXPECT_THAT(line, HasSubstr("-x OMP_NUM_THREADS=3 -x MASTER_ADDR=10.0.0.1 -x MASTER_PORT=29500"));
  EXPECT_THAT(line, Not(HasSubstr("--allow-run-as-root")));
  EXPECT_THAT(error_of([&] { build_launch_command(c, {}, {}); }), HasSubstr("no program to run"));
}

TEST_F(LaunchTest, QuestionnaireAsksLikeAccelerateConfig) {
  // multi-CPU; 1 machine; a bad answer, then 3 processes; no ZeRO; accumulation 2; default
  // threads; bf16.
  std::istringstream answers("1\n\nmany\n3\nno\n2\n\nbf16\n");
  std::ostringstream questions;
  LaunchConfig c = ask_config(answers, questions);
  EXPECT_EQ(c.distributed_type, "MULTI_CPU");
  EXPECT_EQ(c.num_processes, 3);
  EXPECT_EQ(c.gradient_accumulation_steps, 2);
  EXPECT_TRUE(c.use_cpu);
  EXPECT_EQ(c.mixed_precision, "bf16");
  EXPECT_THAT(questions.str(), HasSubstr("How many processes should be used for distributed training"));
  EXPECT_THAT(questions.str(), HasSubstr("Please enter an integer"));
  std::istringstream cut_short("0\n");
  std::ostringstream ignored;
  EXPECT_THAT(error_of([&] { ask_config(cut_short, ignored); }), HasSubstr("the input ended"));
}

TEST_F(LaunchTest, CommandLineFlagsOverrideTheConfigFile) {
  std::string config = write("c.yaml", "num_processes: 3\nmixed_precision: fp16\ngradient_accumulation_steps: 4\n");
  Result r = run(kAccel + " launch --config_file " + config + " --num_processes 2 --mixed_precision bf16 --dry_run "
                 "./train --lr 1e-4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("-np 2 "));
  EXPECT_THAT(r.output, HasSubstr("ACCEL_MIXED_PRECISION=bf16"));
  EXPECT_THAT(r.output, HasSubstr("ACCEL_GRADIENT_ACCUMULATION_STEPS=4"));  // from the file
  EXPECT_THAT(r.output, HasSubstr("./train --lr 1e-4"));
  // Without --config_file, the default config is used.
  ASSERT_EQ(run(kAccel + " config default --mixed_precision fp16").exit_code, 0);
  EXPECT_THAT(run(kAccel + " launch --dry_run ./train").output, HasSubstr("ACCEL_MIXED_PRECISION=fp16"));
}

TEST_F(LaunchTest, LaunchesTwoProcessesWithTheSettings) {
  Result r = run(kAccel + " launch --num_processes 2 --gradient_accumulation_steps 3 --cpu sh -c "
                 "'echo rank=$OMPI_COMM_WORLD_RANK of $OMPI_COMM_WORLD_SIZE steps=$ACCEL_GRADIENT_ACCUMULATION_STEPS "
                 "cpu=$ACCEL_USE_CPU'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("rank=0 of 2 steps=3 cpu=true"));
  EXPECT_THAT(r.output, HasSubstr("rank=1 of 2 steps=3 cpu=true"));
  // The program's exit status comes back.
  EXPECT_NE(run(kAccel + " launch --num_processes 2 sh -c 'exit 3'").exit_code, 0);
}

TEST_F(LaunchTest, BadFlagsFailWithAMessage) {
  Result r = run(kAccel + " launch --zero_stage 7 ./train");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--zero_stage"));
  r = run(kAccel + " launch --mixed_precision fp8 ./train");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("fp8"));
  r = run(kAccel + " launch --num_processes 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("no program to run"));
  r = run(kAccel + " launch --config_file " + write("bad.yaml", "num_processes: 0\n") + " ./train");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("num_processes must be at least 1"));
}

TEST_F(LaunchTest, ConfigCommandWritesTheDefaultAndNeedsATerminalToAsk) {
  Result r = run(kAccel + " config default");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(load_config((dir_ / "default_config.yaml").string()).num_processes, 1);
  r = run(kAccel + " config default");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("already exists"));
  r = run(kAccel + " config");  // stdin is /dev/null
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("accel config default"));
}

TEST_F(LaunchTest, EnvPrintsVersionsAndTheConfig) {
  ASSERT_EQ(run(kAccel + " config default --mixed_precision bf16").exit_code, 0);
  Result r = run(kAccel + " env");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("- accel version: "));
  EXPECT_THAT(r.output, HasSubstr("- CPU features: "));
  EXPECT_THAT(r.output, HasSubstr("- MPI: "));
  EXPECT_THAT(r.output, HasSubstr("- CUDA"));
  EXPECT_THAT(r.output, HasSubstr("mixed_precision: 'bf16'"));
  const std::string picked = visible_cuda_devices() > 0 ? "- Accelerator device: cuda:0 (local rank 0"
                                                        : "- Accelerator device: cpu (no CUDA device visible)";
  EXPECT_THAT(r.output, HasSubstr(picked));
  // --cpu's variable wins over any GPU.
  Result cpu = run("ACCEL_USE_CPU=1 " + kAccel + " env");
  EXPECT_THAT(cpu.output, HasSubstr("- Accelerator device: cpu (ACCEL_USE_CPU is set)"));
}

}  // namespace
}  // namespace accel::tools
