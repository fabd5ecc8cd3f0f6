// Helpers the test programs share: the tiny BERT and the synthetic data they train on
// (identical on every rank of an mpirun test), weight comparison, error-message capture, and
// running a command line as a user would.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "accelerate/data.h"
#include "models/bert.h"

namespace accel::testing {

// A 2-layer, 32-wide BERT with 2 labels; dropout as given (0 makes runs comparable across
// batch splits).
inline models::BertConfig tiny_config(double dropout) {
  models::BertConfig c;
  c.vocab_size = 99;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 37;
  c.max_position_embeddings = 64;
  c.hidden_dropout_prob = dropout;
  c.attention_probs_dropout_prob = dropout;
  c.num_labels = 2;
  return c;
}

// n examples of lengths 5..16 with random ids and labels, the same on every rank.
inline std::shared_ptr<const std::vector<data::Features>> synthetic_features(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto features = std::make_shared<std::vector<data::Features>>();
  for (int64_t i = 0; i < n; ++i) {
    data::Features f;
    int64_t length = 5 + static_cast<int64_t>(rng() % 12);
    for (int64_t t = 0; t < length; ++t) {
      f.input_ids.push_back(1 + static_cast<int64_t>(rng() % 98));
      f.token_type_ids.push_back(t < length / 2 ? 0 : 1);
    }
    f.label = static_cast<double>(rng() % 2);
    features->push_back(std::move(f));
  }
  return features;
}

// The largest, over tensors, of max|a - b| / max|b|, where max|b| is floored at 1e-3 of the
// largest weight: the attention query and key biases stay near rounding level (softmax
// ignores a shift shared by all keys, so their gradients are zero or nearly so in exact
// arithmetic), and relative differences of rounding noise mean nothing.
inline double max_relative_difference(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  ACCEL_CHECK(a.size() == b.size(), "state dicts with different tensor counts: ", a.size(), " vs ", b.size());
  double largest = 0;
  for (auto& [name, t] : b) largest = std::max(largest, t.abs().max().item<double>());
  double worst = 0;
  for (auto& [name, tb] : b) {
    auto it = a.find(name);
    ACCEL_CHECK(it != a.end(), "tensor ", name, " is missing");
    double diff = (it->second - tb).abs().max().item<double>();
    double scale = std::max(tb.abs().max().item<double>(), 1e-3 * largest);
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct CommandResult {
  int exit_code = -1;  // -1: the shell could not be started, or the command died by a signal
  std::string output;  // stdout and stderr together
};

// Runs `command` through the shell, stdin from /dev/null, stderr merged into the output.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " < /dev/null 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) result.output.append(buffer, n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The same over a module's parameters.
inline double max_relative_difference(const nn::Module& a, const nn::Module& b) {
  auto as_map = [](const nn::Module& m) {
    std::map<std::string, Tensor> out;
    for (auto& [name, p] : m.named_parameters()) out[name] = p;
    return out;
  };
  return max_relative_difference(as_map(a), as_map(b));
}

}  // namespace accel::testing
