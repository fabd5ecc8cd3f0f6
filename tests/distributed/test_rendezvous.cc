// tests/distributed/test_rendezvous.cc: the bootstrap that hands rank 0's bytes (the NCCL
// unique id) to every rank outside mpirun. The environment parser accepts torchrun-style
// variables and rejects malformed ones by name; the TCP and file rendezvous deliver the bytes
// to 2-3 ranks (threads of this process, on localhost), whatever order they start in, and fail
// with the rendezvous's address, the timeout and the missing ranks when a rank never comes.
// Plain GoogleTest, no CUDA, no MPI: it runs in every build.
#include "distributed/rendezvous.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <thread>

#include "tests/test_util.h"

namespace accel::distributed {
namespace {

using testing::contains;
using testing::error_of;

using Variables = std::map<std::string, std::optional<std::string>>;  // nullopt: unset

// Sets (or unsets) variables for one test and restores them afterwards.
class ScopedEnvironment {
 public:
  explicit ScopedEnvironment(const Variables& values) {
    for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MASTER_ADDR",
                             "MASTER_PORT", "ACCEL_RENDEZVOUS_FILE"}) {
      const char* old = std::getenv(name);
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      ::unsetenv(name);
    }
    for (const auto& [name, value] : values) {
      if (value) ::setenv(name.c_str(), value->c_str(), 1);
    }
  }
  ~ScopedEnvironment() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  Variables saved_;
};

// A port nobody listens on right now: the kernel picks it, we release it.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

std::vector<uint8_t> unique_id_like() {  // 128 bytes, every value of a byte, like an ncclUniqueId
  std::vector<uint8_t> bytes(128);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(255 - 2 * i);
  return bytes;
}

// A path in this program's own temporary directory, which is removed when the program ends.
std::string fresh_path(const std::string& name) {
  struct Directory {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("accel_rendezvous_" + std::to_string(::getpid()));
    Directory() { std::filesystem::create_directories(path); }
    ~Directory() { std::filesystem::remove_all(path); }
  };
  static const Directory directory;
  return (directory.path / name).string();
}

using Share = std::function<std::vector<uint8_t>(int rank, const std::vector<uint8_t>& bytes)>;

// Runs ranks 1..world-1 first (they must wait for rank 0), then rank 0; returns what each got.
std::vector<std::vector<uint8_t>> run_ranks(int world_size, const Share& share) {
  std::vector<std::future<std::vector<uint8_t>>> others;
  for (int rank = 1; rank < world_size; ++rank) {
    others.push_back(std::async(std::launch::async, [&share, rank] { return share(rank, {}); }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  std::vector<std::vector<uint8_t>> received{share(0, unique_id_like())};
  for (auto& other : others) received.push_back(other.get());
  return received;
}

TEST(RendezvousPlan, OneProcessWithoutVariables) {
  ScopedEnvironment environment(Variables{});
  const RendezvousPlan plan = rendezvous_plan_from_environment();
  EXPECT_EQ(plan.kind, RendezvousPlan::Kind::None);
  EXPECT_EQ(plan.rank, 0);
  EXPECT_EQ(plan.world_size, 1);
  EXPECT_EQ(share_from_rank0(plan, unique_id_like(), 1.0), unique_id_like());
}

TEST(RendezvousPlan, TorchrunStyleTcp) {
  ScopedEnvironment environment(
      Variables{{"RANK", "2"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29500"}});
  const RendezvousPlan plan = rendezvous_plan_from_environment();
  EXPECT_EQ(plan.kind, RendezvousPlan::Kind::Tcp);
  EXPECT_EQ(plan.rank, 2);
  EXPECT_EQ(plan.world_size, 4);
  EXPECT_EQ(plan.host, "node7");
  EXPECT_EQ(plan.port, 29500);
}

TEST(RendezvousPlan, FileWhenNoMasterAddress) {
  ScopedEnvironment environment(
      Variables{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"ACCEL_RENDEZVOUS_FILE", "/shared/job42.id"}});
  const RendezvousPlan plan = rendezvous_plan_from_environment();
  EXPECT_EQ(plan.kind, RendezvousPlan::Kind::File);
  EXPECT_EQ(plan.path, "/shared/job42.id");
}

TEST(RendezvousPlan, MalformedValuesNameTheVariable) {
  auto error_with = [](const Variables& values) {
    ScopedEnvironment environment(values);
    return error_of([] { rendezvous_plan_from_environment(); });
  };
  const Variables tcp = {
      {"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "localhost"}, {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& name, std::optional<std::string> value) {
    auto values = tcp;
    values[name] = std::move(value);
    return error_with(values);
  };
  EXPECT_TRUE(contains(with("RANK", "one"), "RANK=\"one\" is not a rank (an integer >= 0)")) << with("RANK", "one");
  EXPECT_TRUE(contains(with("RANK", "-1"), "RANK=\"-1\" is not a rank"));
  EXPECT_TRUE(contains(with("RANK", "2"), "RANK=2 is not below WORLD_SIZE=2"));
  EXPECT_TRUE(contains(with("WORLD_SIZE", "0"), "WORLD_SIZE=\"0\" is not a number of processes"));
  EXPECT_TRUE(contains(with("WORLD_SIZE", "2x"), "WORLD_SIZE=\"2x\""));
  EXPECT_TRUE(contains(with("MASTER_PORT", "70000"), "MASTER_PORT=\"70000\" is not a TCP port"));
  EXPECT_TRUE(contains(with("MASTER_PORT", "http"), "MASTER_PORT=\"http\" is not a TCP port"));
  EXPECT_TRUE(contains(with("MASTER_PORT", std::nullopt), "MASTER_ADDR is set but MASTER_PORT is not"));
  EXPECT_TRUE(contains(with("WORLD_SIZE", std::nullopt), "RANK is set but WORLD_SIZE is not"));
  EXPECT_TRUE(contains(error_with({{"RANK", "0"}, {"WORLD_SIZE", "2"}}),
                       "WORLD_SIZE=2 but nothing says where the ranks meet"));
  EXPECT_TRUE(contains(error_with({{"ACCEL_RENDEZVOUS_FILE", "/tmp/x"}}),
                       "ACCEL_RENDEZVOUS_FILE is set but RANK and WORLD_SIZE are not"));
}

TEST(RendezvousPlan, LocalRankFromTorchrunThenOpenMpiThenFallback) {
  {
    ScopedEnvironment environment(Variables{{"LOCAL_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
    EXPECT_EQ(local_rank_from_environment(), 3);
  }
  {
    ScopedEnvironment environment(Variables{{"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
    EXPECT_EQ(local_rank_from_environment(), 1);
  }
  {
    ScopedEnvironment environment(Variables{});
    EXPECT_EQ(local_rank_from_environment(), 0);
    EXPECT_EQ(local_rank_from_environment(5), 5);
  }
  ScopedEnvironment environment(Variables{{"LOCAL_RANK", "gpu0"}});
  EXPECT_TRUE(contains(error_of([] { local_rank_from_environment(); }), "LOCAL_RANK=\"gpu0\" is not a local rank"));
}

TEST(TcpRendezvous, ThreeRanksReceiveRankZerosBytes) {
  const int port = free_port();
  const auto received = run_ranks(3, [port](int rank, const std::vector<uint8_t>& bytes) {
    return tcp_share_from_rank0("127.0.0.1", port, rank, 3, bytes, 10.0);
  });
  for (int rank = 0; rank < 3; ++rank) EXPECT_EQ(received[rank], unique_id_like()) << "rank " << rank;
}

TEST(TcpRendezvous, ThroughThePlanWithAHostName) {
  RendezvousPlan plan;
  plan.kind = RendezvousPlan::Kind::Tcp;
  plan.host = "localhost";
  plan.port = free_port();
  plan.world_size = 2;
  const auto received = run_ranks(2, [plan](int rank, const std::vector<uint8_t>& bytes) mutable {
    plan.rank = rank;
    return share_from_rank0(plan, bytes, 10.0);
  });
  EXPECT_EQ(received[1], unique_id_like());
}

TEST(TcpRendezvous, RankZeroTimesOutNamingTheMissingRank) {
  const int port = free_port();
  const auto started = std::chrono::steady_clock::now();
  const std::string error = error_of([port] { tcp_share_from_rank0("127.0.0.1", port, 0, 2, unique_id_like(), 0.5); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_TRUE(contains(error, "rendezvous at 127.0.0.1:" + std::to_string(port) +
                                  " timed out after 0.5 s: 1 of 2 ranks arrived (missing: rank 1)"))
      << error;
  EXPECT_GE(seconds, 0.45);
  EXPECT_LT(seconds, 5.0);
}

TEST(TcpRendezvous, AMissingRankAmongThreeIsNamed) {
  const int port = free_port();
  auto rank2 = std::async(std::launch::async, [port] {
    return error_of([port] { tcp_share_from_rank0("127.0.0.1", port, 2, 3, {}, 1.0); });
  });
  const std::string error = error_of([port] { tcp_share_from_rank0("127.0.0.1", port, 0, 3, unique_id_like(), 1.0); });
  EXPECT_TRUE(contains(error, "timed out after 1 s: 2 of 3 ranks arrived (missing: rank 1)")) << error;
  const std::string rank2_error = rank2.get();
  // Rank 2 got in, but rank 0 gave up before sending: it hears a closed connection, or times out.
  EXPECT_TRUE(contains(rank2_error, "rank 0 closed the connection of rank 2") ||
              contains(rank2_error, "rank 2 reached rank 0, which is still waiting"))
      << rank2_error;
}

TEST(TcpRendezvous, ARankWithoutRankZeroTimesOut) {
  const int port = free_port();
  const std::string error = error_of([port] { tcp_share_from_rank0("127.0.0.1", port, 1, 2, {}, 0.4); });
  EXPECT_TRUE(contains(error, "rendezvous at 127.0.0.1:" + std::to_string(port) + " timed out after 0.4 s: rank 1 " +
                                  "could not reach rank 0 (last error: Connection refused)"))
      << error;
}

TEST(TcpRendezvous, MismatchedWorldSizesAreRefused) {
  const int port = free_port();
  auto rank1 = std::async(std::launch::async, [port] {
    return error_of([port] { tcp_share_from_rank0("127.0.0.1", port, 1, 3, {}, 5.0); });
  });
  const std::string error = error_of([port] { tcp_share_from_rank0("127.0.0.1", port, 0, 2, unique_id_like(), 5.0); });
  EXPECT_TRUE(contains(error, "rank 1 has WORLD_SIZE=3 but rank 0 has WORLD_SIZE=2")) << error;
  EXPECT_TRUE(contains(rank1.get(), "rank 0 closed the connection of rank 1"));
}

TEST(FileRendezvous, ThreeRanksReceiveRankZerosBytesAndTheFilesAreRemoved) {
  const std::string path = fresh_path("three.id");
  const auto received = run_ranks(3, [&path](int rank, const std::vector<uint8_t>& bytes) {
    return file_share_from_rank0(path, rank, 3, bytes, 10.0);
  });
  for (int rank = 0; rank < 3; ++rank) EXPECT_EQ(received[rank], unique_id_like()) << "rank " << rank;
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".arrived.1"));
  EXPECT_FALSE(std::filesystem::exists(path + ".arrived.2"));
}

TEST(FileRendezvous, RankZeroTimesOutNamingTheMissingRankAndCleansUp) {
  const std::string path = fresh_path("alone.id");
  const std::string error = error_of([&path] { file_share_from_rank0(path, 0, 2, unique_id_like(), 0.3); });
  EXPECT_TRUE(contains(error, "rendezvous file " + path + " timed out after 0.3 s: 1 of 2 ranks arrived " +
                                  "(missing: rank 1)"))
      << error;
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(FileRendezvous, ARankWithoutRankZeroTimesOut) {
  const std::string path = fresh_path("never.id");
  const std::string error = error_of([&path] { file_share_from_rank0(path, 1, 2, {}, 0.3); });
  EXPECT_TRUE(contains(error, "rendezvous file " + path + " timed out after 0.3 s: rank 1 waited for rank 0")) << error;
}

TEST(FileRendezvous, AFileLeftByAnEarlierJobIsRefused) {
  const std::string path = fresh_path("stale.id");
  std::ofstream(path) << "old id";
  const std::string error = error_of([&path] { file_share_from_rank0(path, 0, 2, unique_id_like(), 1.0); });
  EXPECT_TRUE(contains(error, "rendezvous file " + path + " exists already, left by an earlier job")) << error;
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace accel::distributed
