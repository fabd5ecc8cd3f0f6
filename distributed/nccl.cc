// The NCCL process group (see nccl.h for the design): the ACCEL_NCCL_CHECK macro, the
// communicator shared by a group and its Work handles, the Work that polls a CUDA event
// against a deadline, the five collectives, and the bootstrap (unique id over MPI or over the
// rendezvous, device choice, ncclCommInitRank).
#include "distributed/nccl.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/stream.h"
#include "core/autograd/grad_mode.h"
#include "core/trace.h"
#include "distributed/mpi.h"
#include "distributed/rendezvous.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 13, 0)
#error "the NCCL process group needs NCCL 2.13 or newer (ncclAvg, ncclBfloat16, ncclGetLastError)"
#endif

namespace accel::distributed {

namespace {

// The message of a failed NCCL call: the expression, where, NCCL's text for the code, and for a
// communicator its last detailed error and any asynchronous error (a peer's failure shows there).
std::string nccl_failure(ncclResult_t status, ncclComm_t comm, const char* expression, const char* file, int line) {
  std::string message = detail::concat("NCCL error at ", file, ":", line, " in ", expression, ": ",
                                       ncclGetErrorString(status), " (", static_cast<int>(status), ")");
  if (comm == nullptr) return message;
  if (const char* last = ncclGetLastError(comm); last != nullptr && *last != '\0') {
    message += detail::concat(": ", last);
  }
  ncclResult_t async_status = ncclSuccess;
  if (ncclCommGetAsyncError(comm, &async_status) == ncclSuccess && async_status != ncclSuccess) {
    message += detail::concat("; asynchronous error on the communicator: ", ncclGetErrorString(async_status));
  }
  return message;
}

}  // namespace

}  // namespace accel::distributed

/// Checks an NCCL call made on communicator `comm` (nullptr before one exists).
#define ACCEL_NCCL_CHECK(comm, expr)                                                                      \
  do {                                                                                                    \
    ncclResult_t accel_nccl_status = (expr);                                                              \
    if (accel_nccl_status != ncclSuccess) [[unlikely]] {                                                  \
      throw ::accel::Error(::accel::distributed::nccl_failure(accel_nccl_status, comm, #expr, __FILE__, __LINE__)); \
    }                                                                                                     \
  } while (0)

namespace accel::distributed {

namespace {

using Clock = std::chrono::steady_clock;

// A CUDA event that only orders and signals (no timing), owned by one holder.
class Event {
 public:
  Event() { ACCEL_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  Event& operator=(Event&& other) noexcept {
    std::swap(event_, other.event_);
    return *this;
  }
  ~Event() {
    if (event_ != nullptr) cudaEventDestroy(event_);  // released once the GPU has passed it
  }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// What a group and its Work handles share. Its mutex serializes launches (an NCCL communicator
// takes one call at a time) and guards the aborted state and the retired list.
class Communicator {
 public:
  Communicator(ncclComm_t comm, int device, int rank, int size)
      : comm_(comm), device_(device), rank_(rank), size_(size) {
    ACCEL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~Communicator() {
    cudaSetDevice(device_);
    if (!aborted_) {
      cudaStreamSynchronize(stream_);  // what retired Works still need finishes first
      ncclCommDestroy(comm_);
    }
    retired_.clear();
    cudaStreamDestroy(stream_);
  }

  std::mutex& mutex() { return mutex_; }
  ncclComm_t comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  Event& inputs_ready() { return inputs_ready_; }

  // Throws once the communicator has been aborted; the caller holds mutex().
  void check_usable(const char* collective) const {
    ACCEL_CHECK(!aborted_, collective, " on rank ", rank_, ": this NCCL process group was aborted after an earlier ",
                "failure (", abort_reason_, ") and cannot be used again");
  }
  // Aborts the communicator (its pending collectives stop) and throws `reason`.
  [[noreturn]] void abort_and_fail(const std::string& reason) {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      if (!aborted_) {
        ncclCommAbort(comm_);
        aborted_ = true;
        abort_reason_ = reason;
      }
    }
    throw Error(reason + "; the communicator was aborted (ncclCommAbort), so this process group cannot be used again");
  }
  bool aborted() {
    std::lock_guard<std::mutex> guard(mutex_);
    return aborted_;
  }
  // NCCL's asynchronous error (a failed peer, a network error), as text; empty when none.
  std::string async_error() {
    std::lock_guard<std::mutex> guard(mutex_);
    ncclResult_t status = ncclSuccess;
    if (aborted_ || ncclCommGetAsyncError(comm_, &status) != ncclSuccess || status == ncclSuccess) return "";
    const char* last = ncclGetLastError(comm_);
    return detail::concat(ncclGetErrorString(status), last != nullptr && *last != '\0' ? ": " : "", last ? last : "");
  }

  // A Work dropped before completion hands over its event and the buffers NCCL still uses;
  // they are released once the event has fired (checked at each launch, under mutex()).
  void retire(Event event, std::vector<Tensor> buffers) {
    std::lock_guard<std::mutex> guard(mutex_);
    retired_.push_back({std::move(event), std::move(buffers)});
  }
  void release_finished_retirees() {
    std::erase_if(retired_, [](const Retired& retired) {
      return cudaEventQuery(retired.done.get()) != cudaErrorNotReady;
    });
  }

 private:
  struct Retired {
    Event done;
    std::vector<Tensor> buffers;
  };
  ncclComm_t comm_;
  int device_, rank_, size_;
  cudaStream_t stream_ = nullptr;
  Event inputs_ready_;  // recorded on the caller's current stream before each launch
  std::mutex mutex_;
  bool aborted_ = false;
  std::string abort_reason_;
  std::vector<Retired> retired_;
};

class NcclWork final : public Work {
 public:
  // buffers: the memory NCCL reads and writes until `done` fires; finish: what completes the
  // result afterwards on the host side (copying a staging buffer back).
  NcclWork(std::shared_ptr<Communicator> communicator, const char* collective, size_t bytes, Event done,
           std::vector<Tensor> buffers, std::function<void()> finish, trace::AsyncSpan span, double timeout_seconds)
      : communicator_(std::move(communicator)), collective_(collective), bytes_(bytes), done_event_(std::move(done)),
        buffers_(std::move(buffers)), finish_(std::move(finish)), span_(std::move(span)),
        timeout_seconds_(timeout_seconds) {}

  ~NcclWork() override {
    if (!completed_) communicator_->retire(std::move(done_event_), std::move(buffers_));
  }

  bool is_completed() override {
    if (completed_) return true;
    ACCEL_CHECK(!communicator_->aborted(), collective_, " on rank ", communicator_->rank(),
                " did not complete: its NCCL process group was aborted");
    const cudaError_t status = cudaEventQuery(done_event_.get());
    if (status == cudaErrorNotReady) return false;
    ACCEL_CUDA_CHECK(status);
    completed_ = true;
    span_.end();
    if (finish_) {
      NoGradGuard no_grad;  // finishing writes into tensors that may require grad (parameters)
      finish_();
    }
    buffers_.clear();
    return true;
  }

  void wait() override {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds_);
    // Spin briefly (small collectives finish in microseconds), then sleep between polls.
    for (int polls = 0; !is_completed(); ++polls) {
      if (const std::string error = communicator_->async_error(); !error.empty()) {
        communicator_->abort_and_fail(detail::concat("NCCL ", collective_, " of ", bytes_, " bytes failed on rank ",
                                                     communicator_->rank(), " (cuda:", communicator_->device(),
                                                     "): ", error));
      }
      if (Clock::now() >= deadline) {
        communicator_->abort_and_fail(detail::concat(
            "NCCL ", collective_, " of ", bytes_, " bytes timed out after ", timeout_seconds_, " s on rank ",
            communicator_->rank(), " (cuda:", communicator_->device(), "): ", peers_description(),
            " did not join it (died, stalled, or called a different collective)"));
      }
      if (polls < 1000) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

 private:
  std::string peers_description() const {
    const int size = communicator_->size(), rank = communicator_->rank();
    if (size == 2) return "rank " + std::to_string(1 - rank);
    return "at least one of the other " + std::to_string(size - 1) + " ranks";
  }

  std::shared_ptr<Communicator> communicator_;
  const char* collective_;
  size_t bytes_;
  Event done_event_;
  std::vector<Tensor> buffers_;
  std::function<void()> finish_;
  trace::AsyncSpan span_;
  double timeout_seconds_;
  bool completed_ = false;
};

ncclRedOp_t nccl_op(Reduce op) {
  switch (op) {
    case Reduce::Sum: return ncclSum;
    case Reduce::Avg: return ncclAvg;
    case Reduce::Max: return ncclMax;
  }
  ACCEL_FAIL("NCCL: unknown reduction ", static_cast<int>(op));
}

// The NCCL type of one element. Bool only moves (as bytes): NCCL cannot reduce it.
ncclDataType_t nccl_type(DType dtype, const char* collective, bool reduces) {
  switch (dtype) {
    case kFloat32: return ncclFloat32;
    case kFloat64: return ncclFloat64;
    case kFloat16: return ncclFloat16;
    case kBFloat16: return ncclBfloat16;
    case kInt32: return ncclInt32;
    case kInt64: return ncclInt64;
    case kBool:
      ACCEL_CHECK(!reduces, collective, ": the NCCL process group cannot reduce a bool tensor; convert it to int32 "
                  "first");
      return ncclUint8;
  }
  ACCEL_FAIL(collective, ": the NCCL process group does not support dtype ", dtype,
             " (it takes float32, float64, float16, bfloat16, int32, int64)");
}

void check_reducible(const Tensor& tensor, Reduce op, const char* collective) {
  nccl_type(tensor.dtype(), collective, /*reduces=*/true);
  ACCEL_CHECK(op != Reduce::Avg || tensor.is_floating_point(), collective,
              ": avg needs a floating-point tensor, got ", tensor.dtype(), " (use sum and divide yourself)");
}

class NcclProcessGroup final : public ProcessGroup {
 public:
  NcclProcessGroup(std::shared_ptr<Communicator> communicator, int local_rank, double timeout_seconds)
      : communicator_(std::move(communicator)), local_rank_(local_rank), timeout_seconds_(timeout_seconds),
        barrier_scratch_(Tensor::empty({1}, kInt32, Device(DeviceType::CUDA, communicator_->device()))) {}

  std::string backend() const override { return "nccl"; }
  int rank() const override { return communicator_->rank(); }
  int size() const override { return communicator_->size(); }
  int local_rank() const override { return local_rank_; }

  std::shared_ptr<Work> all_reduce(Tensor& tensor, Reduce op) override {
    NoGradGuard no_grad;  // staging copies are plain buffers, not graph nodes
    check_device(tensor, "all_reduce");
    check_reducible(tensor, op, "all_reduce");
    Tensor buffer = tensor.contiguous();
    const bool staged = !buffer.is_same(tensor);
    auto finish = [tensor, buffer, staged]() mutable {
      if (staged) tensor.copy_(buffer);
      tensor.storage()->bump_version();  // NCCL wrote into it behind the version counter's back
    };
    return launch("all_reduce", buffer.nbytes(), {tensor, buffer}, std::move(finish),
                  [&](ncclComm_t comm, cudaStream_t stream) {
                    ACCEL_NCCL_CHECK(comm, ncclAllReduce(buffer.data_ptr(), buffer.data_ptr(), buffer.numel(),
                                                         nccl_type(buffer.dtype(), "all_reduce", true), nccl_op(op),
                                                         comm, stream));
                  });
  }

  std::shared_ptr<Work> all_gather(const Tensor& input, Tensor& output) override {
    NoGradGuard no_grad;
    check_device(input, "all_gather");
    check_device(output, "all_gather");
    ACCEL_CHECK(output.dtype() == input.dtype() && output.numel() == input.numel() * size(),
                "all_gather: output of shape ", output.shape_string(), " and dtype ", output.dtype(),
                " cannot hold ", size(), " inputs of shape ", input.shape_string(), " and dtype ", input.dtype());
    Tensor send = input.contiguous();
    Tensor receive = output.contiguous();
    const bool staged = !receive.is_same(output);
    auto finish = [output, receive, staged]() mutable {
      if (staged) output.copy_(receive);
      output.storage()->bump_version();
    };
    return launch("all_gather", receive.nbytes(), {send, receive, output}, std::move(finish),
                  [&](ncclComm_t comm, cudaStream_t stream) {
                    ACCEL_NCCL_CHECK(comm, ncclAllGather(send.data_ptr(), receive.data_ptr(), send.numel(),
                                                         nccl_type(send.dtype(), "all_gather", false), comm, stream));
                  });
  }

  std::shared_ptr<Work> reduce_scatter(const Tensor& input, Tensor& output, Reduce op) override {
    NoGradGuard no_grad;
    check_device(input, "reduce_scatter");
    check_device(output, "reduce_scatter");
    check_reducible(input, op, "reduce_scatter");
    ACCEL_CHECK(output.dtype() == input.dtype() && input.numel() == output.numel() * size(),
                "reduce_scatter: input of shape ", input.shape_string(), " and dtype ", input.dtype(),
                " does not split into ", size(), " outputs of shape ", output.shape_string(), " and dtype ",
                output.dtype());
    Tensor send = input.contiguous();
    Tensor receive = output.contiguous();
    const bool staged = !receive.is_same(output);
    auto finish = [output, receive, staged]() mutable {
      if (staged) output.copy_(receive);
      output.storage()->bump_version();
    };
    return launch("reduce_scatter", send.nbytes(), {send, receive, output}, std::move(finish),
                  [&](ncclComm_t comm, cudaStream_t stream) {
                    ACCEL_NCCL_CHECK(comm, ncclReduceScatter(send.data_ptr(), receive.data_ptr(), receive.numel(),
                                                             nccl_type(send.dtype(), "reduce_scatter", true),
                                                             nccl_op(op), comm, stream));
                  });
  }

  std::shared_ptr<Work> broadcast(Tensor& tensor, int root) override {
    NoGradGuard no_grad;
    check_device(tensor, "broadcast");
    ACCEL_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " does not exist in a group of ", size(),
                " processes");
    Tensor buffer = tensor.contiguous();
    const bool staged = !buffer.is_same(tensor);
    auto finish = [tensor, buffer, staged]() mutable {
      if (staged) tensor.copy_(buffer);
      tensor.storage()->bump_version();
    };
    return launch("broadcast", buffer.nbytes(), {tensor, buffer}, std::move(finish),
                  [&](ncclComm_t comm, cudaStream_t stream) {
                    ACCEL_NCCL_CHECK(comm, ncclBroadcast(buffer.data_ptr(), buffer.data_ptr(), buffer.numel(),
                                                         nccl_type(buffer.dtype(), "broadcast", false), root, comm,
                                                         stream));
                  });
  }

  // NCCL has no barrier: a one-element all-reduce that every rank must join, waited for.
  void barrier() override {
    auto all_reduce_one = [&](ncclComm_t comm, cudaStream_t stream) {
      ACCEL_NCCL_CHECK(comm, ncclAllReduce(barrier_scratch_.data_ptr(), barrier_scratch_.data_ptr(), 1, ncclInt32,
                                           ncclSum, comm, stream));
    };
    launch("barrier", barrier_scratch_.nbytes(), {barrier_scratch_}, nullptr, all_reduce_one)->wait();
  }

 private:
  void check_device(const Tensor& tensor, const char* collective) const {
    ACCEL_CHECK(tensor.is_cuda(), collective, ": the NCCL process group takes CUDA tensors, got one on ",
                tensor.device(), " (CPU tensors go through the MPI process group, make_mpi_group())");
    ACCEL_CHECK(tensor.device().index == communicator_->device(), collective, ": rank ", rank(),
                "'s NCCL process group runs on cuda:", communicator_->device(), ", got a tensor on ", tensor.device());
  }

  // Queues `call` on the group's stream once the work queued so far on the calling thread's
  // current stream (backends/cuda/stream.h: where accel's kernels wrote the inputs) is done,
  // and records the event the returned Work waits for.
  std::shared_ptr<Work> launch(const char* collective, size_t bytes, std::vector<Tensor> buffers,
                               std::function<void()> finish,
                               const std::function<void(ncclComm_t, cudaStream_t)>& call) {
    std::lock_guard<std::mutex> guard(communicator_->mutex());
    communicator_->check_usable(collective);
    communicator_->release_finished_retirees();
    ACCEL_CUDA_CHECK(cudaSetDevice(communicator_->device()));
    trace::AsyncSpan span(collective, "communication", {{"bytes", static_cast<int64_t>(bytes)}});
    Event done;
    ACCEL_CUDA_CHECK(cudaEventRecord(communicator_->inputs_ready().get(), inputs_stream()));
    ACCEL_CUDA_CHECK(cudaStreamWaitEvent(communicator_->stream(), communicator_->inputs_ready().get(), 0));
    call(communicator_->comm(), communicator_->stream());
    ACCEL_CUDA_CHECK(cudaEventRecord(done.get(), communicator_->stream()));
    return std::make_shared<NcclWork>(communicator_, collective, bytes, std::move(done), std::move(buffers),
                                      std::move(finish), std::move(span), timeout_seconds_);
  }

  // The stream accel's kernels use on this group's device right now: the current stream,
  // where a null one is the legacy default stream (backends/cuda/stream.h).
  cudaStream_t inputs_stream() const {
    cudaStream_t stream = cuda::current_stream(communicator_->device());
    return stream == nullptr ? cudaStreamLegacy : stream;
  }

  std::shared_ptr<Communicator> communicator_;
  int local_rank_;
  double timeout_seconds_;
  Tensor barrier_scratch_;  // (1,) int32 on this rank's device
};

// cuda:local_rank, made current; throws when this node has no such device.
int select_device(int local_rank) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  ACCEL_CHECK(status == cudaSuccess && count > 0, "make_nccl_group: no CUDA device is available (",
              cudaGetErrorString(status), "); CPU tensors go through the MPI process group, make_mpi_group()");
  ACCEL_CHECK(local_rank < count, "make_nccl_group: local rank ", local_rank, " needs cuda:", local_rank,
              ", but this node has ", count, " CUDA device(s): start at most ", count,
              " processes per node, or check LOCAL_RANK and CUDA_VISIBLE_DEVICES");
  ACCEL_CUDA_CHECK(cudaSetDevice(local_rank));
  return local_rank;
}

static_assert(sizeof(ncclUniqueId) == 128, "the rendezvous and the MPI broadcast carry a 128-byte id");

}  // namespace

std::shared_ptr<ProcessGroup> make_nccl_group(const NcclGroupOptions& options) {
  ACCEL_CHECK(options.timeout_seconds >= 0, "make_nccl_group: timeout_seconds must be >= 0 (0: ",
              "ACCEL_COLLECTIVE_TIMEOUT), got ", options.timeout_seconds);
  const double timeout = options.timeout_seconds > 0 ? options.timeout_seconds : collective_timeout_seconds();
  // Who this process is, and the channel that carries rank 0's unique id to the others.
  std::shared_ptr<ProcessGroup> mpi;
  RendezvousPlan plan;
  int local_rank = 0;
  if (started_by_mpi_launcher()) {
    mpi = make_mpi_group();
    plan.rank = mpi->rank();
    plan.world_size = mpi->size();
    local_rank = local_rank_from_environment(mpi->local_rank());
  } else {
    plan = rendezvous_plan_from_environment();
    local_rank = local_rank_from_environment(0);
  }
  const int device = select_device(local_rank);

  ncclUniqueId id{};
  if (plan.rank == 0) ACCEL_NCCL_CHECK(nullptr, ncclGetUniqueId(&id));
  if (mpi) {
    Tensor carrier = Tensor::empty({static_cast<int64_t>(sizeof id / sizeof(int32_t))}, kInt32);  // (32,)
    std::memcpy(carrier.data_ptr(), &id, sizeof id);
    mpi->broadcast(carrier, 0)->wait();
    std::memcpy(&id, carrier.data_ptr(), sizeof id);
  } else {
    const auto* id_bytes = reinterpret_cast<const uint8_t*>(&id);
    std::vector<uint8_t> mine;
    if (plan.rank == 0) mine.assign(id_bytes, id_bytes + sizeof id);
    const std::vector<uint8_t> shared = share_from_rank0(plan, mine, timeout);
    ACCEL_CHECK(shared.size() == sizeof id, "make_nccl_group: rank ", plan.rank, " received ", shared.size(),
                " bytes from rank 0, expected a ", sizeof id, "-byte NCCL unique id");
    std::memcpy(&id, shared.data(), sizeof id);
  }

  ncclComm_t comm = nullptr;
  ACCEL_NCCL_CHECK(nullptr, ncclCommInitRank(&comm, plan.world_size, id, plan.rank));
  auto communicator = std::make_shared<Communicator>(comm, device, plan.rank, plan.world_size);
  return std::make_shared<NcclProcessGroup>(std::move(communicator), local_rank, timeout);
}

std::string nccl_version() {
  int code = 0;
  ACCEL_NCCL_CHECK(nullptr, ncclGetVersion(&code));
  // Since 2.9 the code is major * 10000 + minor * 100 + patch.
  return detail::concat(code / 10000, ".", code / 100 % 100, ".", code % 100, " (headers ", NCCL_MAJOR, ".",
                        NCCL_MINOR, ".", NCCL_PATCH, ")");
}

}  // namespace accel::distributed
