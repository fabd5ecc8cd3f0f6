// Printing in LibTorch's format: 1-D tensors as a column, matrices as rows, higher ranks as
// "(i,j,.,.) =" slices, one common width, integers without decimals, then the type line
// "[ CPUFloatType{2,3} ]".
#include <cmath>
#include <cstdio>
#include <ostream>
#include <sstream>

#include "core/ops.h"

namespace accel {

namespace {

struct Format {
  bool integral = true;
  bool scientific = false;
  int width = 1;
};

std::string format_value(double v, const Format& f) {
  char buf[64];
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (f.integral) std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (f.scientific) std::snprintf(buf, sizeof buf, "%.4e", v);
  else std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

Format choose_format(const std::vector<double>& values) {
  Format f;
  double max_abs = 0, min_abs = INFINITY;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    if (v != std::floor(v)) f.integral = false;
    max_abs = std::max(max_abs, std::abs(v));
    if (v != 0) min_abs = std::min(min_abs, std::abs(v));
  }
  if (!f.integral) f.scientific = max_abs >= 1e5 || (min_abs < 1e-4 && min_abs != INFINITY);
  // LibTorch's width: the widest magnitude plus one column for a sign.
  for (double v : values) f.width = std::max<int>(f.width, static_cast<int>(format_value(std::abs(v), f).size()) + 1);
  return f;
}

void print_matrix(std::ostream& out, const std::vector<double>& values, int64_t offset, int64_t rows, int64_t cols,
                  const Format& f) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      std::string s = format_value(values[offset + r * cols + c], f);
      out << (c ? " " : "") << std::string(f.width - std::min<size_t>(s.size(), f.width), ' ') << s;
    }
    out << "\n";
  }
}

}  // namespace

std::string Tensor::str() const {
  std::ostringstream out;
  out << *this;
  return out.str();
}

std::ostream& operator<<(std::ostream& out, const Tensor& tensor) {
  if (!tensor.defined()) return out << "[ Tensor (undefined) ]";
  std::vector<double> values = tensor.to_vector<double>();
  Format f = choose_format(values);
  const Shape& sizes = tensor.sizes();
  if (tensor.dim() == 0) {
    out << format_value(values[0], f) << "\n";
  } else if (tensor.dim() == 1) {
    print_matrix(out, values, 0, sizes[0], 1, f);
  } else if (tensor.numel() > 0) {
    const int64_t rows = sizes[tensor.dim() - 2], cols = sizes[tensor.dim() - 1];
    const int64_t matrices = tensor.numel() / (rows * cols);
    for (int64_t m = 0; m < matrices; ++m) {
      if (tensor.dim() > 2) {
        // Leading indices of this slice, 1-based as LibTorch prints them.
        Shape index(tensor.dim() - 2);
        int64_t rem = m;
        for (int64_t d = tensor.dim() - 3; d >= 0; --d) {
          index[d] = rem % sizes[d];
          rem /= sizes[d];
        }
        out << (m ? "\n" : "") << "(";
        for (int64_t i : index) out << i + 1 << ",";
        out << ".,.) = \n";
      }
      print_matrix(out, values, m * rows * cols, rows, cols, f);
    }
  }
  out << "[ " << (tensor.is_cuda() ? "CUDA" : "CPU") << dtype_info(tensor.dtype()).torch_type_name << "Type{";
  for (int64_t d = 0; d < tensor.dim(); ++d) out << (d ? "," : "") << sizes[d];
  return out << "} ]";
}

}  // namespace accel
