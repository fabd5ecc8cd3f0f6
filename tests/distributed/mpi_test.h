// What the mpirun test programs share (test_ddp_main.cc, test_zero_main.cc): the tiny BERT
// and synthetic data every rank builds alike, the weight comparison, and a runner in which
// every rank runs each check, the ranks agree on the verdict, and rank 0 prints
// "[  OK  ] name" lines and "N passed, M failed".
#pragma once

#include <algorithm>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "accelerate/data.h"
#include "distributed/process_group.h"
#include "models/bert.h"

namespace accel::testing {

inline models::BertConfig tiny_config() {
  models::BertConfig c;
  c.vocab_size = 99;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 37;
  c.max_position_embeddings = 64;
  c.hidden_dropout_prob = 0.0;
  c.attention_probs_dropout_prob = 0.0;
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

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class MpiTestRunner {
 public:
  explicit MpiTestRunner(std::shared_ptr<distributed::ProcessGroup> group) : group_(std::move(group)) {}

  void run(const char* name, const std::function<void()>& test) {
    std::string error;
    try {
      test();
    } catch (const std::exception& e) {
      error = e.what();
      std::cerr << "[rank " << group_->rank() << "] " << name << ": " << error << std::endl;
    }
    Tensor any_failed = scalar_tensor(error.empty() ? 0 : 1, kInt32).reshape({1});
    group_->all_reduce(any_failed, distributed::Reduce::Max)->wait();
    const bool ok = any_failed.item<int32_t>() == 0;
    (ok ? passed_ : failed_) += 1;
    if (group_->rank() == 0) std::cout << (ok ? "[  OK  ] " : "[ FAIL ] ") << name << std::endl;
  }

  // Prints the summary on rank 0; the exit status of the program.
  int finish() const {
    if (group_->rank() == 0) std::cout << passed_ << " passed, " << failed_ << " failed" << std::endl;
    return failed_ == 0 ? 0 : 1;
  }

 private:
  std::shared_ptr<distributed::ProcessGroup> group_;
  int passed_ = 0, failed_ = 0;
};

}  // namespace accel::testing
