// `accel config`: writes the config file `accel launch` reads by default.
//   accel config                  asks `accelerate config`'s questions (needs a terminal)
//   accel config default          writes a one-process default without asking
// Both take --config_file to write elsewhere than the default path.
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "tools/commands.h"
#include "tools/launch_config.h"

namespace accel::tools {

namespace {

struct ConfigArgs {
  std::string config_file;
  std::string mixed_precision = "no";
};

int run_config(const ConfigArgs& args, bool write_default) {
  const std::string path = args.config_file.empty() ? default_config_path() : args.config_file;
  LaunchConfig config;
  if (write_default) {
    ACCEL_CHECK(!std::filesystem::exists(path), "accel config default: ", path, " already exists and is left as "
                "it is; run `accel config` to change it, or pass --config_file to write another file");
    config.mixed_precision = args.mixed_precision;
  } else {
    ACCEL_CHECK(::isatty(STDIN_FILENO), "accel config asks questions and needs a terminal; without one, run "
                "`accel config default` (and edit the file), or pass your own file to `accel launch --config_file`");
    config = ask_config(std::cin, std::cout);
  }
  save_config(config, path);
  std::cout << "accel configuration saved at " << path << std::endl;
  return 0;
}

}  // namespace

void add_config_command(CLI::App& app) {
  auto args = std::make_shared<ConfigArgs>();
  CLI::App* config = app.add_subcommand("config", "Create the config file that `accel launch` reads");
  config->add_option("--config_file", args->config_file, "Where to write (default: " + default_config_path() + ")");
  CLI::App* defaults = config->add_subcommand("default", "Write a default config without asking");
  defaults->add_option("--config_file", args->config_file, "Where to write (default: " + default_config_path() + ")");
  defaults->add_option("--mixed_precision", args->mixed_precision, "no, fp16 or bf16")
      ->check(CLI::IsMember({"no", "fp16", "bf16"}));
  register_action(config, [args, defaults] { return run_config(*args, defaults->parsed()); });
}

}  // namespace accel::tools
