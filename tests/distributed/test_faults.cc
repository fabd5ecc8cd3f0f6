// tests/distributed/test_faults.cc: how a two-process job ends when one rank fails. Each
// case runs fault_worker (a tiny BERT trained with the Accelerator, whose rank 1 fails on
// purpose) under `mpirun -np 2`, or through `accel launch`, with a wall-clock guard, and checks
// that the job exits non-zero within the time limit, that its output names the failed rank,
// and that no process of the job is left afterwards. A healthy run of the same worker is the
// control. Label distributed: each case starts a real MPI job (a few seconds each, ~30 s all).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

const std::string kWorker = std::string(ACCEL_BIN_DIR) + "/fault_worker";
const std::string kAccel = std::string(ACCEL_BIN_DIR) + "/accel";
constexpr double kGuardSeconds = 90;  // past this the job is killed and the case fails as a hang
constexpr double kLimitSeconds = 60;  // a failed rank must have stopped the job by then

struct JobResult {
  int status = -1;     // waitpid's status of the launcher
  std::string output;  // stdout and stderr of every rank and of the launcher
  double seconds = 0;
  bool hung = false;  // killed by the guard
};

// Runs argv in its own process group with `environment` added, collecting its output, and
// kills the whole group if it runs past kGuardSeconds.
JobResult run_guarded(const std::vector<std::string>& argv,
                      const std::vector<std::pair<std::string, std::string>>& environment) {
  int pipe_fds[2];
  EXPECT_EQ(::pipe(pipe_fds), 0);
  const auto start = Clock::now();
  const pid_t child = ::fork();
  if (child == 0) {
    ::setpgid(0, 0);
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    for (const auto& [name, value] : environment) ::setenv(name.c_str(), value.c_str(), 1);
    std::vector<char*> words;
    for (const std::string& word : argv) words.push_back(const_cast<char*>(word.c_str()));
    words.push_back(nullptr);
    ::execvp(words[0], words.data());
    ::_exit(127);
  }
  ::setpgid(child, child);  // also here, so that the group exists before any kill below
  ::close(pipe_fds[1]);
  ::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
  JobResult result;
  bool exited = false, output_closed = false;
  std::optional<Clock::time_point> exited_at;
  // Until the launcher has exited and its output is drained (a second at most after the exit:
  // a leftover rank may hold the pipe open, which the orphan check below then reports).
  while (!exited || (!output_closed && Clock::now() - *exited_at < std::chrono::seconds(1))) {
    pollfd readable{pipe_fds[0], POLLIN, 0};
    ::poll(&readable, 1, 100);
    char buffer[4096];
    for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) != 0;) {
      if (n < 0) break;  // EAGAIN: nothing more for now
      result.output.append(buffer, n);
    }
    if (readable.revents & POLLHUP) output_closed = true;
    if (!exited && ::waitpid(child, &result.status, WNOHANG) == child) {
      exited = true;
      exited_at = Clock::now();
      result.seconds = std::chrono::duration<double>(*exited_at - start).count();
    }
    if (!exited && Clock::now() - start > std::chrono::duration<double>(kGuardSeconds)) {
      result.hung = true;
      ::kill(-child, SIGKILL);
    }
  }
  ::close(pipe_fds[0]);
  return result;
}

// Processes whose command line contains `tag` (zombies have an empty one: they are gone).
std::vector<int> processes_tagged(const std::string& tag) {
  std::vector<int> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream file(entry.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (cmdline.find(tag) != std::string::npos) pids.push_back(std::stoi(name));
  }
  return pids;
}

// Waits up to 5 s for the job's processes to disappear; kills and returns those that stay.
std::vector<int> orphans_of(const std::string& tag) {
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  std::vector<int> left = processes_tagged(tag);
  while (!left.empty() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = processes_tagged(tag);
  }
  for (int pid : left) ::kill(pid, SIGKILL);
  return left;
}

// A word unique to one job, passed to every rank as fault_worker's ignored last argument.
std::string unique_tag() {
  static int jobs = 0;
  return "accel-fault-test-" + std::to_string(::getpid()) + "-" + std::to_string(++jobs);
}

std::vector<std::string> mpirun_np2(const std::string& mode, const std::string& tag) {
  return {"mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", kWorker, mode, "3", tag};
}

struct Expectation {
  bool succeeds = false;
  double within_seconds = kLimitSeconds;
};

// Runs the job and checks the exit status, the time, and that nothing is left behind;
// returns the output for the case's own checks.
std::string run_job(const std::vector<std::string>& argv, const std::string& tag, Expectation expected,
                    std::vector<std::pair<std::string, std::string>> environment = {}) {
  environment.emplace_back("OMP_NUM_THREADS", "1");
  JobResult job = run_guarded(argv, environment);
  SCOPED_TRACE("output of the job:\n" + job.output);
  EXPECT_FALSE(job.hung) << "the job still ran after " << kGuardSeconds << " s and was killed";
  EXPECT_TRUE(WIFEXITED(job.status)) << "the launcher ended on a signal: status " << job.status;
  if (expected.succeeds) {
    EXPECT_EQ(WEXITSTATUS(job.status), 0);
  } else {
    EXPECT_NE(WEXITSTATUS(job.status), 0) << "a failed rank must make the job exit non-zero";
  }
  EXPECT_LT(job.seconds, expected.within_seconds) << "the job took " << job.seconds << " s";
  const std::vector<int> orphans = orphans_of(tag);
  EXPECT_TRUE(orphans.empty()) << orphans.size() << " process(es) of the job outlived it (pid "
                               << (orphans.empty() ? 0 : orphans.front()) << ")";
  return job.output;
}

TEST(Faults, HealthyJobExitsZero) {
  const std::string tag = unique_tag();
  EXPECT_THAT(run_job(mpirun_np2("none", tag), tag, {.succeeds = true}), HasSubstr("fault_worker: finished 5 steps"));
}

TEST(Faults, KilledRankStopsEveryRank) {
  const std::string tag = unique_tag();
  const std::string output = run_job(mpirun_np2("kill", tag), tag, {});
  EXPECT_THAT(output, HasSubstr("process rank 1 with PID"));  // Open MPI's own line
  EXPECT_THAT(output, HasSubstr("exited on signal 9 (Killed)"));
}

TEST(Faults, RankKilledInsideAllReduceStopsEveryRank) {
  const std::string tag = unique_tag();
  const std::string output = run_job(mpirun_np2("kill_in_allreduce", tag), tag, {});
  EXPECT_THAT(output, HasSubstr("process rank 1 with PID"));
  EXPECT_THAT(output, HasSubstr("exited on signal 9 (Killed)"));
}

TEST(Faults, UncaughtErrorAbortsTheJobNamingTheRank) {
  const std::string tag = unique_tag();
  const std::string output = run_job(mpirun_np2("throw", tag), tag, {});
  // (Open MPI's own "MPI_ABORT was invoked on rank 1" text is sometimes lost in its teardown.)
  EXPECT_THAT(output, HasSubstr("accel: rank 1 failed: fault_worker: rank 1 fails on purpose at step 3"));
}

// The failing rank returns 1 from main: without the exit notice its peer would wait out the
// whole collective timeout (60 s here) while the failed rank hangs in MPI_Finalize.
TEST(Faults, RankThatReturnsAnErrorDoesNotLeaveItsPeerWaiting) {
  const std::string tag = unique_tag();
  const std::string output =
      run_job(mpirun_np2("throw_caught", tag), tag, {.within_seconds = 20}, {{"ACCEL_COLLECTIVE_TIMEOUT", "60"}});
  EXPECT_THAT(output, HasSubstr("all_reduce on rank 0 cannot complete: rank 1 has left the job without joining it"));
}

TEST(Faults, StalledRankTimesOutNamingTheCollectiveAndTheRank) {
  const std::string tag = unique_tag();
  const std::string output =
      run_job(mpirun_np2("stall", tag), tag, {.within_seconds = 30}, {{"ACCEL_COLLECTIVE_TIMEOUT", "10"}});
  EXPECT_THAT(output, HasSubstr("accel: rank 0 failed: all_reduce timed out after 10 s on rank 0: rank 1 did not "
                                "join it"));
}

TEST(Faults, AccelLaunchPassesTheFailureThrough) {
  const std::string tag = unique_tag();
  const std::string output = run_job(
      {kAccel, "launch", "--num_processes", "2", "--num_cpu_threads_per_process", "1", kWorker, "throw", "3", tag}, tag,
      {});
  EXPECT_THAT(output, HasSubstr("accel: rank 1 failed: fault_worker: rank 1 fails on purpose at step 3"));
}

}  // namespace
