/// @file
/// ProcessGroup: the collectives data parallelism needs (all_reduce, all_gather,
/// reduce_scatter, broadcast, barrier), asynchronous with a Work handle to wait on.
/// Backends: a single-process group (world size 1, every collective the identity), and MPI
/// for CPU tensors / NCCL for CUDA tensors (distributed issue).
#pragma once

#include <memory>
#include <string>

#include "core/tensor.h"

namespace accel::distributed {

enum class Reduce { Sum, Avg, Max };

class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;  ///< throws if the collective failed
  /// Polls without blocking (and drives the backend's progress); true once wait() would
  /// return at once.
  virtual bool is_completed() = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual std::string backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;
  /// In place on every rank.
  virtual std::shared_ptr<Work> all_reduce(Tensor& tensor, Reduce op) = 0;
  /// output (size * n, ...) receives every rank's input (n, ...) in rank order.
  virtual std::shared_ptr<Work> all_gather(const Tensor& input, Tensor& output) = 0;
  /// input (size * n, ...): rank r receives the reduction of every rank's r-th slice.
  virtual std::shared_ptr<Work> reduce_scatter(const Tensor& input, Tensor& output, Reduce op) = 0;
  virtual std::shared_ptr<Work> broadcast(Tensor& tensor, int root) = 0;
  virtual void barrier() = 0;
};

std::shared_ptr<ProcessGroup> make_single_process_group();
/// What a program gets when it does not choose: MPI when started by mpirun (or a PMI launcher
/// such as srun), or when ACCEL_BACKEND=mpi; the single-process group otherwise (distributed/mpi.cc).
std::shared_ptr<ProcessGroup> make_default_group();

}  // namespace accel::distributed
