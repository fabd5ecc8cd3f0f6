// tests/models/test_hub.cc: from_pretrained with a Hub id (models/hub.cc) against a local
// stand-in for the Hub (tests/models/hub_server.py), which serves the tiny BERTs with the
// Hub's headers, redirects and error codes. Checks the Hugging Face cache layout the download
// leaves (refs/main, blobs named by ETag, snapshot symlinks), loading again offline and with
// the server gone, a cache filled by other tools, the pytorch_model.bin and sharded
// fallbacks, HF_TOKEN for private repositories, and what the errors say (404, 401, offline
// without a cache, no server). Each test starts its own server and cache in a temporary
// directory; all skip when python3 is unavailable.
#include "models/hub.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "models/pretrained.h"

namespace accel::models {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kServerScript = std::string(ACCEL_GOLDEN_DIR) + "/../../models/hub_server.py";
const std::string kGoldenBert = std::string(ACCEL_GOLDEN_DIR) + "/../bert";
const std::string kSharedTinyBert = std::string(ACCEL_SHARED_DATA_DIR) + "/tiny-bert";

// The tiny BERT with tokenizer files when the shared data is there, else the golden one.
std::string tiny_bert_dir() {
  return fs::exists(kSharedTinyBert + "/config.json") ? kSharedTinyBert : kGoldenBert + "/tiny";
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

bool is_hex(const std::string& text, size_t length) {
  return text.size() == length && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// A port nothing listens on: bound once by the kernel's choice, then released.
int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

template <typename F>
void expect_error(F&& f, const std::vector<std::string>& expected) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing \"" << expected.front() << "\"";
  } catch (const Error& e) {
    for (const std::string& part : expected) EXPECT_THAT(e.what(), HasSubstr(part));
  }
}

void expect_same_weights(const nn::Module& actual, const nn::Module& expected) {
  std::map<std::string, Tensor> want = expected.state_dict();
  std::map<std::string, Tensor> got = actual.state_dict();
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, value] : want) EXPECT_TRUE(equal(got.at(name), value)) << name;
}

PretrainedOptions quiet() {
  PretrainedOptions options;
  options.verbose = false;
  return options;
}

class Hub : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("python3 -c 'import http.server' >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "python3 is not available; the Hub tests need it to run tests/models/hub_server.py";
    }
    std::string pattern = (fs::temp_directory_path() / "accel_hub_XXXXXX").string();
    temp_ = ::mkdtemp(pattern.data());
    repos_ = temp_ / "repos";
    // The repositories the server offers.
    fs::create_directories(repos_ / "org");
    fs::create_directories(repos_ / "private");
    fs::copy(tiny_bert_dir(), repos_ / "org" / "tiny-bert", fs::copy_options::recursive);
    fs::copy(kGoldenBert + "/tiny_bin", repos_ / "org" / "tiny-bin", fs::copy_options::recursive);
    fs::copy(tiny_bert_dir(), repos_ / "private" / "tiny-bert", fs::copy_options::recursive);
    make_sharded_repo(repos_ / "org" / "tiny-sharded");

    for (const char* name : {"HF_ENDPOINT", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE",
                             "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
                             "HF_REVISION"}) {
      ::unsetenv(name);
    }
    ::setenv("HF_HOME", (temp_ / "hf").c_str(), 1);
    ::setenv("HF_ENDPOINT", ("http://127.0.0.1:" + std::to_string(closed_port())).c_str(), 1);
  }

  void TearDown() override {
    stop_server();
    if (!temp_.empty()) fs::remove_all(temp_);
  }

  // The tiny BERT's weights split over two safetensors shards with an index.
  static void make_sharded_repo(const fs::path& dir) {
    fs::create_directories(dir);
    fs::copy_file(tiny_bert_dir() + "/config.json", dir / "config.json");
    std::map<std::string, Tensor> shards[2];
    nlohmann::json weight_map;
    int i = 0;
    for (const auto& [name, tensor] : load_checkpoint_weights(tiny_bert_dir())) {
      std::string shard = i % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
      shards[i++ % 2][name] = tensor;
      weight_map[name] = shard;
    }
    safetensors::save((dir / "model-00001-of-00002.safetensors").string(), shards[0]);
    safetensors::save((dir / "model-00002-of-00002.safetensors").string(), shards[1]);
    write_file(dir / "model.safetensors.index.json", nlohmann::json{{"weight_map", weight_map}}.dump());
  }

  // Starts hub_server.py and points HF_ENDPOINT at it.
  void start_server(const std::string& token = "") {
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    server_ = ::fork();
    ASSERT_GE(server_, 0);
    if (server_ == 0) {
      ::dup2(pipe_fds[1], STDOUT_FILENO);
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
      if (token.empty()) {
        ::execlp("python3", "python3", kServerScript.c_str(), repos_.c_str(), nullptr);
      } else {
        ::execlp("python3", "python3", kServerScript.c_str(), repos_.c_str(), "--token", token.c_str(), nullptr);
      }
      ::_exit(127);
    }
    ::close(pipe_fds[1]);
    std::FILE* out = ::fdopen(pipe_fds[0], "r");
    char line[64] = "";
    bool got_port = std::fgets(line, sizeof(line), out) != nullptr;
    std::fclose(out);
    ASSERT_TRUE(got_port && std::atoi(line) > 0) << "hub_server.py did not print its port";
    ::setenv("HF_ENDPOINT", ("http://127.0.0.1:" + std::to_string(std::atoi(line))).c_str(), 1);
  }

  void stop_server() {
    if (server_ <= 0) return;
    ::kill(server_, SIGTERM);
    ::waitpid(server_, nullptr, 0);
    server_ = -1;
    ::setenv("HF_ENDPOINT", ("http://127.0.0.1:" + std::to_string(closed_port())).c_str(), 1);
  }

  fs::path repo_cache(const std::string& folder) const { return temp_ / "hf" / "hub" / folder; }

  fs::path temp_, repos_;
  pid_t server_ = -1;
};

TEST_F(Hub, DownloadsIntoTheHuggingFaceCacheLayoutThenLoadsOffline) {
  start_server();
  auto model = bert_from_pretrained("org/tiny-bert", quiet());
  expect_same_weights(*model, *bert_from_pretrained(tiny_bert_dir(), quiet()));

  fs::path cache = repo_cache("models--org--tiny-bert");
  std::string commit = read_file(cache / "refs" / "main");
  EXPECT_TRUE(is_hex(commit, 40)) << "refs/main holds \"" << commit << "\"";
  fs::path snapshot = cache / "snapshots" / commit;
  for (const auto& entry : fs::directory_iterator(tiny_bert_dir())) {
    std::string file = entry.path().filename().string();
    SCOPED_TRACE(file);
    // Each file is a symlink ../../blobs/<etag> to a blob with the served bytes.
    ASSERT_TRUE(fs::is_symlink(snapshot / file));
    fs::path target = fs::read_symlink(snapshot / file);
    EXPECT_EQ(target.parent_path(), fs::path("../../blobs"));
    EXPECT_EQ(read_file(cache / "blobs" / target.filename()), read_file(entry.path()));
    if (file == "model.safetensors") {
      // Named by X-Linked-Etag (sha256), not by the CDN's ETag.
      EXPECT_TRUE(is_hex(target.filename().string(), 64)) << target;
    } else {
      EXPECT_TRUE(is_hex(target.filename().string(), 40)) << "the weak ETag W/\"<sha1>\", unquoted: " << target;
    }
  }
  for (const auto& blob : fs::directory_iterator(cache / "blobs")) {
    EXPECT_EQ(blob.path().extension(), "") << "left behind: " << blob.path();
  }
  EXPECT_EQ(resolve_model_dir("org/tiny-bert"), snapshot.string());

  // The server gone: the complete snapshot is used without the network, offline or not.
  stop_server();
  expect_same_weights(*bert_from_pretrained("org/tiny-bert", quiet()), *model);
  ::setenv("HF_HUB_OFFLINE", "1", 1);
  expect_same_weights(*bert_from_pretrained("org/tiny-bert", quiet()), *model);
}

TEST_F(Hub, ReusesACacheThatOtherToolsFilled) {
  // The layout huggingface_hub writes, here with plain files instead of symlinks, under
  // HF_HUB_CACHE; no server runs.
  fs::path cache = temp_ / "elsewhere";
  ::setenv("HF_HUB_CACHE", cache.c_str(), 1);
  fs::path snapshot = cache / "models--org--cached" / "snapshots" / "0123abcd";
  write_file(cache / "models--org--cached" / "refs" / "main", "0123abcd");
  fs::create_directories(snapshot);
  fs::copy_file(tiny_bert_dir() + "/config.json", snapshot / "config.json");
  fs::copy_file(tiny_bert_dir() + "/model.safetensors", snapshot / "model.safetensors");
  EXPECT_EQ(resolve_model_dir("org/cached"), snapshot.string());
  expect_same_weights(*bert_from_pretrained("org/cached", quiet()), *bert_from_pretrained(tiny_bert_dir(), quiet()));
}

TEST_F(Hub, FallsBackToPytorchModelBin) {
  start_server();
  auto model = bert_classifier_from_pretrained("org/tiny-bin", quiet());
  expect_same_weights(*model, *bert_classifier_from_pretrained(kGoldenBert + "/tiny", quiet()));
  fs::path cache = repo_cache("models--org--tiny-bin");
  fs::path snapshot = cache / "snapshots" / read_file(cache / "refs" / "main");
  EXPECT_TRUE(fs::exists(snapshot / "pytorch_model.bin"));
  EXPECT_FALSE(fs::exists(snapshot / "model.safetensors"));
}

TEST_F(Hub, DownloadsShardedSafetensors) {
  start_server();
  auto model = bert_from_pretrained("org/tiny-sharded", quiet());
  expect_same_weights(*model, *bert_from_pretrained(tiny_bert_dir(), quiet()));
  fs::path cache = repo_cache("models--org--tiny-sharded");
  fs::path snapshot = cache / "snapshots" / read_file(cache / "refs" / "main");
  EXPECT_TRUE(fs::exists(snapshot / "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(snapshot / "model-00002-of-00002.safetensors"));
}

TEST_F(Hub, SendsHfTokenForPrivateRepositories) {
  start_server("secret-token");
  expect_error([] { bert_from_pretrained("private/tiny-bert", quiet()); },
               {"HTTP 401", "/private/tiny-bert/resolve/main/config.json", "set HF_TOKEN"});
  ::setenv("HF_TOKEN", "secret-token", 1);
  expect_same_weights(*bert_from_pretrained("private/tiny-bert", quiet()),
                      *bert_from_pretrained(tiny_bert_dir(), quiet()));
}

TEST_F(Hub, MissingRepositoryOrRevisionIs404) {
  start_server();
  expect_error([] { bert_from_pretrained("org/no-such-model", quiet()); },
               {"HTTP 404", "/org/no-such-model/resolve/main/config.json", "no repository org/no-such-model"});
  expect_error([] { hub_snapshot_download("org/tiny-bert", {.revision = "v9"}); },
               {"HTTP 404", "/org/tiny-bert/resolve/v9/config.json", "has no revision \"v9\""});
}

TEST_F(Hub, OfflineWithoutCacheSaysWhereItLooked) {
  ::setenv("HF_HUB_OFFLINE", "1", 1);
  expect_error([] { bert_from_pretrained("org/never-downloaded", quiet()); },
               {"not in the Hugging Face cache", "HF_HUB_OFFLINE",
                repo_cache("models--org--never-downloaded").string() + "/refs/main"});
}

TEST_F(Hub, NetworkErrorsCarryCurlsMessage) {
  expect_error([] { bert_from_pretrained("org/tiny-bert", quiet()); },
               {"/org/tiny-bert/resolve/main/config.json failed", "onnect"});
  EXPECT_FALSE(fs::exists(repo_cache("models--org--tiny-bert") / "refs"));
}

TEST(HubIds, RepoIdsAndLocalPaths) {
  for (const char* id : {"bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2", "org/tiny_bert.v2"}) {
    EXPECT_TRUE(is_hub_repo_id(id)) << id;
  }
  for (const char* id : {"", "a/b/c", "../x", "/abs/path", "./dir", "org--x/y", "-x", "x.", "a b", "org/"}) {
    EXPECT_FALSE(is_hub_repo_id(id)) << id;
  }
  expect_error([] { resolve_model_dir("./no/such/dir"); }, {"no such model directory"});
  expect_error([] { resolve_model_dir(kServerScript); }, {"not a directory"});
}

}  // namespace
}  // namespace accel::models
