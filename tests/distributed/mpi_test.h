// The runner of the mpirun test programs (test_ddp_main.cc, test_zero_main.cc): every rank
// runs each check, the ranks agree on the verdict, and rank 0 prints "[  OK  ] name" lines
// and "N passed, M failed".
#pragma once

#include <functional>
#include <iostream>
#include <memory>
#include <string>

#include "distributed/process_group.h"
#include "tests/test_util.h"

namespace accel::testing {

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
