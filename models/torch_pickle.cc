// torch.save files: a ZIP reader for STORED (uncompressed) entries, zip64 included, and a
// pickle VM restricted to what a state dict needs. See torch_pickle.h for the format and
// for why the VM refuses everything else.
//
// Untrusted input throughout: every offset and length read from the file is checked against
// the bytes that exist before it is used, integer arithmetic on sizes is overflow-checked,
// and every failure is an accel::Error naming the file and what was wrong.
#include "models/torch_pickle.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"

namespace accel::models {

namespace {

// ---------------------------------------------------------------------------------------
// Little-endian fields and CRC-32

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

// CRC-32 as ZIP uses it (reflected polynomial 0xEDB88320), eight bytes per step with eight
// tables ("slicing-by-8"): ~2 GB/s, so checking a 400 MB checkpoint costs a fraction of
// reading it.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;

const CrcTables& crc_tables() {
  static const CrcTables tables = [] {
    CrcTables t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
    }
    return t;
  }();
  return tables;
}

uint32_t crc32(const uint8_t* p, uint64_t n) {
  const CrcTables& t = crc_tables();
  uint32_t c = 0xFFFFFFFFu;
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t lo = c ^ le32(p), hi = le32(p + 4);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][hi & 0xff] ^
        t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
  }
  for (; n > 0; ++p, --n) c = t[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return ~c;
}

// ---------------------------------------------------------------------------------------
// The file, mapped copy-on-write

Storage map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ACCEL_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat info {};
  bool stat_ok = ::fstat(fd, &info) == 0;
  int stat_errno = errno;
  if (!stat_ok || !S_ISREG(info.st_mode) || info.st_size == 0) {
    ::close(fd);
    ACCEL_CHECK(stat_ok, path, ": cannot stat: ", std::strerror(stat_errno));
    ACCEL_CHECK(S_ISREG(info.st_mode), path, ": not a regular file");
    ACCEL_FAIL(path, ": the file is empty (expected a torch.save ZIP archive)");
  }
  size_t size = size_t(info.st_size);
  // MAP_PRIVATE + PROT_WRITE: writes go to private copies of the pages, never to the file.
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);
  ACCEL_CHECK(data != MAP_FAILED, path, ": mmap of ", size, " bytes failed: ", std::strerror(map_errno));
  return std::make_shared<StorageImpl>(data, size, kCPU, [size](void* ptr) { ::munmap(ptr, size); });
}

// ---------------------------------------------------------------------------------------
// ZIP (APPNOTE.TXT): the end-of-central-directory record at the end of the file points to
// the central directory, which lists every entry and where its local header is; the data
// follows the local header. Zip64 replaces 0xFFFF / 0xFFFFFFFF fields with 64-bit values in
// a zip64 end record (found through a locator just before the end record) and in each
// entry's zip64 extra field.

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint64_t kEndRecordBytes = 22, kZip64EndRecordBytes = 56, kZip64LocatorBytes = 20;
constexpr uint64_t kCentralHeaderBytes = 46, kLocalHeaderBytes = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;

struct ZipEntry {
  uint64_t data_offset = 0;  // where the stored bytes start in the file
  uint64_t size = 0;         // compressed size; equals the uncompressed size for STORED
  uint64_t uncompressed_size = 0;
  uint32_t crc = 0;
  uint16_t method = 0;  // 0 STORED, 8 DEFLATE, ...
  uint16_t flags = 0;   // bit 0: encrypted
};

class ZipArchive {
 public:
  ZipArchive(Storage file, std::string path) : file_(std::move(file)), path_(std::move(path)) { parse(); }

  const ZipEntry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  const std::map<std::string, ZipEntry>& entries() const { return entries_; }

  // The bytes of a STORED entry, after checking its CRC-32 (torch.save writes 0 there when
  // told not to compute checksums, so 0 means "unchecked").
  const uint8_t* read(const std::string& name, const ZipEntry& entry) const {
    ACCEL_CHECK(!(entry.flags & 1), path_, ": archive entry ", name, " is encrypted");
    ACCEL_CHECK(entry.method == 0, path_, ": archive entry ", name, " is compressed (ZIP method ", entry.method,
                entry.method == 8 ? ", deflate" : "", "); torch.save stores entries uncompressed and accel reads "
                "only those: re-save the state dict with torch.save, or convert it to safetensors");
    ACCEL_CHECK(entry.size == entry.uncompressed_size, path_, ": archive entry ", name, " is stored with ",
                entry.size, " bytes but claims ", entry.uncompressed_size, " uncompressed");
    const uint8_t* data = bytes() + entry.data_offset;
    if (entry.crc != 0) {
      ACCEL_CHECK(crc32(data, entry.size) == entry.crc, path_, ": archive entry ", name,
                  " fails its CRC-32 check: the file is corrupt");
    }
    return data;
  }

 private:
  const uint8_t* bytes() const { return static_cast<const uint8_t*>(file_->data()); }
  uint64_t size() const { return file_->nbytes(); }

  [[noreturn]] void corrupt(const std::string& what) const {
    ACCEL_FAIL(path_, ": not a valid ZIP archive (", what, "); a torch.save file is a ZIP archive: the file is "
               "truncated or corrupt");
  }

  // The end record: its last field is the comment length, so scan back over at most a
  // 64 KiB comment for a signature whose comment reaches exactly the end of the file.
  uint64_t find_end_record() const {
    if (size() < kEndRecordBytes) corrupt("shorter than an end-of-central-directory record");
    uint64_t last = size() - kEndRecordBytes;
    uint64_t first = last > 0xFFFF ? last - 0xFFFF : 0;
    for (uint64_t pos = last + 1; pos-- > first;) {
      if (le32(bytes() + pos) == kEndSignature && pos + kEndRecordBytes + le16(bytes() + pos + 20) == size()) {
        return pos;
      }
    }
    corrupt("no end-of-central-directory record");
  }

  void parse() {
    const uint8_t* base = bytes();
    uint64_t end = find_end_record();
    uint64_t count = le16(base + end + 10);
    uint64_t directory_size = le32(base + end + 12);
    uint64_t directory_offset = le32(base + end + 16);
    if (end >= kZip64LocatorBytes && le32(base + end - kZip64LocatorBytes) == kZip64LocatorSignature) {
      uint64_t zip64_end = le64(base + end - kZip64LocatorBytes + 8);
      if (zip64_end > end - kZip64LocatorBytes || end - kZip64LocatorBytes - zip64_end < kZip64EndRecordBytes ||
          le32(base + zip64_end) != kZip64EndSignature) {
        corrupt("the zip64 locator points to no zip64 end record");
      }
      count = le64(base + zip64_end + 32);
      directory_size = le64(base + zip64_end + 40);
      directory_offset = le64(base + zip64_end + 48);
    }
    if (directory_offset > size() || directory_size > size() - directory_offset) {
      corrupt("the central directory lies outside the file");
    }
    if (count > directory_size / kCentralHeaderBytes) corrupt("more entries than the central directory can hold");

    uint64_t pos = directory_offset, directory_end = directory_offset + directory_size;
    for (uint64_t i = 0; i < count; ++i) {
      if (directory_end - pos < kCentralHeaderBytes || le32(base + pos) != kCentralHeaderSignature) {
        corrupt("central directory entry " + std::to_string(i) + " is malformed");
      }
      const uint8_t* header = base + pos;
      ZipEntry entry;
      entry.flags = le16(header + 8);
      entry.method = le16(header + 10);
      entry.crc = le32(header + 16);
      entry.size = le32(header + 20);
      entry.uncompressed_size = le32(header + 24);
      uint64_t name_length = le16(header + 28), extra_length = le16(header + 30), comment_length = le16(header + 32);
      uint64_t local_offset = le32(header + 42);
      if (directory_end - pos - kCentralHeaderBytes < name_length + extra_length + comment_length) {
        corrupt("central directory entry " + std::to_string(i) + " runs past the directory");
      }
      std::string name(reinterpret_cast<const char*>(header + kCentralHeaderBytes), name_length);
      read_zip64_extra(header + kCentralHeaderBytes + name_length, extra_length, entry, local_offset, name);
      entry.data_offset = data_offset(local_offset, name);
      if (entry.size > size() - entry.data_offset) corrupt("entry " + name + " runs past the end of the file");
      if (!entries_.emplace(name, entry).second) corrupt("entry " + name + " appears twice");
      pos += kCentralHeaderBytes + name_length + extra_length + comment_length;
    }
  }

  // The zip64 extra field holds, in this order, only the 64-bit values whose 32-bit field
  // is 0xFFFFFFFF: uncompressed size, compressed size, local header offset.
  void read_zip64_extra(const uint8_t* extra, uint64_t length, ZipEntry& entry, uint64_t& local_offset,
                        const std::string& name) const {
    for (uint64_t pos = 0; length - pos >= 4;) {
      uint16_t id = le16(extra + pos), field_length = le16(extra + pos + 2);
      if (length - pos - 4 < field_length) corrupt("entry " + name + " has a truncated extra field");
      if (id == kZip64ExtraId) {
        const uint8_t* field = extra + pos + 4;
        uint64_t used = 0;
        auto take = [&](uint64_t& value) {
          if (value != 0xFFFFFFFFu) return;
          if (field_length - used < 8) corrupt("entry " + name + " has a truncated zip64 extra field");
          value = le64(field + used);
          used += 8;
        };
        take(entry.uncompressed_size);
        take(entry.size);
        take(local_offset);
      }
      pos += 4 + field_length;
    }
  }

  // The local header repeats the name and has its own extra field (torch.save pads it so
  // that data starts on a 64-byte boundary); the data follows both.
  uint64_t data_offset(uint64_t local_offset, const std::string& name) const {
    if (local_offset > size() || size() - local_offset < kLocalHeaderBytes ||
        le32(bytes() + local_offset) != kLocalHeaderSignature) {
      corrupt("entry " + name + " has no local header where the central directory says");
    }
    uint64_t offset = local_offset + kLocalHeaderBytes + le16(bytes() + local_offset + 26) +
                      le16(bytes() + local_offset + 28);
    if (offset > size()) corrupt("entry " + name + " starts past the end of the file");
    return offset;
  }

  Storage file_;
  std::string path_;
  std::map<std::string, ZipEntry> entries_;
};

// ---------------------------------------------------------------------------------------
// The pickle VM

// Every pickle opcode by byte, so that a refused one is reported by name.
const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return nullptr;
  }
}

// The globals the VM will name. Storage types carry their dtype.
enum class Global { OrderedDict, RebuildTensor, RebuildParameter, StorageType };

struct StorageTypeName {
  const char* name;
  DType dtype;
};
constexpr StorageTypeName kStorageTypes[] = {
    {"FloatStorage", kFloat32}, {"DoubleStorage", kFloat64}, {"HalfStorage", kFloat16},
    {"BFloat16Storage", kBFloat16}, {"LongStorage", kInt64}, {"IntStorage", kInt32}, {"BoolStorage", kBool},
};

enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Storage, Tensor };

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

// "an int", "a tensor": for messages.
std::string a_kind(Kind kind) {
  std::string name = kind_name(kind);
  return (std::string("aeiou").find(name[0]) != std::string::npos ? "an " : "a ") + name;
}

// One Python object. A fat struct rather than a variant: the VM handles a few thousand of
// them per checkpoint, and plain fields keep the opcode handlers short.
struct Value;
using ValuePtr = std::shared_ptr<Value>;
struct Value {
  Kind kind = Kind::None;
  int64_t integer = 0;                                 // Bool, Int
  double real = 0;                                     // Float
  std::string text;                                    // String; Global: "module.name"
  std::vector<ValuePtr> items;                         // Tuple, List
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;  // Dict, in insertion order
  Global global = Global::OrderedDict;                 // Global
  DType dtype = kFloat32;                              // Global (StorageType), Storage
  Storage storage;                                     // Storage
  int64_t numel = 0;                                   // Storage, in elements
  Tensor tensor;                                       // Tensor
};

// Printable and short, for error messages that quote names from the file.
std::string quoted(const std::string& text) {
  std::string out;
  for (char c : text.substr(0, 120)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return text.size() > 120 ? out + "..." : out;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const StorageLoader& load_storage, std::string name)
      : data_(data), size_(size), load_storage_(load_storage), name_(std::move(name)) {}

  // Containers can nest arbitrarily deep (TUPLE1 repeated) or form cycles (BINGET of a list
  // into itself); destroying such a graph through shared_ptr recursion would overflow the
  // stack or leak. Every value is also held by arena_, so emptying each container here
  // frees nothing recursively; arena_ then releases childless values one by one.
  ~Unpickler() {
    for (const ValuePtr& value : arena_) {
      value->items.clear();
      value->entries.clear();
    }
  }

  std::map<std::string, Tensor> run() { return to_state_dict(execute()); }

 private:
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    const char* name = opcode_name(opcode_);
    ACCEL_FAIL(name_, ": data.pkl byte ", opcode_pos_, name ? std::string(" (") + name + ")" : "", ": ", args...);
  }

  // ---- reading the byte stream ----
  void need(size_t n) {
    if (size_ - pos_ < n) fail("the pickle ends mid-opcode (truncated or corrupt data.pkl)");
  }
  uint8_t read_u8() {
    need(1);
    return data_[pos_++];
  }
  uint16_t read_u16() {
    need(2);
    pos_ += 2;
    return le16(data_ + pos_ - 2);
  }
  uint32_t read_u32() {
    need(4);
    pos_ += 4;
    return le32(data_ + pos_ - 4);
  }
  uint64_t read_u64() {
    need(8);
    pos_ += 8;
    return le64(data_ + pos_ - 8);
  }
  std::string read_bytes(uint64_t n) {
    need(n);
    pos_ += n;
    return std::string(reinterpret_cast<const char*>(data_ + pos_ - n), n);
  }
  std::string read_line() {
    const void* newline = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!newline) fail("the pickle ends inside a GLOBAL name");
    size_t length = static_cast<const uint8_t*>(newline) - (data_ + pos_);
    std::string line = read_bytes(length);
    ++pos_;
    return line;
  }
  // LONG1: n bytes of little-endian two's complement.
  int64_t read_long(uint8_t n) {
    if (n > 8) fail("an integer of ", int(n), " bytes does not fit in 64 bits");
    need(n);
    uint64_t bits = 0;
    for (uint8_t i = 0; i < n; ++i) bits |= uint64_t(data_[pos_ + i]) << (8 * i);
    if (n > 0 && n < 8 && (data_[pos_ + n - 1] & 0x80)) bits |= ~uint64_t(0) << (8 * n);  // sign-extend
    pos_ += n;
    return static_cast<int64_t>(bits);
  }
  double read_binfloat() {  // big-endian IEEE double
    need(8);
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = bits << 8 | data_[pos_ + i];
    pos_ += 8;
    double value;
    std::memcpy(&value, &bits, 8);
    return value;
  }

  // ---- the stack; pops never reach below the innermost MARK, as in CPython ----
  ValuePtr make(Kind kind) {
    auto value = std::make_shared<Value>();
    value->kind = kind;
    arena_.push_back(value);
    return value;
  }
  ValuePtr make_int(Kind kind, int64_t integer) {
    ValuePtr value = make(kind);
    value->integer = integer;
    return value;
  }
  ValuePtr make_string(std::string text) {
    ValuePtr value = make(Kind::String);
    value->text = std::move(text);
    return value;
  }
  size_t stack_floor() const { return marks_.empty() ? 0 : marks_.back(); }
  ValuePtr pop() {
    if (stack_.size() <= stack_floor()) fail("pops from an empty stack (corrupt data.pkl)");
    ValuePtr value = std::move(stack_.back());
    stack_.pop_back();
    return value;
  }
  ValuePtr& top() {
    if (stack_.size() <= stack_floor()) fail("reads an empty stack (corrupt data.pkl)");
    return stack_.back();
  }
  Value& top_as(Kind kind) {
    Value& value = *top();
    if (value.kind != kind) fail("expects ", a_kind(kind), " on the stack, found ", a_kind(value.kind));
    return value;
  }
  std::vector<ValuePtr> pop_to_mark() {
    if (marks_.empty()) fail("has no MARK to pop to (corrupt data.pkl)");
    std::vector<ValuePtr> items(stack_.begin() + marks_.back(), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  ValuePtr make_tuple(std::vector<ValuePtr> items) {
    ValuePtr tuple = make(Kind::Tuple);
    tuple->items = std::move(items);
    return tuple;
  }
  ValuePtr pop_tuple(size_t n) {
    std::vector<ValuePtr> items(n);
    for (size_t i = n; i-- > 0;) items[i] = pop();
    return make_tuple(std::move(items));
  }
  ValuePtr memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo entry ", index, " was never stored (corrupt data.pkl)");
    return it->second;
  }

  ValuePtr execute() {
    for (;;) {
      opcode_pos_ = pos_;
      opcode_ = 0;  // not an opcode: errors before the next one name none
      if (pos_ >= size_) fail("the pickle ends without STOP (truncated data.pkl)");
      opcode_ = data_[pos_++];
      switch (opcode_) {
        case 0x80:  // PROTO
          if (read_u8() > 5) fail("pickle protocol newer than 5");
          break;
        case 0x95:  // FRAME: a length hint for buffered readers; the whole pickle is in memory
          read_u64();
          break;
        case '}': stack_.push_back(make(Kind::Dict)); break;
        case ']': stack_.push_back(make(Kind::List)); break;
        case ')': stack_.push_back(make(Kind::Tuple)); break;
        case '(': marks_.push_back(stack_.size()); break;
        case 'X': stack_.push_back(make_string(read_bytes(read_u32()))); break;
        case 0x8c: stack_.push_back(make_string(read_bytes(read_u8()))); break;
        case 'J': stack_.push_back(make_int(Kind::Int, int32_t(read_u32()))); break;
        case 'K': stack_.push_back(make_int(Kind::Int, read_u8())); break;
        case 'M': stack_.push_back(make_int(Kind::Int, read_u16())); break;
        case 0x8a: stack_.push_back(make_int(Kind::Int, read_long(read_u8()))); break;
        case 'G': {
          ValuePtr value = make(Kind::Float);
          value->real = read_binfloat();
          stack_.push_back(value);
          break;
        }
        case 0x88: stack_.push_back(make_int(Kind::Bool, 1)); break;
        case 0x89: stack_.push_back(make_int(Kind::Bool, 0)); break;
        case 'N': stack_.push_back(make(Kind::None)); break;
        case 't': stack_.push_back(make_tuple(pop_to_mark())); break;
        case 0x85: stack_.push_back(pop_tuple(1)); break;
        case 0x86: stack_.push_back(pop_tuple(2)); break;
        case 0x87: stack_.push_back(pop_tuple(3)); break;
        case 's': {  // SETITEM
          ValuePtr value = pop(), key = pop();
          top_as(Kind::Dict).entries.emplace_back(std::move(key), std::move(value));
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<ValuePtr> items = pop_to_mark();
          if (items.size() % 2) fail("has an odd number of items (a key without a value)");
          Value& dict = top_as(Kind::Dict);
          for (size_t i = 0; i < items.size(); i += 2) dict.entries.emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'a': {  // APPEND
          ValuePtr value = pop();
          top_as(Kind::List).items.push_back(std::move(value));
          break;
        }
        case 'e': {  // APPENDS
          std::vector<ValuePtr> items = pop_to_mark();
          Value& list = top_as(Kind::List);
          list.items.insert(list.items.end(), items.begin(), items.end());
          break;
        }
        case 'q': memo_[read_u8()] = top(); break;
        case 'r': memo_[read_u32()] = top(); break;
        case 0x94: memo_[memo_.size()] = top(); break;  // MEMOIZE
        case 'h': stack_.push_back(memo_get(read_u8())); break;
        case 'j': stack_.push_back(memo_get(read_u32())); break;
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = read_line();
          std::string name = read_line();
          stack_.push_back(resolve_global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          ValuePtr name = pop(), module = pop();
          if (module->kind != Kind::String || name->kind != Kind::String) fail("expects two strings");
          stack_.push_back(resolve_global(module->text, name->text));
          break;
        }
        case 'R': {  // REDUCE
          ValuePtr args = pop(), callable = pop();
          stack_.push_back(reduce(*callable, *args));
          break;
        }
        case 'Q': stack_.push_back(persistent_load(*pop())); break;  // BINPERSID
        case 'b': {  // BUILD: the OrderedDict's __dict__ (its _metadata), which a tensor map does not need
          pop();
          top_as(Kind::Dict);
          break;
        }
        case '.': {  // STOP
          ValuePtr result = pop();
          if (!stack_.empty() || !marks_.empty()) fail("leaves values on the stack (corrupt data.pkl)");
          return result;
        }
        default: {
          const char* name = opcode_name(opcode_);
          if (!name) fail("byte ", int(opcode_), " is not a pickle opcode (corrupt data.pkl)");
          fail("opcode ", name, " is not allowed: only the opcodes torch.save writes for a state dict are");
        }
      }
    }
  }

  ValuePtr resolve_global(const std::string& module, const std::string& name) {
    ValuePtr value = make(Kind::Global);
    value->text = module + "." + name;
    if (value->text == "collections.OrderedDict") {
      value->global = Global::OrderedDict;
    } else if (value->text == "torch._utils._rebuild_tensor_v2") {
      value->global = Global::RebuildTensor;
    } else if (value->text == "torch._utils._rebuild_parameter") {
      value->global = Global::RebuildParameter;
    } else if (module == "torch" && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0) {
      value->global = Global::StorageType;
      const StorageTypeName* match = nullptr;
      for (const StorageTypeName& type : kStorageTypes) {
        if (name == type.name) match = &type;
      }
      ACCEL_CHECK(match, name_, ": a tensor is stored as torch.", quoted(name),
                  ", a dtype accel does not have (it has float32, float64, float16, bfloat16, int64, int32, bool)");
      value->dtype = match->dtype;
    } else {
      ACCEL_FAIL(name_, ": refusing to unpickle global ", quoted(value->text), " (data.pkl byte ", opcode_pos_,
                 "): only tensors and OrderedDict are allowed");
    }
    return value;
  }

  ValuePtr reduce(const Value& callable, const Value& args) {
    if (callable.kind != Kind::Global) fail("calls ", a_kind(callable.kind), ", not an allowed global");
    if (args.kind != Kind::Tuple) fail("calls ", callable.text, " with ", a_kind(args.kind), ", not a tuple");
    switch (callable.global) {
      case Global::OrderedDict:
        if (!args.items.empty()) fail("OrderedDict is rebuilt empty by torch.save; found arguments");
        return make(Kind::Dict);
      case Global::RebuildTensor: return rebuild_tensor(args.items);
      case Global::RebuildParameter:  // (data, requires_grad, backward_hooks)
        if (args.items.size() != 3 || args.items[0]->kind != Kind::Tensor) {
          fail("_rebuild_parameter expects (tensor, requires_grad, hooks)");
        }
        return args.items[0];
      case Global::StorageType: break;
    }
    fail(callable.text, " cannot be called");
  }

  // ('storage', storage_type, key, location, numel): the tensor bytes are archive entry
  // data/<key>, numel elements of the storage type's dtype. location ("cpu", "cuda:0") is
  // where PyTorch would put them; accel loads to the CPU.
  ValuePtr persistent_load(const Value& id) {
    const std::vector<ValuePtr>& f = id.items;
    if (id.kind != Kind::Tuple || f.size() != 5 || f[0]->kind != Kind::String || f[0]->text != "storage" ||
        f[1]->kind != Kind::Global || f[1]->global != Global::StorageType || f[2]->kind != Kind::String ||
        f[3]->kind != Kind::String || f[4]->kind != Kind::Int) {
      fail("a persistent id must be ('storage', torch.<Type>Storage, key, location, numel)");
    }
    ValuePtr value = make(Kind::Storage);
    value->dtype = f[1]->dtype;
    value->numel = f[4]->integer;
    value->storage = storage_for(f[2]->text);
    uint64_t expected_bytes = 0;
    if (value->numel < 0 || __builtin_mul_overflow(uint64_t(value->numel), uint64_t(itemsize(value->dtype)),
                                                   &expected_bytes) ||
        expected_bytes != value->storage->nbytes()) {
      fail("storage data/", quoted(f[2]->text), " holds ", value->storage->nbytes(), " bytes but the pickle says ",
           value->numel, " elements of ", dtype_name(value->dtype));
    }
    if (value->dtype == kBool) {
      const auto* bytes = static_cast<const uint8_t*>(value->storage->data());
      for (uint64_t i = 0; i < expected_bytes; ++i) {
        if (bytes[i] > 1) fail("bool storage data/", quoted(f[2]->text), " holds the byte ", int(bytes[i]));
      }
    }
    return value;
  }

  // Storages are shared between tensors (tied weights, views): load each key once. Bytes
  // not aligned for an 8-byte dtype (a ZIP written by another tool) are copied.
  Storage storage_for(const std::string& key) {
    auto it = storages_.find(key);
    if (it != storages_.end()) return it->second;
    Storage storage = load_storage_(key);
    ACCEL_CHECK(storage && storage->device().is_cpu(), name_, ": no bytes for storage data/", quoted(key));
    if (reinterpret_cast<uintptr_t>(storage->data()) % 8 != 0 && storage->nbytes() > 0) {
      auto copy = std::make_shared<StorageImpl>(storage->nbytes(), kCPU);
      std::memcpy(copy->data(), storage->data(), storage->nbytes());
      storage = copy;
    }
    storages_.emplace(key, storage);
    stored_bytes_ += storage->nbytes();
    return storage;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
  // [, metadata]): a strided view of the storage; transposed or sliced tensors are saved as
  // such, with their whole storage, so the view is made contiguous.
  ValuePtr rebuild_tensor(const std::vector<ValuePtr>& args) {
    if (args.size() < 6 || args.size() > 7 || args[0]->kind != Kind::Storage || args[1]->kind != Kind::Int ||
        args[2]->kind != Kind::Tuple || args[3]->kind != Kind::Tuple || args[4]->kind != Kind::Bool ||
        args[5]->kind != Kind::Dict) {
      fail("_rebuild_tensor_v2 expects (storage, offset, size, stride, requires_grad, hooks[, metadata])");
    }
    const Value& storage = *args[0];
    int64_t offset = args[1]->integer;
    const std::vector<ValuePtr>& size_items = args[2]->items;
    const std::vector<ValuePtr>& stride_items = args[3]->items;
    if (size_items.size() != stride_items.size()) fail("a tensor's size and stride differ in length");
    Shape sizes, strides;
    for (size_t d = 0; d < size_items.size(); ++d) {
      if (size_items[d]->kind != Kind::Int || stride_items[d]->kind != Kind::Int || size_items[d]->integer < 0 ||
          stride_items[d]->integer < 0) {
        fail("a tensor's size and stride must be non-negative integers");
      }
      sizes.push_back(size_items[d]->integer);
      strides.push_back(stride_items[d]->integer);
    }
    // The highest element the view touches must lie inside the storage.
    int64_t numel = 1, last = offset, bytes = 0;
    for (size_t d = 0; d < sizes.size(); ++d) {
      int64_t span = 0;
      if (__builtin_mul_overflow(numel, sizes[d], &numel) ||
          (sizes[d] > 0 && (__builtin_mul_overflow(sizes[d] - 1, strides[d], &span) ||
                            __builtin_add_overflow(last, span, &last)))) {
        fail("a tensor's size and stride overflow");
      }
    }
    if (offset < 0 || (numel == 0 ? offset > storage.numel : last >= storage.numel) ||
        __builtin_mul_overflow(numel, int64_t(itemsize(storage.dtype)), &bytes)) {
      fail("a tensor of size ", shape_str(sizes), ", stride ", shape_str(strides), " at offset ", offset,
           " reaches outside its storage of ", storage.numel, " elements");
    }
    Tensor view = Tensor::view_of(storage.storage, sizes, strides, offset, storage.dtype);
    if (!view.is_contiguous()) {
      // Strided views copy. Overlapping strides (an expanded tensor) let a few stored bytes
      // describe a huge tensor, and many views can share one storage, so copies may exceed
      // the stored bytes only by a fixed allowance: a crafted file cannot exhaust memory.
      if (bytes > stored_bytes_ + kCopyAllowance - copied_bytes_) {
        fail("a tensor of size ", shape_str(sizes), ", stride ", shape_str(strides), " would bring the copies of "
             "strided tensors past the ", stored_bytes_, " bytes stored plus ", kCopyAllowance,
             ": refusing to expand the checkpoint that much");
      }
      copied_bytes_ += bytes;
    }
    ValuePtr value = make(Kind::Tensor);
    value->tensor = view.contiguous();
    return value;
  }

  std::map<std::string, Tensor> to_state_dict(const ValuePtr& root) const {
    ACCEL_CHECK(root->kind == Kind::Dict, name_, ": the pickle holds ", a_kind(root->kind),
                ", not a state dict (a dict of name -> tensor, as model.state_dict() returns)");
    std::map<std::string, Tensor> tensors;
    for (const auto& [key, value] : root->entries) {
      ACCEL_CHECK(key->kind == Kind::String, name_, ": a state dict key is ", a_kind(key->kind),
                  ", not a string");
      ACCEL_CHECK(value->kind == Kind::Tensor, name_, ": \"", quoted(key->text), "\" is ", a_kind(value->kind),
                  ", not a tensor: expected a flat state dict (name -> tensor), as model.state_dict() returns");
      tensors[key->text] = value->tensor;  // a repeated key keeps its last value, as in Python
    }
    return tensors;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t opcode_pos_ = 0;
  uint8_t opcode_ = 0;
  const StorageLoader& load_storage_;
  std::string name_;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;  // stack heights at each open MARK
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::map<std::string, Storage> storages_;
  static constexpr int64_t kCopyAllowance = int64_t(256) << 20;
  int64_t stored_bytes_ = 0;  // of every distinct storage loaded so far
  int64_t copied_bytes_ = 0;  // of every strided tensor made contiguous
  std::vector<ValuePtr> arena_;
};

}  // namespace

std::map<std::string, Tensor> unpickle_state_dict(const uint8_t* data, size_t size, const StorageLoader& load_storage,
                                                  const std::string& name_for_errors) {
  return Unpickler(data, size, load_storage, name_for_errors).run();
}

std::map<std::string, Tensor> load_torch_state_dict(const std::string& path) {
  Storage file = map_file(path);
  const auto* bytes = static_cast<const uint8_t*>(file->data());
  // Before 1.6, torch.save wrote a bare pickle (protocol 2) followed by raw storages.
  ACCEL_CHECK(!(file->nbytes() >= 2 && bytes[0] == 0x80 && bytes[1] <= 5), path,
              ": this is the legacy torch.save format (PyTorch < 1.6), which accel does not read; re-save it with "
              "a current PyTorch (torch.save(torch.load(path), path)) or convert it to safetensors");
  ZipArchive zip(file, path);

  // Entries live under one folder named after the file torch.save wrote ("archive/",
  // "pytorch_model/"); it is whichever folder holds data.pkl.
  std::string prefix;
  for (const auto& [name, entry] : zip.entries()) {
    size_t slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash) == "/data.pkl") {
      ACCEL_CHECK(prefix.empty(), path, ": the archive holds two data.pkl files (", prefix, "data.pkl and ", name,
                  ")");
      prefix = name.substr(0, slash + 1);
    }
  }
  ACCEL_CHECK(!prefix.empty(), path, ": a ZIP archive without <archive>/data.pkl is not a torch.save file");
  if (const ZipEntry* byteorder = zip.find(prefix + "byteorder")) {
    std::string order(reinterpret_cast<const char*>(zip.read(prefix + "byteorder", *byteorder)), byteorder->size);
    ACCEL_CHECK(order == "little", path, ": the tensors are stored ", quoted(order),
                "-endian; accel reads little-endian checkpoints only");
  }

  const ZipEntry& pickle = *zip.find(prefix + "data.pkl");
  const uint8_t* pickle_bytes = zip.read(prefix + "data.pkl", pickle);
  StorageLoader load_storage = [&](const std::string& key) -> Storage {
    std::string name = prefix + "data/" + key;
    const ZipEntry* entry = zip.find(name);
    ACCEL_CHECK(entry, path, ": the pickle names storage ", quoted(key), " but the archive has no ", quoted(name));
    const uint8_t* data = zip.read(name, *entry);
    // A view into the mapping that keeps the mapping alive.
    return std::make_shared<StorageImpl>(const_cast<uint8_t*>(data), entry->size, kCPU, [file](void*) {});
  };
  return unpickle_state_dict(pickle_bytes, pickle.size, load_storage, path);
}

}  // namespace accel::models
