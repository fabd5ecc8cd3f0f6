// Fuzz target: arbitrary bytes as a safetensors file image.
// Feeds the input to safetensors::load_from_buffer (the in-memory parser), and the same bytes
// as a file to safetensors::load (the mmap path) and safetensors::read_header. An input that
// loads is saved with safetensors::save and loaded again.
// A bug: anything but an accel::Error (crash, ASan/UBSan report, other exception, hang, an
// allocation sized by a declared length rather than by the input), the three readers
// disagreeing on whether the input is valid or on its tensors, or a round trip through
// save/load that changes names, dtypes, shapes, bytes or metadata.
#include <cstring>
#include <optional>

#include "core/safetensors.h"
#include "fuzz/fuzz_util.h"

namespace {

using accel::Tensor;
namespace st = accel::safetensors;

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.sizes() == b.sizes() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0);
}

bool same_file(const st::File& a, const st::File& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (const auto& [name, tensor] : a.tensors) {
    auto it = b.tensors.find(name);
    if (it == b.tensors.end() || !same_bytes(tensor, it->second)) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<st::File> from_buffer;
  accel::fuzz::expect_only_accel_errors([&] { from_buffer = st::load_from_buffer(data, size, "fuzz input"); });

  const std::string path = accel::fuzz::write_scratch_file("input.safetensors", data, size);
  std::optional<st::File> from_file;
  accel::fuzz::expect_only_accel_errors([&] { from_file = st::load(path); });
  std::optional<std::vector<st::TensorInfo>> header;
  accel::fuzz::expect_only_accel_errors([&] { header = st::read_header(path); });

  FUZZ_ASSERT(from_buffer.has_value() == from_file.has_value());
  FUZZ_ASSERT(from_buffer.has_value() == header.has_value());
  if (!from_buffer) return 0;
  FUZZ_ASSERT(same_file(*from_buffer, *from_file));
  FUZZ_ASSERT(header->size() == from_buffer->tensors.size());
  for (const st::TensorInfo& info : *header) {
    auto it = from_buffer->tensors.find(info.name);
    FUZZ_ASSERT(it != from_buffer->tensors.end());
    FUZZ_ASSERT(it->second.dtype() == info.dtype && it->second.sizes() == info.shape);
  }

  // Names and metadata that are not valid UTF-8 cannot be written back (a clean error).
  const std::string saved_path = (accel::fuzz::scratch_dir() / "saved.safetensors").string();
  bool saved = false;
  accel::fuzz::expect_only_accel_errors([&] {
    st::save(saved_path, from_buffer->tensors, from_buffer->metadata);
    saved = true;
  });
  if (saved) FUZZ_ASSERT(same_file(*from_buffer, st::load(saved_path)));
  return 0;
}
