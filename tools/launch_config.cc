// Launch settings (see launch_config.h): YAML in and out with yaml-cpp, validation, the
// `accel config` questionnaire, and the mpirun command line.
#include "tools/launch_config.h"

#include <utf8proc.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <sstream>
#include <type_traits>

#include "core/error.h"

namespace accel::tools {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kDistributedTypes = {"NO", "MULTI_CPU", "MULTI_GPU", "DEEPSPEED"};
const std::vector<std::string> kMixedPrecisions = {"no", "fp16", "bf16"};

// Keys `accelerate config` may write that have no meaning for accel.
const std::set<std::string> kIgnoredAccelerateKeys = {
    "debug", "downcast_bf16", "enable_cpu_affinity", "gpu_ids", "main_training_function", "rdzv_backend",
    "same_network", "use_mps_device", "dynamo_config", "fsdp_config", "megatron_lm_config", "ipex_config",
    "fp8_config", "parallelism_config", "commands", "command_file", "tpu_env", "tpu_name", "tpu_zone",
    "tpu_use_cluster", "tpu_use_sudo", "tpu_vm"};

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

// Whether text is UTF-8 without control characters: what a YAML file can hold and give back.
bool is_plain_text(const std::string& text) {
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
  while (left > 0) {
    utf8proc_int32_t code_point = 0;
    const utf8proc_ssize_t length = utf8proc_iterate(bytes, left, &code_point);
    if (length < 0 || code_point < 0x20 || (code_point >= 0x7f && code_point < 0xa0)) return false;
    bytes += length;
    left -= length;
  }
  return true;
}

// A host name (RFC 1123 letters, digits, '-', '.') or an IPv4/IPv6 address (digits, hex,
// '.', ':', and '%' for an IPv6 zone).
bool is_host(const std::string& text) {
  return !text.empty() && text.size() <= 253 && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == ':' || c == '%';
  });
}

// text for an error message: bytes outside printable ASCII as \xNN, at most 80 of them.
std::string printable(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < 80; ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte >= 0x20 && byte < 0x7f) {
      out += static_cast<char>(byte);
    } else {
      static const char* digits = "0123456789abcdef";
      out += std::string("\\x") + digits[byte >> 4] + digits[byte & 15];
    }
  }
  return text.size() > 80 ? out + "..." : out;
}

// node[key] converted to T; errors name the source and the key.
template <typename T>
T read_value(const YAML::Node& node, const std::string& key, const std::string& source) {
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    const char* expected = std::is_same_v<T, bool> ? "true or false" : std::is_integral_v<T> ? "an integer" : "a string";
    ACCEL_FAIL(source, ": ", key, " must be ", expected, ", got ", YAML::Dump(node));
  }
}

// A mapping key as text; YAML also allows a sequence or mapping as a key ("? [a, b]: 1"),
// which names no setting.
std::string read_key(const YAML::Node& key, const std::string& mapping, const std::string& source) {
  ACCEL_CHECK(key.IsScalar(), source, ": the keys of ", mapping, " must be setting names, got ", YAML::Dump(key));
  return key.Scalar();
}

void read_deepspeed_config(const YAML::Node& node, LaunchConfig& config, bool have_accumulation,
                           const std::string& source) {
  ACCEL_CHECK(node.IsMap(), source, ": deepspeed_config must be a mapping");
  for (const auto& entry : node) {
    const std::string key = read_key(entry.first, "deepspeed_config", source);
    if (key == "zero_stage") {
      config.zero_stage = read_value<int64_t>(entry.second, "deepspeed_config.zero_stage", source);
    } else if (key == "gradient_accumulation_steps" && !have_accumulation) {
      config.gradient_accumulation_steps =
          read_value<int64_t>(entry.second, "deepspeed_config.gradient_accumulation_steps", source);
    }
    // DeepSpeed's other settings (offload devices, zero3_init_flag, ...) have no accel meaning.
  }
}

// One question: prints it with its default, returns the trimmed answer or the default.
std::string ask(std::istream& in, std::ostream& out, const std::string& question, const std::string& fallback) {
  out << question << " [" << fallback << "]: " << std::flush;
  std::string line;
  ACCEL_CHECK(static_cast<bool>(std::getline(in, line)), "accel config: the input ended before every question was "
              "answered");
  line.erase(0, line.find_first_not_of(" \t\r"));
  line.erase(line.find_last_not_of(" \t\r") + 1);
  return line.empty() ? fallback : line;
}

// Asks until `accept` takes the answer (it returns an error message, or "" when accepted).
void ask_until(std::istream& in, std::ostream& out, const std::string& question, const std::string& fallback,
               const std::function<std::string(const std::string&)>& accept) {
  for (;;) {
    std::string problem = accept(ask(in, out, question, fallback));
    if (problem.empty()) return;
    out << "  " << problem << "\n";
  }
}

int64_t ask_integer(std::istream& in, std::ostream& out, const std::string& question, int64_t fallback,
                    int64_t min, int64_t max) {
  int64_t value = fallback;
  ask_until(in, out, question, std::to_string(fallback), [&](const std::string& answer) -> std::string {
    try {
      size_t used = 0;
      value = std::stoll(answer, &used);
      if (used == answer.size() && value >= min && value <= max) return "";
    } catch (const std::exception&) {
    }
    return "Please enter an integer from " + std::to_string(min) + " to " + std::to_string(max) + ".";
  });
  return value;
}

bool ask_yes_no(std::istream& in, std::ostream& out, const std::string& question, bool fallback) {
  bool value = fallback;
  ask_until(in, out, question + " (yes/no)", fallback ? "yes" : "no", [&](const std::string& answer) -> std::string {
    std::string lower = answer;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower == "yes" || lower == "y") value = true;
    else if (lower == "no" || lower == "n") value = false;
    else return "Please answer yes or no.";
    return "";
  });
  return value;
}

// A numbered menu; the answer is a number or a choice's text. Returns the chosen index.
size_t ask_choice(std::istream& in, std::ostream& out, const std::string& question,
                  const std::vector<std::string>& choices, size_t fallback) {
  out << question << "\n";
  for (size_t i = 0; i < choices.size(); ++i) out << "  [" << i << "] " << choices[i] << "\n";
  size_t chosen = fallback;
  ask_until(in, out, "Your choice", std::to_string(fallback), [&](const std::string& answer) -> std::string {
    for (size_t i = 0; i < choices.size(); ++i) {
      if (answer == std::to_string(i) || answer == choices[i]) {
        chosen = i;
        return "";
      }
    }
    return "Please enter a number from 0 to " + std::to_string(choices.size() - 1) + ".";
  });
  return chosen;
}

// Single quotes unless the word is plainly safe for a POSIX shell.
std::string shell_quote(const std::string& word) {
  if (!word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                              "_-./=:,+@%") == std::string::npos) {
    return word;
  }
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace

std::string default_config_path() {
  if (const char* home = std::getenv("ACCEL_HOME"); home != nullptr && *home != '\0') {
    return (fs::path(home) / "default_config.yaml").string();
  }
  fs::path cache;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    cache = xdg;
  } else {
    const char* home = std::getenv("HOME");
    ACCEL_CHECK(home != nullptr && *home != '\0', "cannot find the default config: none of ACCEL_HOME, "
                "XDG_CACHE_HOME and HOME is set; pass --config_file");
    cache = fs::path(home) / ".cache";
  }
  return (cache / "accel" / "default_config.yaml").string();
}

LaunchConfig parse_config(const std::string& yaml, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    ACCEL_FAIL(source, ": not valid YAML: ", e.what());
  }
  LaunchConfig config;
  if (root.IsNull()) return config;
  ACCEL_CHECK(root.IsMap(), source, ": expected a mapping of settings (key: value), got ", YAML::Dump(root));
  const bool have_accumulation = static_cast<bool>(std::as_const(root)["gradient_accumulation_steps"]);
  for (const auto& entry : root) {
    const std::string key = read_key(entry.first, "the config", source);
    const YAML::Node& value = entry.second;
    if (key == "compute_environment") {
      config.compute_environment = read_value<std::string>(value, key, source);
    } else if (key == "distributed_type") {
      config.distributed_type = read_value<std::string>(value, key, source);
    } else if (key == "mixed_precision") {
      config.mixed_precision = read_value<std::string>(value, key, source);
    } else if (key == "num_processes") {
      config.num_processes = read_value<int64_t>(value, key, source);
    } else if (key == "num_machines") {
      config.num_machines = read_value<int64_t>(value, key, source);
    } else if (key == "machine_rank") {
      config.machine_rank = read_value<int64_t>(value, key, source);
    } else if (key == "main_process_ip") {
      config.main_process_ip = value.IsNull() ? "" : read_value<std::string>(value, key, source);
    } else if (key == "main_process_port") {
      config.main_process_port = value.IsNull() ? 0 : read_value<int64_t>(value, key, source);
    } else if (key == "gradient_accumulation_steps") {
      config.gradient_accumulation_steps = read_value<int64_t>(value, key, source);
    } else if (key == "use_cpu") {
      config.use_cpu = read_value<bool>(value, key, source);
    } else if (key == "num_cpu_threads_per_process") {
      config.num_cpu_threads_per_process = read_value<int64_t>(value, key, source);
    } else if (key == "deepspeed_config") {
      read_deepspeed_config(value, config, have_accumulation, source);
    } else if (key == "mpirun_config") {
      ACCEL_CHECK(value.IsMap(), source, ": mpirun_config must be a mapping");
      if (value["mpirun_hostfile"] && !value["mpirun_hostfile"].IsNull()) {
        config.hostfile = read_value<std::string>(value["mpirun_hostfile"], "mpirun_config.mpirun_hostfile", source);
      }
    } else if (!kIgnoredAccelerateKeys.count(key)) {
      ACCEL_FAIL(source, ": unknown key \"", key, "\" (accel reads compute_environment, distributed_type, "
                 "mixed_precision, num_processes, num_machines, machine_rank, main_process_ip, main_process_port, "
                 "gradient_accumulation_steps, use_cpu, num_cpu_threads_per_process, deepspeed_config.zero_stage, "
                 "mpirun_config.mpirun_hostfile)");
    }
  }
  return config;
}

LaunchConfig load_config(const std::string& path) {
  std::ifstream file(path);
  ACCEL_CHECK(file.good(), "cannot read the config file ", path, " (create one with `accel config` or "
              "`accel config default`, or pass --config_file)");
  std::stringstream text;
  text << file.rdbuf();
  LaunchConfig config = parse_config(text.str(), path);
  try {
    validate(config);
  } catch (const Error& e) {
    ACCEL_FAIL(path, ": ", e.what());
  }
  return config;
}

std::string config_to_yaml(const LaunchConfig& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "compute_environment" << YAML::Value << config.compute_environment;
  out << YAML::Key << "distributed_type" << YAML::Value << config.distributed_type;
  // Quoted: a bare `no` is a boolean to YAML 1.1 readers such as PyYAML.
  out << YAML::Key << "mixed_precision" << YAML::Value << YAML::SingleQuoted << config.mixed_precision;
  out << YAML::Key << "num_processes" << YAML::Value << config.num_processes;
  out << YAML::Key << "num_machines" << YAML::Value << config.num_machines;
  out << YAML::Key << "machine_rank" << YAML::Value << config.machine_rank;
  if (!config.main_process_ip.empty()) out << YAML::Key << "main_process_ip" << YAML::Value << config.main_process_ip;
  if (config.main_process_port != 0) {
    out << YAML::Key << "main_process_port" << YAML::Value << config.main_process_port;
  }
  out << YAML::Key << "use_cpu" << YAML::Value << config.use_cpu;
  // accel's own keys only when set, so that a default config stays readable by Accelerate.
  if (config.gradient_accumulation_steps != 1) {
    out << YAML::Key << "gradient_accumulation_steps" << YAML::Value << config.gradient_accumulation_steps;
  }
  if (config.num_cpu_threads_per_process != 0) {
    out << YAML::Key << "num_cpu_threads_per_process" << YAML::Value << config.num_cpu_threads_per_process;
  }
  if (config.zero_stage != 0) {
    out << YAML::Key << "deepspeed_config" << YAML::Value << YAML::BeginMap << YAML::Key << "zero_stage"
        << YAML::Value << config.zero_stage << YAML::EndMap;
  }
  if (!config.hostfile.empty()) {
    out << YAML::Key << "mpirun_config" << YAML::Value << YAML::BeginMap << YAML::Key << "mpirun_hostfile"
        << YAML::Value << config.hostfile << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

void save_config(const LaunchConfig& config, const std::string& path) {
  fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  std::ofstream file(path);
  file << config_to_yaml(config);
  ACCEL_CHECK(file.good(), "cannot write the config file ", path);
}

void validate(const LaunchConfig& c) {
  ACCEL_CHECK(c.compute_environment == "LOCAL_MACHINE", "compute_environment must be LOCAL_MACHINE, got \"",
              c.compute_environment, "\" (accel does not launch on cloud services)");
  ACCEL_CHECK(contains(kDistributedTypes, c.distributed_type), "distributed_type must be one of ",
              join(kDistributedTypes, ", "), ", got \"", c.distributed_type, "\"");
  ACCEL_CHECK(contains(kMixedPrecisions, c.mixed_precision), "mixed_precision must be no, fp16 or bf16, got \"",
              c.mixed_precision, "\"");
  ACCEL_CHECK(c.num_processes >= 1, "num_processes must be at least 1, got ", c.num_processes);
  ACCEL_CHECK(c.num_machines >= 1, "num_machines must be at least 1, got ", c.num_machines);
  ACCEL_CHECK(c.num_processes >= c.num_machines, "num_processes counts the processes of all machines together: ",
              c.num_processes, " cannot cover ", c.num_machines, " machines");
  ACCEL_CHECK(c.machine_rank >= 0 && c.machine_rank < c.num_machines, "machine_rank must be from 0 to ",
              c.num_machines - 1, ", got ", c.machine_rank);
  ACCEL_CHECK(c.main_process_port >= 0 && c.main_process_port <= 65535, "main_process_port must be from 1 to 65535, "
              "got ", c.main_process_port);
  ACCEL_CHECK(c.main_process_ip.empty() || is_host(c.main_process_ip), "main_process_ip must be an IP address or a "
              "host name (letters, digits, '-', '.', ':'), got \"", printable(c.main_process_ip), "\"");
  ACCEL_CHECK(is_plain_text(c.hostfile), "mpirun_config.mpirun_hostfile must be a path in UTF-8 without control "
              "characters, got \"", printable(c.hostfile), "\"");
  ACCEL_CHECK(c.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be at least 1, got ",
              c.gradient_accumulation_steps);
  ACCEL_CHECK(c.zero_stage >= 0 && c.zero_stage <= 3, "zero_stage must be 0, 1, 2 or 3, got ", c.zero_stage);
  ACCEL_CHECK(c.num_cpu_threads_per_process >= 0, "num_cpu_threads_per_process must be at least 1 (or 0 for the "
              "default), got ", c.num_cpu_threads_per_process);
}

LaunchConfig ask_config(std::istream& in, std::ostream& out) {
  LaunchConfig c;
  out << "In which compute environment are you running? This machine\n";
  const size_t machine = ask_choice(in, out, "Which type of machine are you using?",
                                    {"No distributed training", "multi-CPU", "multi-GPU"}, 0);
  c.distributed_type = machine == 0 ? "NO" : machine == 1 ? "MULTI_CPU" : "MULTI_GPU";
  if (machine != 0) {
    c.num_machines = ask_integer(in, out, "How many different machines will you use (use more than 1 for "
                                 "multi-node training)?", 1, 1, 1 << 20);
    if (c.num_machines > 1) {
      c.machine_rank = ask_integer(in, out, "What is the rank of this machine?", 0, 0, c.num_machines - 1);
      c.main_process_ip = ask(in, out, "What is the IP address of the machine that will host the main process?", "");
      c.main_process_port = ask_integer(in, out, "What is the port you will use to communicate with the main "
                                        "process?", 29500, 1, 65535);
      ask_until(in, out, "Which hostfile lists the machines (for mpirun)?", "", [&](const std::string& answer) {
        c.hostfile = answer;
        return answer.empty() ? std::string("A multi-machine launch needs a hostfile.") : std::string();
      });
    }
    c.num_processes = ask_integer(in, out, "How many processes should be used for distributed training (all "
                                  "machines together)?", std::max<int64_t>(2, c.num_machines), c.num_machines, 1 << 20);
    if (ask_yes_no(in, out, "Do you want to shard optimizer state, gradients and weights (ZeRO)?", false)) {
      c.zero_stage = ask_integer(in, out, "What should be your ZeRO stage?", 2, 1, 3);
    }
  }
  c.gradient_accumulation_steps = ask_integer(in, out, "How many gradient accumulation steps?", 1, 1, 1 << 20);
  c.use_cpu = machine == 1 || ask_yes_no(in, out, "Do you want to run your training on CPU only (even if a GPU is "
                                         "available)?", false);
  c.num_cpu_threads_per_process = ask_integer(in, out, "How many CPU threads per process (0: share this machine's "
                                              "cores among its processes)?", 0, 0, 1 << 16);
  c.mixed_precision = kMixedPrecisions[ask_choice(in, out, "Do you wish to use mixed precision?", kMixedPrecisions, 0)];
  validate(c);
  return c;
}

LaunchCommand build_launch_command(const LaunchConfig& config, const std::vector<std::string>& program,
                                   const LaunchHost& host) {
  validate(config);
  ACCEL_CHECK(!program.empty(), "accel launch: no program to run (usage: accel launch [options] PROGRAM [ARGS...])");
  std::vector<std::pair<std::string, std::string>> environment = {
      {"ACCEL_MIXED_PRECISION", config.mixed_precision},
      {"ACCEL_GRADIENT_ACCUMULATION_STEPS", std::to_string(config.gradient_accumulation_steps)},
      {"ACCEL_ZERO_STAGE", std::to_string(config.zero_stage)},
      {"ACCEL_USE_CPU", config.use_cpu || config.distributed_type == "MULTI_CPU" ? "true" : "false"},
  };
  const int64_t local_processes = (config.num_processes + config.num_machines - 1) / config.num_machines;
  int64_t threads = config.num_cpu_threads_per_process;
  if (threads == 0 && local_processes > 1) threads = std::max<int64_t>(1, host.hardware_threads / local_processes);
  if (threads > 0) environment.emplace_back("OMP_NUM_THREADS", std::to_string(threads));
  if (!config.main_process_ip.empty()) environment.emplace_back("MASTER_ADDR", config.main_process_ip);
  if (config.main_process_port != 0) environment.emplace_back("MASTER_PORT", std::to_string(config.main_process_port));

  LaunchCommand command;
  if (config.num_processes == 1 && config.num_machines == 1 && config.hostfile.empty()) {
    command.argv = program;
    command.environment = std::move(environment);
    return command;
  }
  ACCEL_CHECK(config.num_machines == 1 || !config.hostfile.empty(), "accel launch: ", config.num_machines,
              " machines need --hostfile listing them: mpirun starts every process from the main machine");
  ACCEL_CHECK(config.machine_rank == 0, "accel launch: run it on the main machine only (machine_rank 0, here ",
              config.machine_rank, "); mpirun starts the processes of the other machines itself");
  ACCEL_CHECK(config.hostfile.empty() || fs::exists(config.hostfile), "accel launch: hostfile ", config.hostfile,
              " does not exist");
  command.argv = {"mpirun"};
  if (host.is_root) command.argv.push_back("--allow-run-as-root");
  for (const char* flag : {"--oversubscribe", "--bind-to", "none", "-np"}) command.argv.push_back(flag);
  command.argv.push_back(std::to_string(config.num_processes));
  if (!config.hostfile.empty()) {
    command.argv.push_back("--hostfile");
    command.argv.push_back(config.hostfile);
  }
  for (const auto& [name, value] : environment) {
    command.argv.push_back("-x");
    command.argv.push_back(name + "=" + value);
  }
  command.argv.insert(command.argv.end(), program.begin(), program.end());
  return command;
}

std::string shell_line(const LaunchCommand& command) {
  std::vector<std::string> words;
  for (const auto& [name, value] : command.environment) words.push_back(name + "=" + shell_quote(value));
  for (const std::string& word : command.argv) words.push_back(shell_quote(word));
  return join(words, " ");
}

}  // namespace accel::tools
