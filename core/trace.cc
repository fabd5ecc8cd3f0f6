// The ACCEL_TRACE recorder (see trace.h): one process-wide list of complete ("X") events
// under a mutex, the assignment of Chrome tids to threads and to asynchronous-span lanes,
// and the JSON writer that runs at exit, on std::terminate, or on write().
//
// Timestamps are CLOCK_MONOTONIC (steady_clock) microseconds, which every process on a
// machine shares: the files of ranks on one node line up when opened together.
#include "core/trace.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "core/error.h"

namespace accel::trace {

namespace detail {
std::atomic<bool> g_enabled{false};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace detail

namespace {

constexpr size_t kMaxEvents = 2'000'000;  // about 200 MB of memory, a ~200 MB file
// Async lanes sort below the threads' tracks, grouped by category (in order of first use).
constexpr int kAsyncSortOffset = 1000;
constexpr int kMaxLanesPerCategory = 100;

struct Event {
  std::string name;
  const char* category;
  int tid;
  int64_t start_ns;
  int64_t duration_ns;
  std::vector<std::pair<std::string, int64_t>> args;
};

struct Track {
  std::string name;
  int sort_index;
};

// The rank in the launcher's environment variables, 0 when none is set.
int rank_from_environment() {
  for (const char* variable : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK"}) {
    const char* value = std::getenv(variable);
    if (value != nullptr && *value != '\0') return std::atoi(value);
  }
  return 0;
}

// "12345.678": nanoseconds as the microseconds Chrome's ts and dur are in, exactly.
std::string microseconds(int64_t ns) {
  char text[32];
  std::snprintf(text, sizeof(text), "%lld.%03lld", static_cast<long long>(ns / 1000),
                static_cast<long long>(ns % 1000));
  return text;
}

class Recorder {
 public:
  // Everything recorded is tagged with the generation of start() it belongs to, so that
  // tids and lanes handed out before a restart are not mistaken for current ones.
  uint64_t generation = 0;

  void start(const std::string& directory) {
    std::lock_guard<std::mutex> lock(mutex_);
    directory_ = directory;
    rank_ = rank_from_environment();
    events_.clear();
    dropped_ = 0;
    tracks_.clear();
    next_tid_ = 1;
    free_thread_tids_.clear();
    lanes_.clear();
    category_rank_.clear();
    main_thread_ = std::this_thread::get_id();
    generation += 1;
  }

  void record(std::string name, const char* category, int tid, int64_t start_ns, int64_t end_ns,
              std::vector<std::pair<std::string, int64_t>> args) {
    if (events_.size() >= kMaxEvents) {
      dropped_ += 1;
      return;
    }
    events_.push_back({std::move(name), category, tid, start_ns, std::max<int64_t>(0, end_ns - start_ns),
                       std::move(args)});
  }

  // The calling thread's track, named `name` (or its default) when it has none yet.
  int thread_tid(const char* name);
  void release_thread_tid(const std::string& name, int tid, uint64_t of_generation);
  // The lowest free lane of `category`: its tid and lane index.
  std::pair<int, int> acquire_lane(const char* category);
  void release_lane(const char* category, int lane, uint64_t of_generation);

  std::mutex& mutex() { return mutex_; }
  std::string write_locked();

 private:
  int new_tid(std::string name, int sort_index) {
    int tid = next_tid_++;
    tracks_[tid] = {std::move(name), sort_index};
    return tid;
  }

  std::mutex mutex_;
  std::string directory_;
  int rank_ = 0;
  std::vector<Event> events_;
  int64_t dropped_ = 0;
  std::map<int, Track> tracks_;
  int next_tid_ = 1;
  std::map<std::string, std::vector<int>> free_thread_tids_;  // tracks of named threads that ended
  struct Lane {
    int tid;
    bool busy;
  };
  std::map<std::string, std::vector<Lane>> lanes_;  // by category
  std::map<std::string, int> category_rank_;        // categories in order of first use
  std::thread::id main_thread_;
};

Recorder& recorder() {
  static auto* instance = new Recorder();  // never destroyed: spans may end during static destruction
  return *instance;
}

// The calling thread's tid in the current generation; released when the thread ends.
struct ThreadTrack {
  int tid = 0;
  uint64_t generation = 0;
  std::string name;  // empty: a default name, not shared with other threads
  ~ThreadTrack() {
    if (tid != 0 && !name.empty()) recorder().release_thread_tid(name, tid, generation);
  }
};
thread_local ThreadTrack this_thread_track;

int Recorder::thread_tid(const char* name) {
  ThreadTrack& track = this_thread_track;
  if (track.tid != 0 && track.generation == generation) {
    if (name != nullptr && track.name != name) {
      track.name = name;
      tracks_[track.tid].name = name;
    }
    return track.tid;
  }
  track.generation = generation;
  track.name = name != nullptr ? name : "";
  if (name == nullptr) {
    const bool main = std::this_thread::get_id() == main_thread_;
    track.tid = new_tid(main ? "compute" : "thread " + std::to_string(next_tid_), next_tid_);
  } else if (std::vector<int>& free = free_thread_tids_[name]; !free.empty()) {
    track.tid = free.back();
    free.pop_back();
  } else {
    track.tid = new_tid(name, next_tid_);
  }
  return track.tid;
}

void Recorder::release_thread_tid(const std::string& name, int tid, uint64_t of_generation) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (of_generation == generation) free_thread_tids_[name].push_back(tid);
}

std::pair<int, int> Recorder::acquire_lane(const char* category) {
  auto [entry, is_new_category] = lanes_.try_emplace(category);
  if (is_new_category) category_rank_[category] = static_cast<int>(category_rank_.size());
  std::vector<Lane>& lanes = entry->second;
  for (size_t i = 0; i < lanes.size(); ++i) {
    if (!lanes[i].busy) {
      lanes[i].busy = true;
      return {lanes[i].tid, static_cast<int>(i)};
    }
  }
  std::string name = category;
  if (!lanes.empty()) name += " #" + std::to_string(lanes.size() + 1);
  const int sort_index = kAsyncSortOffset + kMaxLanesPerCategory * category_rank_[category] +
                         std::min(static_cast<int>(lanes.size()), kMaxLanesPerCategory - 1);
  lanes.push_back({new_tid(std::move(name), sort_index), true});
  return {lanes.back().tid, static_cast<int>(lanes.size()) - 1};
}

void Recorder::release_lane(const char* category, int lane, uint64_t of_generation) {
  if (of_generation == generation) lanes_[category][lane].busy = false;
}

std::string Recorder::write_locked() {
  ACCEL_CHECK(!directory_.empty(), "trace::write: no trace directory; set ACCEL_TRACE=DIR or call trace::start(dir)");
  namespace fs = std::filesystem;
  std::error_code error;
  fs::create_directories(directory_, error);
  ACCEL_CHECK(!error, "trace: cannot create the directory ", directory_, " (ACCEL_TRACE): ", error.message());
  const fs::path path = fs::path(directory_) / ("trace_rank" + std::to_string(rank_) + ".json");
  const fs::path temporary = path.string() + ".tmp" + std::to_string(::getpid());

  // Sorted by start, enclosing spans before the spans they contain.
  std::vector<const Event*> order;
  order.reserve(events_.size());
  for (const Event& event : events_) order.push_back(&event);
  std::stable_sort(order.begin(), order.end(), [](const Event* a, const Event* b) {
    return a->start_ns != b->start_ns ? a->start_ns < b->start_ns : a->duration_ns > b->duration_ns;
  });

  {
    std::ofstream out(temporary);
    ACCEL_CHECK(out.good(), "trace: cannot write ", temporary.string());
    const std::string pid = std::to_string(rank_);
    out << "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"dropped_events\":" << dropped_ << "},\n\"traceEvents\":[\n";
    out << "{\"ph\":\"M\",\"pid\":" << pid << ",\"tid\":0,\"name\":\"process_name\",\"args\":{\"name\":\"rank " << rank_
        << "\"}}";
    for (const auto& [tid, track] : tracks_) {
      out << ",\n{\"ph\":\"M\",\"pid\":" << pid << ",\"tid\":" << tid << ",\"name\":\"thread_name\",\"args\":{\"name\":"
          << nlohmann::json(track.name).dump() << "}}";
      out << ",\n{\"ph\":\"M\",\"pid\":" << pid << ",\"tid\":" << tid
          << ",\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":" << track.sort_index << "}}";
    }
    for (const Event* event : order) {
      out << ",\n{\"ph\":\"X\",\"pid\":" << pid << ",\"tid\":" << event->tid
          << ",\"ts\":" << microseconds(event->start_ns)
          << ",\"dur\":" << microseconds(event->duration_ns) << ",\"name\":" << nlohmann::json(event->name).dump()
          << ",\"cat\":" << nlohmann::json(event->category).dump();
      if (!event->args.empty()) {
        out << ",\"args\":{";
        for (size_t i = 0; i < event->args.size(); ++i) {
          out << (i ? "," : "") << nlohmann::json(event->args[i].first).dump() << ":" << event->args[i].second;
        }
        out << "}";
      }
      out << "}";
    }
    out << "\n]}\n";
    out.close();
    ACCEL_CHECK(out.good(), "trace: writing ", temporary.string(), " failed (disk full?)");
  }
  fs::rename(temporary, path, error);
  ACCEL_CHECK(!error, "trace: cannot rename ", temporary.string(), " to ", path.string(), ": ", error.message());
  return path.string();
}

// At exit and on std::terminate a failure can only be reported, not thrown.
void write_at_exit() {
  try {
    std::lock_guard<std::mutex> lock(recorder().mutex());
    recorder().write_locked();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ACCEL_TRACE: the trace was not written: %s\n", e.what());
  }
}

std::terminate_handler previous_terminate = nullptr;

void write_then_terminate() {
  // The mutex may be held by the thread that is terminating: then the trace is lost.
  if (recorder().mutex().try_lock()) {
    try {
      recorder().write_locked();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ACCEL_TRACE: the trace was not written: %s\n", e.what());
    }
    recorder().mutex().unlock();
  }
  if (previous_terminate != nullptr) previous_terminate();
  std::abort();
}

[[maybe_unused]] const bool started_from_environment = [] {
  const char* directory = std::getenv("ACCEL_TRACE");
  if (directory != nullptr && *directory != '\0') start(directory);
  return true;
}();

}  // namespace

void detail::record_complete(const char* name, const char* category, int64_t start_ns, int64_t end_ns) {
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mutex());
  r.record(name, category, r.thread_tid(nullptr), start_ns, end_ns, {});
}

struct AsyncSpan::State {
  std::string name;
  const char* category;
  std::vector<std::pair<std::string, int64_t>> args;
  int64_t start_ns;
  int tid;
  int lane;
  uint64_t generation;
};

void AsyncSpan::begin(const char* name, const char* category, std::initializer_list<Arg> args) {
  auto state = std::make_unique<State>();
  state->name = name;
  state->category = category;
  for (const Arg& arg : args) state->args.emplace_back(arg.first, arg.second);
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mutex());
  std::tie(state->tid, state->lane) = r.acquire_lane(category);
  state->generation = r.generation;
  state->start_ns = detail::now_ns();
  state_ = state.release();
}

void AsyncSpan::finish() {
  const int64_t end_ns = detail::now_ns();
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mutex());
  if (state_->generation == r.generation) {
    r.record(std::move(state_->name), state_->category, state_->tid, state_->start_ns, end_ns, std::move(state_->args));
    r.release_lane(state_->category, state_->lane, state_->generation);
  }
  delete std::exchange(state_, nullptr);
}

AsyncSpan::AsyncSpan(AsyncSpan&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}

AsyncSpan& AsyncSpan::operator=(AsyncSpan&& other) noexcept {
  if (this != &other) {
    abandon();
    state_ = std::exchange(other.state_, nullptr);
  }
  return *this;
}

AsyncSpan::~AsyncSpan() { abandon(); }

void AsyncSpan::abandon() noexcept {
  if (!state_) return;
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mutex());
  r.release_lane(state_->category, state_->lane, state_->generation);
  delete std::exchange(state_, nullptr);
}

void set_thread_name(const char* name) {
  if (!enabled()) return;
  Recorder& r = recorder();
  std::lock_guard<std::mutex> lock(r.mutex());
  r.thread_tid(name);
}

void start(const std::string& directory) {
  ACCEL_CHECK(!directory.empty(), "trace::start: expected a directory to write trace_rank<R>.json into, got \"\"");
  static const bool hooks_installed = [] {
    std::atexit(write_at_exit);
    previous_terminate = std::set_terminate(write_then_terminate);
    return true;
  }();
  (void)hooks_installed;
  recorder().start(directory);
  detail::g_enabled.store(true, std::memory_order_relaxed);
}

void stop() { detail::g_enabled.store(false, std::memory_order_relaxed); }

std::string write() {
  std::lock_guard<std::mutex> lock(recorder().mutex());
  return recorder().write_locked();
}

}  // namespace accel::trace
