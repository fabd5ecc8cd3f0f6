// CPU reductions over any set of dims: sum, mean, max/min (with indices), argmax/argmin,
// var. Floating sums accumulate in double, so results are at least as accurate as
// PyTorch's pairwise float sums. Two layouts get fast loops: reducing leading dims of a
// contiguous tensor (bias gradients), and a few long contiguous runs (whole-tensor sums),
// cut into blocks summed in parallel; everything else walks the reduced sub-space with strides,
// one output element per iteration. Also the sum of squares over many tensors (gradient norms).
#include <algorithm>
#include <cmath>
#include <limits>

#include "backends/cpu/concatenation.h"
#include "core/kernels.h"
#include "core/parallel.h"

namespace accel::cpu {

namespace {

// The reduced sub-space of one output element: sizes and element strides, merged where
// contiguous.
struct SubSpace {
  Shape sizes;
  Shape strides;
  int64_t numel = 1;
};

SubSpace make_subspace(const Shape& sizes, const Shape& strides) {
  SubSpace s;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    if (!s.sizes.empty() && s.strides.back() == strides[d] * sizes[d]) {
      s.sizes.back() *= sizes[d];
      s.strides.back() = strides[d];
    } else {
      s.sizes.push_back(sizes[d]);
      s.strides.push_back(strides[d]);
    }
  }
  s.numel = shape_numel(s.sizes);
  return s;
}

// Calls f(element_offset, flat_index) for every element of the sub-space in row-major order.
template <typename F>
inline void walk(const SubSpace& space, int64_t base, const F& f) {
  if (space.sizes.size() <= 1) {
    int64_t n = space.sizes.empty() ? 1 : space.sizes[0];
    int64_t stride = space.sizes.empty() ? 0 : space.strides[0];
    for (int64_t i = 0; i < n; ++i) f(base + i * stride, i);
    return;
  }
  const int nd = static_cast<int>(space.sizes.size());
  std::vector<int64_t> index(nd, 0);
  int64_t offset = base;
  const int64_t inner = space.sizes[nd - 1], inner_stride = space.strides[nd - 1];
  for (int64_t flat = 0; flat < space.numel; flat += inner) {
    for (int64_t i = 0; i < inner; ++i) f(offset + i * inner_stride, flat + i);
    for (int d = nd - 2; d >= 0; --d) {
      offset += space.strides[d];
      if (++index[d] < space.sizes[d]) break;
      offset -= space.strides[d] * space.sizes[d];
      index[d] = 0;
    }
  }
}

template <typename T>
void reduce_typed(ReduceOp op, const Tensor& in, const Shape& dims, const Tensor& out,
                  const Tensor& indices, int64_t correction) {
  using Acc = std::conditional_t<std::is_floating_point_v<opmath_t<T>>, double, int64_t>;
  const T* data = in.data_ptr<T>();
  Shape kept_sizes, kept_strides, red_sizes, red_strides;
  for (int64_t d = 0, k = 0; d < in.dim(); ++d) {
    bool reduced = k < static_cast<int64_t>(dims.size()) && dims[k] == d;
    if (reduced) ++k;
    (reduced ? red_sizes : kept_sizes).push_back(in.size(d));
    (reduced ? red_strides : kept_strides).push_back(in.stride(d));
  }
  SubSpace reduced = make_subspace(red_sizes, red_strides);
  SubSpace kept = make_subspace(kept_sizes, kept_strides);
  const int64_t out_numel = kept.numel;
  const int64_t count = reduced.numel;

  // Leading-dims fast path: contiguous input, reduced dims before all kept dims.
  bool leading = in.is_contiguous() && (op == ReduceOp::Sum || op == ReduceOp::Mean) &&
                 !dims.empty() && count > 1 && out_numel > 1;
  for (size_t i = 0; leading && i < dims.size(); ++i) leading = dims[i] == static_cast<int64_t>(i);
  if (leading) {
    T* o = out.data_ptr<T>();
    double scale = op == ReduceOp::Mean ? 1.0 / static_cast<double>(count) : 1.0;
    parallel_for(out_numel, 256, [&](int64_t col_begin, int64_t col_end) {
      std::vector<Acc> acc(col_end - col_begin, Acc(0));
      for (int64_t r = 0; r < count; ++r) {
        const T* row = data + r * out_numel;
        for (int64_t c = col_begin; c < col_end; ++c) acc[c - col_begin] += Acc(opmath_t<T>(row[c]));
      }
      for (int64_t c = col_begin; c < col_end; ++c) {
        o[c] = T(static_cast<opmath_t<T>>(static_cast<double>(acc[c - col_begin]) * scale));
      }
    });
    return;
  }

  // Offset of output element o's first input element.
  auto base_offset = [&](int64_t o) {
    int64_t base = 0, rem = o;
    for (int64_t d = static_cast<int64_t>(kept.sizes.size()) - 1; d >= 0; --d) {
      base += (rem % kept.sizes[d]) * kept.strides[d];
      rem /= kept.sizes[d];
    }
    return base;
  };

  // Few outputs, each reducing one long contiguous run (a whole-tensor sum, as the gradient
  // norm takes): the runs are cut into fixed blocks summed in parallel, each with SIMD
  // lane-wise partial sums, and each output adds its blocks in order, so the result does not
  // depend on the thread count. One thread walking element by element read about 1 GB/s.
  constexpr int64_t kBlock = 16384;
  const bool long_runs = (op == ReduceOp::Sum || op == ReduceOp::Mean) && reduced.sizes.size() == 1 &&
                         reduced.strides[0] == 1 && count >= 2 * kBlock && out_numel < 2 * get_num_threads();
  if (long_runs) {
    const int64_t blocks = (count + kBlock - 1) / kBlock;  // per output
    std::vector<Acc> partial(static_cast<size_t>(out_numel * blocks));
    parallel_for(out_numel * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t block = i % blocks, n = std::min(kBlock, count - block * kBlock);
        const T* run = data + base_offset(i / blocks) + block * kBlock;
        Acc acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < n; ++j) acc += Acc(opmath_t<T>(run[j]));
        partial[i] = acc;
      }
    });
    T* o = out.data_ptr<T>();
    for (int64_t e = 0; e < out_numel; ++e) {
      Acc acc = 0;
      for (int64_t block = 0; block < blocks; ++block) acc += partial[e * blocks + block];
      if constexpr (std::is_floating_point_v<opmath_t<T>>) {
        double v = static_cast<double>(acc);
        if (op == ReduceOp::Mean) v /= static_cast<double>(count);
        o[e] = T(static_cast<opmath_t<T>>(v));
      } else {
        o[e] = static_cast<T>(acc);  // as below: mean takes floating inputs only
      }
    }
    return;
  }

  int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(count, 1));
  parallel_for(out_numel, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t base = base_offset(o);
      switch (op) {
        case ReduceOp::Sum:
        case ReduceOp::Mean: {
          Acc acc = 0;
          walk(reduced, base, [&](int64_t off, int64_t) { acc += Acc(opmath_t<T>(data[off])); });
          double v = static_cast<double>(acc);
          if (op == ReduceOp::Mean) v /= static_cast<double>(count);
          if constexpr (std::is_floating_point_v<opmath_t<T>>) {
            out.data_ptr<T>()[o] = T(static_cast<opmath_t<T>>(v));
          } else {
            out.data_ptr<T>()[o] = static_cast<T>(acc);
          }
          break;
        }
        case ReduceOp::Var: {
          if constexpr (std::is_floating_point_v<opmath_t<T>>) {
            double sum = 0;
            walk(reduced, base, [&](int64_t off, int64_t) { sum += double(opmath_t<T>(data[off])); });
            double mean = sum / static_cast<double>(count);
            double squares = 0;
            walk(reduced, base, [&](int64_t off, int64_t) {
              double d = double(opmath_t<T>(data[off])) - mean;
              squares += d * d;
            });
            double denom = static_cast<double>(count - correction);
            double v = denom > 0 ? squares / denom : std::numeric_limits<double>::quiet_NaN();
            out.data_ptr<T>()[o] = T(static_cast<opmath_t<T>>(v));
          }
          break;
        }
        default: {  // Max, Min, ArgMax, ArgMin
          bool want_max = op == ReduceOp::Max || op == ReduceOp::ArgMax;
          opmath_t<T> best{};
          int64_t best_index = -1;
          bool saw_nan = false;
          walk(reduced, base, [&](int64_t off, int64_t flat) {
            if (saw_nan) return;
            opmath_t<T> v = opmath_t<T>(data[off]);
            if (v != v) {  // NaN wins, as in PyTorch
              best = v;
              best_index = flat;
              saw_nan = true;
              return;
            }
            if (best_index < 0 || (want_max ? v > best : v < best)) {
              best = v;
              best_index = flat;
            }
          });
          if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) {
            out.data_ptr<int64_t>()[o] = best_index;
          } else {
            out.data_ptr<T>()[o] = T(best);
            if (indices.defined()) indices.data_ptr<int64_t>()[o] = best_index;
          }
        }
      }
    }
  });
}

void reduce_kernel(ReduceOp op, const Tensor& in, const Shape& dims, const Tensor& out,
                   const Tensor& indices, int64_t correction) {
  visit_numeric(in.dtype(), "reduce", "cpu", [&]<typename T>() {
    reduce_typed<T>(op, in, dims, out, indices, correction);
  });
}

// Blocks of kSquaresBlock elements of the tensors' concatenation, each summed by one thread,
// then added in block order.
void sum_of_squares_kernel(const std::vector<Tensor>& tensors, const Tensor& out) {
  constexpr int64_t kSquaresBlock = 16384;
  const std::vector<int64_t> starts = concatenation_starts(tensors, [](const Tensor& t) { return t.numel(); });
  const int64_t total = starts.back(), blocks = (total + kSquaresBlock - 1) / kSquaresBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  if (!tensors.empty()) {
    visit_floating(tensors.front().dtype(), "sum_of_squares", "cpu", [&]<typename T>() {
      parallel_for(blocks, 1, [&](int64_t first_block, int64_t last_block) {
        for (int64_t block = first_block; block < last_block; ++block) {
          const int64_t begin = block * kSquaresBlock, end = std::min(total, begin + kSquaresBlock);
          double acc = 0;
          for_each_piece(starts, begin, end, [&](size_t i, int64_t from, int64_t to) {
            const T* data = tensors[i].data_ptr<T>();
            double piece = 0;
#pragma omp simd reduction(+ : piece)
            for (int64_t j = from; j < to; ++j) {
              const double x = static_cast<double>(opmath_t<T>(data[j]));
              piece += x * x;
            }
            acc += piece;
          });
          partial[static_cast<size_t>(block)] = acc;
        }
      });
    });
  }
  double sum = 0;
  for (double p : partial) sum += p;
  out.data_ptr<double>()[0] = sum;
}

}  // namespace

ACCEL_REGISTER_KERNEL(reduce, DeviceType::CPU, reduce_kernel);
ACCEL_REGISTER_KERNEL(sum_of_squares, DeviceType::CPU, sum_of_squares_kernel);

}  // namespace accel::cpu
