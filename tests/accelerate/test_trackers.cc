// Tests of accelerate/trackers: CRC32C known answers, JSON Lines that parse back, TensorBoard
// event files checked record by record (framing, masked CRCs, and the Event protos decoded
// by the small wire-format reader below), the progress line, and errors that name the path.
// tests/accelerate/read_tensorboard_events.py checks the same files with TensorBoard's reader.
#include "accelerate/trackers.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <sstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"

namespace accel::trackers {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// ---- A protobuf wire-format reader, just enough for Event ----

struct ProtoField {
  int number;
  int wire_type;
  uint64_t scalar;    // varint value, or the raw bits of a fixed32 / fixed64
  std::string bytes;  // length-delimited payload
};

uint64_t read_little_endian(std::string_view bytes, size_t at, int count) {
  uint64_t value = 0;
  for (int i = 0; i < count; ++i) value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  return value;
}

uint64_t read_varint(std::string_view bytes, size_t& at) {
  uint64_t value = 0;
  for (int shift = 0;; shift += 7) {
    if (at >= bytes.size()) throw std::runtime_error("truncated varint");
    const auto byte = static_cast<unsigned char>(bytes[at++]);
    value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return value;
  }
}

std::vector<ProtoField> decode_proto(std::string_view bytes) {
  std::vector<ProtoField> fields;
  for (size_t at = 0; at < bytes.size();) {
    const uint64_t key = read_varint(bytes, at);
    ProtoField field{static_cast<int>(key >> 3), static_cast<int>(key & 7), 0, {}};
    switch (field.wire_type) {
      case 0: field.scalar = read_varint(bytes, at); break;
      case 1: field.scalar = read_little_endian(bytes, at, 8); at += 8; break;
      case 5: field.scalar = read_little_endian(bytes, at, 4); at += 4; break;
      case 2: {
        const uint64_t length = read_varint(bytes, at);
        field.bytes = std::string(bytes.substr(at, length));
        at += length;
        break;
      }
      default: throw std::runtime_error("unexpected wire type " + std::to_string(field.wire_type));
    }
    if (at > bytes.size()) throw std::runtime_error("field runs past the end");
    fields.push_back(std::move(field));
  }
  return fields;
}

const ProtoField* find_field(const std::vector<ProtoField>& fields, int number) {
  for (const auto& field : fields) {
    if (field.number == number) return &field;
  }
  return nullptr;
}

struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> scalars;
  // A text summary: its tag, plugin name, tensor dtype and string.
  std::string text_tag, text_plugin, text;
  uint64_t text_dtype = 0;
};

Event decode_event(std::string_view bytes) {
  Event event;
  for (const auto& field : decode_proto(bytes)) {
    if (field.number == 1) std::memcpy(&event.wall_time, &field.scalar, sizeof(double));
    if (field.number == 2) event.step = static_cast<int64_t>(field.scalar);
    if (field.number == 3) event.file_version = field.bytes;
    if (field.number != 5) continue;
    for (const auto& summary_value : decode_proto(field.bytes)) {
      const auto value = decode_proto(summary_value.bytes);
      const std::string tag = find_field(value, 1)->bytes;
      if (const auto* simple = find_field(value, 2)) {
        float number;
        const auto bits = static_cast<uint32_t>(simple->scalar);
        std::memcpy(&number, &bits, sizeof number);
        event.scalars.emplace_back(tag, number);
      }
      if (const auto* tensor = find_field(value, 8)) {
        const auto tensor_fields = decode_proto(tensor->bytes);
        const auto plugin_data = decode_proto(find_field(decode_proto(find_field(value, 9)->bytes), 1)->bytes);
        event.text_tag = tag;
        event.text_plugin = find_field(plugin_data, 1)->bytes;
        event.text_dtype = find_field(tensor_fields, 1)->scalar;
        event.text = find_field(tensor_fields, 8)->bytes;
      }
    }
  }
  return event;
}

// Splits a TFRecord file, checking both masked CRCs of every record.
std::vector<std::string> read_tfrecords(const fs::path& path) {
  const std::string file = read_bytes(path);
  std::vector<std::string> records;
  for (size_t at = 0; at < file.size();) {
    EXPECT_LE(at + 12, file.size()) << "truncated record header";
    const std::string_view header(file.data() + at, 8);
    const uint64_t length = read_little_endian(file, at, 8);
    EXPECT_EQ(read_little_endian(file, at + 8, 4), masked_crc32c(header)) << "length CRC of record " << records.size();
    EXPECT_LE(at + 12 + length + 4, file.size()) << "truncated record data";
    const std::string data = file.substr(at + 12, length);
    EXPECT_EQ(read_little_endian(file, at + 12 + length, 4), masked_crc32c(data)) << "data CRC of record " << records.size();
    records.push_back(data);
    at += 12 + length + 4;
  }
  return records;
}

class TrackersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "accel_trackers_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override {
    // ACCEL_KEEP_TRACKER_FILES=1 keeps the files for read_tensorboard_events.py.
    if (std::getenv("ACCEL_KEEP_TRACKER_FILES") == nullptr) {
      fs::remove_all(dir_);
    } else {
      std::printf("kept tracker files in %s\n", dir_.c_str());
    }
  }
  fs::path dir_;
};

// ---- CRC32C ----

TEST(Crc32cTest, KnownAnswers) {
  EXPECT_EQ(crc32c(""), 0x00000000u);
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the CRC catalogue's check value
  // RFC 3720 (iSCSI) appendix B.4 test vectors.
  EXPECT_EQ(crc32c(std::string(32, '\x00')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
}

TEST(Crc32cTest, MaskRotatesAndAddsTheConstant) {
  EXPECT_EQ(masked_crc32c(""), 0xA282EAD8u);
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(masked_crc32c("123456789"), ((crc >> 15) | (crc << 17)) + 0xA282EAD8u);
}

// ---- JSON Lines ----

TEST_F(TrackersTest, JsonlLinesParseBack) {
  auto tracker = make_jsonl_tracker((dir_ / "logs").string(), "run1");
  EXPECT_EQ(tracker->name(), "jsonl");
  tracker->log_config({{"lr", 5e-5}, {"epochs", int64_t{3}}, {"model", std::string("bert")}});
  tracker->log({{"loss", 0.5}, {"lr", 4e-5}}, 10);
  tracker->log({{"accuracy", 0.875}, {"split", std::string("validation")}}, 20);
  tracker->finish();

  const auto lines = read_lines(dir_ / "logs" / "run1.jsonl");
  ASSERT_EQ(lines.size(), 3u);
  const auto config = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(config, nlohmann::json::parse(R"({"config": {"lr": 5e-05, "epochs": 3, "model": "bert"}})"));

  const auto first = nlohmann::ordered_json::parse(lines[1]);
  EXPECT_EQ(first.begin().key(), "step");
  EXPECT_EQ(first["step"], 10);
  EXPECT_EQ(first["loss"], 0.5);
  EXPECT_EQ(first["lr"], 4e-5);
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(first["time"].get<double>(), now, 60.0);

  const auto second = nlohmann::json::parse(lines[2]);
  EXPECT_EQ(second["step"], 20);
  EXPECT_EQ(second["accuracy"], 0.875);
  EXPECT_EQ(second["split"], "validation");
}

TEST_F(TrackersTest, JsonlAppendsToAnExistingRun) {
  make_jsonl_tracker(dir_.string(), "run")->log({{"loss", 1.0}}, 1);
  make_jsonl_tracker(dir_.string(), "run")->log({{"loss", 0.5}}, 2);
  const auto lines = read_lines(dir_ / "run.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[1])["step"], 2);
}

TEST_F(TrackersTest, JsonlRejectsReservedKeys) {
  auto tracker = make_jsonl_tracker(dir_.string(), "run");
  EXPECT_THAT([&] { tracker->log({{"step", int64_t{3}}}, 3); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'step' is reserved")));
}

// ---- TensorBoard ----

TEST_F(TrackersTest, TensorBoardRecordsDecode) {
  auto tracker = make_tensorboard_tracker(dir_.string(), "run1");
  EXPECT_EQ(tracker->name(), "tensorboard");
  tracker->log_config({{"lr", 5e-5}, {"epochs", int64_t{3}}, {"model", std::string("bert|base")}});
  tracker->log({{"train/loss", 0.6931}, {"train/lr", 5e-5}}, 1);
  tracker->log({{"train/loss", 0.25}, {"epoch", int64_t{2}}, {"note", std::string("skipped")}}, 200);
  tracker->log({{"note", std::string("strings only: no event")}}, 300);
  tracker->finish();

  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir_ / "run1")) files.push_back(entry.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].filename().string().rfind("events.out.tfevents.", 0), 0u) << files[0];

  const auto records = read_tfrecords(files[0]);
  ASSERT_EQ(records.size(), 4u);
  std::vector<Event> events;
  for (const auto& record : records) events.push_back(decode_event(record));

  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_NEAR(events[0].wall_time, now, 60.0);

  EXPECT_EQ(events[1].text_tag, "config");
  EXPECT_EQ(events[1].text_plugin, "text");
  EXPECT_EQ(events[1].text_dtype, 7u);  // DT_STRING
  EXPECT_EQ(events[1].text,
            "| key | value |\n|---|---|\n| epochs | 3 |\n| lr | 5e-05 |\n| model | bert\\|base |\n");

  EXPECT_EQ(events[2].step, 1);
  EXPECT_THAT(events[2].scalars, ElementsAre(Pair("train/loss", 0.6931f), Pair("train/lr", 5e-5f)));
  EXPECT_EQ(events[3].step, 200);
  EXPECT_THAT(events[3].scalars, ElementsAre(Pair("epoch", 2.0f), Pair("train/loss", 0.25f)));
  EXPECT_NEAR(events[3].wall_time, now, 60.0);
}

TEST_F(TrackersTest, LoggingAfterFinishIsAnError) {
  auto tracker = make_tensorboard_tracker(dir_.string(), "run");
  tracker->finish();
  EXPECT_THAT([&] { tracker->log({{"loss", 1.0}}, 1); },
              ::testing::ThrowsMessage<Error>(HasSubstr("already finished")));
}

// ---- Errors ----

// A directory below a regular file cannot be created, even by root.
TEST_F(TrackersTest, UncreatableDirectoryNamesThePathAndTheReason) {
  std::ofstream(dir_ / "blocker") << "a file, not a directory";
  const std::string below_file = (dir_ / "blocker" / "logs").string();
  EXPECT_THAT([&] { make_jsonl_tracker(below_file, "run"); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr(below_file), HasSubstr("Not a directory"))));
  EXPECT_THAT([&] { make_tensorboard_tracker(below_file, "run"); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr(below_file), HasSubstr("Not a directory"))));
}

TEST_F(TrackersTest, UnopenableFileNamesThePathAndTheReason) {
  fs::create_directories(dir_ / "run.jsonl");  // a directory where the log file should be
  const std::string path = (dir_ / "run.jsonl").string();
  EXPECT_THAT([&] { make_jsonl_tracker(dir_.string(), "run"); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr(path), HasSubstr("Is a directory"))));
}

// ---- Progress ----

// Under the test runner stdout is a pipe, so Progress prints plain lines.
TEST(ProgressTest, PrintsEveryNthStepTheLastAndASummary) {
  ::testing::internal::CaptureStdout();
  Progress progress(25, /*enabled=*/true, /*every=*/10);
  for (int64_t step = 1; step <= 25; ++step) progress.update(step, 1 + step / 20, 0.5, 4.1e-5, 32);
  progress.finish();
  const std::string output = ::testing::internal::GetCapturedStdout();

  std::vector<std::string> lines;
  std::istringstream stream(output);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u) << output;
  EXPECT_THAT(lines[0], HasSubstr("epoch 1 step 10/25 loss 0.5000 lr 4.1e-05 samples/s "));
  EXPECT_THAT(lines[0], HasSubstr(" ETA "));
  EXPECT_THAT(lines[1], HasSubstr("epoch 2 step 20/25 "));
  EXPECT_THAT(lines[2], HasSubstr("epoch 2 step 25/25 "));
  EXPECT_THAT(lines[2], HasSubstr("ETA 0s"));
  EXPECT_THAT(lines[3], HasSubstr("done in "));
}

TEST(ProgressTest, DisabledPrintsNothing) {
  ::testing::internal::CaptureStdout();
  Progress progress(5, /*enabled=*/false);
  for (int64_t step = 1; step <= 5; ++step) progress.update(step, 1, 0.5, 1e-3, 8);
  progress.finish();
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "");
}

}  // namespace
}  // namespace accel::trackers
