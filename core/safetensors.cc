// safetensors reading and writing (format described in core/safetensors.h).
// One parser validates every header, whether it comes from a memory-mapped file, an
// in-memory buffer or a header-only read: nothing past the header is touched until the
// header has been checked against the size of the data section. Loading maps the file
// read-only and hands out views into the mapping; saving writes a temp file, fsyncs it and
// renames it over the target. This file does no dtype conversion and no device transfer
// beyond `to(kCPU)` on save.
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.h"
#include "core/ops.h"

namespace accel::safetensors {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; big-endian hosts would need byte swaps");

namespace {

using nlohmann::json;

constexpr uint64_t kLengthPrefixBytes = 8;
constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the limit the Python library enforces

std::string errno_text() { return std::strerror(errno); }

// ---- header validation ----

struct Header {
  std::vector<TensorInfo> tensors;  // in name order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // byte offset of the data section from the start of the file
};

// Reads the u64 header length and checks it against the file size; returns it.
uint64_t checked_header_length(const uint8_t* prefix, uint64_t file_size, const std::string& name) {
  ACCEL_CHECK(file_size >= kLengthPrefixBytes, name, ": file is ", file_size,
              " bytes but a safetensors file needs at least 8 (the header length)");
  uint64_t length;
  std::memcpy(&length, prefix, sizeof(length));
  ACCEL_CHECK(length <= kMaxHeaderBytes, name, ": header length is ", length,
              " bytes, over the limit of ", kMaxHeaderBytes, " (corrupt or not a safetensors file)");
  ACCEL_CHECK(length <= file_size - kLengthPrefixBytes, name, ": header length is ", length,
              " bytes but only ", file_size - kLengthPrefixBytes, " bytes follow the length prefix");
  return length;
}

// A short rendering of a JSON value for error messages.
std::string describe(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  return text.size() > 80 ? text.substr(0, 77) + "..." : text;
}

uint64_t parse_offset(const json& value, const std::string& where) {
  ACCEL_CHECK(value.is_number_unsigned(), where, " must hold non-negative integers but found ", describe(value));
  return value.get<uint64_t>();
}

int64_t parse_dim(const json& value, const std::string& where) {
  ACCEL_CHECK(value.is_number_integer(), where, " must hold integers but found ", describe(value));
  ACCEL_CHECK(!value.is_number_unsigned() ||
                  value.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()),
              where, " has dimension ", describe(value), ", too large for int64");
  int64_t dim = value.get<int64_t>();
  ACCEL_CHECK(dim >= 0, where, " must hold non-negative integers but found ", dim);
  return dim;
}

// The byte size of shape x dtype, failing if it does not fit in 64 bits.
uint64_t checked_byte_size(const Shape& shape, DType dtype, const std::string& where) {
  uint64_t bytes = uint64_t(itemsize(dtype));
  for (int64_t dim : shape) {
    ACCEL_CHECK(!__builtin_mul_overflow(bytes, uint64_t(dim), &bytes), where, " has shape ",
                shape_str(shape), " x ", dtype_name(dtype), " whose byte size overflows 64 bits");
  }
  return bytes;
}

TensorInfo parse_tensor_entry(const std::string& tensor_name, const json& entry, uint64_t data_size,
                              const std::string& name) {
  const std::string where = name + ": tensor \"" + tensor_name + "\"";
  ACCEL_CHECK(entry.is_object(), where, " must be an object {dtype, shape, data_offsets} but found ",
              describe(entry));

  auto dtype_it = entry.find("dtype");
  ACCEL_CHECK(dtype_it != entry.end() && dtype_it->is_string(), where,
              " needs a string \"dtype\" but found ", dtype_it == entry.end() ? "none" : describe(*dtype_it));
  TensorInfo info;
  info.name = tensor_name;
  try {
    info.dtype = dtype_from_safetensors_name(dtype_it->get<std::string>());
  } catch (const Error& error) {
    ACCEL_FAIL(where, ": ", error.what());
  }

  auto shape_it = entry.find("shape");
  ACCEL_CHECK(shape_it != entry.end() && shape_it->is_array(), where,
              " needs an array \"shape\" but found ", shape_it == entry.end() ? "none" : describe(*shape_it));
  for (const json& dim : *shape_it) info.shape.push_back(parse_dim(dim, where + " shape"));

  auto offsets_it = entry.find("data_offsets");
  ACCEL_CHECK(offsets_it != entry.end() && offsets_it->is_array() && offsets_it->size() == 2, where,
              " needs \"data_offsets\" [begin, end] but found ",
              offsets_it == entry.end() ? "none" : describe(*offsets_it));
  info.begin = parse_offset((*offsets_it)[0], where + " data_offsets");
  info.end = parse_offset((*offsets_it)[1], where + " data_offsets");
  ACCEL_CHECK(info.begin <= info.end, where, " has data_offsets [", info.begin, ", ", info.end,
              "] with begin after end");
  ACCEL_CHECK(info.end <= data_size, where, " has data_offsets [", info.begin, ", ", info.end,
              "] but the data section is only ", data_size, " bytes");

  uint64_t needed = checked_byte_size(info.shape, info.dtype, where);
  ACCEL_CHECK(needed == info.end - info.begin, where, " has data_offsets [", info.begin, ", ", info.end,
              "] but shape ", shape_str(info.shape), " x ",
              dtype_name(info.dtype), " needs ", needed, " bytes");
  return info;
}

std::map<std::string, std::string> parse_metadata(const json& value, const std::string& name) {
  ACCEL_CHECK(value.is_object(), name, ": __metadata__ must be an object of string to string but found ",
              describe(value));
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    ACCEL_CHECK(item.is_string(), name, ": __metadata__ must map strings to strings but \"", key,
                "\" maps to ", describe(item));
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

void check_no_overlap(std::vector<TensorInfo> tensors, const std::string& name) {
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < tensors.size(); ++i) {
    const TensorInfo& previous = tensors[i - 1];
    const TensorInfo& current = tensors[i];
    ACCEL_CHECK(previous.end <= current.begin, name, ": tensors \"", previous.name, "\" [", previous.begin,
                ", ", previous.end, "] and \"", current.name, "\" [", current.begin, ", ", current.end,
                "] have overlapping data_offsets");
  }
}

// Validates the JSON header text against a data section of data_size bytes.
Header parse_header_json(const char* text, size_t length, uint64_t data_size, const std::string& name) {
  json root;
  try {
    root = json::parse(text, text + length);
  } catch (const json::exception& error) {
    ACCEL_FAIL(name, ": header is not valid JSON: ", error.what());
  }
  ACCEL_CHECK(root.is_object(), name, ": header must be a JSON object but found ", root.type_name());

  Header header;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      header.metadata = parse_metadata(value, name);
    } else {
      header.tensors.push_back(parse_tensor_entry(key, value, data_size, name));
    }
  }
  check_no_overlap(header.tensors, name);
  return header;
}

// The one entry point for a complete file image (a mapping or a buffer).
Header parse_header(const uint8_t* data, uint64_t size, const std::string& name) {
  uint64_t length = checked_header_length(data, size, name);
  Header header = parse_header_json(reinterpret_cast<const char*>(data) + kLengthPrefixBytes, length,
                                    size - kLengthPrefixBytes - length, name);
  header.data_start = kLengthPrefixBytes + length;
  return header;
}

// ---- POSIX file helpers ----

// Owns a file descriptor; closes it on destruction.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileDescriptor& operator=(FileDescriptor&&) = delete;
  int get() const { return fd_; }
  // Closes now so that the error of close(2) (which can report a failed write) is seen.
  void close_checked(const std::string& path) {
    int fd = fd_;
    fd_ = -1;
    ACCEL_CHECK(::close(fd) == 0, path, ": close failed: ", errno_text());
  }

 private:
  int fd_;
};

FileDescriptor open_for_reading(const std::string& path) {
  FileDescriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ACCEL_CHECK(file.get() >= 0, path, ": cannot open for reading: ", errno_text());
  return file;
}

uint64_t regular_file_size(const FileDescriptor& file, const std::string& path) {
  struct stat info;
  ACCEL_CHECK(::fstat(file.get(), &info) == 0, path, ": cannot stat: ", errno_text());
  ACCEL_CHECK(S_ISREG(info.st_mode), path, ": expected a regular file");
  return uint64_t(info.st_size);
}

void read_exactly(const FileDescriptor& file, void* buffer, size_t count, uint64_t offset,
                  const std::string& path) {
  auto* out = static_cast<char*>(buffer);
  while (count > 0) {
    ssize_t n = ::pread(file.get(), out, count, off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    ACCEL_CHECK(n >= 0, path, ": read failed: ", errno_text());
    ACCEL_CHECK(n > 0, path, ": file shrank while being read");
    out += n;
    count -= size_t(n);
    offset += uint64_t(n);
  }
}

void write_exactly(const FileDescriptor& file, const void* buffer, size_t count, const std::string& path) {
  auto* in = static_cast<const char*>(buffer);
  while (count > 0) {
    ssize_t n = ::write(file.get(), in, count);
    if (n < 0 && errno == EINTR) continue;
    ACCEL_CHECK(n >= 0, path, ": write failed: ", errno_text());
    in += n;
    count -= size_t(n);
  }
}

// Maps the whole file read-only; the Storage unmaps it when the last tensor viewing it dies.
Storage map_file(const std::string& path) {
  FileDescriptor file = open_for_reading(path);
  uint64_t size = regular_file_size(file, path);
  // mmap(2) refuses empty mappings, so short files are reported here, not by the parser.
  ACCEL_CHECK(size >= kLengthPrefixBytes, path, ": file is ", size,
              " bytes but a safetensors file needs at least 8 (the header length)");
  void* data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, file.get(), 0);
  ACCEL_CHECK(data != MAP_FAILED, path, ": mmap of ", size, " bytes failed: ", errno_text());
  return std::make_shared<StorageImpl>(data, size, kCPU, [size](void* ptr) { ::munmap(ptr, size); });
}

// ---- writing ----

// The order of the data section: larger itemsizes first, then by name (what the Python
// library does), so that every tensor starts aligned to its element size and loads as a
// view rather than a copy.
std::vector<std::pair<std::string, Tensor>> data_order(const std::map<std::string, Tensor>& tensors) {
  std::vector<std::pair<std::string, Tensor>> ordered(tensors.begin(), tensors.end());
  std::stable_sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
    return a.second.element_size() > b.second.element_size();
  });
  return ordered;
}

// The JSON header, padded with spaces to a multiple of 8 bytes so that the data section
// starts 8-byte aligned (as the Python library writes it).
std::string make_header(const std::map<std::string, Tensor>& tensors,
                        const std::map<std::string, std::string>& metadata, const std::string& path) {
  json root = json::object();  // std::map-backed: keys come out sorted
  if (!metadata.empty()) root["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : data_order(tensors)) {
    uint64_t end = offset + tensor.nbytes();
    root[name] = {{"dtype", dtype_info(tensor.dtype()).safetensors_name},
                  {"shape", tensor.sizes()},
                  {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text;
  try {
    text = root.dump();
  } catch (const json::exception& error) {  // names or metadata that are not valid UTF-8
    ACCEL_FAIL(path, ": cannot write the header: ", error.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// CPU contiguous copies (or the tensors themselves when already so) of everything to save.
std::map<std::string, Tensor> to_cpu_contiguous(const std::map<std::string, Tensor>& tensors,
                                                const std::string& path) {
  std::map<std::string, Tensor> prepared;
  for (const auto& [name, tensor] : tensors) {
    ACCEL_CHECK(name != "__metadata__", path, ": \"__metadata__\" is reserved and cannot name a tensor");
    ACCEL_CHECK(tensor.defined(), path, ": tensor \"", name, "\" is undefined");
    prepared.emplace(name, tensor.detach().to(kCPU).contiguous());
  }
  return prepared;
}

// Removes the temp file unless the write reached the rename.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  ~TempFileGuard() {
    if (!committed_) ::unlink(path_.c_str());
  }
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  void commit() { committed_ = true; }

 private:
  std::string path_;
  bool committed_ = false;
};

void write_file(const std::string& path, const std::string& header, const std::map<std::string, Tensor>& tensors) {
  FileDescriptor file(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  ACCEL_CHECK(file.get() >= 0, path, ": cannot open for writing: ", errno_text());
  uint64_t header_length = header.size();
  write_exactly(file, &header_length, sizeof(header_length), path);
  write_exactly(file, header.data(), header.size(), path);
  for (const auto& [name, tensor] : data_order(tensors)) write_exactly(file, tensor.data_ptr(), tensor.nbytes(), path);
  ACCEL_CHECK(::fsync(file.get()) == 0, path, ": fsync failed: ", errno_text());
  file.close_checked(path);
}

// Makes the rename durable: the directory entry lives in the directory's own data.
void fsync_directory(const std::string& path) {
  std::string directory = std::filesystem::path(path).parent_path().string();
  if (directory.empty()) directory = ".";
  FileDescriptor dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ACCEL_CHECK(dir.get() >= 0, directory, ": cannot open directory to fsync: ", errno_text());
  ACCEL_CHECK(::fsync(dir.get()) == 0, directory, ": fsync of directory failed: ", errno_text());
}

}  // namespace

File load(const std::string& path) {
  Storage mapping = map_file(path);
  const auto* bytes = static_cast<const uint8_t*>(mapping->data());
  Header header = parse_header(bytes, mapping->nbytes(), path);

  File file;
  file.metadata = std::move(header.metadata);
  for (const TensorInfo& info : header.tensors) {
    uint64_t byte_offset = header.data_start + info.begin;  // the mapping is page-aligned
    uint64_t item = uint64_t(itemsize(info.dtype));
    Tensor tensor = byte_offset % item == 0
                        ? Tensor::view_of(mapping, info.shape, contiguous_strides(info.shape),
                                          int64_t(byte_offset / item), info.dtype)
                        : from_blob_copy(bytes + byte_offset, info.shape, info.dtype);  // misaligned
    file.tensors.emplace(info.name, std::move(tensor));
  }
  return file;
}

File load_from_buffer(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  Header header = parse_header(data, size, name_for_errors);
  File file;
  file.metadata = std::move(header.metadata);
  for (const TensorInfo& info : header.tensors) {
    file.tensors.emplace(info.name, from_blob_copy(data + header.data_start + info.begin, info.shape, info.dtype));
  }
  return file;
}

std::vector<TensorInfo> read_header(const std::string& path, std::map<std::string, std::string>* metadata) {
  FileDescriptor file = open_for_reading(path);
  uint64_t size = regular_file_size(file, path);
  uint8_t prefix[kLengthPrefixBytes] = {};
  if (size >= kLengthPrefixBytes) read_exactly(file, prefix, sizeof(prefix), 0, path);
  uint64_t length = checked_header_length(prefix, size, path);
  std::string text(length, '\0');
  read_exactly(file, text.data(), length, kLengthPrefixBytes, path);
  Header header = parse_header_json(text.data(), length, size - kLengthPrefixBytes - length, path);
  if (metadata != nullptr) *metadata = std::move(header.metadata);
  return std::move(header.tensors);
}

void save(const std::string& path, const std::map<std::string, Tensor>& tensors,
          const std::map<std::string, std::string>& metadata) {
  std::map<std::string, Tensor> prepared = to_cpu_contiguous(tensors, path);
  std::string header = make_header(prepared, metadata, path);
  std::string temp_path = path + ".tmp." + std::to_string(::getpid());
  TempFileGuard guard(temp_path);
  write_file(temp_path, header, prepared);
  ACCEL_CHECK(::rename(temp_path.c_str(), path.c_str()) == 0, path, ": cannot rename ", temp_path,
              " over it: ", errno_text());
  guard.commit();
  fsync_directory(path);
}

}  // namespace accel::safetensors
