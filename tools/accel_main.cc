// `accel`: the command-line front end. Each subcommand lives in its own tools/cmd_*.cc and
// registers itself here.
#include <CLI/CLI.hpp>
#include <iostream>

#include "core/error.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"accel: a C++ training engine (tensors, autograd, BERT, Accelerate-style training)", "accel"};
  app.require_subcommand(1);
  accel::tools::add_inspect_command(app);
  accel::tools::add_tokenize_command(app);
  accel::tools::add_launch_command(app);
  accel::tools::add_config_command(app);
  accel::tools::add_env_command(app);
  accel::tools::add_merge_weights_command(app);
  accel::tools::add_estimate_memory_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return accel::tools::run_selected(app);
  } catch (const accel::Error& e) {
    std::cerr << "accel: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "accel: error: " << e.what() << "\n";
    return 1;
  }
}
