// Subcommand dispatch for the `accel` program.
#include "tools/commands.h"

#include <map>

namespace accel::tools {

namespace {
std::map<CLI::App*, std::function<int()>>& actions() {
  static std::map<CLI::App*, std::function<int()>> table;
  return table;
}
}  // namespace

void register_action(CLI::App* subcommand, std::function<int()> action) { actions()[subcommand] = std::move(action); }

int run_selected(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands()) {
    auto it = actions().find(sub);
    if (it != actions().end()) return it->second();
  }
  return 1;
}

}  // namespace accel::tools
