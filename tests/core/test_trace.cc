// ACCEL_TRACE (core/trace.h): the file is valid Chrome trace JSON, ops and backward nodes
// appear as spans on the compute track, spans on every track nest properly and in time
// order, asynchronous spans get lanes, named threads get their own track, and the file is
// written at exit and when an uncaught exception terminates the process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "core/ops.h"
#include "core/trace.h"

using namespace accel;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A fresh directory beside the test binary (in the build tree, wherever the test runs from);
// it stays there because the process writes the trace again at exit.
std::string fresh_directory(const std::string& name) {
  fs::path dir = fs::read_symlink("/proc/self/exe").parent_path() / "test_trace_output" / name;
  fs::remove_all(dir);
  return dir.string();
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "no trace file at " << path;
  return json::parse(in);  // throws, failing the test, on invalid JSON
}

struct Span {
  std::string name, category;
  int tid;
  double start, end;  // microseconds
  json args;
};

struct Trace {
  std::string process_name;
  std::map<int, std::string> thread_names;
  std::vector<Span> spans;  // in file order

  std::vector<Span> named(const std::string& name) const {
    std::vector<Span> found;
    for (const Span& span : spans) {
      if (span.name == name) found.push_back(span);
    }
    return found;
  }
};

// Parses the Chrome trace and checks what must hold for any trace: the top-level keys, the
// event fields, and, per track, spans in non-decreasing start order that nest properly.
Trace parse_and_check(const json& file) {
  Trace trace;
  EXPECT_EQ(file.at("displayTimeUnit"), "ms");
  std::map<int, std::vector<double>> open_ends;  // per tid: the ends of the enclosing spans
  std::map<int, double> last_start;
  constexpr double kRounding = 1e-3;  // ts and dur are written to the nanosecond
  for (const json& event : file.at("traceEvents")) {
    const std::string phase = event.at("ph");
    if (phase == "M") {
      if (event.at("name") == "process_name") trace.process_name = event.at("args").at("name");
      if (event.at("name") == "thread_name") trace.thread_names[event.at("tid")] = event.at("args").at("name");
      continue;
    }
    EXPECT_EQ(phase, "X") << event.dump();
    Span span{event.at("name"), event.at("cat"), event.at("tid"), event.at("ts"), 0, event.value("args", json())};
    const double duration = event.at("dur");
    EXPECT_GE(duration, 0) << event.dump();
    span.end = span.start + duration;
    EXPECT_GE(span.start, last_start[span.tid]) << "out of time order on tid " << span.tid << ": " << event.dump();
    last_start[span.tid] = span.start;
    std::vector<double>& ends = open_ends[span.tid];
    while (!ends.empty() && ends.back() <= span.start + kRounding) ends.pop_back();
    if (!ends.empty()) {
      EXPECT_LE(span.end, ends.back() + kRounding) << "overlaps its enclosing span on tid " << span.tid << ": "
                                                   << event.dump();
    }
    ends.push_back(span.end);
    trace.spans.push_back(span);
  }
  for (const Span& span : trace.spans) {
    EXPECT_TRUE(trace.thread_names.count(span.tid)) << "tid " << span.tid << " of " << span.name << " has no name";
  }
  return trace;
}

Trace write_and_parse() { return parse_and_check(read_json(trace::write())); }

}  // namespace

TEST(Trace, OpsAndBackwardNodesAreSpansOnTheComputeTrack) {
  const std::string dir = fresh_directory("ops");
  trace::start(dir);
  Tensor x = randn({4, 8}).requires_grad_();
  Tensor w = randn({8, 3}).requires_grad_();
  Tensor loss = (x.matmul(w).relu() * 2.0).sum();
  loss.backward();
  trace::stop();
  const std::string path = trace::write();
  EXPECT_EQ(path, (fs::path(dir) / "trace_rank0.json").string());
  Trace trace = parse_and_check(read_json(path));

  EXPECT_EQ(trace.process_name, "rank 0");
  std::set<std::string> names;
  for (const Span& span : trace.spans) {
    names.insert(span.name);
    EXPECT_EQ(trace.thread_names.at(span.tid), "compute") << span.name;
  }
  EXPECT_THAT(names, ::testing::IsSupersetOf({"matmul", "unary", "binary", "reduce", "backward", "ReluBackward",
                                              "MulBackward", "SumBackward", "AccumulateGrad"}));
  EXPECT_EQ(trace.named("matmul").front().category, "compute");
  EXPECT_EQ(trace.named("MulBackward").front().category, "autograd");
  // Backward nodes run inside the backward span, and the matmul kernels of backward inside it too.
  const Span backward = trace.named("backward").at(0);
  for (const std::string node : {"ReluBackward", "MulBackward", "SumBackward"}) {
    const Span span = trace.named(node).at(0);
    EXPECT_GE(span.start, backward.start) << node;
    EXPECT_LE(span.end, backward.end + 1e-3) << node;
  }
  int matmuls_in_backward = 0;
  for (const Span& span : trace.named("matmul")) matmuls_in_backward += span.start >= backward.start;
  EXPECT_GE(matmuls_in_backward, 2);  // the gradients of x and of w
}

TEST(Trace, NothingIsRecordedWhileStopped) {
  const std::string dir = fresh_directory("stopped");
  trace::start(dir);
  Tensor a = randn({3, 3});
  Tensor product = a.matmul(a);
  trace::stop();
  Tensor probabilities = softmax(a, -1);
  Trace trace = write_and_parse();
  EXPECT_FALSE(trace.named("matmul").empty());
  EXPECT_TRUE(trace.named("softmax").empty());
}

TEST(Trace, OverlappingAsyncSpansGetSeparateLanesThatAreReused) {
  trace::start(fresh_directory("async"));
  trace::AsyncSpan first("all_reduce", "communication", {{"bytes", 4096}, {"bucket", 0}});
  trace::AsyncSpan second("all_reduce", "communication", {{"bytes", 1024}});
  first.end();
  trace::AsyncSpan third("broadcast", "communication");
  second.end();
  third.end();
  third.end();  // a second end() records nothing
  trace::AsyncSpan never_completed("all_gather", "communication");
  trace::stop();
  Trace trace = write_and_parse();

  ASSERT_EQ(trace.spans.size(), 3u);
  const Span a = trace.named("all_reduce").at(0), b = trace.named("all_reduce").at(1);
  const Span c = trace.named("broadcast").at(0);
  EXPECT_EQ(a.args.at("bytes"), 4096);
  EXPECT_EQ(a.args.at("bucket"), 0);
  EXPECT_EQ(b.args.at("bytes"), 1024);
  EXPECT_EQ(a.category, "communication");
  EXPECT_NE(a.tid, b.tid);  // overlapping: two lanes
  EXPECT_EQ(c.tid, a.tid);  // the first lane was free again
  EXPECT_EQ(trace.thread_names.at(a.tid), "communication");
  EXPECT_EQ(trace.thread_names.at(b.tid), "communication #2");
}

TEST(Trace, NamedThreadsGetTheirOwnTrackSharedBySuccessors) {
  trace::start(fresh_directory("threads"));
  Tensor a = randn({2, 2});
  Tensor on_main = a.matmul(a);
  auto loader = [] {
    trace::set_thread_name("data loader");
    trace::Span span("prefetch batch", "data");
    Tensor b = randn({2, 2});
    Tensor on_loader = b.matmul(b);
  };
  std::thread(loader).join();
  std::thread(loader).join();  // one after the other: the same track
  trace::stop();
  Trace trace = write_and_parse();

  std::vector<Span> prefetches = trace.named("prefetch batch");
  ASSERT_EQ(prefetches.size(), 2u);
  EXPECT_EQ(prefetches[0].tid, prefetches[1].tid);
  EXPECT_EQ(trace.thread_names.at(prefetches[0].tid), "data loader");
  std::set<std::string> tracks_of_matmul;
  for (const Span& span : trace.named("matmul")) tracks_of_matmul.insert(trace.thread_names.at(span.tid));
  EXPECT_EQ(tracks_of_matmul, (std::set<std::string>{"compute", "data loader"}));
}

TEST(Trace, TheFileIsWrittenAtExit) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string dir = fresh_directory("exit");
  EXPECT_EXIT(
      {
        trace::start(dir);
        Tensor a = randn({2, 2});
        Tensor product = a.matmul(a);
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
  Trace trace = parse_and_check(read_json(dir + "/trace_rank0.json"));
  EXPECT_FALSE(trace.named("matmul").empty());
  EXPECT_FALSE(fs::exists(dir + "/trace_rank0.json.tmp"));
}

TEST(Trace, TheFileIsWrittenWhenAnUncaughtExceptionTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string dir = fresh_directory("terminate");
  EXPECT_DEATH(
      {
        trace::start(dir);
        Tensor a = randn({2, 2});
        Tensor product = a.matmul(a);
        std::thread([] { throw std::runtime_error("nobody catches this"); }).join();
      },
      "nobody catches this");
  Trace trace = parse_and_check(read_json(dir + "/trace_rank0.json"));
  EXPECT_FALSE(trace.named("matmul").empty());
}

TEST(Trace, TheRankComesFromTheLauncher) {
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  const std::string dir = fresh_directory("rank");
  trace::start(dir);
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  trace::stop();
  EXPECT_EQ(trace::write(), (fs::path(dir) / "trace_rank3.json").string());
  EXPECT_EQ(parse_and_check(read_json(dir + "/trace_rank3.json")).process_name, "rank 3");
  trace::start(fresh_directory("rank0"));  // leave rank 0 for the write at exit
  trace::stop();
}
