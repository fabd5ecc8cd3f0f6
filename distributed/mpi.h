/// @file
/// The MPI process group: CPU collectives over MPI_COMM_WORLD (OpenMPI here), each one a
/// non-blocking MPI call (MPI_Iallreduce, MPI_Iallgather, ...) behind a Work handle.
///
/// It is the CPU path only: a CUDA tensor is an error (CUDA tensors go through NCCL). Every
/// wait gives up after ACCEL_COLLECTIVE_TIMEOUT seconds (default 300) with an error naming the
/// collective and the rank, so a dead peer stops the job instead of hanging it. MPI is
/// initialized by the first make_mpi_group() and finalized when the program exits.
/// Once MPI runs, an exception that escapes the program aborts the whole job (MPI_Abort) with
/// "accel: rank R failed: <what>", and a rank that returns from main makes any peer still
/// waiting for it in a collective fail within seconds, naming it (docs/distributed-faults.md).
#pragma once

#include <memory>
#include <string>

#include "distributed/process_group.h"

namespace accel::distributed {

/// Initializes MPI on first use (MPI_THREAD_MULTIPLE where the library offers it, otherwise
/// every MPI call is serialized behind a mutex). Collective over MPI_COMM_WORLD: every rank
/// must call it, in the same order as its other collectives.
std::shared_ptr<ProcessGroup> make_mpi_group();

/// True when a launcher started this process as one rank of an MPI job (mpirun sets
/// OMPI_COMM_WORLD_SIZE, PMI-based launchers such as srun set PMI_SIZE).
bool started_by_mpi_launcher();

/// MPI_Get_library_version's text, e.g. "Open MPI v4.1.4, ..." (needs no MPI_Init).
std::string mpi_library_version();

}  // namespace accel::distributed
