/// @file
/// safetensors I/O (https://github.com/huggingface/safetensors): an 8-byte little-endian
/// header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
/// "__metadata__": {string: string}}, then the raw little-endian tensor bytes.
/// Reading memory-maps the file and validates the header before any tensor is touched:
/// header within the file, offsets in bounds and non-overlapping, shape x dtype size equal to
/// the byte range. Writing is atomic (temp file, fsync, rename).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace accel::safetensors {

struct File {
  std::map<std::string, Tensor> tensors;  ///< CPU tensors viewing the mapped file (read-only use)
  std::map<std::string, std::string> metadata;
};

/// Tensors returned share one read-only mapping (PROT_READ) that lives as long as any of
/// them. They are read-only views: writing into them faults, so clone() before mutating.
/// (A tensor whose offset in the file is not a multiple of its itemsize is copied instead.)
File load(const std::string& path);
/// Parses an in-memory buffer (used by the loader and by fuzzing); the tensors copy out.
File load_from_buffer(const uint8_t* data, size_t size, const std::string& name_for_errors);
/// Names with tensors (any device, any layout; copied to CPU contiguous as needed).
void save(const std::string& path, const std::map<std::string, Tensor>& tensors,
          const std::map<std::string, std::string>& metadata = {});
/// The header only (name -> dtype, shape) without mapping the data: for `accel inspect`.
struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};
std::vector<TensorInfo> read_header(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

}  // namespace accel::safetensors
