// Tests of core/safetensors: round trips of every dtype, the checkpoint that Python's
// safetensors wrote for tiny-bert, atomic saves, and a suite of malformed files whose
// errors must name the file and say what was expected and what was found.
#include "core/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/ops.h"

#ifndef ACCEL_SHARED_DATA_DIR
#error "ACCEL_SHARED_DATA_DIR must name the shared data folder (set by tests/CMakeLists.txt)"
#endif

namespace accel {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

constexpr const char* kTinyBert = ACCEL_SHARED_DATA_DIR "/tiny-bert/model.safetensors";

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// A file image: the u64 little-endian header length, the header, then data_bytes zeros.
std::string file_image(const std::string& header, size_t data_bytes = 0) {
  uint64_t length = header.size();
  std::string bytes(reinterpret_cast<const char*>(&length), sizeof(length));
  return bytes + header + std::string(data_bytes, '\0');
}

// The raw bytes of a tensor in row-major order: a dtype-agnostic exact comparison.
std::string tensor_bytes(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected an accel::Error";
  return "";
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "accel_safetensors_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::vector<std::string> files_in_dir() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_)) names.push_back(entry.path().filename().string());
    return names;
  }

  // Writes image to a file and checks that load, read_header and load_from_buffer all reject
  // it with an error that names the file and contains `expected`.
  void expect_rejected(const std::string& image, const std::string& expected) {
    std::string file = path("bad.safetensors");
    write_bytes(file, image);
    for (std::string message : {error_of([&] { safetensors::load(file); }),
                                error_of([&] { safetensors::read_header(file); })}) {
      EXPECT_THAT(message, HasSubstr(file + ": "));
      EXPECT_THAT(message, HasSubstr(expected));
    }
    std::string message = error_of([&] {
      safetensors::load_from_buffer(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "buffer");
    });
    EXPECT_THAT(message, HasSubstr("buffer: "));
    EXPECT_THAT(message, HasSubstr(expected));
  }

  fs::path dir_;
};

// One tensor of every dtype, plus 0-d, empty and non-contiguous ones.
std::map<std::string, Tensor> every_kind_of_tensor() {
  std::map<std::string, Tensor> tensors;
  tensors["f32"] = randn({3, 4});
  tensors["f64"] = randn({2, 3}, kFloat64);
  tensors["f16"] = randn({5}).to(kFloat16);  // 10 bytes: an odd multiple of 2, packed after the wider dtypes
  tensors["bf16"] = randn({2, 2, 2}).to(kBFloat16);
  tensors["i64"] = arange(12).reshape({3, 4});
  tensors["i32"] = from_vector<int32_t>({-7, 0, 2147483647}, {3});
  tensors["bool"] = from_vector<bool>({true, false, true, true}, {2, 2});
  tensors["scalar_f64"] = from_vector<double>({2.5}, {});
  tensors["scalar_bool"] = from_vector<bool>({true}, {});
  tensors["empty_f32"] = zeros({0, 3});
  tensors["empty_i32"] = zeros({4, 0}, kInt32);
  tensors["transposed"] = randn({4, 5}).t();
  tensors["strided_slice"] = arange(20).reshape({4, 5}).slice(1, 1, 5, 2);  // offset and stride
  return tensors;
}

void expect_same_tensors(const std::map<std::string, Tensor>& actual, const std::map<std::string, Tensor>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(actual.count(name));
    const Tensor& loaded = actual.at(name);
    EXPECT_EQ(loaded.dtype(), tensor.dtype());
    EXPECT_EQ(loaded.sizes(), tensor.sizes());
    EXPECT_EQ(loaded.strides(), contiguous_strides(tensor.sizes()));
    EXPECT_TRUE(equal(loaded, tensor));
    EXPECT_EQ(tensor_bytes(loaded), tensor_bytes(tensor));
  }
}

TEST_F(SafetensorsTest, RoundTripsEveryDtypeWithMetadata) {
  auto tensors = every_kind_of_tensor();
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "ünïcödé, \"quoted\""}};
  std::string file = path("all.safetensors");
  safetensors::save(file, tensors, metadata);

  safetensors::File loaded = safetensors::load(file);
  expect_same_tensors(loaded.tensors, tensors);
  EXPECT_EQ(loaded.metadata, metadata);

  std::string image = read_bytes(file);
  safetensors::File from_buffer =
      safetensors::load_from_buffer(reinterpret_cast<const uint8_t*>(image.data()), image.size(), file);
  expect_same_tensors(from_buffer.tensors, tensors);
  EXPECT_EQ(from_buffer.metadata, metadata);
  EXPECT_THAT(files_in_dir(), UnorderedElementsAre("all.safetensors"));
}

TEST_F(SafetensorsTest, WritesSortedPaddedHeaderWithAlignedDataOffsets) {
  std::string file = path("layout.safetensors");
  safetensors::save(file, every_kind_of_tensor(), {{"format", "pt"}});

  std::string image = read_bytes(file);
  uint64_t header_length;
  std::memcpy(&header_length, image.data(), 8);
  EXPECT_EQ(header_length % 8, 0u);
  std::string header = image.substr(8, header_length);
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"pt\"}", 0), 0u) << header;

  std::map<std::string, std::string> metadata;
  std::vector<safetensors::TensorInfo> infos = safetensors::read_header(file, &metadata);
  EXPECT_EQ(metadata.at("format"), "pt");
  ASSERT_EQ(infos.size(), every_kind_of_tensor().size());
  for (size_t i = 1; i < infos.size(); ++i) EXPECT_LT(infos[i - 1].name, infos[i].name);
  // Data order is the Python library's: larger itemsizes first, then by name; so the data
  // is packed without gaps and every tensor starts aligned to its element size.
  std::sort(infos.begin(), infos.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  uint64_t expected_begin = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (i > 0 && itemsize(infos[i - 1].dtype) == itemsize(infos[i].dtype)) {
      EXPECT_LT(infos[i - 1].name, infos[i].name);
    }
    EXPECT_EQ(infos[i].begin, expected_begin) << infos[i].name;
    EXPECT_EQ(infos[i].begin % itemsize(infos[i].dtype), 0u) << infos[i].name;
    expected_begin = infos[i].end;
  }
  EXPECT_EQ(8 + header_length + expected_begin, image.size());
}

TEST_F(SafetensorsTest, LoadedTensorsShareOneMappingThatOutlivesTheFile) {
  std::string file = path("shared.safetensors");
  Tensor a = randn({4, 4});
  Tensor b = arange(6);
  safetensors::save(file, {{"a", a}, {"b", b}});

  Tensor kept;
  {
    safetensors::File loaded = safetensors::load(file);
    EXPECT_EQ(loaded.tensors.at("a").storage(), loaded.tensors.at("b").storage());
    kept = loaded.tensors.at("b");
  }
  EXPECT_TRUE(equal(kept, b));
}

TEST_F(SafetensorsTest, MisalignedTensorIsCopiedOut) {
  // "a" is 1 byte of BOOL at data offset 0, so "b" (F32) starts at an odd byte.
  std::string header =
      R"({"a":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string image = file_image(header);
  image.push_back('\1');
  const float values[2] = {1.5f, -2.25f};
  image.append(reinterpret_cast<const char*>(values), sizeof(values));
  std::string file = path("misaligned.safetensors");
  write_bytes(file, image);

  safetensors::File loaded = safetensors::load(file);
  EXPECT_EQ(loaded.tensors.at("a").item<bool>(), true);
  EXPECT_EQ(loaded.tensors.at("b").to_vector<float>(), std::vector<float>({1.5f, -2.25f}));
  EXPECT_NE(loaded.tensors.at("a").storage(), loaded.tensors.at("b").storage());
}

TEST_F(SafetensorsTest, LoadsTinyBertWrittenByPythonSafetensors) {
  safetensors::File loaded = safetensors::load(kTinyBert);
  EXPECT_EQ(loaded.tensors.size(), 37u);
  const Tensor& word = loaded.tensors.at("embeddings.word_embeddings.weight");
  EXPECT_EQ(word.sizes(), Shape({256, 32}));
  EXPECT_EQ(word.dtype(), kFloat32);
  // Values as numpy reads them from the same file.
  EXPECT_EQ(word.data_ptr<float>()[0], 0.00609434163197875f);
  EXPECT_EQ(word.data_ptr<float>()[255 * 32 + 31], 0.03413715958595276f);
  EXPECT_EQ(loaded.tensors.at("encoder.layer.1.output.dense.weight").sizes(), Shape({32, 64}));

  std::vector<safetensors::TensorInfo> infos = safetensors::read_header(kTinyBert);
  EXPECT_EQ(infos.size(), 37u);
}

TEST_F(SafetensorsTest, SaveReplacesAFileThatIsStillMapped) {
  std::string file = path("model.safetensors");
  Tensor old_weights = arange(8, kFloat32);
  safetensors::save(file, {{"w", old_weights}});
  safetensors::File old_file = safetensors::load(file);

  Tensor new_weights = randn({3});
  safetensors::save(file, {{"w", new_weights}});
  EXPECT_TRUE(equal(old_file.tensors.at("w"), old_weights));  // old mapping, old inode
  EXPECT_TRUE(equal(safetensors::load(file).tensors.at("w"), new_weights));
  EXPECT_THAT(files_in_dir(), UnorderedElementsAre("model.safetensors"));
}

TEST_F(SafetensorsTest, FailedWriteLeavesOldFileAndNoTempFile) {
  std::string file = path("model.safetensors");
  Tensor old_weights = arange(8, kFloat32);
  safetensors::save(file, {{"w", old_weights}});

  // Cap the file size so that writing the temp file fails half-way with EFBIG.
  rlimit saved_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved_limit), 0);
  rlimit small_limit = saved_limit;
  small_limit.rlim_cur = 64 * 1024;
  auto saved_handler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small_limit), 0);
  std::string message = error_of([&] { safetensors::save(file, {{"w", randn({1 << 20})}}); });
  ::setrlimit(RLIMIT_FSIZE, &saved_limit);
  std::signal(SIGXFSZ, saved_handler);

  EXPECT_THAT(message, HasSubstr(file + ".tmp."));
  EXPECT_THAT(message, HasSubstr(std::strerror(EFBIG)));
  EXPECT_TRUE(equal(safetensors::load(file).tensors.at("w"), old_weights));
  EXPECT_THAT(files_in_dir(), UnorderedElementsAre("model.safetensors"));
}

TEST_F(SafetensorsTest, FailedRenameLeavesNoTempFile) {
  std::string target = path("occupied");
  fs::create_directories(fs::path(target) / "child");
  std::string message = error_of([&] { safetensors::save(target, {{"w", randn({2})}}); });
  EXPECT_THAT(message, HasSubstr(target + ": cannot rename"));
  EXPECT_THAT(message, HasSubstr(std::strerror(EISDIR)));
  EXPECT_THAT(files_in_dir(), UnorderedElementsAre("occupied"));
}

TEST_F(SafetensorsTest, SaveIntoMissingDirectoryNamesPathAndErrno) {
  std::string file = path("no/such/dir/model.safetensors");
  std::string message = error_of([&] { safetensors::save(file, {{"w", randn({2})}}); });
  EXPECT_THAT(message, HasSubstr(file));
  EXPECT_THAT(message, HasSubstr(std::strerror(ENOENT)));
}

TEST_F(SafetensorsTest, SaveRejectsReservedAndUndefinedNames) {
  std::string file = path("model.safetensors");
  EXPECT_THAT(error_of([&] { safetensors::save(file, {{"__metadata__", randn({2})}}); }),
              HasSubstr("\"__metadata__\" is reserved"));
  EXPECT_THAT(error_of([&] { safetensors::save(file, {{"w", Tensor()}}); }),
              HasSubstr("tensor \"w\" is undefined"));
  EXPECT_TRUE(files_in_dir().empty());
}

// ---- malformed files ----

TEST_F(SafetensorsTest, RejectsEmptyFile) {
  expect_rejected("", "file is 0 bytes but a safetensors file needs at least 8");
}

TEST_F(SafetensorsTest, RejectsFileShorterThanLengthPrefix) {
  expect_rejected("abcde", "file is 5 bytes but a safetensors file needs at least 8");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastEndOfFile) {
  std::string image = file_image("{}");
  uint64_t length = 1000;
  std::memcpy(image.data(), &length, 8);
  expect_rejected(image, "header length is 1000 bytes but only 2 bytes follow the length prefix");
}

TEST_F(SafetensorsTest, RejectsHugeHeaderLength) {
  std::string image = file_image("{}");
  uint64_t length = uint64_t(1) << 62;
  std::memcpy(image.data(), &length, 8);
  expect_rejected(image, "header length is 4611686018427387904 bytes, over the limit of 100000000");
}

TEST_F(SafetensorsTest, RejectsInvalidJson) {
  expect_rejected(file_image(R"({"w": {"dtype": )"), "header is not valid JSON");
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  expect_rejected(file_image("[1, 2]"), "header must be a JSON object but found array");
}

TEST_F(SafetensorsTest, RejectsEntryThatIsNotAnObject) {
  expect_rejected(file_image(R"({"w": 3})"),
                  "tensor \"w\" must be an object {dtype, shape, data_offsets} but found 3");
}

TEST_F(SafetensorsTest, RejectsUnknownDtype) {
  expect_rejected(file_image(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1),
                  "tensor \"w\": unsupported safetensors dtype \"F8_E4M3\"");
}

TEST_F(SafetensorsTest, RejectsMissingDtype) {
  expect_rejected(file_image(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4),
                  "tensor \"w\" needs a string \"dtype\" but found none");
}

TEST_F(SafetensorsTest, RejectsNegativeShape) {
  expect_rejected(file_image(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}})"),
                  "tensor \"w\" shape must hold non-negative integers but found -1");
}

TEST_F(SafetensorsTest, RejectsFractionalShape) {
  expect_rejected(file_image(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
                  "tensor \"w\" shape must hold integers but found 1.5");
}

TEST_F(SafetensorsTest, RejectsOffsetsOutOfBounds) {
  expect_rejected(file_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
                  "tensor \"w\" has data_offsets [0, 16] but the data section is only 8 bytes");
}

TEST_F(SafetensorsTest, RejectsOffsetsThatAreNotAPair) {
  expect_rejected(file_image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                  "tensor \"w\" needs \"data_offsets\" [begin, end] but found [0]");
}

TEST_F(SafetensorsTest, RejectsOverlappingOffsets) {
  expect_rejected(file_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             12),
                  "tensors \"a\" [0, 8] and \"b\" [4, 12] have overlapping data_offsets");
}

TEST_F(SafetensorsTest, RejectsBeginAfterEnd) {
  expect_rejected(file_image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8),
                  "tensor \"w\" has data_offsets [8, 4] with begin after end");
}

TEST_F(SafetensorsTest, RejectsShapeThatDisagreesWithOffsets) {
  expect_rejected(file_image(R"({"w":{"dtype":"F32","shape":[5,6],"data_offsets":[0,100]}})", 100),
                  "tensor \"w\" has data_offsets [0, 100] but shape [5, 6] x float32 needs 120 bytes");
}

TEST_F(SafetensorsTest, RejectsShapeWhoseSizeOverflows) {
  expect_rejected(file_image(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
                  "tensor \"w\" has shape [4294967296, 4294967296] x float32 whose byte size overflows 64 bits");
}

TEST_F(SafetensorsTest, RejectsMetadataThatIsNotStringToString) {
  expect_rejected(file_image(R"({"__metadata__":{"epoch":3}})"),
                  "__metadata__ must map strings to strings but \"epoch\" maps to 3");
  expect_rejected(file_image(R"({"__metadata__":["format"]})"),
                  "__metadata__ must be an object of string to string but found [\"format\"]");
}

TEST_F(SafetensorsTest, RejectsMissingFile) {
  std::string file = path("missing.safetensors");
  for (std::string message : {error_of([&] { safetensors::load(file); }),
                              error_of([&] { safetensors::read_header(file); })}) {
    EXPECT_THAT(message, HasSubstr(file + ": cannot open for reading: " + std::strerror(ENOENT)));
  }
}

TEST_F(SafetensorsTest, RejectsDirectory) {
  EXPECT_THAT(error_of([&] { safetensors::load(dir_.string()); }), HasSubstr("expected a regular file"));
}

}  // namespace
}  // namespace accel
