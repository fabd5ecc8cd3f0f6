/// @file
/// ACCEL_TRACE=DIR: a timeline of what this process did, written when it exits to
/// `DIR/trace_rankR.json` (R the rank) in the Chrome Trace Event format (open it in ui.perfetto.dev or
/// chrome://tracing; docs/tracing.md). R comes from OMPI_COMM_WORLD_RANK, PMI_RANK or RANK
/// (0 when none is set); the file's pid is R, so the ranks' files can be opened together.
///
/// What records spans: every dispatched kernel and every backward node (through
/// profiler::Scope, core/profiler.h), the Accelerator's backward and optimizer step, each
/// MPI collective from launch to observed completion, DDP's bucket all-reduces, and the data
/// loader's prefetch thread. To add one:
///
///   trace::Span span("optimizer.step", "step");       // this scope, on this thread's track
///
///   trace::AsyncSpan span("all_reduce", "communication", {{"bytes", nbytes}});
///   ...                                                // launched here,
///   span.end();                                        // observed complete somewhere else
///
/// Names and categories must outlive the span (string literals, or a string the caller keeps
/// alive until the span ends); they are copied when the span ends.
///
/// Tracks (Chrome "threads"): each thread that records spans has one ("compute" for the main
/// thread, else the name given to set_thread_name); asynchronous spans go on tracks named
/// after their category, one lane per concurrently open span ("communication",
/// "communication #2", ...), so that spans on any one track nest properly.
///
/// Off (ACCEL_TRACE unset or empty) a span costs one predictable branch on a static flag: no
/// clock read, no allocation. On, every span is appended to one in-memory list under a mutex
/// (about 0.4 us a span; at most 2,000,000 spans, then later ones are counted as dropped).
/// The file is written atomically (temp file + rename) at normal exit, on std::terminate
/// (an uncaught exception), or on write(); a process killed by a signal writes nothing.
/// It is not a sampling profiler, and it times CUDA kernels at launch, not on the GPU.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

namespace accel::trace {

namespace detail {
extern std::atomic<bool> g_enabled;  ///< set from ACCEL_TRACE before main, or by start()/stop()
int64_t now_ns();
void record_complete(const char* name, const char* category, int64_t start_ns, int64_t end_ns);
}  // namespace detail

/// Whether spans are being recorded now. A relaxed atomic load: a plain load on x86.
inline bool enabled() { return detail::g_enabled.load(std::memory_order_relaxed); }

/// A span on the calling thread's track, from construction to destruction.
class Span {
 public:
  Span(const char* name, const char* category) : name_(enabled() ? name : nullptr), category_(category) {
    if (name_) start_ns_ = detail::now_ns();
  }
  ~Span() {
    if (name_) detail::record_complete(name_, category_, start_ns_, detail::now_ns());
  }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  const char* name_;
  const char* category_;
  int64_t start_ns_ = 0;
};

/// An integer argument shown with the span (bytes, bucket index, ...).
using Arg = std::pair<const char*, int64_t>;

/// A span that begins in one place and ends in another, possibly overlapping others of its
/// category: a collective from launch until its completion is observed. Movable, so it can
/// live in the object that tracks the operation.
class AsyncSpan {
 public:
  AsyncSpan() = default;  ///< records nothing
  AsyncSpan(const char* name, const char* category, std::initializer_list<Arg> args = {}) {
    if (enabled()) begin(name, category, args);
  }
  AsyncSpan(AsyncSpan&&) noexcept;
  AsyncSpan& operator=(AsyncSpan&&) noexcept;
  /// Without end() nothing is recorded (the operation was never seen to complete).
  ~AsyncSpan();

  /// Records the span from construction until now; later calls do nothing.
  void end() {
    if (state_) finish();
  }

 private:
  struct State;
  void begin(const char* name, const char* category, std::initializer_list<Arg> args);
  void finish();
  void abandon() noexcept;  ///< frees the lane without recording
  /// Owned; a plain pointer so that the inline constructor needs no complete State. Null when
  /// tracing was off at construction, and after end().
  State* state_ = nullptr;
};

/// Names the calling thread's track ("data loader"). Threads of the same name that do not run
/// at the same time share one track. Costs one branch when tracing is off.
void set_thread_name(const char* name);

/// Starts recording into dir (discarding anything recorded so far), as ACCEL_TRACE=dir would
/// have; for tests and for programs that choose at run time. Call it before other threads
/// record spans.
void start(const std::string& dir);
/// Stops recording; what was recorded is kept and still written at exit.
void stop();
/// Writes the trace file now (it is written again, with everything recorded by then, at exit)
/// and returns its path. Throws accel::Error when no directory was given or it cannot write.
std::string write();

}  // namespace accel::trace
