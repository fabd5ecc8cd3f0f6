// The world-size-1 process group: every collective leaves the data as it is (all_gather
// and reduce_scatter copy), so code written for N processes runs unchanged on one.
#include "core/autograd/grad_mode.h"
#include "core/ops.h"
#include "distributed/process_group.h"

namespace accel::distributed {

namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool is_completed() override { return true; }
};

class SingleProcessGroup final : public ProcessGroup {
 public:
  std::string backend() const override { return "single"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::shared_ptr<Work> all_reduce(Tensor&, Reduce) override { return done(); }
  std::shared_ptr<Work> all_gather(const Tensor& input, Tensor& output) override { return copy(input, output); }
  std::shared_ptr<Work> reduce_scatter(const Tensor& input, Tensor& output, Reduce) override {
    return copy(input, output);
  }
  std::shared_ptr<Work> broadcast(Tensor&, int root) override {
    ACCEL_CHECK(root == 0, "broadcast: root ", root, " does not exist in a group of 1 process");
    return done();
  }
  void barrier() override {}

 private:
  static std::shared_ptr<Work> done() { return std::make_shared<DoneWork>(); }
  static std::shared_ptr<Work> copy(const Tensor& input, Tensor& output) {
    ACCEL_CHECK(input.numel() == output.numel(), "collective: output of shape ", output.shape_string(),
                " cannot hold input of shape ", input.shape_string(), " in a group of 1 process");
    NoGradGuard no_grad;
    output.copy_(input.reshape(output.sizes()));
    return done();
  }
};

}  // namespace

std::shared_ptr<ProcessGroup> make_single_process_group() { return std::make_shared<SingleProcessGroup>(); }

}  // namespace accel::distributed
