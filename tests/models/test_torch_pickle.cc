// tests/models/test_torch_pickle.cc: pytorch_model.bin loading (models/torch_pickle.cc)
// against files PyTorch wrote (tests/golden/make_torch_bin.py): the tiny BERT's state dict
// equals its safetensors twin; every dtype and every layout torch.save keeps (transposed,
// sliced, expanded, shared storages, 0-d, empty, nn.Parameter) comes out contiguous with the
// right values; zip64 archives read the same. Then the refusals: a pickle that calls
// os.system, opcodes and globals outside the allow-list, compressed, truncated and corrupt
// archives, corrupt pickles (hand-made and randomly mutated), a tensor reaching outside its
// storage, an expansion bomb, and nesting deep enough to overflow a recursive destructor.
// Every failure must be an accel::Error whose message says what was wrong.
#include "models/torch_pickle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "models/pretrained.h"

namespace accel::models {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::string_literals;

const std::string kGoldenDir = std::string(ACCEL_GOLDEN_DIR) + "/..";
const std::string kTinyDir = kGoldenDir + "/bert/tiny";
const std::string kTinyBinDir = kGoldenDir + "/bert/tiny_bin";
const std::string kTinyBin = kTinyBinDir + "/pytorch_model.bin";
const std::string kTensorsBin = kGoldenDir + "/torch_pickle/tensors.bin";
const std::string kTensorsExpected = kGoldenDir + "/torch_pickle/tensors.safetensors";
const std::string kMalicious = kGoldenDir + "/torch_pickle/malicious.bin";

// ---- files and ZIP archives ----

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "accel_torch_pickle_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

uint32_t le32(const std::string& s, size_t pos) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | uint8_t(s[pos + i]);
  return v;
}
uint16_t le16(const std::string& s, size_t pos) { return uint16_t(uint8_t(s[pos]) | uint8_t(s[pos + 1]) << 8); }
std::string le(uint64_t value, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out += char((value >> (8 * i)) & 0xff);
  return out;
}

uint32_t crc32(const std::string& data) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    c ^= byte;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return ~c;
}

using Entries = std::vector<std::pair<std::string, std::string>>;

uint64_t le64(const std::string& s, size_t pos) { return le32(s, pos) | uint64_t(le32(s, pos + 4)) << 32; }

// The entries of a small archive that torch.save or Python's zipfile wrote, through the
// central directory (torch.save leaves the sizes in the local headers zero).
Entries read_stored_zip(const std::string& zip) {
  size_t end = zip.size() - 22;  // no archive comment
  uint64_t count = le16(zip, end + 10), directory = le32(zip, end + 16);
  if (le32(zip, end - 20) == 0x07064b50) {  // zip64 end record, through its locator
    uint64_t zip64_end = le64(zip, end - 20 + 8);
    count = le64(zip, zip64_end + 32);
    directory = le64(zip, zip64_end + 48);
  }
  Entries entries;
  for (uint64_t i = 0, pos = directory; i < count; ++i) {
    size_t size = le32(zip, pos + 20), name_length = le16(zip, pos + 28);
    size_t local = le32(zip, pos + 42);
    size_t data = local + 30 + le16(zip, local + 26) + le16(zip, local + 28);
    entries.emplace_back(zip.substr(pos + 46, name_length), zip.substr(data, size));
    pos += 46 + name_length + le16(zip, pos + 30) + le16(zip, pos + 32);
  }
  return entries;
}

struct ZipOptions {
  bool zip64 = false;   // every size and offset through zip64 extra fields and end records
  uint16_t method = 0;  // what the headers claim (the bytes are always stored as given)
};

// A STORED archive, with data aligned to 64 bytes as torch.save aligns it.
std::string make_zip(const Entries& entries, ZipOptions options = {}) {
  std::string zip, directory;
  for (const auto& [name, data] : entries) {
    uint64_t offset = zip.size();
    size_t padding = (64 - (offset + 30 + name.size() + 4) % 64) % 64;
    std::string local_extra = le(0xCAFE, 2) + le(padding, 2) + std::string(padding, '\0');
    zip += le(0x04034b50, 4) + le(20, 2) + le(0, 2) + le(options.method, 2) + le(0, 4) + le(crc32(data), 4) +
           le(data.size(), 4) + le(data.size(), 4) + le(name.size(), 2) + le(local_extra.size(), 2) + name +
           local_extra + data;
    uint32_t small = options.zip64 ? 0xFFFFFFFFu : 0;
    std::string extra = options.zip64 ? le(1, 2) + le(24, 2) + le(data.size(), 8) + le(data.size(), 8) + le(offset, 8)
                                      : "";
    directory += le(0x02014b50, 4) + le(45, 2) + le(45, 2) + le(0, 2) + le(options.method, 2) + le(0, 4) +
                 le(crc32(data), 4) + le(small ? small : data.size(), 4) + le(small ? small : data.size(), 4) +
                 le(name.size(), 2) + le(extra.size(), 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) +
                 le(small ? small : offset, 4) + name + extra;
  }
  uint64_t directory_offset = zip.size();
  zip += directory;
  if (options.zip64) {
    uint64_t zip64_end = zip.size();
    zip += le(0x06064b50, 4) + le(44, 8) + le(45, 2) + le(45, 2) + le(0, 4) + le(0, 4) + le(entries.size(), 8) +
           le(entries.size(), 8) + le(directory.size(), 8) + le(directory_offset, 8);
    zip += le(0x07064b50, 4) + le(0, 4) + le(zip64_end, 8) + le(1, 4);
    zip += le(0x06054b50, 4) + le(0, 4) + le(0xFFFF, 2) + le(0xFFFF, 2) + le(0xFFFFFFFF, 4) + le(0xFFFFFFFF, 4) +
           le(0, 2);
  } else {
    zip += le(0x06054b50, 4) + le(0, 4) + le(entries.size(), 2) + le(entries.size(), 2) + le(directory.size(), 4) +
           le(directory_offset, 4) + le(0, 2);
  }
  return zip;
}

// ---- hand-written pickles (protocol 2, the opcodes torch.save uses) ----

// (Built by appending: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string.)
std::string unicode(const std::string& text) {
  std::string p = "X";
  p += le(text.size(), 4);
  return p += text;
}
std::string global(const std::string& module, const std::string& name) {
  std::string p = "c";
  return p.append(module).append("\n").append(name).append("\n");
}
std::string binint(int value) {
  std::string p = "J";
  return p += le(uint32_t(value), 4);
}
// _rebuild_tensor_v2(('storage', <type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())
std::string tensor(const std::string& storage_type, const std::string& key, int numel, int offset,
                   const std::vector<int>& sizes, const std::vector<int>& strides) {
  std::string p = global("torch._utils", "_rebuild_tensor_v2");
  p.append("((").append(unicode("storage")).append(global("torch", storage_type)).append(unicode(key));
  p.append(unicode("cpu")).append(binint(numel)).append("tQ").append(binint(offset)).append("(");
  for (int s : sizes) p += binint(s);
  p += "t(";
  for (int s : strides) p += binint(s);
  return p.append("t\x89").append(global("collections", "OrderedDict")).append(")RtR");
}
// {name: value} as a one-entry dict.
std::string state_dict(const std::string& name, const std::string& value) {
  return "\x80\x02}(" + unicode(name) + value + "u.";
}

std::map<std::string, Tensor> unpickle(const std::string& pickle,
                                      const std::map<std::string, std::string>& storages = {}) {
  StorageLoader load = [&](const std::string& key) -> Storage {
    auto it = storages.find(key);
    if (it == storages.end()) return nullptr;
    auto storage = std::make_shared<StorageImpl>(it->second.size(), kCPU);
    if (!it->second.empty()) std::memcpy(storage->data(), it->second.data(), it->second.size());
    return storage;
  };
  return unpickle_state_dict(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size(), load, "test.bin");
}

std::string float_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

// Runs f, expecting an accel::Error whose message contains `expected`.
template <typename F>
void expect_error(F&& f, const std::string& expected) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing \"" << expected << "\"";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(expected));
  }
}

void expect_same_tensors(const std::map<std::string, Tensor>& actual, const std::map<std::string, Tensor>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (const auto& [name, want] : expected) {
    ASSERT_TRUE(actual.count(name)) << name;
    const Tensor& got = actual.at(name);
    EXPECT_EQ(got.dtype(), want.dtype()) << name;
    EXPECT_EQ(got.sizes(), want.sizes()) << name;
    EXPECT_TRUE(got.is_contiguous()) << name;
    if (got.dtype() == want.dtype() && got.sizes() == want.sizes()) {
      EXPECT_EQ(std::memcmp(got.data_ptr(), want.contiguous().data_ptr(), got.nbytes()), 0) << name;
    }
  }
}

// ---- what PyTorch wrote ----

TEST(TorchPickle, TinyBertEqualsItsSafetensors) {
  expect_same_tensors(load_torch_state_dict(kTinyBin), safetensors::load(kTinyDir + "/model.safetensors").tensors);
}

TEST(TorchPickle, FromPretrainedFallsBackToPytorchModelBin) {
  PretrainedOptions quiet;
  quiet.verbose = false;
  auto from_bin = bert_classifier_from_pretrained(kTinyBinDir, quiet);
  auto from_safetensors = bert_classifier_from_pretrained(kTinyDir, quiet);
  std::map<std::string, Tensor> expected = from_safetensors->state_dict();
  for (const auto& [name, value] : from_bin->state_dict()) {
    EXPECT_TRUE(equal(value, expected.at(name))) << name;
  }
}

TEST(TorchPickle, EveryDtypeAndLayout) {
  std::map<std::string, Tensor> tensors = load_torch_state_dict(kTensorsBin);
  expect_same_tensors(tensors, safetensors::load(kTensorsExpected).tensors);
  for (const char* dtype : {"float32", "float64", "float16", "bfloat16", "int64", "int32", "bool"}) {
    EXPECT_EQ(dtype_name(tensors.at(dtype).dtype()), std::string(dtype));
  }
  EXPECT_EQ(tensors.at("scalar").dim(), 0);
  EXPECT_EQ(tensors.at("scalar").item<float>(), 3.5f);
  EXPECT_EQ(tensors.at("empty").sizes(), (Shape{0, 4}));
  EXPECT_EQ(tensors.at("int64").to_vector<int64_t>()[1], -(int64_t(1) << 62));
  // The transpose of base, copied out of base's storage.
  EXPECT_TRUE(equal(tensors.at("transposed"), tensors.at("base").t().contiguous()));
  EXPECT_TRUE(equal(tensors.at("sliced"), tensors.at("base").slice(0, 1, 3).slice(1, 2, 5).contiguous()));
}

TEST(TorchPickle, Zip64ArchiveReadsTheSame) {
  TempDir dir;
  write_file(dir.path() / "model.bin", make_zip(read_stored_zip(read_file(kTinyBin)), {.zip64 = true}));
  expect_same_tensors(load_torch_state_dict((dir.path() / "model.bin").string()), load_torch_state_dict(kTinyBin));
}

// ---- refusals ----

TEST(TorchPickle, RefusesToCallOsSystem) {
  expect_error([] { load_torch_state_dict(kMalicious); }, "refusing to unpickle global os.system");
  expect_error([] { load_torch_state_dict(kMalicious); }, "only tensors and OrderedDict are allowed");
  // The same through a model directory.
  TempDir dir;
  fs::copy_file(kMalicious, dir.path() / "pytorch_model.bin");
  expect_error([&] { load_checkpoint_weights(dir.path().string()); }, "refusing to unpickle global os.system");
}

TEST(TorchPickle, RefusesGlobalsAndOpcodesOutsideTheAllowList) {
  // STACK_GLOBAL (protocol 4) naming builtins.eval.
  expect_error([] { unpickle("\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93."); },
               "refusing to unpickle global builtins.eval");
  expect_error([] { unpickle("\x80\x02" + global("torch", "load") + "."); }, "refusing to unpickle global torch.load");
  // INST builds an object by calling a class: refused by opcode, before it names anything.
  expect_error([] { unpickle("\x80\x02(ios\nsystem\n."); }, "opcode INST is not allowed");
  expect_error([] { unpickle("\x80\x02" + global("collections", "OrderedDict") + ")\x81."); }, "opcode NEWOBJ");
  // An allowed global called with arguments it never gets from torch.save.
  expect_error([] { unpickle("\x80\x02" + global("collections", "OrderedDict") + "(" + unicode("x") + "tR."); },
               "OrderedDict is rebuilt empty");
  // A storage type accel has no dtype for.
  expect_error([] { unpickle(state_dict("w", tensor("ByteStorage", "0", 4, 0, {4}, {1})), {{"0", "abcd"}}); },
               "torch.ByteStorage, a dtype accel does not have");
}

TEST(TorchPickle, RefusesNonTensorValues) {
  expect_error([] { unpickle(state_dict("step", "K\x05")); }, "\"step\" is an int, not a tensor");
  expect_error([] { unpickle("\x80\x02]."); }, "the pickle holds a list, not a state dict");
}

TEST(TorchPickle, HandWrittenStateDictLoads) {
  std::string storage = float_bytes({0, 1, 2, 3, 4, 5});
  std::map<std::string, Tensor> tensors =
      unpickle(state_dict("w", tensor("FloatStorage", "0", 6, 1, {2, 2}, {1, 2})), {{"0", storage}});
  // Elements 1.. viewed with strides (1, 2): [[1, 3], [2, 4]].
  EXPECT_EQ(tensors.at("w").to_vector<float>(), (std::vector<float>{1, 3, 2, 4}));
}

TEST(TorchPickle, RefusesTensorsOutsideTheirStorage) {
  std::string storage = float_bytes({0, 1, 2, 3, 4, 5});
  expect_error([&] { unpickle(state_dict("w", tensor("FloatStorage", "0", 6, 3, {2, 2}, {2, 1})), {{"0", storage}}); },
               "reaches outside its storage of 6 elements");
  expect_error([&] { unpickle(state_dict("w", tensor("FloatStorage", "0", 5, 0, {5}, {1})), {{"0", storage}}); },
               "holds 24 bytes but the pickle says 5 elements of float32");
  expect_error([&] { unpickle(state_dict("w", tensor("FloatStorage", "1", 6, 0, {6}, {1})), {{"0", storage}}); },
               "no bytes for storage data/1");
  expect_error([&] { unpickle(state_dict("w", tensor("BoolStorage", "0", 1, 0, {1}, {1})), {{"0", "\x07"}}); },
               "bool storage data/0 holds the byte 7");
  // A few stored bytes expanded (stride 0) into gigabytes: refused, not allocated.
  expect_error([&] { unpickle(state_dict("w", tensor("FloatStorage", "0", 6, 0, {1 << 30}, {0})), {{"0", storage}}); },
               "refusing to expand the checkpoint");
}

TEST(TorchPickle, DeepNestingAndCyclesDoNotCrash) {
  // A million nested 1-tuples: freeing them recursively would overflow the stack.
  std::string deep = "\x80\x02N" + std::string(1'000'000, '\x85') + ".";
  expect_error([&] { unpickle(deep); }, "holds a tuple, not a state dict");
  // A list that contains itself.
  expect_error([] { unpickle("\x80\x02]q\x00h\x00" "a."s); }, "holds a list, not a state dict");
}

TEST(TorchPickle, CorruptPicklesFailCleanly) {
  expect_error([] { unpickle("\x80\x02}"); }, "the pickle ends without STOP");
  expect_error([] { unpickle("\x80\x02X\xff\xff\xff\x7f" "abc"); }, "the pickle ends mid-opcode");
  expect_error([] { unpickle("\x80\x02\xff."); }, "is not a pickle opcode");
  expect_error([] { unpickle("\x80\x02s."); }, "pops from an empty stack");
  expect_error([] { unpickle("\x80\x02h\x07."); }, "memo entry 7 was never stored");
  expect_error([] { unpickle("\x80\x02}N."); }, "leaves values on the stack");
  expect_error([] { unpickle("\x80\x02" "cos\nsys"); }, "the pickle ends inside a GLOBAL name");

  // Random mutations of a real state dict's pickle: each either loads or fails with an
  // accel::Error (anything else, or a crash, fails the test).
  Entries entries = read_stored_zip(read_file(kTensorsBin));
  std::string pickle;
  std::map<std::string, std::string> storages;
  for (const auto& [name, data] : entries) {
    if (name == "tensors/data.pkl") pickle = data;
    if (name.rfind("tensors/data/", 0) == 0) storages[name.substr(13)] = data;
  }
  ASSERT_FALSE(pickle.empty());
  std::mt19937 random(1234);
  int failed = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string mutated = pickle;
    if (trial % 3 == 0) {
      mutated.resize(random() % mutated.size());
    } else {
      for (int flips = 1 + random() % 4; flips > 0; --flips) mutated[random() % mutated.size()] = char(random());
    }
    try {
      unpickle(mutated, storages);
    } catch (const Error&) {
      ++failed;
    }
  }
  EXPECT_GT(failed, 1000);
}

TEST(TorchPickle, TruncatedOrCorruptArchivesFailCleanly) {
  TempDir dir;
  std::string bytes = read_file(kTinyBin);
  fs::path path = dir.path() / "pytorch_model.bin";
  auto load = [&] { load_torch_state_dict(path.string()); };
  for (size_t size : {size_t(1), size_t(21), size_t(100), bytes.size() / 2, bytes.size() - 22, bytes.size() - 1}) {
    write_file(path, bytes.substr(0, size));
    expect_error(load, "truncated or corrupt");
  }
  write_file(path, "");
  expect_error(load, "the file is empty");
  write_file(path, "this is not a zip archive at all, just some text that is long enough");
  expect_error(load, "not a valid ZIP archive");
  // A flipped byte inside the pickle: the entry's CRC-32 no longer matches.
  std::string flipped = bytes;
  flipped[flipped.find("bert.embeddings")] ^= 1;
  write_file(path, flipped);
  expect_error(load, "fails its CRC-32 check");
  // Random damage anywhere: an accel::Error or a successful load, never a crash.
  std::mt19937 random(99);
  for (int trial = 0; trial < 300; ++trial) {
    std::string damaged = bytes;
    for (int flips = 1 + random() % 8; flips > 0; --flips) damaged[random() % damaged.size()] = char(random());
    write_file(path, damaged);
    try {
      load();
    } catch (const Error&) {
    }
  }
}

TEST(TorchPickle, RefusesWhatItCannotRead) {
  TempDir dir;
  fs::path path = dir.path() / "model.bin";
  auto load = [&] { load_torch_state_dict(path.string()); };
  Entries entries = read_stored_zip(read_file(kTinyBin));
  write_file(path, make_zip(entries, {.method = 8}));
  expect_error(load, "is compressed (ZIP method 8, deflate)");
  write_file(path, "\x80\x02\x8a\x0alegacy pickle follows");
  expect_error(load, "legacy torch.save format");
  Entries big_endian = entries;
  for (auto& [name, data] : big_endian) {
    if (name == "pytorch_model/byteorder") data = "big";
  }
  write_file(path, make_zip(big_endian));
  expect_error(load, "stored big-endian");
  write_file(path, make_zip({{"something/else.txt", "hello"}}));
  expect_error(load, "without <archive>/data.pkl");
  expect_error([&] { load_torch_state_dict((dir.path() / "missing.bin").string()); }, "cannot open");
}

}  // namespace
}  // namespace accel::models
