// The MPI process group (see mpi.h): MPI's process lifetime, the dtype -> MPI_Datatype map,
// the Work handle that polls MPI_Testall against a deadline, and the five collectives.
//
// Failures (docs/distributed-faults.md): an exception that escapes the program ends in
// std::terminate, whose handler here prints "accel: rank R failed: ..." and calls MPI_Abort,
// so mpirun stops every rank at once. A rank that returns from main tells its peers it has
// left (an exit notice); a peer waiting on a collective that rank never joined then fails
// within seconds, naming it, instead of waiting out the collective timeout.
//
// Buffers handed to MPI must be contiguous and of a dtype MPI can reduce. Where the caller's
// tensor is not (a strided view; fp16/bf16, which MPI cannot add), the collective runs on a
// staging copy (float32 for the 16-bit floats) that is copied back when the Work completes.
#include "distributed/mpi.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "core/autograd/grad_mode.h"
#include "core/ops.h"
#include "core/trace.h"

namespace accel::distributed {

namespace {

using Clock = std::chrono::steady_clock;

// MPI counts are ints: longer messages go out as several calls of at most this many elements.
constexpr int64_t kMaxElementsPerCall = INT_MAX;

std::string error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(text, length);
}

void check(int code, const char* collective, int rank) {
  if (code != MPI_SUCCESS) ACCEL_FAIL("MPI ", collective, " failed on rank ", rank, ": ", error_string(code));
}

// Tag of the exit notices, on the runtime's private communicator.
constexpr int kExitNoticeTag = 1;

// How long a wait goes on after the peer it needs has left: the collectives that peer did
// join still complete (it drives MPI's progress until its own exit), the others never will.
constexpr double kGraceAfterPeerExitSeconds = 2.0;

// std::terminate's handler once MPI runs: a rank that dies of an exception takes the job
// down at once (MPI_Abort), with a line that names it, instead of leaving its peers to wait.
[[noreturn]] void abort_job_on_terminate() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  int rank = -1;
  if (!finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string reason = "std::terminate was called without an active exception";
  if (std::exception_ptr current = std::current_exception()) {
    try {
      std::rethrow_exception(current);
    } catch (const std::exception& e) {
      reason = e.what();
    } catch (...) {
      reason = "an exception that is not a std::exception";
    }
  }
  std::cerr << "accel: rank " << rank << " failed: " << reason << "\naccel: aborting the job (MPI_Abort) so that "
            << "the other ranks stop instead of waiting for rank " << rank << std::endl;
  if (!finalized) MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // after MPI_Finalize (MPI_Abort itself does not return)
}

// MPI's process-wide state: initialized by the first group, finalized at exit.
class MpiRuntime {
 public:
  static MpiRuntime& instance() {
    static MpiRuntime runtime;
    return runtime;
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    exchange_exit_notices();
    MPI_Comm_free(&exit_comm_);
    if (initialized_here_) MPI_Finalize();
  }
  // Held around every MPI call when the library does not allow concurrent calls.
  std::unique_lock<std::mutex> lock() {
    std::unique_lock<std::mutex> guard(mutex_, std::defer_lock);
    if (serialized_) guard.lock();
    return guard;
  }
  int world_size() const { return size_; }
  // The lowest rank that has announced its exit, or -1; polls for notices without blocking.
  int departed_peer() {
    std::lock_guard<std::mutex> notices(notices_mutex_);
    auto guard = lock();
    receive_exit_notices();
    return departed_.empty() ? -1 : *departed_.begin();
  }

 private:
  MpiRuntime() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    int provided = MPI_THREAD_SINGLE;
    if (initialized) {
      MPI_Query_thread(&provided);
    } else {
      int code = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      ACCEL_CHECK(code == MPI_SUCCESS, "MPI_Init_thread failed: ", error_string(code));
      initialized_here_ = true;
      // Completion calls on non-blocking collectives report errors through MPI_COMM_WORLD's
      // handler (Open MPI), whose default aborts the job: make them return codes instead.
      MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    }
    serialized_ = provided < MPI_THREAD_MULTIPLE;
    std::set_terminate(abort_job_on_terminate);
    MPI_Comm_dup(MPI_COMM_WORLD, &exit_comm_);
    MPI_Comm_rank(exit_comm_, &rank_);
    MPI_Comm_size(exit_comm_, &size_);
    if (size_ > 1) post_exit_notice_receive();
  }

  void post_exit_notice_receive() {
    MPI_Irecv(&notice_, 1, MPI_INT, MPI_ANY_SOURCE, kExitNoticeTag, exit_comm_, &notice_request_);
  }
  // Records every notice that has arrived; the caller holds notices_mutex_ and lock().
  void receive_exit_notices() {
    while (static_cast<int>(departed_.size()) < size_ - 1) {
      int arrived = 0;
      MPI_Status status;
      MPI_Test(&notice_request_, &arrived, &status);
      if (!arrived) return;
      departed_.insert(status.MPI_SOURCE);
      if (static_cast<int>(departed_.size()) < size_ - 1) post_exit_notice_receive();
    }
  }
  // At exit: tell every peer this rank has left, then wait for theirs (as MPI_Finalize would
  // wait for them anyway), so that every notice sent is also received.
  void exchange_exit_notices() {
    std::lock_guard<std::mutex> notices(notices_mutex_);
    std::vector<MPI_Request> sends;
    {
      auto guard = lock();
      for (int peer = 0; peer < size_; ++peer) {
        if (peer == rank_) continue;
        sends.emplace_back();
        MPI_Isend(&rank_, 1, MPI_INT, peer, kExitNoticeTag, exit_comm_, &sends.back());
      }
    }
    for (;;) {
      {
        auto guard = lock();
        receive_exit_notices();
        int sent = 0;
        MPI_Testall(static_cast<int>(sends.size()), sends.data(), &sent, MPI_STATUSES_IGNORE);
        if (sent && static_cast<int>(departed_.size()) == size_ - 1) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  std::mutex mutex_;
  bool serialized_ = false;
  bool initialized_here_ = false;
  MPI_Comm exit_comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::mutex notices_mutex_;  // guards what follows
  int notice_ = -1;
  MPI_Request notice_request_ = MPI_REQUEST_NULL;
  std::set<int> departed_;
};

// MPI cannot cancel a collective: memory it may still write must outlive an abandoned Work.
void keep_forever(std::vector<Tensor> buffers) {
  static std::mutex mutex;
  static auto* abandoned = new std::vector<Tensor>();
  std::lock_guard<std::mutex> guard(mutex);
  for (Tensor& buffer : buffers) abandoned->push_back(std::move(buffer));
}

class MpiWork final : public Work {
 public:
  // buffers: the memory MPI reads and writes until completion; finish: what completes the
  // result afterwards (averaging, copying a staging buffer back); span: the trace span begun
  // just before launch, ended when completion is observed.
  MpiWork(const char* collective, int rank, std::vector<MPI_Request> requests, std::vector<Tensor> buffers,
          std::function<void()> finish, trace::AsyncSpan span)
      : collective_(collective), rank_(rank), requests_(std::move(requests)), buffers_(std::move(buffers)),
        finish_(std::move(finish)), span_(std::move(span)) {}

  ~MpiWork() override {
    if (!done_) keep_forever(std::move(buffers_));
  }

  bool is_completed() override {
    if (done_) return true;
    int flag = 0;
    {
      auto guard = MpiRuntime::instance().lock();
      std::vector<MPI_Status> statuses(requests_.size());
      int code = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, statuses.data());
      if (code == MPI_ERR_IN_STATUS) {
        for (const MPI_Status& status : statuses) {
          if (status.MPI_ERROR != MPI_SUCCESS) code = status.MPI_ERROR;
        }
      }
      check(code, collective_, rank_);
    }
    if (!flag) return false;
    done_ = true;
    span_.end();
    if (finish_) {
      NoGradGuard no_grad;  // finishing writes into tensors that may require grad (parameters)
      finish_();
    }
    buffers_.clear();
    return true;
  }

  void wait() override {
    const double timeout = collective_timeout_seconds();
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout);
    std::optional<Clock::time_point> peer_gone_at;
    // Spin briefly (small collectives finish in microseconds), then sleep between polls so
    // that waiting ranks leave the cores to the ranks still computing.
    for (int polls = 0; !is_completed(); ++polls) {
      ACCEL_CHECK(Clock::now() < deadline, collective_, " timed out after ", timeout, " s on rank ", rank_, ": ",
                  peers_description(), " did not join it (died, stalled, or called a different collective)");
      if (const int departed = MpiRuntime::instance().departed_peer(); departed >= 0) {
        if (!peer_gone_at) peer_gone_at = Clock::now();
        ACCEL_CHECK(Clock::now() - *peer_gone_at < std::chrono::duration<double>(kGraceAfterPeerExitSeconds),
                    collective_, " on rank ", rank_, " cannot complete: rank ", departed,
                    " has left the job without joining it (its program ended, likely on an error: see rank ",
                    departed, "'s output)");
      }
      if (polls < 1000) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

 private:
  // Who this rank waits for: its one peer by rank when there are two.
  std::string peers_description() const {
    const int size = MpiRuntime::instance().world_size();
    if (size == 2) return "rank " + std::to_string(1 - rank_);
    return "at least one of the other " + std::to_string(size - 1) + " ranks";
  }

  const char* collective_;
  int rank_;
  std::vector<MPI_Request> requests_;
  std::vector<Tensor> buffers_;
  std::function<void()> finish_;
  trace::AsyncSpan span_;
  bool done_ = false;
};

// The MPI type of one element, for collectives that only move data.
MPI_Datatype element_type(DType dtype) {
  switch (dtype) {
    case kFloat32: return MPI_FLOAT;
    case kFloat64: return MPI_DOUBLE;
    case kInt64: return MPI_INT64_T;
    case kInt32: return MPI_INT32_T;
    case kFloat16:
    case kBFloat16: return MPI_UINT16_T;
    case kBool: return MPI_UINT8_T;
  }
  ACCEL_FAIL("MPI: unsupported dtype ", dtype);
}

bool is_low_precision(DType dtype) { return dtype == kFloat16 || dtype == kBFloat16; }

MPI_Op mpi_op(Reduce op) { return op == Reduce::Max ? MPI_MAX : MPI_SUM; }

const char* op_name(Reduce op) { return op == Reduce::Sum ? "sum" : op == Reduce::Avg ? "avg" : "max"; }

void check_reducible(const Tensor& tensor, Reduce op, const char* collective) {
  ACCEL_CHECK(tensor.dtype() != kBool, collective, ": cannot reduce a bool tensor (", op_name(op),
              "); convert it to int32 first");
  ACCEL_CHECK(op != Reduce::Avg || tensor.is_floating_point(), collective,
              ": avg needs a floating-point tensor, got ", tensor.dtype(), " (use sum and divide yourself)");
}

// The buffer a reduction runs on: the tensor itself when MPI can use it in place, else a
// contiguous copy (float32 for fp16/bf16).
Tensor reduction_buffer(const Tensor& tensor) {
  if (is_low_precision(tensor.dtype())) return tensor.to(kFloat32).contiguous();
  return tensor.contiguous();
}

class MpiProcessGroup final : public ProcessGroup {
 public:
  MpiProcessGroup() {
    auto guard = MpiRuntime::instance().lock();
    // A private communicator, so that our error handler and message order are ours alone.
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup", -1);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm node;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type",
          rank_);
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }

  ~MpiProcessGroup() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  std::string backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  std::shared_ptr<Work> all_reduce(Tensor& tensor, Reduce op) override {
    NoGradGuard no_grad;  // staging copies are plain buffers, not graph nodes
    check_cpu(tensor, "all_reduce");
    check_reducible(tensor, op, "all_reduce");
    Tensor buffer = reduction_buffer(tensor);
    const bool staged = !buffer.is_same(tensor);
    trace::AsyncSpan span("all_reduce", "communication", {{"bytes", static_cast<int64_t>(buffer.nbytes())}});
    std::vector<MPI_Request> requests;
    {
      auto guard = MpiRuntime::instance().lock();
      auto* data = static_cast<char*>(buffer.data_ptr());
      for (int64_t start = 0; start < buffer.numel(); start += kMaxElementsPerCall) {
        int count = static_cast<int>(std::min(kMaxElementsPerCall, buffer.numel() - start));
        MPI_Request request;
        check(MPI_Iallreduce(MPI_IN_PLACE, data + start * buffer.element_size(), count, element_type(buffer.dtype()),
                             mpi_op(op), comm_, &request),
              "all_reduce", rank_);
        requests.push_back(request);
      }
    }
    auto finish = [tensor, buffer, staged, op, size = size_]() mutable {
      if (op == Reduce::Avg) buffer.div_(static_cast<double>(size));
      if (staged) tensor.copy_(buffer);
      tensor.storage()->bump_version();  // MPI wrote into it behind the version counter's back
    };
    return std::make_shared<MpiWork>("all_reduce", rank_, std::move(requests), std::vector<Tensor>{tensor, buffer},
                                     std::move(finish), std::move(span));
  }

  std::shared_ptr<Work> all_gather(const Tensor& input, Tensor& output) override {
    NoGradGuard no_grad;  // staging copies are plain buffers, not graph nodes
    check_cpu(input, "all_gather");
    check_cpu(output, "all_gather");
    ACCEL_CHECK(output.dtype() == input.dtype() && output.numel() == input.numel() * size_,
                "all_gather: output of shape ", output.shape_string(), " and dtype ", output.dtype(),
                " cannot hold ", size_, " inputs of shape ", input.shape_string(), " and dtype ", input.dtype());
    check_count(input.numel(), "all_gather");
    Tensor send = input.contiguous();
    Tensor receive = output.contiguous();
    const bool staged = !receive.is_same(output);
    trace::AsyncSpan span("all_gather", "communication", {{"bytes", static_cast<int64_t>(receive.nbytes())}});
    MPI_Request request;
    {
      auto guard = MpiRuntime::instance().lock();
      const int count = static_cast<int>(input.numel());
      MPI_Datatype type = element_type(input.dtype());
      check(MPI_Iallgather(send.data_ptr(), count, type, receive.data_ptr(), count, type, comm_, &request),
            "all_gather", rank_);
    }
    auto finish = [output, receive, staged]() mutable {
      if (staged) output.copy_(receive);
      output.storage()->bump_version();
    };
    return std::make_shared<MpiWork>("all_gather", rank_, std::vector<MPI_Request>{request},
                                     std::vector<Tensor>{send, receive, output}, std::move(finish), std::move(span));
  }

  std::shared_ptr<Work> reduce_scatter(const Tensor& input, Tensor& output, Reduce op) override {
    NoGradGuard no_grad;  // staging copies are plain buffers, not graph nodes
    check_cpu(input, "reduce_scatter");
    check_cpu(output, "reduce_scatter");
    check_reducible(input, op, "reduce_scatter");
    ACCEL_CHECK(output.dtype() == input.dtype() && input.numel() == output.numel() * size_,
                "reduce_scatter: input of shape ", input.shape_string(), " and dtype ", input.dtype(),
                " does not split into ", size_, " outputs of shape ", output.shape_string(), " and dtype ",
                output.dtype());
    check_count(output.numel(), "reduce_scatter");
    Tensor send = reduction_buffer(input);
    Tensor receive = reduction_buffer(output);
    const bool staged = !receive.is_same(output);
    trace::AsyncSpan span("reduce_scatter", "communication", {{"bytes", static_cast<int64_t>(send.nbytes())}});
    MPI_Request request;
    {
      auto guard = MpiRuntime::instance().lock();
      check(MPI_Ireduce_scatter_block(send.data_ptr(), receive.data_ptr(), static_cast<int>(output.numel()),
                                      element_type(send.dtype()), mpi_op(op), comm_, &request),
            "reduce_scatter", rank_);
    }
    auto finish = [output, receive, staged, op, size = size_]() mutable {
      if (op == Reduce::Avg) receive.div_(static_cast<double>(size));
      if (staged) output.copy_(receive);
      output.storage()->bump_version();
    };
    return std::make_shared<MpiWork>("reduce_scatter", rank_, std::vector<MPI_Request>{request},
                                     std::vector<Tensor>{send, receive, output}, std::move(finish), std::move(span));
  }

  std::shared_ptr<Work> broadcast(Tensor& tensor, int root) override {
    NoGradGuard no_grad;  // staging copies are plain buffers, not graph nodes
    check_cpu(tensor, "broadcast");
    ACCEL_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " does not exist in a group of ", size_,
                " processes");
    Tensor buffer = tensor.contiguous();
    const bool staged = !buffer.is_same(tensor);
    trace::AsyncSpan span("broadcast", "communication",
                          {{"bytes", static_cast<int64_t>(buffer.nbytes())}, {"root", root}});
    std::vector<MPI_Request> requests;
    {
      auto guard = MpiRuntime::instance().lock();
      auto* data = static_cast<char*>(buffer.data_ptr());
      for (int64_t start = 0; start < buffer.numel(); start += kMaxElementsPerCall) {
        int count = static_cast<int>(std::min(kMaxElementsPerCall, buffer.numel() - start));
        MPI_Request request;
        check(MPI_Ibcast(data + start * buffer.element_size(), count, element_type(buffer.dtype()), root, comm_,
                         &request),
              "broadcast", rank_);
        requests.push_back(request);
      }
    }
    auto finish = [tensor, buffer, staged]() mutable {
      if (staged) tensor.copy_(buffer);
      tensor.storage()->bump_version();
    };
    return std::make_shared<MpiWork>("broadcast", rank_, std::move(requests), std::vector<Tensor>{tensor, buffer},
                                     std::move(finish), std::move(span));
  }

  void barrier() override {
    trace::AsyncSpan span("barrier", "communication");
    MPI_Request request;
    {
      auto guard = MpiRuntime::instance().lock();
      check(MPI_Ibarrier(comm_, &request), "barrier", rank_);
    }
    MpiWork("barrier", rank_, {request}, {}, nullptr, std::move(span)).wait();
  }

 private:
  void check_cpu(const Tensor& tensor, const char* collective) const {
    ACCEL_CHECK(tensor.is_cpu(), collective, ": the MPI process group takes CPU tensors only, got one on ",
                tensor.device(), " (CUDA tensors go through the NCCL process group)");
  }
  void check_count(int64_t count, const char* collective) const {
    ACCEL_CHECK(count <= INT_MAX, collective, ": ", count, " elements per process exceed MPI's limit of ", INT_MAX,
                "; split the tensor");
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_mpi_group() {
  MpiRuntime::instance();
  return std::make_shared<MpiProcessGroup>();
}

double collective_timeout_seconds() {
  const char* text = std::getenv("ACCEL_COLLECTIVE_TIMEOUT");
  if (text == nullptr || *text == '\0') return 300.0;
  char* end = nullptr;
  double seconds = std::strtod(text, &end);
  ACCEL_CHECK(*end == '\0' && seconds > 0, "ACCEL_COLLECTIVE_TIMEOUT=\"", text,
              "\" is not a positive number of seconds");
  return seconds;
}

bool started_by_mpi_launcher() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
}

std::shared_ptr<ProcessGroup> make_default_group() {
  const char* backend = std::getenv("ACCEL_BACKEND");
  if (backend != nullptr && *backend != '\0') {
    const std::string name = backend;
    if (name == "mpi") return make_mpi_group();
    if (name == "single") return make_single_process_group();
    ACCEL_FAIL("ACCEL_BACKEND=\"", name, "\" is not a process group backend (expected mpi or single)");
  }
  return started_by_mpi_launcher() ? make_mpi_group() : make_single_process_group();
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string version(text, length);
  while (!version.empty() && (version.back() == '\n' || version.back() == '\0')) version.pop_back();
  return version;
}

}  // namespace accel::distributed
