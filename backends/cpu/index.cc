// CPU indexing kernels: index_select / index_add along one dim (embedding forward and
// backward), gather / scatter_add (losses). Tensors arrive contiguous; index bounds were
// checked by the op. index_add parallelizes over the trailing elements so that repeated
// indices (the same token twice in a batch) never race.
#include <cstring>

#include "core/kernels.h"
#include "core/parallel.h"

namespace accel::cpu {

namespace {

struct Geometry {
  int64_t outer = 1, inner = 1;
};
Geometry around(const Tensor& t, int64_t dim) {
  Geometry g;
  for (int64_t d = 0; d < dim; ++d) g.outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) g.inner *= t.size(d);
  return g;
}

template <typename I>
const I* index_data(const Tensor& index) { return index.data_ptr<I>(); }

void index_select_kernel(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  Geometry g = around(x, dim);
  const int64_t D = x.size(dim), L = index.numel();
  const int64_t row_bytes = g.inner * x.element_size();
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  visit_index(index.dtype(), "index_select", "cpu", [&]<typename I>() {
    const I* idx = index_data<I>(index);
    parallel_for(g.outer * L, std::max<int64_t>(1, 65536 / std::max<int64_t>(row_bytes, 1)),
                 [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        int64_t o = r / L, l = r % L;
        std::memcpy(dst + r * row_bytes, src + (o * D + static_cast<int64_t>(idx[l])) * row_bytes, row_bytes);
      }
    });
  });
}

void index_add_kernel(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
  Geometry g = around(out, dim);
  const int64_t D = out.size(dim), L = index.numel();
  visit_numeric(out.dtype(), "index_add", "cpu", [&]<typename T>() {
    visit_index(index.dtype(), "index_add", "cpu", [&]<typename I>() {
      T* po = out.data_ptr<T>();
      const T* ps = source.data_ptr<T>();
      const I* idx = index_data<I>(index);
      parallel_for(g.inner, 256, [&](int64_t c_begin, int64_t c_end) {
        for (int64_t o = 0; o < g.outer; ++o) {
          for (int64_t l = 0; l < L; ++l) {
            T* row = po + (o * D + static_cast<int64_t>(idx[l])) * g.inner;
            const T* srow = ps + (o * L + l) * g.inner;
            for (int64_t c = c_begin; c < c_end; ++c) {
              row[c] = T(opmath_t<T>(row[c]) + opmath_t<T>(srow[c]));
            }
          }
        }
      });
    });
  });
}

// Offset of element `flat` of a contiguous tensor of `sizes` in a tensor of `strides`, with
// the coordinate along `dim` replaced by `replacement`.
inline int64_t remap(int64_t flat, const Shape& sizes, const Shape& strides, int64_t dim, int64_t replacement) {
  int64_t offset = 0;
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
    int64_t coord = flat % sizes[d];
    flat /= sizes[d];
    offset += (d == dim ? replacement : coord) * strides[d];
  }
  return offset;
}

void gather_kernel(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  visit_all(x.dtype(), "gather", "cpu", [&]<typename T>() {
    visit_index(index.dtype(), "gather", "cpu", [&]<typename I>() {
      const T* px = x.data_ptr<T>();
      const I* idx = index_data<I>(index);
      T* po = out.data_ptr<T>();
      parallel_for(index.numel(), 16384, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          po[k] = px[remap(k, index.sizes(), x.strides(), dim, static_cast<int64_t>(idx[k]))];
        }
      });
    });
  });
}

void scatter_add_kernel(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
  visit_numeric(out.dtype(), "scatter_add", "cpu", [&]<typename T>() {
    visit_index(index.dtype(), "scatter_add", "cpu", [&]<typename I>() {
      T* po = out.data_ptr<T>();
      const I* idx = index_data<I>(index);
      const T* ps = source.data_ptr<T>();
      Shape source_strides = source.strides();
      for (int64_t k = 0; k < index.numel(); ++k) {
        int64_t target = remap(k, index.sizes(), out.strides(), dim, static_cast<int64_t>(idx[k]));
        int64_t from = remap(k, index.sizes(), source_strides, -1, 0);
        po[target] = T(opmath_t<T>(po[target]) + opmath_t<T>(ps[from]));
      }
    });
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(index_select, DeviceType::CPU, index_select_kernel);
ACCEL_REGISTER_KERNEL(index_add, DeviceType::CPU, index_add_kernel);
ACCEL_REGISTER_KERNEL(gather, DeviceType::CPU, gather_kernel);
ACCEL_REGISTER_KERNEL(scatter_add, DeviceType::CPU, scatter_add_kernel);

}  // namespace accel::cpu
