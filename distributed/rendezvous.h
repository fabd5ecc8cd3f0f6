/// @file
/// Rendezvous: how the processes of a job that mpirun did not start find each other once, so
/// that rank 0 can hand every rank a few bytes (the NCCL unique id, distributed/nccl.h).
///
/// It reads the torchrun-style variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
/// MASTER_PORT, or ACCEL_RENDEZVOUS_FILE for a shared-filesystem rendezvous:
///   - TCP: rank 0 listens on MASTER_PORT; every other rank connects to MASTER_ADDR:MASTER_PORT
///     (retrying until the timeout), says who it is, and receives rank 0's bytes once all
///     WORLD_SIZE ranks have arrived;
///   - file: rank 0 writes its bytes to the file (temp + rename, so a reader never sees half of
///     it), every other rank polls for it, reads it and leaves an arrival mark beside it; rank 0
///     removes the file and the marks once every rank has arrived, so the path can be reused.
///
/// It is a bootstrap that moves one message from rank 0 to the others, not a collective: tensors
/// travel over MPI or NCCL, never over these sockets. It needs neither CUDA nor MPI, so it builds
/// and is tested everywhere. A rank that never arrives makes the others fail after the timeout
/// with "rendezvous at HOST:PORT timed out after N s: K of W ranks arrived (missing: ...)".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace accel::distributed {

/// Where this process meets the others, as its environment says.
struct RendezvousPlan {
  enum class Kind {
    None,  ///< a job of one process: nothing to share
    Tcp,   ///< RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    File,  ///< RANK, WORLD_SIZE, ACCEL_RENDEZVOUS_FILE
  };
  Kind kind = Kind::None;
  int rank = 0;
  int world_size = 1;
  std::string host;  ///< Tcp: MASTER_ADDR
  int port = 0;      ///< Tcp: MASTER_PORT
  std::string path;  ///< File: ACCEL_RENDEZVOUS_FILE
};

/// Reads RANK and WORLD_SIZE (both or neither), then MASTER_ADDR + MASTER_PORT (TCP), else
/// ACCEL_RENDEZVOUS_FILE (file). Without RANK/WORLD_SIZE the job has one process. Throws on
/// malformed or contradictory values (RANK="x", RANK >= WORLD_SIZE, MASTER_PORT=70000, a world
/// of several processes with no place to meet), naming the variable and what it expected.
RendezvousPlan rendezvous_plan_from_environment();

/// This process's index among the processes of its node: LOCAL_RANK, else Open MPI's
/// OMPI_COMM_WORLD_LOCAL_RANK, else `fallback`. Throws when the value is not an integer >= 0.
int local_rank_from_environment(int fallback = 0);

/// Hands `bytes` from rank 0 to every rank of the plan; returns them on every rank (other ranks
/// pass an empty vector). Throws after `timeout_seconds` if a rank does not arrive.
std::vector<uint8_t> share_from_rank0(const RendezvousPlan& plan, const std::vector<uint8_t>& bytes,
                                      double timeout_seconds);

/// The TCP rendezvous on its own: rank 0 listens on `port` (all interfaces), the others connect
/// to host:port.
std::vector<uint8_t> tcp_share_from_rank0(const std::string& host, int port, int rank, int world_size,
                                          const std::vector<uint8_t>& bytes, double timeout_seconds);

/// The file rendezvous on its own: `path` must not exist when rank 0 arrives (one path per job).
std::vector<uint8_t> file_share_from_rank0(const std::string& path, int rank, int world_size,
                                           const std::vector<uint8_t>& bytes, double timeout_seconds);

}  // namespace accel::distributed
