// Hugging Face Hub downloads over libcurl into the huggingface_hub cache layout (hub.h).
//
// Each file is fetched in full into a temporary file in blobs/, then renamed to its blob
// name and linked from the snapshot, so an interrupted download never leaves a file that
// looks complete; the refs/ file is written last. The first file fetched pins the commit
// (the X-Repo-Commit header) and the rest are fetched by that commit, so a push to the
// branch mid-download cannot mix two versions in one snapshot.
#include "models/hub.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace accel::models {

namespace fs = std::filesystem;

namespace {

const char* const kOptionalFiles[] = {"vocab.txt", "tokenizer.json", "tokenizer_config.json",
                                      "special_tokens_map.json"};

// ---- environment ----

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// huggingface_hub's rule for boolean variables.
bool env_true(const char* name) {
  std::string value = env(name);
  std::transform(value.begin(), value.end(), value.begin(), [](unsigned char c) { return std::toupper(c); });
  return value == "1" || value == "ON" || value == "YES" || value == "TRUE";
}

fs::path expand_user(const std::string& path) {
  if (path == "~" || path.rfind("~/", 0) == 0) return fs::path(env("HOME")) / path.substr(std::min<size_t>(2, path.size()));
  return path;
}

std::string trim(const std::string& text) {
  size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1);
}

fs::path hf_home() {
  if (!env("HF_HOME").empty()) return expand_user(env("HF_HOME"));
  std::string xdg = env("XDG_CACHE_HOME");
  return expand_user(xdg.empty() ? "~/.cache" : xdg) / "huggingface";
}

bool offline() { return env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE"); }

std::string endpoint() {
  std::string url = env("HF_ENDPOINT").empty() ? "https://huggingface.co" : env("HF_ENDPOINT");
  while (!url.empty() && url.back() == '/') url.pop_back();
  ACCEL_CHECK(url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0,
              "HF_ENDPOINT must be an http:// or https:// URL; found \"", url, "\"");
  return url;
}

std::string token() {
  for (const char* name : {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}) {
    if (!trim(env(name)).empty()) return trim(env(name));
  }
  fs::path file = env("HF_TOKEN_PATH").empty() ? hf_home() / "token" : expand_user(env("HF_TOKEN_PATH"));
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return trim(text.str());
}

// ---- names that become paths or URLs ----

// A commit, ETag or ref component that is safe as a file name.
bool is_safe_name(const std::string& name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.'; });
}

bool is_commit_hash(const std::string& revision) {
  return revision.size() == 40 &&
         std::all_of(revision.begin(), revision.end(), [](char c) { return std::isdigit(c) || (c >= 'a' && c <= 'f'); });
}

// Branches may contain '/' ("refs/pr/1"); refs/{revision} then nests, as in huggingface_hub.
void check_revision(const std::string& revision) {
  std::stringstream parts(revision);
  std::string part;
  bool ok = !revision.empty() && revision.front() != '/' && revision.back() != '/';
  while (ok && std::getline(parts, part, '/')) ok = is_safe_name(part);
  ACCEL_CHECK(ok, "Hub revision \"", revision, "\" is not a branch, tag or commit name");
}

// Percent-encodes everything but RFC 3986's unreserved characters (and '/' when keep_slash).
std::string url_encode(const std::string& text, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += char(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// ---- the cache ----

struct RepoCache {
  fs::path root;  // {cache}/models--org--name
  fs::path ref(const std::string& revision) const { return root / "refs" / revision; }
  fs::path snapshot(const std::string& commit) const { return root / "snapshots" / commit; }
  fs::path blobs() const { return root / "blobs"; }
};

RepoCache repo_cache(const std::string& repo_id) {
  std::string folder = "models--" + repo_id;
  for (size_t slash = folder.find('/'); slash != std::string::npos; slash = folder.find('/')) {
    folder.replace(slash, 1, "--");
  }
  return RepoCache{fs::path(hub_cache_dir()) / folder};
}

bool is_file(const fs::path& path) {
  std::error_code error;
  return fs::is_regular_file(path, error);  // follows symlinks: a dangling one is no file
}

// The shard files a model.safetensors.index.json names; nullopt when it is unreadable.
std::optional<std::vector<std::string>> index_shards(const fs::path& index_path) {
  std::ifstream in(index_path);
  nlohmann::json index = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) return std::nullopt;
  std::vector<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || !is_safe_name(file.get<std::string>())) return std::nullopt;
    if (std::find(shards.begin(), shards.end(), file.get<std::string>()) == shards.end()) {
      shards.push_back(file.get<std::string>());
    }
  }
  return shards;
}

bool has_weights(const fs::path& dir) {
  if (is_file(dir / "model.safetensors") || is_file(dir / "pytorch_model.bin")) return true;
  if (!is_file(dir / "model.safetensors.index.json")) return false;
  std::optional<std::vector<std::string>> shards = index_shards(dir / "model.safetensors.index.json");
  return shards && std::all_of(shards->begin(), shards->end(), [&](const std::string& s) { return is_file(dir / s); });
}

// The commit a revision points at in the cache: a commit hash is its own; a branch or tag
// is resolved through refs/. Empty when unknown.
std::string cached_commit(const RepoCache& cache, const std::string& revision) {
  if (is_commit_hash(revision)) return revision;
  std::ifstream in(cache.ref(revision));
  std::string commit;
  std::getline(in, commit);
  commit = trim(commit);
  return is_safe_name(commit) ? commit : "";
}

std::optional<fs::path> cached_snapshot(const RepoCache& cache, const std::string& revision) {
  std::string commit = cached_commit(cache, revision);
  if (commit.empty()) return std::nullopt;
  fs::path dir = cache.snapshot(commit);
  if (is_file(dir / "config.json") && has_weights(dir)) return dir;
  return std::nullopt;
}

void make_directories(const fs::path& dir) {
  std::error_code error;
  fs::create_directories(dir, error);
  ACCEL_CHECK(!error, dir.string(), ": cannot create the directory: ", error.message());
}

void move_file(const fs::path& from, const fs::path& to) {
  std::error_code error;
  fs::rename(from, to, error);
  ACCEL_CHECK(!error, "cannot move ", from.string(), " to ", to.string(), ": ", error.message());
}

// A file name in `dir` that no other process picks: pid plus a per-process counter.
fs::path temp_path(const fs::path& dir, const std::string& stem) {
  static std::atomic<uint64_t> counter{0};
  return dir / (stem + "." + std::to_string(::getpid()) + "." + std::to_string(counter++) + ".incomplete");
}

// Removes the file on scope exit unless it was moved into place.
struct TempFile {
  fs::path path;
  ~TempFile() {
    std::error_code ignored;
    if (!path.empty()) fs::remove(path, ignored);
  }
};

void write_file_atomically(const fs::path& path, const std::string& text) {
  make_directories(path.parent_path());
  TempFile temp{temp_path(path.parent_path(), path.filename().string())};
  {
    std::ofstream out(temp.path);
    out << text;
    ACCEL_CHECK(out.good(), temp.path.string(), ": cannot write");
  }
  move_file(temp.path, path);
  temp.path.clear();
}

// ---- HTTP ----

void curl_init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    CURLcode code = curl_global_init(CURL_GLOBAL_DEFAULT);
    ACCEL_CHECK(code == CURLE_OK, "libcurl failed to initialize: ", curl_easy_strerror(code));
  });
}

// What one GET learned. With redirects (the Hub sends large files to its CDN), the Hub's
// own response is the one carrying X-Repo-Commit, and for such files X-Linked-Etag: the
// content's hash, which names the blob. The CDN's ETag names its copy, so it is a last resort.
struct Response {
  long status = 0;
  std::string commit, etag;               // etag: unquoted, without W/; empty if unusable as a name
  std::string error_code, error_message;  // the Hub's X-Error-Code / X-Error-Message
};

using Headers = std::map<std::string, std::string>;  // lower-case name -> first value

std::string header(const Headers& headers, const std::string& name) {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

Response summarize(long status, const std::vector<Headers>& responses) {
  Response response;
  response.status = status;
  if (responses.empty()) return response;
  auto hub = std::find_if(responses.begin(), responses.end(),
                          [](const Headers& h) { return h.count("x-repo-commit"); });
  const Headers& source = hub != responses.end() ? *hub : responses.front();
  response.commit = header(source, "x-repo-commit");
  std::string etag = header(source, "x-linked-etag");
  if (etag.empty()) etag = header(source, "etag");
  if (etag.empty()) etag = header(responses.back(), "etag");
  if (etag.rfind("W/", 0) == 0) etag = etag.substr(2);
  etag.erase(std::remove(etag.begin(), etag.end(), '"'), etag.end());
  response.etag = is_safe_name(etag) ? etag : "";
  response.error_code = header(responses.back(), "x-error-code");
  response.error_message = header(responses.back(), "x-error-message");
  return response;
}

struct Transfer {
  std::FILE* out = nullptr;
  CURL* curl = nullptr;
  std::string label;               // "org/name/file", announced when its body starts
  bool announced = false;
  std::vector<Headers> responses;  // one per response, redirects included, in order
};

size_t on_header(char* buffer, size_t size, size_t count, void* user) {
  auto& responses = static_cast<Transfer*>(user)->responses;
  std::string line = trim(std::string(buffer, size * count));
  size_t colon = line.find(':');
  if (line.rfind("HTTP/", 0) == 0) {
    responses.emplace_back();
  } else if (colon != std::string::npos && !responses.empty()) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    responses.back().emplace(name, trim(line.substr(colon + 1)));
  }
  return size * count;
}

std::string human_size(int64_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  if (bytes < 1000) {
    out << bytes << " B";
  } else if (bytes < 1000 * 1000) {
    out << bytes / 1e3 << " kB";
  } else if (bytes < 1000 * 1000 * 1000) {
    out << bytes / 1e6 << " MB";
  } else {
    out << bytes / 1e9 << " GB";
  }
  return out.str();
}

// Writes the body of a successful response; error pages (and redirect bodies) are dropped.
size_t on_body(char* buffer, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  long status = 0;
  curl_easy_getinfo(transfer->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status >= 300) return size * count;
  if (!transfer->announced) {
    curl_off_t length = -1;
    curl_easy_getinfo(transfer->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    std::cerr << "accel: downloading " << transfer->label;
    if (length >= 0) std::cerr << " (" << human_size(length) << ")";
    std::cerr << std::endl;
    transfer->announced = true;
  }
  return std::fwrite(buffer, size, count, transfer->out) * size;
}

// GETs url into out, following redirects, and says on stderr that label is downloading
// once a successful body starts. Network failures throw with curl's message; HTTP errors
// come back in the status for the caller to explain.
Response http_get(const std::string& url, const std::string& label, const std::string& bearer_token, std::FILE* out) {
  curl_init_once();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  ACCEL_CHECK(curl, "libcurl: cannot create a transfer handle");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr, curl_slist_free_all);
  if (!bearer_token.empty()) {
    // curl sends this header to the Hub only, not to the host a redirect leads to.
    headers.reset(curl_slist_append(nullptr, ("Authorization: Bearer " + bearer_token).c_str()));
  }
  Transfer transfer{out, curl.get(), label};
  char error_text[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl.get(), CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl.get(), CURLOPT_USERAGENT, "accel/0.1");
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT, 10L);
  // A stalled transfer (under 1 byte/s for a minute) fails instead of hanging forever.
  curl_easy_setopt(curl.get(), CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error_text);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &transfer);
  CURLcode code = curl_easy_perform(curl.get());
  ACCEL_CHECK(code != CURLE_WRITE_ERROR, "GET ", url, ": cannot write the download to disk (disk full?)");
  ACCEL_CHECK(code == CURLE_OK, "GET ", url, " failed: ", error_text[0] ? error_text : curl_easy_strerror(code));
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  return summarize(status, transfer.responses);
}

// ---- one snapshot ----

class SnapshotDownload {
 public:
  SnapshotDownload(std::string repo_id, std::string revision)
      : repo_id_(std::move(repo_id)), revision_(std::move(revision)), cache_(repo_cache(repo_id_)),
        endpoint_(endpoint()), token_(token()), url_revision_(revision_) {}

  fs::path run() {
    fetch("config.json", /*required=*/true);
    if (!fetch("model.safetensors", false)) {
      if (fetch("model.safetensors.index.json", false)) {
        std::optional<std::vector<std::string>> shards = index_shards(snapshot() / "model.safetensors.index.json");
        ACCEL_CHECK(shards, repo_id_, ": model.safetensors.index.json has no \"weight_map\" of plain shard file "
                    "names");
        for (const std::string& shard : *shards) fetch(shard, true);
      } else {
        ACCEL_CHECK(fetch("pytorch_model.bin", false), repo_id_, " (revision ", revision_, ") has no weights on ",
                    endpoint_, ": looked for model.safetensors, model.safetensors.index.json and pytorch_model.bin");
      }
    }
    for (const char* file : kOptionalFiles) fetch(file, false);
    if (!is_commit_hash(revision_)) write_file_atomically(cache_.ref(revision_), commit_);
    return snapshot();
  }

 private:
  fs::path snapshot() const { return cache_.snapshot(commit_); }

  // Downloads one file into the snapshot. A file the Hub does not have (404) returns false
  // when optional and throws when required; every other failure throws.
  bool fetch(const std::string& filename, bool required) {
    std::string url = endpoint_ + "/" + repo_id_ + "/resolve/" + url_encode(url_revision_, false) + "/" +
                      url_encode(filename, true);
    make_directories(cache_.blobs());
    TempFile temp{temp_path(cache_.blobs(), "download")};
    std::unique_ptr<std::FILE, decltype(&std::fclose)> out(std::fopen(temp.path.c_str(), "wb"), std::fclose);
    ACCEL_CHECK(out, temp.path.string(), ": cannot create the download file");
    Response response = http_get(url, repo_id_ + "/" + filename, token_, out.get());
    ACCEL_CHECK(std::fclose(out.release()) == 0, temp.path.string(), ": cannot write the download (disk full?)");

    bool missing_file = response.status == 404 && response.error_code != "RepositoryNotFound" &&
                        response.error_code != "RevisionNotFound";
    if (missing_file && !required) return false;
    if (response.status < 200 || response.status >= 300) ACCEL_FAIL(http_error(url, filename, response));

    if (commit_.empty()) {  // the first file pins the commit for all the others
      commit_ = response.commit.empty() ? revision_ : response.commit;
      ACCEL_CHECK(is_safe_name(commit_), url, ": the server sent X-Repo-Commit \"", commit_,
                  "\", not a commit hash");
      url_revision_ = commit_;
    }
    fs::path destination = snapshot() / filename;
    make_directories(destination.parent_path());
    if (response.etag.empty()) {
      move_file(temp.path, destination);
    } else {
      move_file(temp.path, cache_.blobs() / response.etag);
      link_blob(response.etag, destination);
    }
    temp.path.clear();
    return true;
  }

  // snapshots/{commit}/{file} -> ../../blobs/{etag}, replaced atomically; a plain copy where
  // the file system has no symlinks.
  void link_blob(const std::string& etag, const fs::path& destination) {
    TempFile link{temp_path(destination.parent_path(), destination.filename().string())};
    std::error_code error;
    fs::create_symlink(fs::path("..") / ".." / "blobs" / etag, link.path, error);
    if (error) {
      fs::copy_file(cache_.blobs() / etag, link.path, error);
      ACCEL_CHECK(!error, link.path.string(), ": cannot link or copy the downloaded blob: ", error.message());
    }
    move_file(link.path, destination);
    link.path.clear();
  }

  std::string http_error(const std::string& url, const std::string& filename, const Response& response) const {
    std::string why;
    const std::string& code = response.error_code;
    if (code == "RepositoryNotFound") {
      why = "no repository " + repo_id_ + " on " + endpoint_ +
            (token_.empty() ? " (or it is private or gated: set HF_TOKEN to a token with access)"
                            : " that your HF_TOKEN can see");
    } else if (code == "RevisionNotFound") {
      why = "repository " + repo_id_ + " has no revision \"" + revision_ + "\"";
    } else if (code == "GatedRepo" || response.status == 403) {
      why = "access denied: " + repo_id_ + " is gated or private; accept its terms on the Hub and set HF_TOKEN "
            "to a token with access";
    } else if (response.status == 401) {
      why = token_.empty() ? "authentication required: set HF_TOKEN to a token with access to " + repo_id_
                           : "the server rejected HF_TOKEN for " + repo_id_;
    } else if (response.status == 404) {
      why = "repository " + repo_id_ + " has no file " + filename + " at revision " + revision_;
    } else if (response.status == 429) {
      why = "rate limited: wait and retry (requests with HF_TOKEN get higher limits)";
    } else {
      why = "the server failed";
    }
    std::string message = repo_id_ + ": GET " + url + " returned HTTP " + std::to_string(response.status) + ": " + why;
    if (!response.error_message.empty()) message += " (server: " + response.error_message + ")";
    return message;
  }

  std::string repo_id_, revision_;
  RepoCache cache_;
  std::string endpoint_, token_;
  std::string url_revision_;  // the revision until the first response names the commit
  std::string commit_;
};

}  // namespace

bool is_hub_repo_id(const std::string& text) {
  if (text.empty() || text.size() > 96 || text.find("--") != std::string::npos ||
      text.find("..") != std::string::npos) {
    return false;
  }
  size_t slash = text.find('/');
  std::vector<std::string> parts{text.substr(0, slash)};
  if (slash != std::string::npos) parts.push_back(text.substr(slash + 1));
  return std::all_of(parts.begin(), parts.end(), [](const std::string& part) {
    return is_safe_name(part) && std::string("-.").find(part.front()) == std::string::npos &&
           std::string("-.").find(part.back()) == std::string::npos;
  });
}

std::string hub_cache_dir() {
  for (const char* name : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"}) {
    if (!env(name).empty()) return expand_user(env(name)).string();
  }
  return (hf_home() / "hub").string();
}

std::string hub_snapshot_download(const std::string& repo_id, const HubOptions& options) {
  ACCEL_CHECK(is_hub_repo_id(repo_id), "\"", repo_id, "\" is not a Hugging Face Hub repository id (\"org/name\")");
  std::string revision = options.revision;
  if (revision.empty()) revision = env("HF_REVISION").empty() ? "main" : env("HF_REVISION");
  check_revision(revision);

  RepoCache cache = repo_cache(repo_id);
  if (std::optional<fs::path> dir = cached_snapshot(cache, revision)) return dir->string();
  if (offline()) {
    std::string commit = cached_commit(cache, revision);
    std::string looked = is_commit_hash(revision) ? cache.snapshot(revision).string()
                         : commit.empty()         ? cache.ref(revision).string() + " (missing)"
                                                  : cache.ref(revision).string() + " -> " + cache.snapshot(commit).string();
    ACCEL_FAIL(repo_id, " (revision ", revision, ") is not in the Hugging Face cache, and HF_HUB_OFFLINE is set so "
               "it cannot be downloaded: looked for config.json and weights through ", looked,
               ". Download it once with network access, or pass a local model directory.");
  }
  return SnapshotDownload(repo_id, revision).run().string();
}

}  // namespace accel::models
