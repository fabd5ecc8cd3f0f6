/// @file
/// ProcessGroup: the collectives data parallelism needs (all_reduce, all_gather,
/// reduce_scatter, broadcast, barrier), asynchronous with a Work handle to wait on.
/// Backends: a single-process group (world size 1, every collective the identity), and MPI
/// for CPU tensors (distributed/mpi.h) / NCCL for CUDA tensors (distributed/nccl.h).
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
/// It is a CPU group: the Accelerator takes the NCCL group instead when its device is CUDA
/// and the job has several processes; a program without the Accelerator that keeps its tensors
/// on CUDA asks for it itself, with distributed::make_nccl_group() (distributed/nccl.h, CUDA
/// builds).
std::shared_ptr<ProcessGroup> make_default_group();

/// Seconds a Work::wait() may take before the collective is declared dead, for every backend:
/// ACCEL_COLLECTIVE_TIMEOUT, default 300; throws when it is not a positive number.
double collective_timeout_seconds();

}  // namespace accel::distributed
