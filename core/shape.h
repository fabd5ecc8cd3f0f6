/// @file
/// Shape arithmetic shared by ops and kernels: broadcasting, contiguous strides, dim wrapping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace accel {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
/// NumPy broadcasting; `op` names the caller in the error.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
/// Maps a possibly negative dim into [0, ndim); the error names op and the valid range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
std::string shape_str(const Shape& shape);  ///< "[2, 3]"

}  // namespace accel
