// The TensorBoard tracker: writes an event file that TensorBoard reads directly, without
// TensorFlow or protobuf. An event file is a sequence of TFRecords
//   uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// whose data are Event protos, encoded by hand here:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; TensorProto tensor = 8; SummaryMetadata metadata = 9; }
// Scalars use simple_value; the config is a text-plugin summary (a markdown table in a string
// tensor), shown under TensorBoard's Text tab. Not a general protobuf encoder.
#include "accelerate/trackers.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace accel::trackers {
namespace {

// CRC32C lookup table for the reflected Castagnoli polynomial.
constexpr std::array<uint32_t, 256> make_crc32c_table() {
  constexpr uint32_t kReflectedPolynomial = 0x82F63B78;
  std::array<uint32_t, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? kReflectedPolynomial : 0);
    table[byte] = crc;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

void append_little_endian(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

// Protobuf wire format: each field is a key (field number << 3 | wire type) and a payload.
class ProtoWriter {
 public:
  void add_varint(int field, uint64_t value) {
    put_key(field, kVarint);
    put_varint(value);
  }
  void add_double(int field, double value) {
    put_key(field, kFixed64);
    uint64_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    append_little_endian(bytes_, bits, 8);
  }
  void add_float(int field, float value) {
    put_key(field, kFixed32);
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    append_little_endian(bytes_, bits, 4);
  }
  void add_bytes(int field, std::string_view value) {
    put_key(field, kLengthDelimited);
    put_varint(value.size());
    bytes_.append(value);
  }
  const std::string& bytes() const { return bytes_; }

 private:
  enum WireType { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };
  void put_key(int field, WireType type) { put_varint(static_cast<uint64_t>(field) << 3 | type); }
  void put_varint(uint64_t value) {
    for (; value >= 0x80; value >>= 7) bytes_.push_back(static_cast<char>(value | 0x80));
    bytes_.push_back(static_cast<char>(value));
  }
  std::string bytes_;
};

double unix_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char name[HOST_NAME_MAX + 1] = {};
  return ::gethostname(name, sizeof name - 1) == 0 ? name : "localhost";
}

// Shortest text that reads back as the same double ("5e-05", "0.1", "3").
std::string format_number(double value) {
  char text[32];
  return std::string(text, std::to_chars(text, text + sizeof text, value).ptr);
}

// The config as a two-column markdown table, the form the text plugin renders best.
std::string config_markdown(const Values& config) {
  std::string table = "| key | value |\n|---|---|\n";
  for (const auto& [key, value] : config) {
    std::string text;
    if (const auto* number = std::get_if<double>(&value)) text = format_number(*number);
    if (const auto* integer = std::get_if<int64_t>(&value)) text = std::to_string(*integer);
    if (const auto* string = std::get_if<std::string>(&value)) text = *string;
    table.append("| ").append(key).append(" | ");
    for (char c : text) {
      if (c == '|') table += '\\';  // a bare '|' would start a new column
      table += c;
    }
    table.append(" |\n");
  }
  return table;
}

class TensorBoardTracker : public Tracker {
 public:
  explicit TensorBoardTracker(const std::filesystem::path& run_dir) {
    std::error_code error;
    std::filesystem::create_directories(run_dir, error);
    ACCEL_CHECK(!error, "tensorboard tracker: cannot create directory '", run_dir.string(), "': ",
                error.message());
    const auto seconds = static_cast<int64_t>(unix_seconds());
    path_ = run_dir / ("events.out.tfevents." + std::to_string(seconds) + "." + hostname());
    // Append: a second tracker opened in the same second adds to the file instead of erasing it.
    out_.open(path_, std::ios::binary | std::ios::app);
    ACCEL_CHECK(out_.is_open(), "tensorboard tracker: cannot open '", path_.string(), "' for writing: ",
                std::strerror(errno));
    // TensorBoard identifies an event file by this first record.
    ProtoWriter event;
    event.add_double(1, unix_seconds());
    event.add_bytes(3, "brain.Event:2");
    write_record(event.bytes());
  }

  std::string name() const override { return "tensorboard"; }

  void log_config(const Values& config) override {
    ProtoWriter text_plugin;  // PluginData { plugin_name = 1; content = 2 (TextPluginData, empty) }
    text_plugin.add_bytes(1, "text");
    ProtoWriter metadata;  // SummaryMetadata { plugin_data = 1 }
    metadata.add_bytes(1, text_plugin.bytes());
    ProtoWriter tensor;  // TensorProto { dtype = 1; string_val = 8 }, a scalar (no shape)
    constexpr uint64_t kDtString = 7;
    tensor.add_varint(1, kDtString);
    tensor.add_bytes(8, config_markdown(config));
    ProtoWriter value;
    value.add_bytes(1, "config");
    value.add_bytes(8, tensor.bytes());
    value.add_bytes(9, metadata.bytes());
    ProtoWriter summary;
    summary.add_bytes(1, value.bytes());
    write_summary(summary.bytes(), 0);
  }

  void log(const Values& values, int64_t step) override {
    ProtoWriter summary;
    bool any_scalar = false;
    for (const auto& [tag, value] : values) {
      if (std::holds_alternative<std::string>(value)) continue;  // not a scalar
      const double number =
          std::holds_alternative<double>(value) ? std::get<double>(value) : static_cast<double>(std::get<int64_t>(value));
      ProtoWriter scalar;
      scalar.add_bytes(1, tag);
      scalar.add_float(2, static_cast<float>(number));
      summary.add_bytes(1, scalar.bytes());
      any_scalar = true;
    }
    if (any_scalar) write_summary(summary.bytes(), step);
  }

  void finish() override { out_.close(); }

 private:
  void write_summary(const std::string& summary, int64_t step) {
    ProtoWriter event;
    event.add_double(1, unix_seconds());
    event.add_varint(2, static_cast<uint64_t>(step));
    event.add_bytes(5, summary);
    write_record(event.bytes());
  }

  // One TFRecord, flushed so that a running TensorBoard sees it at once.
  void write_record(const std::string& data) {
    ACCEL_CHECK(out_.is_open(), "tensorboard tracker: '", path_.string(), "' was already finished");
    std::string record;
    append_little_endian(record, data.size(), 8);
    append_little_endian(record, masked_crc32c(record), 4);
    record += data;
    append_little_endian(record, masked_crc32c(data), 4);
    out_.write(record.data(), static_cast<std::streamsize>(record.size()));
    out_.flush();
    ACCEL_CHECK(out_.good(), "tensorboard tracker: cannot write to '", path_.string(), "': ",
                std::strerror(errno));
  }

  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  uint32_t crc = 0xFFFFFFFF;
  for (unsigned char byte : bytes) crc = kCrc32cTable[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// TFRecord masks the CRC so that a CRC stored inside CRC-checked data does not weaken it.
uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t crc = crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

std::unique_ptr<Tracker> make_tensorboard_tracker(const std::string& dir, const std::string& run_name) {
  return std::make_unique<TensorBoardTracker>(std::filesystem::path(dir) / run_name);
}

}  // namespace accel::trackers
