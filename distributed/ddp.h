/// @file
/// DistributedDataParallel: averages gradients across the processes of a group during the
/// backward pass, in buckets, so that communication overlaps the rest of backward (PyTorch
/// DDP's Reducer, in one readable file).
///
/// Parameters are packed into buckets of about bucket_bytes in REVERSE registration order,
/// roughly the order backward produces their gradients. Each parameter's post-accumulate-grad
/// hook copies its gradient into its bucket's flat buffer; when a bucket's last gradient is
/// in, its all_reduce(avg) starts asynchronously. Buckets start strictly in index order, so
/// every rank issues the same collectives in the same order. When the backward pass ends (an
/// engine callback, autograd::queue_callback) every bucket is waited for and the averages are
/// copied back into .grad.
///
/// It is not a module wrapper: the model is called as before; DDP only hangs hooks on its
/// parameters. Broadcasting the initial weights is the caller's job (Accelerator::prepare
/// does it before attaching DDP).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "distributed/process_group.h"
#include "nn/module.h"

namespace accel::distributed {

struct DDPOptions {
  int64_t bucket_bytes = 25 * 1024 * 1024;  ///< PyTorch's bucket_cap_mb = 25
  /// A parameter that gets no gradient in a synchronizing backward pass (a branch not taken)
  /// is an error naming it, unless this is set: then its bucket slot holds its local gradient
  /// if it has one from earlier accumulation steps, zeros otherwise; one extra small
  /// all_reduce tells which parameters no rank used, and those keep no gradient.
  bool find_unused_parameters = false;
  /// After a synchronizing backward pass each parameter's .grad is a view into its bucket,
  /// where the all_reduce left the average (PyTorch's gradient_as_bucket_view): no copy back,
  /// no second set of gradient buffers. The next synchronizing pass writes over it, so a
  /// program that keeps a gradient past the next backward must clone it. false: .grad is the
  /// parameter's own tensor, and the average is copied into it.
  bool gradient_as_bucket_view = true;
};

/// One bucket's all_reduce in the last synchronizing backward pass.
struct BucketTiming {
  int64_t bytes = 0;
  int64_t num_parameters = 0;
  double communication_seconds = 0;  ///< from launch until completion was observed
  double overlapped_seconds = 0;     ///< the part of it before the backward pass ended
};

class DistributedDataParallel {
 public:
  /// Checks that every rank has the same parameter shapes (collective), then builds the
  /// buckets and registers the hooks.
  DistributedDataParallel(const nn::Module& module, std::shared_ptr<ProcessGroup> group, DDPOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  /// false (no_sync): backward passes leave gradients local, accumulating in .grad; the next
  /// pass with it true averages the accumulated gradients.
  void set_require_backward_grad_sync(bool sync);
  bool require_backward_grad_sync() const;

  int64_t num_buckets() const;
  std::vector<std::string> bucket_parameter_names(int64_t bucket) const;  ///< in bucket order
  const std::vector<BucketTiming>& last_bucket_timings() const;  ///< empty before the first sync

 private:
  struct Reducer;
  std::shared_ptr<Reducer> reducer_;  ///< the hooks hold it weakly: they outlive this object
};

}  // namespace accel::distributed
