// The rendezvous of rendezvous.h: the environment parser, the TCP exchange (rank 0 accepts
// WORLD_SIZE - 1 connections, each opened by a 12-byte hello: magic, rank, world size; then
// sends every peer a 4-byte length and its bytes) and the file exchange. Plain POSIX sockets
// and files; no CUDA, no MPI.
#include "distributed/rendezvous.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>
#include <utility>

#include "core/error.h"

namespace accel::distributed {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kHelloMagic = 0x41435256;           // "ACRV"
constexpr uint32_t kMaxPayloadBytes = 1u << 20;          // a unique id is 128 bytes
constexpr auto kFilePollInterval = std::chrono::milliseconds(20);

// An environment variable, or nullptr when it is unset or empty.
const char* variable(const char* name) {
  const char* text = std::getenv(name);
  return text != nullptr && *text != '\0' ? text : nullptr;
}

int parse_int_variable(const char* name, const char* text, long minimum, long maximum, const char* expected) {
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  ACCEL_CHECK(end != text && *end == '\0' && errno == 0 && value >= minimum && value <= maximum, name, "=\"", text,
              "\" is not ", expected);
  return static_cast<int>(value);
}

class Deadline {
 public:
  explicit Deadline(double seconds)
      : end_(Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds))) {}
  bool passed() const { return Clock::now() >= end_; }
  // Milliseconds left, for poll(): at least 1 while time remains, 0 once it is up.
  int remaining_ms() const {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end_ - Clock::now()).count();
    if (Clock::now() >= end_) return 0;
    return static_cast<int>(std::clamp<int64_t>(left, 1, INT_MAX));
  }

 private:
  Clock::time_point end_;
};

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Socket& operator=(Socket&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

std::string where(const std::string& host, int port) { return host + ":" + std::to_string(port); }

std::string timed_out(const std::string& place, double timeout_seconds) {
  return detail::concat("rendezvous at ", place, " timed out after ", timeout_seconds, " s: ");
}

// "1 of 3 ranks arrived (missing: rank 1, rank 2)"
std::string arrival_report(int world_size, const std::vector<bool>& arrived) {
  constexpr int kMissingNamed = 8;  // a big job names a few, then counts the rest
  std::string missing;
  int count = 0, missing_count = 0;
  for (int rank = 0; rank < world_size; ++rank) {
    if (arrived[rank]) {
      ++count;
    } else if (++missing_count <= kMissingNamed) {
      missing += (missing.empty() ? "rank " : ", rank ") + std::to_string(rank);
    }
  }
  if (missing_count > kMissingNamed) missing += " and " + std::to_string(missing_count - kMissingNamed) + " more";
  return detail::concat(count, " of ", world_size, " ranks arrived (missing: ", missing, ")");
}

void send_all(const Socket& socket, const void* data, size_t size, const std::string& place) {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t sent = ::send(socket.fd(), bytes, size, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    ACCEL_CHECK(sent > 0, "rendezvous at ", place, ": send failed: ", std::strerror(errno));
    bytes += sent;
    size -= static_cast<size_t>(sent);
  }
}

enum class Received { All, TimedOut, Closed };

Received receive_exactly(const Socket& socket, void* data, size_t size, const Deadline& deadline,
                         const std::string& place) {
  auto* bytes = static_cast<char*>(data);
  while (size > 0) {
    pollfd ready{socket.fd(), POLLIN, 0};
    const int polled = ::poll(&ready, 1, deadline.remaining_ms());
    if (polled < 0 && errno == EINTR) continue;
    ACCEL_CHECK(polled >= 0, "rendezvous at ", place, ": poll failed: ", std::strerror(errno));
    if (polled == 0) return Received::TimedOut;
    const ssize_t got = ::recv(socket.fd(), bytes, size, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got == 0 || (got < 0 && errno == ECONNRESET)) return Received::Closed;
    ACCEL_CHECK(got > 0, "rendezvous at ", place, ": recv failed: ", std::strerror(errno));
    bytes += got;
    size -= static_cast<size_t>(got);
  }
  return Received::All;
}

// Rank 0's listening socket on every interface (IPv6 dual-stack where there is one).
Socket listen_on(int port, int backlog, const std::string& place) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* addresses = nullptr;
  const int code = ::getaddrinfo(nullptr, std::to_string(port).c_str(), &hints, &addresses);
  ACCEL_CHECK(code == 0, "rendezvous at ", place, ": no address to listen on: ", ::gai_strerror(code));
  std::string error = "no usable address";
  for (addrinfo* address = addresses; address != nullptr; address = address->ai_next) {
    Socket listener(::socket(address->ai_family, address->ai_socktype, address->ai_protocol));
    if (!listener.valid()) continue;
    const int on = 1, off = 0;
    ::setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (address->ai_family == AF_INET6) ::setsockopt(listener.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    if (::bind(listener.fd(), address->ai_addr, address->ai_addrlen) == 0 && ::listen(listener.fd(), backlog) == 0) {
      ::freeaddrinfo(addresses);
      return listener;
    }
    error = std::strerror(errno);
  }
  ::freeaddrinfo(addresses);
  ACCEL_FAIL("rendezvous at ", place, ": rank 0 cannot listen on port ", port, ": ", error,
             " (another process holds MASTER_PORT? choose a free port)");
}

// One connection attempt to every address of host:port, each bounded by the deadline and by
// a second (so that a rank 0 that starts late is retried soon); `error` keeps the last reason.
Socket try_connect(const std::string& host, int port, const Deadline& deadline, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  const int code = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses);
  if (code == EAI_AGAIN) {
    error = ::gai_strerror(code);
    return Socket();
  }
  ACCEL_CHECK(code == 0, "rendezvous: MASTER_ADDR=\"", host, "\" does not resolve: ", ::gai_strerror(code));
  Socket connected;
  for (addrinfo* address = addresses; address != nullptr && !connected.valid(); address = address->ai_next) {
    Socket attempt(::socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK, address->ai_protocol));
    if (!attempt.valid()) continue;
    if (::connect(attempt.fd(), address->ai_addr, address->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        error = std::strerror(errno);
        continue;
      }
      pollfd writable{attempt.fd(), POLLOUT, 0};
      if (::poll(&writable, 1, std::min(deadline.remaining_ms(), 1000)) <= 0) {
        error = "connection attempt timed out";
        continue;
      }
      int status = 0;
      socklen_t length = sizeof status;
      ::getsockopt(attempt.fd(), SOL_SOCKET, SO_ERROR, &status, &length);
      if (status != 0) {
        error = std::strerror(status);
        continue;
      }
    }
    ::fcntl(attempt.fd(), F_SETFL, ::fcntl(attempt.fd(), F_GETFL) & ~O_NONBLOCK);
    connected = std::move(attempt);
  }
  ::freeaddrinfo(addresses);
  return connected;
}

std::vector<uint8_t> tcp_serve(const std::string& host, int port, int world_size, const std::vector<uint8_t>& bytes,
                               double timeout_seconds) {
  const std::string place = where(host, port);
  const Deadline deadline(timeout_seconds);
  Socket listener = listen_on(port, world_size, place);
  std::map<int, Socket> peers;  // rank -> its connection
  std::vector<bool> arrived(world_size, false);
  arrived[0] = true;
  while (static_cast<int>(peers.size()) < world_size - 1) {
    ACCEL_CHECK(!deadline.passed(), timed_out(place, timeout_seconds), arrival_report(world_size, arrived));
    pollfd incoming{listener.fd(), POLLIN, 0};
    const int polled = ::poll(&incoming, 1, deadline.remaining_ms());
    if (polled <= 0) continue;  // timed out (checked above) or interrupted
    Socket peer(::accept(listener.fd(), nullptr, nullptr));
    if (!peer.valid()) continue;
    uint32_t hello[3];
    if (receive_exactly(peer, hello, sizeof hello, deadline, place) != Received::All) continue;
    const uint32_t magic = ntohl(hello[0]);
    const int rank = static_cast<int>(ntohl(hello[1]));
    const int peer_world_size = static_cast<int>(ntohl(hello[2]));
    ACCEL_CHECK(magic == kHelloMagic, "rendezvous at ", place,
                ": a connection that is not an accel rank reached MASTER_PORT (is another service using it?)");
    ACCEL_CHECK(peer_world_size == world_size, "rendezvous at ", place, ": rank ", rank, " has WORLD_SIZE=",
                peer_world_size, " but rank 0 has WORLD_SIZE=", world_size, " (two jobs on one MASTER_PORT?)");
    ACCEL_CHECK(rank > 0 && rank < world_size && !arrived[rank], "rendezvous at ", place, ": a rank says RANK=", rank,
                ", which is ", rank > 0 && rank < world_size ? "taken by another rank" : "out of range",
                " in a world of ", world_size, " (every rank needs its own RANK from 0 to WORLD_SIZE-1)");
    arrived[rank] = true;
    peers.emplace(rank, std::move(peer));
  }
  const uint32_t length = htonl(static_cast<uint32_t>(bytes.size()));
  for (const auto& [rank, peer] : peers) {
    send_all(peer, &length, sizeof length, place);
    send_all(peer, bytes.data(), bytes.size(), place);
  }
  return bytes;
}

std::vector<uint8_t> tcp_join(const std::string& host, int port, int rank, int world_size, double timeout_seconds) {
  const std::string place = where(host, port);
  const Deadline deadline(timeout_seconds);
  std::string error;
  Socket socket;
  for (auto pause = std::chrono::milliseconds(10); !(socket = try_connect(host, port, deadline, error)).valid();
       pause = std::min(pause * 2, std::chrono::milliseconds(500))) {
    ACCEL_CHECK(!deadline.passed(), timed_out(place, timeout_seconds), "rank ", rank,
                " could not reach rank 0 (last error: ", error, ")");
    std::this_thread::sleep_for(std::min(pause, std::chrono::milliseconds(deadline.remaining_ms())));
  }
  const uint32_t hello[3] = {htonl(kHelloMagic), htonl(static_cast<uint32_t>(rank)),
                             htonl(static_cast<uint32_t>(world_size))};
  send_all(socket, hello, sizeof hello, place);
  uint32_t length = 0;
  Received received = receive_exactly(socket, &length, sizeof length, deadline, place);
  std::vector<uint8_t> bytes;
  if (received == Received::All) {
    length = ntohl(length);
    ACCEL_CHECK(length <= kMaxPayloadBytes, "rendezvous at ", place, ": rank 0 announced ", length,
                " bytes, more than an accel rendezvous ever sends (is MASTER_PORT another service?)");
    bytes.resize(length);
    received = receive_exactly(socket, bytes.data(), bytes.size(), deadline, place);
  }
  ACCEL_CHECK(received != Received::TimedOut, timed_out(place, timeout_seconds), "rank ", rank,
              " reached rank 0, which is still waiting for the others: not all ", world_size, " ranks arrived");
  ACCEL_CHECK(received != Received::Closed, "rendezvous at ", place, ": rank 0 closed the connection of rank ", rank,
              " before sending its bytes (rank 0 failed: see its output)");
  return bytes;
}

std::string arrival_mark(const std::string& path, int rank) { return path + ".arrived." + std::to_string(rank); }

// Writes the whole file under a temporary name, then renames it into place, so that a reader
// polling for `path` finds either nothing or all of it.
void write_atomically(const std::string& path, const std::vector<uint8_t>& bytes) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ACCEL_CHECK(fd >= 0, "rendezvous file ", path, ": cannot create ", temporary, ": ", std::strerror(errno));
  const bool written = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) &&
                       ::fsync(fd) == 0;
  const int write_errno = errno;
  ::close(fd);
  if (!written) std::filesystem::remove(temporary);
  ACCEL_CHECK(written, "rendezvous file ", path, ": cannot write ", temporary, ": ", std::strerror(write_errno));
  ACCEL_CHECK(std::rename(temporary.c_str(), path.c_str()) == 0, "rendezvous file ", path, ": cannot rename ",
              temporary, " to it: ", std::strerror(errno));
}

std::vector<uint8_t> file_serve(const std::string& path, int world_size, const std::vector<uint8_t>& bytes,
                                double timeout_seconds) {
  namespace fs = std::filesystem;
  ACCEL_CHECK(!fs::exists(path), "rendezvous file ", path, " exists already, left by an earlier job: remove it, or ",
              "give every job its own ACCEL_RENDEZVOUS_FILE (e.g. with the job id in its name)");
  // Marks can only be stale here: a rank leaves one after reading the file, which did not exist.
  for (int rank = 1; rank < world_size; ++rank) fs::remove(arrival_mark(path, rank));
  write_atomically(path, bytes);
  const Deadline deadline(timeout_seconds);
  std::vector<bool> arrived(world_size, false);
  arrived[0] = true;
  auto clean_up = [&] {
    for (int rank = 1; rank < world_size; ++rank) fs::remove(arrival_mark(path, rank));
    fs::remove(path);
  };
  while (!std::all_of(arrived.begin(), arrived.end(), [](bool yes) { return yes; })) {
    for (int rank = 1; rank < world_size; ++rank) arrived[rank] = arrived[rank] || fs::exists(arrival_mark(path, rank));
    if (deadline.passed()) {
      clean_up();
      ACCEL_FAIL("rendezvous file ", path, " timed out after ", timeout_seconds, " s: ",
                 arrival_report(world_size, arrived));
    }
    std::this_thread::sleep_for(kFilePollInterval);
  }
  clean_up();
  return bytes;
}

std::vector<uint8_t> file_join(const std::string& path, int rank, double timeout_seconds) {
  const Deadline deadline(timeout_seconds);
  while (!std::filesystem::exists(path)) {
    ACCEL_CHECK(!deadline.passed(), "rendezvous file ", path, " timed out after ", timeout_seconds, " s: rank ", rank,
                " waited for rank 0 to write it");
    std::this_thread::sleep_for(kFilePollInterval);
  }
  std::ifstream file(path, std::ios::binary);
  ACCEL_CHECK(file.good(), "rendezvous file ", path, ": rank ", rank, " cannot open it: ", std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::ofstream mark(arrival_mark(path, rank));
  ACCEL_CHECK(mark.good(), "rendezvous file ", path, ": rank ", rank, " cannot leave its arrival mark ",
              arrival_mark(path, rank), ": ", std::strerror(errno));
  return bytes;
}

void check_rank(int rank, int world_size) {
  ACCEL_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rendezvous: rank ", rank,
              " does not exist in a world of ", world_size);
}

}  // namespace

RendezvousPlan rendezvous_plan_from_environment() {
  const char* rank_text = variable("RANK");
  const char* world_text = variable("WORLD_SIZE");
  const char* address = variable("MASTER_ADDR");
  const char* port_text = variable("MASTER_PORT");
  const char* file = variable("ACCEL_RENDEZVOUS_FILE");
  RendezvousPlan plan;
  if (rank_text == nullptr && world_text == nullptr) {
    ACCEL_CHECK(file == nullptr, "ACCEL_RENDEZVOUS_FILE is set but RANK and WORLD_SIZE are not: every rank needs ",
                "its RANK (0 to WORLD_SIZE-1) and the WORLD_SIZE");
    return plan;  // one process
  }
  ACCEL_CHECK(rank_text != nullptr && world_text != nullptr, rank_text ? "RANK" : "WORLD_SIZE", " is set but ",
              rank_text ? "WORLD_SIZE" : "RANK", " is not: a torchrun-style launch sets both");
  plan.world_size = parse_int_variable("WORLD_SIZE", world_text, 1, INT_MAX, "a number of processes (an integer >= 1)");
  plan.rank = parse_int_variable("RANK", rank_text, 0, INT_MAX, "a rank (an integer >= 0)");
  ACCEL_CHECK(plan.rank < plan.world_size, "RANK=", plan.rank, " is not below WORLD_SIZE=", plan.world_size,
              " (ranks count from 0)");
  if (address != nullptr || port_text != nullptr) {
    ACCEL_CHECK(address != nullptr && port_text != nullptr, address ? "MASTER_ADDR" : "MASTER_PORT", " is set but ",
                address ? "MASTER_PORT" : "MASTER_ADDR", " is not: the TCP rendezvous needs rank 0's host and port");
    plan.kind = RendezvousPlan::Kind::Tcp;
    plan.host = address;
    plan.port = parse_int_variable("MASTER_PORT", port_text, 1, 65535, "a TCP port (an integer from 1 to 65535)");
  } else if (file != nullptr) {
    plan.kind = RendezvousPlan::Kind::File;
    plan.path = file;
  } else {
    ACCEL_CHECK(plan.world_size == 1, "WORLD_SIZE=", plan.world_size, " but nothing says where the ranks meet: set ",
                "MASTER_ADDR and MASTER_PORT (TCP), or ACCEL_RENDEZVOUS_FILE (a path every rank can read)");
  }
  return plan;
}

int local_rank_from_environment(int fallback) {
  for (const char* name : {"LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"}) {
    if (const char* text = variable(name)) {
      return parse_int_variable(name, text, 0, INT_MAX, "a local rank (an integer >= 0)");
    }
  }
  return fallback;
}

std::vector<uint8_t> share_from_rank0(const RendezvousPlan& plan, const std::vector<uint8_t>& bytes,
                                      double timeout_seconds) {
  switch (plan.kind) {
    case RendezvousPlan::Kind::None:
      check_rank(plan.rank, plan.world_size);
      ACCEL_CHECK(plan.world_size == 1, "rendezvous: a world of ", plan.world_size, " ranks needs a place to meet");
      return bytes;
    case RendezvousPlan::Kind::Tcp:
      return tcp_share_from_rank0(plan.host, plan.port, plan.rank, plan.world_size, bytes, timeout_seconds);
    case RendezvousPlan::Kind::File:
      return file_share_from_rank0(plan.path, plan.rank, plan.world_size, bytes, timeout_seconds);
  }
  ACCEL_FAIL("rendezvous: unknown plan kind ", static_cast<int>(plan.kind));
}

std::vector<uint8_t> tcp_share_from_rank0(const std::string& host, int port, int rank, int world_size,
                                          const std::vector<uint8_t>& bytes, double timeout_seconds) {
  check_rank(rank, world_size);
  if (world_size == 1) return bytes;
  if (rank == 0) return tcp_serve(host, port, world_size, bytes, timeout_seconds);
  return tcp_join(host, port, rank, world_size, timeout_seconds);
}

std::vector<uint8_t> file_share_from_rank0(const std::string& path, int rank, int world_size,
                                           const std::vector<uint8_t>& bytes, double timeout_seconds) {
  check_rank(rank, world_size);
  if (world_size == 1) return bytes;
  if (rank == 0) return file_serve(path, world_size, bytes, timeout_seconds);
  return file_join(path, rank, timeout_seconds);
}

}  // namespace accel::distributed
