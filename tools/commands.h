// The subcommands of the `accel` program. Each add_*_command registers its options on the
// app and remembers what to run; run_selected runs the one the user chose.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace accel::tools {

void add_inspect_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_launch_command(CLI::App& app);
void add_config_command(CLI::App& app);
void add_env_command(CLI::App& app);
void add_merge_weights_command(CLI::App& app);
void add_estimate_memory_command(CLI::App& app);

// Registry of subcommand actions, filled by the add_* functions.
void register_action(CLI::App* subcommand, std::function<int()> action);
int run_selected(CLI::App& app);

}  // namespace accel::tools
