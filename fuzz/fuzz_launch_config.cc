// Fuzz target: arbitrary bytes as an Accelerate YAML config (what `accel launch --config_file`
// and `accel config` read).
// Feeds the input to tools::parse_config and, for an accepted config, validate(),
// config_to_yaml() + parse_config() (the round trip must give the same YAML back), and
// build_launch_command() for a one-word program (which may refuse with an accel::Error too).
// A bug: anything but an accel::Error (crash, ASan/UBSan report, a YAML::Exception or other
// exception escaping, stack exhaustion on deep nesting, hang), or a round trip that differs.
#include <optional>

#include "fuzz/fuzz_util.h"
#include "tools/launch_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace tools = accel::tools;
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  std::optional<tools::LaunchConfig> config;
  accel::fuzz::expect_only_accel_errors([&] {
    tools::LaunchConfig parsed = tools::parse_config(yaml, "fuzz input");
    tools::validate(parsed);
    config = parsed;
  });
  if (!config) return 0;
  const std::string written = tools::config_to_yaml(*config);
  const tools::LaunchConfig again = tools::parse_config(written, "round trip");  // must not throw
  FUZZ_ASSERT(tools::config_to_yaml(again) == written);
  tools::LaunchHost host;
  host.hardware_threads = 4;
  // Refusals are clean errors too (several machines and no hostfile, say).
  accel::fuzz::expect_only_accel_errors([&] {
    const tools::LaunchCommand command = tools::build_launch_command(*config, {"program"}, host);
    FUZZ_ASSERT(!command.argv.empty());
    FUZZ_ASSERT(!tools::shell_line(command).empty());
  });
  return 0;
}
