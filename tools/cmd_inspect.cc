// `accel inspect FILE.safetensors`: lists tensor names, dtypes, shapes and the metadata,
// reading only the header.
#include <iostream>

#include "core/safetensors.h"
#include "tools/commands.h"

namespace accel::tools {

void add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "List the tensors of a .safetensors file");
  auto path = std::make_shared<std::string>();
  cmd->add_option("file", *path, "a .safetensors file")->required();
  register_action(cmd, [path] {
    std::map<std::string, std::string> metadata;
    std::vector<safetensors::TensorInfo> infos = safetensors::read_header(*path, &metadata);
    uint64_t total_bytes = 0, total_elements = 0;
    for (const auto& info : infos) {
      std::cout << info.name << "\t" << dtype_name(info.dtype) << "\t" << shape_str(info.shape) << "\n";
      total_bytes += info.end - info.begin;
      total_elements += static_cast<uint64_t>(shape_numel(info.shape));
    }
    for (const auto& [key, value] : metadata) std::cout << "metadata\t" << key << "\t" << value << "\n";
    std::cerr << infos.size() << " tensors, " << total_elements << " elements, " << total_bytes << " bytes\n";
    return 0;
  });
}

}  // namespace accel::tools
