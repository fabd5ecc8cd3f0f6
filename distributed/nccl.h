/// @file
/// The NCCL process group: collectives on CUDA tensors through NVIDIA's NCCL, the way
/// PyTorch's ProcessGroupNCCL does them. Built only with CUDA (ACCEL_CUDA=ON).
///
/// How it works:
///   - Bootstrap. Every rank needs the same ncclUniqueId (128 bytes, made by rank 0). Under
///     mpirun (or srun with PMI) rank 0 broadcasts it over the MPI group; otherwise it travels
///     over the rendezvous that the environment describes (distributed/rendezvous.h): TCP to
///     MASTER_ADDR:MASTER_PORT with RANK/WORLD_SIZE (torchrun style), or ACCEL_RENDEZVOUS_FILE.
///     Without any of these the group has one process. Then ncclCommInitRank builds the
///     communicator.
///   - Device. Each rank uses cuda:LOCAL_RANK (LOCAL_RANK, else OMPI_COMM_WORLD_LOCAL_RANK,
///     else MPI's node-local rank, else 0); a LOCAL_RANK without a GPU is an error.
///   - Streams. The group owns one non-blocking CUDA stream. Before each collective it makes
///     that stream wait (an event, no host sync) for the work already queued on the calling
///     thread's current stream of the device (backends/cuda/stream.h: the stream accel's
///     kernels run on, the legacy default stream unless a StreamGuard set another), so NCCL
///     reads finished inputs; after the NCCL call it records a completion event.
///     Communication thus overlaps with whatever the current stream does next.
///   - Work. is_completed() queries the completion event; wait() polls it until it fires, then
///     finishes the result on the host side (copies staging buffers back). Only after wait()
///     may any stream read the result. A wait that lasts longer than
///     ACCEL_COLLECTIVE_TIMEOUT seconds (default 300), or an asynchronous NCCL error, aborts the
///     communicator (ncclCommAbort) and throws, naming the collective, its bytes and the rank;
///     the group is unusable afterwards, as after any NCCL failure.
///
/// What it takes: CUDA tensors on this rank's device, of dtype f32, f64, f16, bf16, i32, i64
/// (bool moves in broadcast and all_gather but does not reduce). Avg is NCCL's own ncclAvg, and
/// like MPI's group it takes floating-point tensors only. Non-contiguous tensors go through a
/// contiguous staging copy. CPU tensors belong to the MPI group (distributed/mpi.h).
///
/// How a program gets it: the Accelerator picks it by itself on a CUDA device with several
/// processes (accelerate/accelerator.h); without the Accelerator, call make_nccl_group() on
/// every rank. make_default_group() stays the CPU group.
#pragma once

#include <memory>
#include <string>

#include "distributed/process_group.h"

namespace accel::distributed {

struct NcclGroupOptions {
  /// Seconds the rendezvous and each Work::wait() may take; 0: ACCEL_COLLECTIVE_TIMEOUT.
  double timeout_seconds = 0;
};

/// Collective over every rank of the job: each must call it once, in the same order as its
/// other collectives. Throws when no CUDA device is usable, when the rendezvous times out, or
/// when NCCL cannot build the communicator.
std::shared_ptr<ProcessGroup> make_nccl_group(const NcclGroupOptions& options = {});

/// "2.28.3 (headers 2.28.3)": the NCCL library in use (ncclGetVersion) and the one built against.
std::string nccl_version();

}  // namespace accel::distributed
