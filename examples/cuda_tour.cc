// The CUDA backend from the user's side, quoted by docs/cuda.md: ask whether a GPU is there,
// put tensors and a small model on it with to(Device), run a forward, a backward and an
// AdamW step there, and compare each result with the same computation on the CPU, within
// the tolerances of the cross-backend harness (tests/cuda/test_cuda_ops.cc). Also: a
// dropout mask drawn on the GPU is the CPU's, element for element, and the caching
// allocator's statistics after the run. Not a test of the kernels (the harness is).
//
// Without a CUDA device, or in a build without the backend, it says so, runs the same
// program with the CPU standing in for the GPU (so every comparison is CPU against CPU and
// passes trivially), and exits 0. Runs in well under a second.
//
// Given a path (in a build with the backend), it also writes docs/diagrams/cuda_slots.dot
// from the live dispatch table: which slots of core/kernels.h the CUDA backend fills, from
// which file, and what core runs instead for the empty ones. CTest compares it with the
// committed file, so the diagram cannot drift from the registrations.
//
//   build/bin/example_cuda_tour [cuda_slots.dot]
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "core/kernels.h"
#include "core/ops.h"
#include "core/random.h"
#include "nn/layers.h"
#include "nn/optim.h"

#ifdef ACCEL_WITH_CUDA
#include "backends/cuda/allocator.h"
#include "backends/cuda/stream.h"
#endif

using namespace accel;

namespace {

int failures = 0;

// Prints the largest |actual - expected| and checks allclose with the harness's tolerance.
void compare(const char* what, const Tensor& actual, const Tensor& expected, double tolerance) {
  const Tensor on_cpu = actual.cpu();
  const double worst = (on_cpu - expected).abs().max().item<double>();
  const bool ok = allclose(on_cpu, expected, tolerance, tolerance);
  std::printf("%-24s max |device - cpu| = %.3g  (tolerance %g) %s\n", what, worst, tolerance, ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

// [snippet:device]
int cuda_devices() {
#ifdef ACCEL_WITH_CUDA
  return cuda::device_count();  // 0, not an error, where there is no GPU or no driver
#else
  return 0;  // a build without the CUDA backend (-DACCEL_CUDA=OFF, or no nvcc)
#endif
}
// [end]

// [snippet:memory]
void print_memory_stats() {
#ifdef ACCEL_WITH_CUDA
  const cuda::MemoryStats stats = cuda::memory_stats(0);
  std::cout << "cuda:0 allocated " << stats.allocated_bytes << " B, reserved " << stats.reserved_bytes << " B, "
            << stats.num_device_mallocs << " cudaMalloc calls, " << stats.num_cache_hits
            << " requests served from the cache\n";
#endif
}
// [end]

#ifdef ACCEL_WITH_CUDA  // the diagram is of the CUDA column: only a build with the backend has one
// One slot of core/kernels.h: whether CUDA fills it, the file whose kernel does (or would),
// and what the op front end does on CUDA while it is empty.
struct SlotRow {
  std::string name;
  bool on_cuda;
  std::string file, instead;
};
template <typename Fn>
SlotRow row(const KernelSlot<Fn>& slot, const char* file, const char* instead = "") {
  return {slot.op_name(), slot.has(DeviceType::CUDA), file, instead};
}

// Graphviz: slots on the left, backends/cuda files on the right, empty slots in red with a
// dashed edge to what core composes in their place.
bool write_slot_diagram(const std::string& path) {
  const std::vector<SlotRow> rows = {
      row(kernels::unary, "pointwise.cu"), row(kernels::binary, "pointwise.cu"),
      row(kernels::gelu_with_derivative, "pointwise.cu"), row(kernels::mul_column_sum, "reduce.cu"),
      row(kernels::add_scaled, "pointwise.cu"), row(kernels::where, "pointwise.cu"),
      row(kernels::clamp, "pointwise.cu"), row(kernels::copy, "copy.cu"), row(kernels::fill, "copy.cu"),
      row(kernels::arange, "copy.cu"), row(kernels::reduce, "reduce.cu"), row(kernels::matmul, "matmul.cu"),
      row(kernels::linear_gelu, "matmul.cu"),
      row(kernels::attention, "attention.cu"), row(kernels::attention_backward, "attention.cu"),
      row(kernels::softmax, "softmax.cu"), row(kernels::softmax_backward, "softmax.cu"),
      row(kernels::cross_entropy, "cross_entropy.cu"), row(kernels::cross_entropy_backward, "cross_entropy.cu"),
      row(kernels::layer_norm, "softmax.cu"), row(kernels::layer_norm_backward, "softmax.cu"),
      row(kernels::add_layer_norm, "softmax.cu"),
      row(kernels::index_select, "index.cu"), row(kernels::index_add, "index.cu"), row(kernels::gather, "index.cu"),
      row(kernels::scatter_add, "index.cu"), row(kernels::random, "random.cu"), row(kernels::dropout, "random.cu"),
      row(kernels::dropout_backward, "random.cu"), row(kernels::adamw, "optim.cu"),
      row(kernels::adamw_multi_tensor, "optim.cu"), row(kernels::sum_of_squares, "reduce.cu"),
      row(kernels::cross_device_copy, "runtime.cu"),
  };
  bool ok = true;
  std::vector<std::string> files;  // in first-use order
  for (const SlotRow& r : rows) {
    ok = ok && (!r.on_cuda || !r.file.empty());  // a new CUDA kernel: name its file in the table above
    if (r.on_cuda && std::find(files.begin(), files.end(), r.file) == files.end()) files.push_back(r.file);
  }
  std::ofstream dot(path);
  dot << "// Generated by examples/cuda_tour.cc from the dispatch table; CTest checks it is current.\n"
         "digraph cuda_slots {\n"
         "  rankdir=LR; ranksep=1.0; nodesep=0.12;\n"
         "  node [fontname=\"Helvetica\", fontsize=11, height=0.3];\n"
         "  edge [color=\"#64748b\", arrowsize=0.6];\n";
  // Declared last-first: dot's left-to-right layout then stacks them in kernels.h's order.
  for (auto f = files.rbegin(); f != files.rend(); ++f) {
    dot << "  \"" << *f << "\" [label=\"backends/cuda/" << *f
        << "\", shape=note, style=filled, fillcolor=\"#dbeafe\", color=\"#1e40af\"];\n";
  }
  for (const SlotRow& r : rows) {
    if (r.on_cuda) {
      dot << "  \"" << r.name << "\" [shape=box, style=rounded];\n"
          << "  \"" << r.name << "\" -> \"" << (r.file.empty() ? "?" : r.file) << "\";\n";
    } else {
      dot << "  \"" << r.name << "\" [shape=box, style=\"rounded,dashed\", color=\"#b91c1c\", fontcolor=\"#b91c1c\"];\n"
          << "  \"instead_" << r.name << "\" [label=\"" << r.instead
          << "\", shape=note, fontsize=10, color=\"#b91c1c\", fontcolor=\"#b91c1c\"];\n"
          << "  \"" << r.name << "\" -> \"instead_" << r.name << "\" [style=dashed, color=\"#b91c1c\"];\n";
    }
  }
  dot << "}\n";
  return ok && dot.good();
}
#endif

// Linear -> LayerNorm -> GELU -> Linear: a GEMM with a bias, a row reduction, a pointwise op.
class Mlp : public nn::Module {
 public:
  Mlp() : Module("Mlp") {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(16, 32));
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(32));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(32, 4));
  }
  Tensor forward(const Tensor& x) const { return fc2->forward(gelu(norm->forward(fc1->forward(x)))); }
  std::shared_ptr<nn::Linear> fc1, fc2;
  std::shared_ptr<nn::LayerNorm> norm;
};

}  // namespace

int main(int argc, char** argv) {
  std::cout << std::boolalpha;
  try {
    // [snippet:choose]
    const bool have_gpu = cuda_devices() > 0;
    const Device device = have_gpu ? Device("cuda:0") : kCPU;
    std::cout << "CUDA kernels registered: " << kernels::matmul.has(DeviceType::CUDA)
              << "; CUDA devices: " << cuda_devices() << "\n";
    if (!have_gpu) {
      std::cout << "no CUDA device: running the same program with the CPU as the device, so the\n"
                   "comparisons below are CPU against CPU (a GPU machine compares CUDA against CPU)\n";
      try {
        zeros({2}).to(Device("cuda:0"));  // what asking for the GPU anyway does
      } catch (const Error& e) {
        std::cout << "zeros({2}).to(cuda:0): " << e.what() << "\n";
      }
    }
    // [end]

    // [snippet:tensors]
    manual_seed(0);
    Tensor a = randn({64, 48}), b = randn({48, 32});  // made on the CPU
    Tensor a_dev = a.to(device), b_dev = b.to(device);  // host -> device copies
    Tensor probs_dev = softmax(matmul(a_dev, b_dev), -1);  // a GEMM, then the softmax kernel
    compare("matmul + softmax", probs_dev, softmax(matmul(a, b), -1), 1e-5);
    // [end]
    if (probs_dev.device() != device) {
      std::cerr << "CHECK FAILED: the result is on " << probs_dev.device().str() << ", not " << device.str() << "\n";
      ++failures;
    }

    // [snippet:model]
    manual_seed(1);
    Mlp cpu_model, dev_model;
    dev_model.load_state_dict(cpu_model.state_dict());  // the same weights ...
    dev_model.to(device);                                // ... moved to the device
    nn::AdamW cpu_opt(cpu_model.parameters(), nn::AdamWOptions{});
    nn::AdamW dev_opt(dev_model.parameters(), nn::AdamWOptions{});  // after to(): the device tensors

    Tensor x = randn({8, 16});  // (batch 8, features 16)
    Tensor labels = from_vector<int64_t>({0, 1, 2, 3, 3, 2, 1, 0});
    Tensor cpu_loss = cross_entropy(cpu_model.forward(x), labels);
    Tensor dev_loss = cross_entropy(dev_model.forward(x.to(device)), labels.to(device));
    cpu_loss.backward();
    dev_loss.backward();
    compare("loss", dev_loss, cpu_loss, 1e-5);
    compare("grad of fc1.weight", dev_model.fc1->weight.grad(), cpu_model.fc1->weight.grad(), 1e-5);
    cpu_opt.step();
    dev_opt.step();  // the multi-tensor AdamW kernel: one launch for all of them
    compare("fc1.weight after AdamW", dev_model.fc1->weight, cpu_model.fc1->weight, 1e-5);
    // [end]

    // [snippet:dropout]
    Generator cpu_gen(7), dev_gen(7);  // one seed, two generators at offset 0
    Tensor cpu_kept = dropout(ones({1000}), 0.1, true, &cpu_gen);
    Tensor dev_kept = dropout(ones({1000}, TensorOptions(kFloat32, device)), 0.1, true, &dev_gen);
    compare("dropout mask", dev_kept, cpu_kept, 0.0);  // exactly the same elements dropped
    std::cout << "kept " << (cpu_kept != 0.0).sum().item<int64_t>() << " of 1000; generator offsets "
              << cpu_gen.offset() << " and " << dev_gen.offset() << "\n";
    // [end]
    if (cpu_gen.offset() != dev_gen.offset()) {
      std::cerr << "CHECK FAILED: both draws must advance the generator by the same number of blocks\n";
      ++failures;
    }

    if (have_gpu) print_memory_stats();
    if (argc > 1) {
#ifdef ACCEL_WITH_CUDA
      if (!write_slot_diagram(argv[1])) {
        std::cerr << "CHECK FAILED: could not write " << argv[1] << ", or a CUDA slot has no file in the table\n";
        ++failures;
      }
#else
      std::cout << "not writing " << argv[1] << ": this build has no CUDA backend, so every CUDA slot is empty\n";
#endif
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  if (failures > 0) return 1;
  std::cout << "cuda_tour: all comparisons within tolerance\n";
  return 0;
}
