// test_golden_ops.cc: checks accel's ops, forward and backward, against golden files that
// PyTorch wrote (tests/golden/make_op_goldens.py). One test per file in ACCEL_GOLDEN_DIR:
// load the inputs, run the accel op named in the file's metadata with the params stored
// beside it, compare `output` (and extra outputs such as max's `indices`), then backpropagate
// the stored `grad_output` and compare each input's gradient with `grad.i`.
// What it is not: a gradient check (tests/core has the finite-difference ones) nor a
// cross-backend check; it runs on the CPU.
//
// Adding a case: add it to make_op_goldens.py, rerun the script, and, for a new op, add an
// entry to op_table() below that calls accel the way the stored params describe.
//
// Tolerances, |actual - expected| <= atol + rtol * |expected|:
//   float32             rtol 1e-5, atol 1e-6. rtol allows ~100 ulp of float32 for kernels
//                       that vectorize or order their sums differently from PyTorch. The
//                       absolute floor covers results near zero that come out of
//                       cancellation (gradients of softmax, layer_norm, var; sums of
//                       mixed-sign terms), whose rounding error scales with the O(1) terms
//                       that were summed, not with the tiny result.
//   float32 matmul      rtol 1e-4, atol 1e-5. A GEMM sums K products; blocked/FMA kernels
//   and linear          (oneDNN, cuBLAS) round differently from PyTorch's by up to ~K ulp
//                       of sum |a_k b_k|, which for entries near zero is an absolute error.
//   bfloat16            rtol 1e-2, atol 1e-2. bf16 has 8 significant bits (ulp 2^-7 relative
//                       at worst), so this allows one rounding step of difference, e.g. an
//                       fp32-accumulating kernel against PyTorch's own rounding.
//   int64 / bool        exact (argmax, max's indices, one_hot).
// make_op_goldens.py --self-check prints how much of these tolerances PyTorch's own rounding
// uses against a float64 recomputation (at most 0.13 for float32, 0.83 for bf16).

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "tests/core/tensor_compare.h"

#ifndef ACCEL_GOLDEN_DIR
#error "define ACCEL_GOLDEN_DIR as a string literal, e.g. ACCEL_GOLDEN_DIR=\"${CMAKE_SOURCE_DIR}/tests/golden/ops\""
#endif

namespace {

using accel::Tensor;
using json = nlohmann::json;
using Inputs = std::vector<Tensor>;

constexpr size_t kMinGoldenCases = 60;

// What an op returns: the differentiable `output` and any extra results stored under their
// own names in the golden file (max_dim's `indices`).
struct OpResult {
  OpResult(Tensor output) : output(std::move(output)) {}  // NOLINT: implicit on purpose
  OpResult(Tensor output, std::map<std::string, Tensor> extras)
      : output(std::move(output)), extras(std::move(extras)) {}
  Tensor output;
  std::map<std::string, Tensor> extras;
};
using OpFn = std::function<OpResult(const Inputs&, const json&)>;

// ---- params ----

accel::Shape shape_param(const json& p, const char* key) { return p.at(key).get<accel::Shape>(); }
int64_t int_param(const json& p, const char* key) { return p.at(key).get<int64_t>(); }
double double_param(const json& p, const char* key) { return p.at(key).get<double>(); }
bool bool_param(const json& p, const char* key) { return p.at(key).get<bool>(); }

std::optional<accel::Scalar> optional_scalar(const json& p, const char* key) {
  if (!p.contains(key) || p.at(key).is_null()) return std::nullopt;
  return accel::Scalar(p.at(key).get<double>());
}

std::optional<int64_t> optional_int(const json& p, const char* key) {
  if (!p.contains(key) || p.at(key).is_null()) return std::nullopt;
  return p.at(key).get<int64_t>();
}

accel::Reduction reduction_param(const json& p) {
  const std::string r = p.value("reduction", std::string("mean"));
  if (r == "mean") return accel::Reduction::Mean;
  if (r == "sum") return accel::Reduction::Sum;
  if (r == "none") return accel::Reduction::None;
  throw std::invalid_argument("unknown reduction \"" + r + "\"");
}

accel::DType dtype_param(const json& p, const char* key) {
  const std::string name = p.at(key).get<std::string>();
  for (accel::DType d : {accel::kFloat32, accel::kFloat64, accel::kFloat16, accel::kBFloat16, accel::kInt64,
                         accel::kInt32, accel::kBool}) {
    if (name == accel::dtype_name(d)) return d;
  }
  throw std::invalid_argument("unknown dtype \"" + name + "\"");
}

// An optional trailing input (linear's bias, layer_norm's weight and bias).
Tensor optional_input(const Inputs& in, size_t i) { return i < in.size() ? in[i] : Tensor(); }

// ---- the op table: golden "op" name -> a call into accel's public API ----

const std::map<std::string, OpFn>& op_table() {
  static const std::map<std::string, OpFn> table = {
      // pointwise
      {"add", [](const Inputs& in, const json& p) -> OpResult {
         return accel::add(in.at(0), in.at(1), double_param(p, "alpha"));
       }},
      {"sub", [](const Inputs& in, const json& p) -> OpResult {
         return accel::sub(in.at(0), in.at(1), double_param(p, "alpha"));
       }},
      {"mul", [](const Inputs& in, const json&) -> OpResult { return accel::mul(in.at(0), in.at(1)); }},
      {"div", [](const Inputs& in, const json&) -> OpResult { return accel::div(in.at(0), in.at(1)); }},
      {"pow", [](const Inputs& in, const json&) -> OpResult { return accel::pow(in.at(0), in.at(1)); }},
      {"pow_scalar", [](const Inputs& in, const json& p) -> OpResult {
         return accel::pow(in.at(0), accel::Scalar(double_param(p, "exponent")));
       }},
      {"maximum", [](const Inputs& in, const json&) -> OpResult { return accel::maximum(in.at(0), in.at(1)); }},
      {"minimum", [](const Inputs& in, const json&) -> OpResult { return accel::minimum(in.at(0), in.at(1)); }},
      {"neg", [](const Inputs& in, const json&) -> OpResult { return accel::neg(in.at(0)); }},
      {"abs", [](const Inputs& in, const json&) -> OpResult { return accel::abs(in.at(0)); }},
      {"exp", [](const Inputs& in, const json&) -> OpResult { return accel::exp(in.at(0)); }},
      {"log", [](const Inputs& in, const json&) -> OpResult { return accel::log(in.at(0)); }},
      {"sqrt", [](const Inputs& in, const json&) -> OpResult { return accel::sqrt(in.at(0)); }},
      {"rsqrt", [](const Inputs& in, const json&) -> OpResult { return accel::rsqrt(in.at(0)); }},
      {"tanh", [](const Inputs& in, const json&) -> OpResult { return accel::tanh(in.at(0)); }},
      {"sigmoid", [](const Inputs& in, const json&) -> OpResult { return accel::sigmoid(in.at(0)); }},
      {"relu", [](const Inputs& in, const json&) -> OpResult { return accel::relu(in.at(0)); }},
      {"erf", [](const Inputs& in, const json&) -> OpResult { return accel::erf(in.at(0)); }},
      {"gelu", [](const Inputs& in, const json& p) -> OpResult {
         return accel::gelu(in.at(0), p.at("approximate").get<std::string>());
       }},
      {"clamp", [](const Inputs& in, const json& p) -> OpResult {
         return accel::clamp(in.at(0), optional_scalar(p, "min"), optional_scalar(p, "max"));
       }},
      {"where", [](const Inputs& in, const json&) -> OpResult {
         return accel::where(in.at(0), in.at(1), in.at(2));  // (condition, a, b)
       }},
      {"masked_fill", [](const Inputs& in, const json& p) -> OpResult {
         return accel::masked_fill(in.at(0), in.at(1), accel::Scalar(double_param(p, "value")));
       }},

      // reductions
      {"sum", [](const Inputs& in, const json& p) -> OpResult {
         return accel::sum(in.at(0), shape_param(p, "dims"), bool_param(p, "keepdim"));
       }},
      {"mean", [](const Inputs& in, const json& p) -> OpResult {
         return accel::mean(in.at(0), shape_param(p, "dims"), bool_param(p, "keepdim"));
       }},
      {"max_dim", [](const Inputs& in, const json& p) -> OpResult {
         accel::ValuesIndices r = accel::max(in.at(0), int_param(p, "dim"), bool_param(p, "keepdim"));
         return {r.values, {{"indices", r.indices}}};
       }},
      {"amax", [](const Inputs& in, const json& p) -> OpResult {
         return accel::amax(in.at(0), shape_param(p, "dims"), bool_param(p, "keepdim"));
       }},
      {"argmax", [](const Inputs& in, const json& p) -> OpResult {
         return accel::argmax(in.at(0), optional_int(p, "dim"), bool_param(p, "keepdim"));
       }},
      {"var", [](const Inputs& in, const json& p) -> OpResult {
         return accel::var(in.at(0), shape_param(p, "dims"), int_param(p, "correction"), bool_param(p, "keepdim"));
       }},
      {"std", [](const Inputs& in, const json& p) -> OpResult {
         return accel::std(in.at(0), shape_param(p, "dims"), int_param(p, "correction"), bool_param(p, "keepdim"));
       }},

      // linear algebra
      {"matmul", [](const Inputs& in, const json&) -> OpResult { return accel::matmul(in.at(0), in.at(1)); }},
      {"linear", [](const Inputs& in, const json&) -> OpResult {
         return accel::linear(in.at(0), in.at(1), optional_input(in, 2));  // (x, weight[, bias])
       }},

      // neural-network functions
      {"softmax", [](const Inputs& in, const json& p) -> OpResult {
         return accel::softmax(in.at(0), int_param(p, "dim"));
       }},
      {"log_softmax", [](const Inputs& in, const json& p) -> OpResult {
         return accel::log_softmax(in.at(0), int_param(p, "dim"));
       }},
      {"layer_norm", [](const Inputs& in, const json& p) -> OpResult {
         return accel::layer_norm(in.at(0), shape_param(p, "normalized_shape"), optional_input(in, 1),
                                  optional_input(in, 2), double_param(p, "eps"));
       }},
      {"embedding", [](const Inputs& in, const json& p) -> OpResult {
         return accel::embedding(in.at(0), in.at(1), optional_int(p, "padding_idx"));  // (weight, indices)
       }},
      {"cross_entropy", [](const Inputs& in, const json& p) -> OpResult {
         return accel::cross_entropy(in.at(0), in.at(1), int_param(p, "ignore_index"), reduction_param(p),
                                     double_param(p, "label_smoothing"));
       }},
      {"nll_loss", [](const Inputs& in, const json& p) -> OpResult {
         return accel::nll_loss(in.at(0), in.at(1), int_param(p, "ignore_index"), reduction_param(p));
       }},
      {"mse_loss", [](const Inputs& in, const json& p) -> OpResult {
         return accel::mse_loss(in.at(0), in.at(1), reduction_param(p));
       }},

      // joining and indexing
      {"cat", [](const Inputs& in, const json& p) -> OpResult { return accel::cat(in, int_param(p, "dim")); }},
      {"stack", [](const Inputs& in, const json& p) -> OpResult { return accel::stack(in, int_param(p, "dim")); }},
      {"index_select", [](const Inputs& in, const json& p) -> OpResult {
         return accel::index_select(in.at(0), int_param(p, "dim"), in.at(1));
       }},
      {"gather", [](const Inputs& in, const json& p) -> OpResult {
         return accel::gather(in.at(0), int_param(p, "dim"), in.at(1));
       }},
      {"index_add", [](const Inputs& in, const json& p) -> OpResult {
         return accel::index_add(in.at(0), int_param(p, "dim"), in.at(1), in.at(2));  // (x, index, source)
       }},
      {"scatter_add", [](const Inputs& in, const json& p) -> OpResult {
         return accel::scatter_add(in.at(0), int_param(p, "dim"), in.at(1), in.at(2));  // (x, index, source)
       }},
      {"one_hot", [](const Inputs& in, const json& p) -> OpResult {
         return accel::one_hot(in.at(0), int_param(p, "num_classes"));
       }},

      // views: the output stays a view; tensors_close makes it contiguous to compare
      {"transpose_contiguous", [](const Inputs& in, const json& p) -> OpResult {
         return in.at(0).transpose(int_param(p, "dim0"), int_param(p, "dim1")).contiguous() * in.at(1);
       }},
      {"permute", [](const Inputs& in, const json& p) -> OpResult {
         return in.at(0).permute(shape_param(p, "dims"));
       }},
      {"slice", [](const Inputs& in, const json& p) -> OpResult {
         return in.at(0).slice(int_param(p, "dim"), optional_int(p, "start"), optional_int(p, "end"),
                               int_param(p, "step"));
       }},
      {"select", [](const Inputs& in, const json& p) -> OpResult {
         return in.at(0).select(int_param(p, "dim"), int_param(p, "index"));
       }},
      {"expand", [](const Inputs& in, const json& p) -> OpResult {
         return in.at(0).expand(shape_param(p, "sizes"));
       }},
      {"narrow", [](const Inputs& in, const json& p) -> OpResult {
         return in.at(0).narrow(int_param(p, "dim"), int_param(p, "start"), int_param(p, "length"));
       }},
      {"unsqueeze_squeeze", [](const Inputs& in, const json& p) -> OpResult {
         return in.at(0).squeeze(int_param(p, "squeeze_dim")).unsqueeze(int_param(p, "unsqueeze_dim"));
       }},

      // conversion
      {"to_dtype", [](const Inputs& in, const json& p) -> OpResult {
         return in.at(0).to(dtype_param(p, "dtype"));
       }},
  };
  return table;
}

// ---- tolerances (see the header comment for why) ----

struct Tolerance {
  double rtol, atol;
};

Tolerance tolerance_for(const std::string& op, accel::DType expected_dtype) {
  if (!accel::is_floating(expected_dtype)) return {0.0, 0.0};
  if (expected_dtype == accel::kBFloat16 || expected_dtype == accel::kFloat16) return {1e-2, 1e-2};
  if (op == "matmul" || op == "linear") return {1e-4, 1e-5};
  return {1e-5, 1e-6};
}

// ---- the golden files ----

std::vector<std::string> golden_files() {
  std::vector<std::string> files;
  std::error_code ec;  // a missing directory yields no files; GoldenOps.DirectoryHoldsTheCases fails
  for (const auto& entry : std::filesystem::directory_iterator(ACCEL_GOLDEN_DIR, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string case_name(const std::string& path) { return std::filesystem::path(path).stem().string(); }

bool is_input_name(const std::string& key) { return key.rfind("input.", 0) == 0; }
bool is_grad_name(const std::string& key) { return key.rfind("grad.", 0) == 0; }

// Compares one tensor with its golden, checking the dtype as well (a bf16 case must stay bf16).
void expect_matches(const std::string& name, const std::string& op, const std::string& what, const Tensor& actual,
                    const Tensor& expected) {
  if (!actual.defined()) {
    ADD_FAILURE() << "case " << name << " (op " << op << "): " << what << " is undefined";
    return;
  }
  EXPECT_EQ(actual.dtype(), expected.dtype()) << "case " << name << " (op " << op << "): dtype of " << what;
  const Tolerance tol = tolerance_for(op, expected.dtype());
  EXPECT_TRUE(tensors_close(actual, expected, tol.rtol, tol.atol)) << "case " << name << " (op " << op << "): "
                                                                    << what;
}

class GoldenOp : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenOp, MatchesPyTorch) {
  const std::string path = GetParam();
  const std::string name = case_name(path);
  SCOPED_TRACE("golden file " + path);

  accel::safetensors::File file = accel::safetensors::load(path);
  ASSERT_TRUE(file.metadata.count("op")) << "case " << name << ": __metadata__ has no \"op\"";
  const std::string op = file.metadata.at("op");
  json params = json::object();
  if (file.metadata.count("params")) params = json::parse(file.metadata.at("params"));
  const auto fn = op_table().find(op);
  ASSERT_NE(fn, op_table().end()) << "case " << name << ": op \"" << op
                                  << "\" has no entry in op_table() of test_golden_ops.cc";
  ASSERT_TRUE(file.tensors.count("output")) << "case " << name << ": no \"output\" tensor";

  // Inputs input.0, input.1, ... cloned out of the read-only mapping; those with a golden
  // gradient become leaves that require grad.
  Inputs inputs;
  std::vector<size_t> with_grad;
  for (size_t i = 0;; ++i) {
    const auto it = file.tensors.find("input." + std::to_string(i));
    if (it == file.tensors.end()) break;
    Tensor x = it->second.clone();
    if (file.tensors.count("grad." + std::to_string(i))) {
      x.requires_grad_();
      with_grad.push_back(i);
    }
    inputs.push_back(x);
  }
  for (const auto& [key, tensor] : file.tensors) {
    if (is_input_name(key) || is_grad_name(key)) {
      const size_t i = std::stoul(key.substr(key.find('.') + 1));
      ASSERT_LT(i, inputs.size()) << "case " << name << ": " << key << " has no matching input (inputs must be "
                                  << "numbered 0, 1, ... without gaps)";
    }
  }

  // Forward.
  std::optional<OpResult> result;
  try {
    result = fn->second(inputs, params);
  } catch (const std::exception& e) {
    FAIL() << "case " << name << " (op " << op << ", params " << params.dump() << "): forward threw: " << e.what();
  }
  expect_matches(name, op, "output", result->output, file.tensors.at("output"));
  for (const auto& [key, expected] : file.tensors) {
    if (is_input_name(key) || is_grad_name(key) || key == "output" || key == "grad_output") continue;
    const auto extra = result->extras.find(key);
    if (extra == result->extras.end()) {
      ADD_FAILURE() << "case " << name << " (op " << op << "): the golden has \"" << key
                    << "\" but the op table entry returns no such extra result";
      continue;
    }
    expect_matches(name, op, key, extra->second, expected);
  }

  // Backward: output.backward(grad_output), then every input with a golden gradient.
  if (with_grad.empty()) return;  // argmax, one_hot: nothing differentiable
  ASSERT_TRUE(file.tensors.count("grad_output")) << "case " << name << ": has grad.i but no grad_output";
  ASSERT_TRUE(result->output.requires_grad())
      << "case " << name << " (op " << op << "): the output does not require grad although inputs do";
  try {
    result->output.backward(file.tensors.at("grad_output").clone());
  } catch (const std::exception& e) {
    FAIL() << "case " << name << " (op " << op << ", params " << params.dump() << "): backward threw: " << e.what();
  }
  for (size_t i : with_grad) {
    const std::string key = "grad." + std::to_string(i);
    expect_matches(name, op, key, inputs[i].grad(), file.tensors.at(key));
  }
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = case_name(info.param);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Goldens, GoldenOp, ::testing::ValuesIn(golden_files()), test_name);
// An empty directory instantiates nothing; DirectoryHoldsTheCases below reports that clearly.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenOp);

TEST(GoldenOps, DirectoryHoldsTheCases) {
  const std::vector<std::string> files = golden_files();
  EXPECT_GE(files.size(), kMinGoldenCases)
      << "found " << files.size() << " golden files in " << ACCEL_GOLDEN_DIR << ", expected at least "
      << kMinGoldenCases << "; regenerate them with `python3 tests/golden/make_op_goldens.py`";
}

// Every entry of op_table() is exercised by at least one golden, so the table and the
// generator cannot drift apart silently.
TEST(GoldenOps, EveryTableOpHasAGolden) {
  std::set<std::string> covered;
  for (const std::string& path : golden_files()) {
    std::map<std::string, std::string> metadata;
    accel::safetensors::read_header(path, &metadata);
    if (metadata.count("op")) covered.insert(metadata.at("op"));
  }
  for (const auto& [op, fn] : op_table()) {
    EXPECT_TRUE(covered.count(op)) << "op \"" << op << "\" is in op_table() but no golden file in "
                                   << ACCEL_GOLDEN_DIR << " uses it";
  }
}

}  // namespace
