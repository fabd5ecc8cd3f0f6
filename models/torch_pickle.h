/// @file
/// Reading state dicts that torch.save wrote (pytorch_model.bin, PyTorch >= 1.6): a ZIP
/// archive of uncompressed entries, `<archive>/data.pkl` (the pickled dict) and one
/// `<archive>/data/<key>` entry per storage, with `<archive>/byteorder` and `version` beside.
///
/// What it is not: a general unpickler. Pickle is a program; a general unpickler runs any
/// Python callable the file names (os.system included). This one knows only the opcodes
/// torch.save emits for a dict of tensors and only the globals that rebuild tensors
/// (torch._utils._rebuild_tensor_v2 / _rebuild_parameter, the torch.*Storage types,
/// collections.OrderedDict); anything else is refused with an error naming the opcode or the
/// global, before anything is built from it. Nor does it read the legacy pre-1.6 format,
/// compressed archives, or storages of dtypes accel lacks (uint8, int8, int16, complex).
///
/// Tensors come out contiguous, in their saved dtype, on the CPU. Storages are memory-mapped
/// copy-on-write, so a contiguous tensor views the file without a copy and writing to it
/// changes only this process's memory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "core/tensor.h"

namespace accel::models {

/// Every tensor of the state dict in the torch.save file at path, by name.
std::map<std::string, Tensor> load_torch_state_dict(const std::string& path);

/// The unpickler alone, for pickle bytes already in memory. load_storage(key) returns the
/// bytes of the archive entry `data/<key>` (called once per distinct key). name_for_errors
/// starts every error message.
using StorageLoader = std::function<Storage(const std::string& key)>;
std::map<std::string, Tensor> unpickle_state_dict(const uint8_t* data, size_t size, const StorageLoader& load_storage,
                                                  const std::string& name_for_errors);

}  // namespace accel::models
