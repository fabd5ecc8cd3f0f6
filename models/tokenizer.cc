// models/tokenizer.cc: BertTokenizer, a line-by-line port of Hugging Face's slow
// BertTokenizer (transformers' tokenization_bert.py: BasicTokenizer, WordpieceTokenizer, and
// the added-token split, truncation, padding and decoding of PreTrainedTokenizer).
//
// Text is handled as UTF-32 code points between the UTF-8 boundaries, because every rule HF
// applies is a rule on Python str characters. Unicode data (categories, case mappings,
// NFC/NFD) comes from utf8proc; where Python's behaviour is not a plain table lookup (str.lower's
// special cases, str.split's whitespace), the functions below say which rule they copy.
// Characters assigned in a newer Unicode version than Python's unicodedata knows are
// "unassigned" (and dropped as controls) in Python but not here; nothing else differs.
//
// What it is not: fast. It is linear in the text, but allocates per word; fine for
// data loading, not a throughput benchmark.
#include "models/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace accel::models {
namespace {

using nlohmann::json;

// ---- UTF-8 <-> code points ----

std::string hex_byte(unsigned char byte) {
  const char* digits = "0123456789ABCDEF";
  return std::string("0x") + digits[byte >> 4] + digits[byte & 15];
}

// The length of the UTF-8 sequence that `lead` starts; 0 when no sequence starts with it.
size_t sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Decodes strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), as
// Python's bytes.decode("utf-8") does. `what` names the text in the error message.
std::u32string decode_utf8(std::string_view text, std::string_view what) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    auto fail = [&](const std::string& why) {
      ACCEL_FAIL("BertTokenizer: expected UTF-8 in ", what, ", found invalid bytes at byte offset ",
                 i, ": ", why);
    };
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t length = sequence_length(lead);
    if (length == 0) fail("byte " + hex_byte(lead) + " cannot start a UTF-8 sequence");
    if (i + length > text.size()) {
      fail("the sequence starting with " + hex_byte(lead) + " is cut off by the end of the text");
    }
    char32_t cp = length == 1 ? lead : lead & (0x7F >> length);  // the lead's payload bits
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) {
        fail("expected a continuation byte after " + hex_byte(lead) + ", found " + hex_byte(next));
      }
      cp = (cp << 6) | (next & 0x3F);
    }
    if ((length == 3 && cp < 0x800) || (length == 4 && cp < 0x10000)) {
      fail("overlong encoding starting with " + hex_byte(lead));
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) fail("the sequence encodes a UTF-16 surrogate");
    if (cp > 0x10FFFF) fail("the sequence encodes a code point past U+10FFFF");
    out.push_back(cp);
    i += length;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) append_utf8(out, cp);
  return out;
}

// ---- character classes ----

utf8proc_category_t category(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}

// HF _is_whitespace: the characters _clean_text turns into ' '.
bool is_bert_whitespace(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || category(c) == UTF8PROC_CATEGORY_ZS;
}

// HF _is_control: any "C*" category (Cc, Cf, Cs, Co, and unassigned Cn) but \t \n \r.
bool is_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const utf8proc_category_t cat = category(c);
  return cat == UTF8PROC_CATEGORY_CN || cat >= UTF8PROC_CATEGORY_CC;
}

// Unicode's White_Space property: Zs, \t..\r, NEL and the line/paragraph separators. The
// Rust tokenizers split on it. Python's str.split() and str.strip() also take \x1c..\x1f,
// but clean_text has removed those (they are controls) before the slow tokenizer splits.
bool is_unicode_whitespace(char32_t c) {
  return category(c) == UTF8PROC_CATEGORY_ZS || (c >= 0x09 && c <= 0x0D) || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}

// HF _is_punctuation: all non-alphanumeric printable ASCII, plus every "P*" category.
bool is_punctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  const utf8proc_category_t cat = category(c);
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

// HF _is_chinese_char: the CJK Unified Ideographs blocks. Kana and Hangul are not in them.
bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Symbols (category So) that Unicode counts as letters: circled and squared Latin letters.
// They are Cased (Other_Uppercase/Other_Lowercase) and Alphabetic (Other_Alphabetic).
bool is_letter_symbol(char32_t c) {
  return (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
         (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

// Unicode's Cased property: Lu, Ll, Lt, Other_Lowercase, Other_Uppercase. Every character
// with a case mapping is cased; the ordinal indicators and letter symbols are the cased ones
// without one that are not also case-ignorable (checked against Python over all code points).
bool is_cased(char32_t c) {
  const utf8proc_category_t cat = category(c);
  if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT) {
    return true;
  }
  const auto cp = static_cast<utf8proc_int32_t>(c);
  return utf8proc_tolower(cp) != cp || utf8proc_toupper(cp) != cp || c == 0xAA || c == 0xBA ||
         is_letter_symbol(c);
}

// Unicode's Case_Ignorable property: Mn, Me, Cf, Lm, Sk, and the word-internal apostrophes,
// periods and colons (Word_Break MidLetter, MidNumLet, Single_Quote).
bool is_case_ignorable(char32_t c) {
  const utf8proc_category_t cat = category(c);
  if (cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME || cat == UTF8PROC_CATEGORY_CF ||
      cat == UTF8PROC_CATEGORY_LM || cat == UTF8PROC_CATEGORY_SK) {
    return true;
  }
  static constexpr char32_t kWordInternal[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
                                               0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                               0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
  return std::find(std::begin(kWordInternal), std::end(kWordInternal), c) !=
         std::end(kWordInternal);
}

// Rust regex's \w, which tokenizers' Whitespace pre-tokenizer matches: Alphabetic (letters,
// Nl, letter symbols), marks, decimal digits, connector punctuation and the two joiners.
bool is_word_char(char32_t c) {
  const utf8proc_category_t cat = category(c);
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_NL) ||
         cat == UTF8PROC_CATEGORY_PC || c == 0x200C || c == 0x200D || is_letter_symbol(c);
}

// ---- the BasicTokenizer steps ----

// HF _clean_text: drop NUL, U+FFFD and controls; every whitespace character becomes ' '.
std::u32string clean_text(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c == 0 || c == 0xFFFD || is_control(c)) continue;
    out.push_back(is_bert_whitespace(c) ? U' ' : c);
  }
  return out;
}

// HF _tokenize_chinese_chars: a space on both sides of every CJK ideograph.
std::u32string space_chinese_chars(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (is_chinese_char(c)) {
      out += U' ';
      out += c;
      out += U' ';
    } else {
      out += c;
    }
  }
  return out;
}

// unicodedata.normalize: `form` is UTF8PROC_COMPOSE (NFC) or UTF8PROC_DECOMPOSE (NFD).
std::u32string normalize(std::u32string_view text, utf8proc_option_t form) {
  if (text.empty()) return {};
  const std::string utf8 = encode_utf8(text);
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
                   static_cast<utf8proc_ssize_t>(utf8.size()), &mapped,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | form));
  ACCEL_CHECK(length >= 0, "BertTokenizer: expected utf8proc to normalize the text, found error: ",
              utf8proc_errmsg(length));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(mapped, &std::free);
  return decode_utf8(
      std::string_view(reinterpret_cast<const char*>(mapped), static_cast<size_t>(length)),
      "utf8proc's output");
}

// Python's str.split() (see is_unicode_whitespace): runs of non-space characters.
std::vector<std::u32string> split_on_whitespace(std::u32string_view text) {
  std::vector<std::u32string> words;
  std::u32string current;
  for (char32_t c : text) {
    if (is_unicode_whitespace(c)) {
      if (!current.empty()) words.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

// Python's Final_Sigma rule: a capital sigma preceded by a cased letter and not followed by
// one (case-ignorable characters skipped on both sides) lowercases to final sigma.
bool is_final_sigma(std::u32string_view word, size_t i) {
  size_t before = i;
  while (before > 0 && is_case_ignorable(word[before - 1])) --before;
  if (before == 0 || !is_cased(word[before - 1])) return false;
  size_t after = i + 1;
  while (after < word.size() && is_case_ignorable(word[after])) ++after;
  return after == word.size() || !is_cased(word[after]);
}

// Python's str.lower(): the simple lowercase mapping, except U+0130 (the one unconditional
// multi-character mapping in SpecialCasing.txt) and the final-sigma context.
std::u32string python_lower(std::u32string_view word) {
  std::u32string out;
  out.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    const char32_t c = word[i];
    if (c == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE -> i + COMBINING DOT ABOVE
      out += U'i';
      out += U'\u0307';
    } else if (c == 0x3A3) {  // GREEK CAPITAL LETTER SIGMA
      out += is_final_sigma(word, i) ? U'\u03C2' : U'\u03C3';
    } else {
      out += static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
    }
  }
  return out;
}

// HF _run_strip_accents: NFD, then drop the nonspacing marks (category Mn).
std::u32string strip_accents(std::u32string_view word) {
  std::u32string out;
  for (char32_t c : normalize(word, UTF8PROC_DECOMPOSE)) {
    if (category(c) != UTF8PROC_CATEGORY_MN) out += c;
  }
  return out;
}

// HF _run_split_on_punc: every punctuation character becomes a piece of its own.
std::vector<std::u32string> split_on_punctuation(std::u32string_view word) {
  std::vector<std::u32string> pieces;
  bool start_new_piece = true;
  for (char32_t c : word) {
    if (is_punctuation(c)) {
      pieces.emplace_back(1, c);
      start_new_piece = true;
    } else {
      if (start_new_piece) pieces.emplace_back();
      start_new_piece = false;
      pieces.back() += c;
    }
  }
  return pieces;
}

// tokenizers' Whitespace pre-tokenizer (\w+|[^\w\s]+) on a word without spaces: maximal runs
// of word characters and maximal runs of other characters.
std::vector<std::u32string> split_word_runs(std::u32string_view word) {
  std::vector<std::u32string> pieces;
  for (size_t i = 0; i < word.size(); ++i) {
    if (i == 0 || is_word_char(word[i]) != is_word_char(word[i - 1])) pieces.emplace_back();
    pieces.back() += word[i];
  }
  return pieces;
}

struct Segment {
  std::u32string_view text;
  bool is_added_token;
};

// HF's Trie.split: cuts `text` around the added tokens, taking the leftmost match, and the
// longest one where several start at the same place.
std::vector<Segment> split_on_added_tokens(std::u32string_view text,
                                           const std::vector<std::u32string>& added_tokens) {
  std::vector<Segment> segments;
  size_t segment_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t match_length = 0;
    for (const std::u32string& token : added_tokens) {
      if (token.size() > match_length && text.substr(i, token.size()) == token) {
        match_length = token.size();
      }
    }
    if (match_length == 0) {
      ++i;
      continue;
    }
    if (i > segment_start) {
      segments.push_back({text.substr(segment_start, i - segment_start), false});
    }
    segments.push_back({text.substr(i, match_length), true});
    i += match_length;
    segment_start = i;
  }
  if (segment_start < text.size()) segments.push_back({text.substr(segment_start), false});
  return segments;
}

// Python's str.replace.
void replace_all(std::string& text, std::string_view from, std::string_view to) {
  size_t position = 0;
  while ((position = text.find(from, position)) != std::string::npos) {
    text.replace(position, from.size(), to);
    position += to.size();
  }
}

// Python's str.strip() (see is_unicode_whitespace).
std::string strip_whitespace(std::string_view text) {
  const std::u32string chars = decode_utf8(text, "the decoded text");
  size_t begin = 0, end = chars.size();
  while (begin < end && is_unicode_whitespace(chars[begin])) ++begin;
  while (end > begin && is_unicode_whitespace(chars[end - 1])) --end;
  return encode_utf8(std::u32string_view(chars).substr(begin, end - begin));
}

// HF's truncate_sequences (truncation_side "right"). longest_first cuts the longer sequence
// down to the shorter one's length, then both in turn, the second first.
void truncate(std::vector<int64_t>& ids, std::optional<std::vector<int64_t>>& pair_ids,
              int64_t special_tokens, const EncodeOptions& options) {
  if (options.truncation == Truncation::none) return;
  ACCEL_CHECK(options.max_length.has_value(),
              "BertTokenizer: expected EncodeOptions::max_length with truncation, found none");
  const int64_t max_length = *options.max_length;
  const auto length_a = static_cast<int64_t>(ids.size());
  const auto length_b = pair_ids ? static_cast<int64_t>(pair_ids->size()) : int64_t{0};
  const int64_t excess = length_a + length_b + special_tokens - max_length;
  if (excess <= 0) return;
  ACCEL_CHECK(max_length >= special_tokens,
              "BertTokenizer: expected max_length to leave room for the ", special_tokens,
              " special tokens, found max_length ", max_length);

  if (options.truncation == Truncation::only_second) {
    ACCEL_CHECK(pair_ids.has_value(),
                "BertTokenizer: expected a text pair with only_second truncation, found one text");
    ACCEL_CHECK(excess <= length_b, "BertTokenizer: only_second truncation to max_length ",
                max_length, " must remove ", excess, " tokens, but the second text has only ",
                length_b, "; raise max_length or use longest_first");
    pair_ids->resize(length_b - excess);
    return;
  }
  const int64_t first_remove = std::min(std::abs(length_b - length_a), excess);
  const int64_t second_remove = excess - first_remove;
  int64_t remove_a, remove_b;
  if (length_a > length_b) {
    remove_a = first_remove + second_remove / 2;
    remove_b = second_remove - second_remove / 2;
  } else {
    remove_a = second_remove / 2;
    remove_b = first_remove + second_remove - second_remove / 2;
  }
  ids.resize(length_a - remove_a);
  if (pair_ids) pair_ids->resize(length_b - remove_b);
}

void pad_to(Encoding& encoding, size_t length, int64_t pad_id) {
  if (encoding.input_ids.size() >= length) return;
  encoding.input_ids.resize(length, pad_id);
  encoding.token_type_ids.resize(length, 0);
  encoding.attention_mask.resize(length, 0);
}

// ---- loading ----

struct LoadedTokenizer {
  std::vector<std::string> vocab;
  BertTokenizerOptions options;
};

std::string read_file(const std::filesystem::path& path, std::string_view what) {
  ACCEL_CHECK(std::filesystem::is_regular_file(path), "BertTokenizer: expected ", what, " at '",
              path.string(), "', found no such file");
  std::ifstream in(path, std::ios::binary);
  ACCEL_CHECK(in.good(), "BertTokenizer: expected ", what, " at '", path.string(),
              "' to be readable, found it cannot be opened");
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// HF load_vocab: one token a line, ids from 0. A trailing '\r' is dropped, as Python's
// universal newlines do.
std::vector<std::string> read_vocab_txt(const std::filesystem::path& path) {
  std::istringstream lines(read_file(path, "a vocab file"));
  std::vector<std::string> vocab;
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    vocab.push_back(line);
  }
  return vocab;
}

// Runs `read` and adds `path` to the message of any Error it throws.
template <typename Read>
auto with_source(const std::filesystem::path& path, Read&& read) {
  try {
    return read();
  } catch (const Error& e) {
    ACCEL_FAIL(e.what(), " (in '", path.string(), "')");
  }
}

json parse_json(const std::filesystem::path& path, std::string_view what) {
  const std::string text = read_file(path, what);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e9999
    ACCEL_FAIL("BertTokenizer: expected ", what, " at '", path.string(),
               "' to be valid JSON, found a parse error: ", e.what());
  }
}

// The value at parent[key] when it has the JSON type `expected` ("object", "string", ...).
const json& require(const json& parent, std::string_view parent_name, const char* key,
                    std::string_view expected) {
  const std::string name = parent_name.empty() ? key : std::string(parent_name) + "." + key;
  ACCEL_CHECK(parent.contains(key), "BertTokenizer: expected field '", name, "', found none");
  const json& value = parent.at(key);
  ACCEL_CHECK(value.type_name() == expected, "BertTokenizer: expected field '", name, "' to be ",
              expected, ", found ", value.type_name(), " ", value.dump());
  return value;
}

// The value at parent[key] when present and not null.
template <typename T>
std::optional<T> optional_field(const json& parent, std::string_view parent_name, const char* key,
                                std::string_view expected) {
  if (!parent.contains(key) || parent.at(key).is_null()) return std::nullopt;
  return require(parent, parent_name, key, expected).template get<T>();
}

std::string type_of(const json& section, std::string_view name) {
  if (section.is_null()) return "null";
  return require(section, name, "type", "string").get<std::string>();
}

LoadedTokenizer tokenizer_from_json(const json& root) {
  ACCEL_CHECK(root.is_object(), "BertTokenizer: expected a JSON object, found ", root.type_name());
  LoadedTokenizer loaded;
  BertTokenizerOptions& options = loaded.options;

  const json& model = require(root, "", "model", "object");
  const std::string model_type = type_of(model, "model");
  ACCEL_CHECK(model_type == "WordPiece",
              "BertTokenizer: expected model.type \"WordPiece\", found \"", model_type, "\"");
  const json& vocab = require(model, "model", "vocab", "object");
  loaded.vocab.resize(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  for (const auto& [token, id_value] : vocab.items()) {
    ACCEL_CHECK(id_value.is_number_integer(), "BertTokenizer: expected model.vocab[\"", token,
                "\"] to be an integer id, found ", id_value.dump());
    const auto id = id_value.get<int64_t>();
    ACCEL_CHECK(id >= 0 && id < static_cast<int64_t>(vocab.size()) && !seen[id],
                "BertTokenizer: expected model.vocab ids to be 0..", vocab.size() - 1,
                " each once, found id ", id, " for \"", token, "\"");
    seen[id] = true;
    loaded.vocab[id] = token;
  }
  options.unk_token = require(model, "model", "unk_token", "string").get<std::string>();
  options.continuing_subword_prefix =
      optional_field<std::string>(model, "model", "continuing_subword_prefix", "string")
          .value_or(options.continuing_subword_prefix);
  options.max_input_chars_per_word =
      optional_field<int64_t>(model, "model", "max_input_chars_per_word", "number")
          .value_or(options.max_input_chars_per_word);

  const json normalizer = root.value("normalizer", json());
  const std::string normalizer_type = type_of(normalizer, "normalizer");
  if (normalizer_type == "BertNormalizer") {
    auto flag = [&](const char* key) {
      return optional_field<bool>(normalizer, "normalizer", key, "boolean");
    };
    options.clean_text = flag("clean_text").value_or(true);
    options.tokenize_chinese_chars = flag("handle_chinese_chars").value_or(true);
    options.strip_accents = flag("strip_accents");
    options.lowercase = flag("lowercase").value_or(true);
  } else {
    ACCEL_CHECK(
        normalizer_type == "null",
        "BertTokenizer: expected normalizer.type \"BertNormalizer\" or a null normalizer, found \"",
        normalizer_type, "\"");
    options.clean_text = false;
    options.tokenize_chinese_chars = false;
    options.strip_accents = false;
    options.lowercase = false;
  }

  const std::string pre_tokenizer_type =
      type_of(root.value("pre_tokenizer", json()), "pre_tokenizer");
  if (pre_tokenizer_type == "BertPreTokenizer") {
    options.pre_tokenizer = PreTokenizer::bert;
  } else {
    ACCEL_CHECK(pre_tokenizer_type == "Whitespace",
                "BertTokenizer: expected pre_tokenizer.type \"BertPreTokenizer\" or "
                "\"Whitespace\", found \"",
                pre_tokenizer_type, "\"");
    options.pre_tokenizer = PreTokenizer::whitespace;
  }

  options.added_tokens.clear();
  const json no_added_tokens = json::array();
  const json& added_tokens =
      root.contains("added_tokens") ? require(root, "", "added_tokens", "array") : no_added_tokens;
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const std::string name = "added_tokens[" + std::to_string(i) + "]";
    const auto content = require(added_tokens[i], name, "content", "string").get<std::string>();
    const auto id = require(added_tokens[i], name, "id", "number").get<int64_t>();
    ACCEL_CHECK(
        id >= 0 && id < static_cast<int64_t>(loaded.vocab.size()) && loaded.vocab[id] == content,
        "BertTokenizer: expected ", name, " \"", content,
        "\" to have its model.vocab id, found id ", id);
    options.added_tokens.push_back(content);
  }
  return loaded;
}

LoadedTokenizer read_tokenizer_json(const std::filesystem::path& path) {
  const json root = parse_json(path, "a tokenizer.json");
  return with_source(path, [&] { return tokenizer_from_json(root); });
}

// tokenizer_config.json's word on lower-casing, accents and CJK splitting overrides the rest.
void apply_config_fields(const json& config, BertTokenizerOptions& options) {
  if (const auto lowercase = optional_field<bool>(config, "", "do_lower_case", "boolean")) {
    options.lowercase = *lowercase;
  }
  if (config.contains("strip_accents")) {
    options.strip_accents = optional_field<bool>(config, "", "strip_accents", "boolean");
  }
  if (const auto chinese = optional_field<bool>(config, "", "tokenize_chinese_chars", "boolean")) {
    options.tokenize_chinese_chars = *chinese;
  }
}

void apply_tokenizer_config(const std::filesystem::path& path, BertTokenizerOptions& options) {
  const json config = parse_json(path, "a tokenizer_config.json");
  with_source(path, [&] { apply_config_fields(config, options); });
}

}  // namespace

// ---- construction ----

BertTokenizer::BertTokenizer(std::vector<std::string> vocab, BertTokenizerOptions options)
    : options_(std::move(options)), id_to_token_(std::move(vocab)) {
  for (size_t id = 0; id < id_to_token_.size(); ++id) {
    decode_utf8(id_to_token_[id], "vocab token " + std::to_string(id));
    token_to_id_[id_to_token_[id]] = static_cast<int64_t>(id);
  }
  auto required_id = [&](const char* role, const std::string& token) {
    const auto found = token_to_id_.find(token);
    ACCEL_CHECK(found != token_to_id_.end(), "BertTokenizer: expected the vocab to contain the ",
                role, " \"", token, "\", found ", id_to_token_.size(), " tokens without it");
    return found->second;
  };
  unk_id_ = required_id("unk_token", options_.unk_token);
  cls_id_ = required_id("cls_token", options_.cls_token);
  sep_id_ = required_id("sep_token", options_.sep_token);
  pad_id_ = required_id("pad_token", options_.pad_token);
  if (const auto mask = token_to_id_.find(options_.mask_token); mask != token_to_id_.end()) {
    mask_id_ = mask->second;
  }
  special_ids_ = {unk_id_, cls_id_, sep_id_, pad_id_};
  if (mask_id_) special_ids_.push_back(*mask_id_);
  for (const std::string& token : options_.added_tokens) {
    ACCEL_CHECK(!token.empty(), "BertTokenizer: expected non-empty added tokens, found \"\"");
    added_tokens_.push_back(decode_utf8(token, "added token \"" + token + "\""));
    if (const auto found = token_to_id_.find(token); found != token_to_id_.end()) {
      special_ids_.push_back(found->second);
    }
  }
}

BertTokenizer BertTokenizer::from_vocab(const std::string& path, bool lowercase) {
  BertTokenizerOptions options;
  options.lowercase = lowercase;
  return from_vocab(path, std::move(options));
}

BertTokenizer BertTokenizer::from_vocab(const std::string& path, BertTokenizerOptions options) {
  std::vector<std::string> vocab = read_vocab_txt(path);
  return with_source(path, [&] { return BertTokenizer(std::move(vocab), std::move(options)); });
}

BertTokenizer BertTokenizer::from_tokenizer_json(const std::string& path) {
  LoadedTokenizer loaded = read_tokenizer_json(path);
  return with_source(
      path, [&] { return BertTokenizer(std::move(loaded.vocab), std::move(loaded.options)); });
}

BertTokenizer BertTokenizer::from_pretrained(const std::string& dir) {
  const std::filesystem::path root(dir);
  ACCEL_CHECK(std::filesystem::is_directory(root), "BertTokenizer: expected a model directory at '",
              dir, "', found no such directory");
  const std::filesystem::path tokenizer_json = root / "tokenizer.json";
  const std::filesystem::path vocab_txt = root / "vocab.txt";
  ACCEL_CHECK(std::filesystem::exists(tokenizer_json) || std::filesystem::exists(vocab_txt),
              "BertTokenizer: expected tokenizer.json or vocab.txt in '", dir, "', found neither");
  LoadedTokenizer loaded;
  if (std::filesystem::exists(tokenizer_json)) {
    loaded = read_tokenizer_json(tokenizer_json);
  } else {
    loaded.vocab = read_vocab_txt(vocab_txt);
  }
  if (const auto config = root / "tokenizer_config.json"; std::filesystem::exists(config)) {
    apply_tokenizer_config(config, loaded.options);
  }
  return with_source(
      root, [&] { return BertTokenizer(std::move(loaded.vocab), std::move(loaded.options)); });
}

// ---- tokenization ----

std::vector<std::string> BertTokenizer::tokenize(std::string_view text) const {
  const std::u32string chars = decode_utf8(text, "the input text");
  std::vector<std::string> tokens;
  for (const Segment& segment : split_on_added_tokens(chars, added_tokens_)) {
    if (segment.is_added_token) {
      tokens.push_back(encode_utf8(segment.text));
      continue;
    }
    for (const std::string& word : basic_tokenize(segment.text)) {
      if (is_never_split(word)) {
        tokens.push_back(word);
      } else {
        wordpiece(word, tokens);
      }
    }
  }
  return tokens;
}

bool BertTokenizer::is_never_split(std::string_view word) const {
  return std::find(options_.never_split.begin(), options_.never_split.end(), word) !=
         options_.never_split.end();
}

// HF BasicTokenizer.tokenize: clean, space out CJK, NFC, split on whitespace, then per word
// lower-case, strip accents and split off punctuation.
std::vector<std::string> BertTokenizer::basic_tokenize(std::u32string_view text) const {
  std::u32string prepared = options_.clean_text ? clean_text(text) : std::u32string(text);
  if (options_.tokenize_chinese_chars) prepared = space_chinese_chars(prepared);
  prepared = normalize(prepared, UTF8PROC_COMPOSE);
  const bool strip = options_.strip_accents.value_or(options_.lowercase);

  std::vector<std::string> words;
  for (std::u32string word : split_on_whitespace(prepared)) {
    std::string word_utf8 = encode_utf8(word);
    if (is_never_split(word_utf8)) {
      words.push_back(std::move(word_utf8));
      continue;
    }
    if (options_.lowercase) word = python_lower(word);
    if (strip) word = strip_accents(word);
    const std::vector<std::u32string> pieces = options_.pre_tokenizer == PreTokenizer::bert
                                                   ? split_on_punctuation(word)
                                                   : split_word_runs(word);
    for (const std::u32string& piece : pieces) words.push_back(encode_utf8(piece));
  }
  return words;
}

// HF WordpieceTokenizer.tokenize on one word: greedy longest match first, continuation pieces
// carry the prefix; a word with an unmatchable rest, or too long, becomes one unk_token.
void BertTokenizer::wordpiece(std::string_view word, std::vector<std::string>& out) const {
  std::vector<size_t> char_starts;  // byte offset of each code point, then word.size()
  for (size_t i = 0; i < word.size(); ++i) {
    if ((static_cast<unsigned char>(word[i]) & 0xC0) != 0x80) char_starts.push_back(i);
  }
  const size_t num_chars = char_starts.size();
  char_starts.push_back(word.size());
  if (static_cast<int64_t>(num_chars) > options_.max_input_chars_per_word) {
    out.push_back(options_.unk_token);
    return;
  }
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < num_chars) {
    std::string match;
    size_t end = num_chars;
    for (; end > start; --end) {
      std::string candidate = start > 0 ? options_.continuing_subword_prefix : std::string();
      candidate += word.substr(char_starts[start], char_starts[end] - char_starts[start]);
      if (token_to_id_.contains(candidate)) {
        match = std::move(candidate);
        break;
      }
    }
    if (end == start) {
      out.push_back(options_.unk_token);
      return;
    }
    pieces.push_back(std::move(match));
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

int64_t BertTokenizer::token_to_id(std::string_view token) const {
  const auto found = token_to_id_.find(std::string(token));
  return found == token_to_id_.end() ? unk_id_ : found->second;
}

const std::string& BertTokenizer::id_to_token(int64_t id) const {
  ACCEL_CHECK(id >= 0 && id < vocab_size(), "BertTokenizer: expected a token id in [0, ",
              vocab_size(), "), found ", id);
  return id_to_token_[id];
}

std::vector<int64_t> BertTokenizer::convert_tokens_to_ids(
    const std::vector<std::string>& tokens) const {
  std::vector<int64_t> ids;
  ids.reserve(tokens.size());
  for (const std::string& token : tokens) ids.push_back(token_to_id(token));
  return ids;
}

std::vector<std::string> BertTokenizer::convert_ids_to_tokens(
    const std::vector<int64_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) tokens.push_back(id_to_token(id));
  return tokens;
}

// ---- encoding ----

Encoding BertTokenizer::encode(std::string_view text, std::optional<std::string_view> text_pair,
                               const EncodeOptions& options) const {
  // Checked before use: a negative length would become a huge size_t in the padding.
  ACCEL_CHECK(!options.max_length || *options.max_length >= 0,
              "BertTokenizer: expected EncodeOptions::max_length >= 0, found ", *options.max_length);
  std::vector<int64_t> ids = convert_tokens_to_ids(tokenize(text));
  std::optional<std::vector<int64_t>> pair_ids;
  if (text_pair) pair_ids = convert_tokens_to_ids(tokenize(*text_pair));

  const int64_t special_tokens = options.add_special_tokens ? (pair_ids ? 3 : 2) : 0;
  truncate(ids, pair_ids, special_tokens, options);

  // HF prepare_for_model: type 1 marks the second text only when special tokens are added.
  Encoding encoding;
  const int64_t second_type = options.add_special_tokens ? 1 : 0;
  auto append = [&](const std::vector<int64_t>& part, int64_t type) {
    encoding.input_ids.insert(encoding.input_ids.end(), part.begin(), part.end());
    encoding.token_type_ids.insert(encoding.token_type_ids.end(), part.size(), type);
  };
  if (options.add_special_tokens) append({cls_id_}, 0);
  append(ids, 0);
  if (options.add_special_tokens) append({sep_id_}, 0);
  if (pair_ids) {
    append(*pair_ids, second_type);
    if (options.add_special_tokens) append({sep_id_}, second_type);
  }
  encoding.attention_mask.assign(encoding.input_ids.size(), 1);

  if (options.padding == Padding::max_length) {
    ACCEL_CHECK(
        options.max_length.has_value(),
        "BertTokenizer: expected EncodeOptions::max_length with Padding::max_length, found none");
    pad_to(encoding, static_cast<size_t>(*options.max_length), pad_id_);
  }
  return encoding;
}

BatchEncoding BertTokenizer::encode_batch(const std::vector<std::string>& texts,
                                          const EncodeOptions& options) const {
  return encode_rows(texts, nullptr, options);
}

BatchEncoding BertTokenizer::encode_batch(const std::vector<std::string>& texts,
                                          const std::vector<std::string>& text_pairs,
                                          const EncodeOptions& options) const {
  ACCEL_CHECK(text_pairs.size() == texts.size(), "BertTokenizer: expected one text pair per text (",
              texts.size(), "), found ", text_pairs.size());
  return encode_rows(texts, &text_pairs, options);
}

BatchEncoding BertTokenizer::encode_rows(const std::vector<std::string>& texts,
                                         const std::vector<std::string>* text_pairs,
                                         const EncodeOptions& options) const {
  std::vector<Encoding> rows;
  rows.reserve(texts.size());
  size_t width = 0;
  for (size_t row = 0; row < texts.size(); ++row) {
    std::optional<std::string_view> pair;
    if (text_pairs) pair = (*text_pairs)[row];
    rows.push_back(encode(texts[row], pair, options));
    width = std::max(width, rows.back().input_ids.size());
  }
  if (options.padding == Padding::max_length) {
    const auto max_length = static_cast<size_t>(*options.max_length);
    ACCEL_CHECK(width <= max_length, "BertTokenizer: expected batch rows of at most max_length ",
                max_length, " tokens, found a row of ", width, "; enable truncation");
    width = max_length;
  }
  BatchEncoding batch;
  for (Encoding& row : rows) {
    pad_to(row, width, pad_id_);
    batch.input_ids.push_back(std::move(row.input_ids));
    batch.token_type_ids.push_back(std::move(row.token_type_ids));
    batch.attention_mask.push_back(std::move(row.attention_mask));
  }
  return batch;
}

// ---- decoding ----

// HF _decode + convert_tokens_to_string + clean_up_tokenization.
std::string BertTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens,
                                  bool clean_up_tokenization_spaces) const {
  // Python's " ".join(tokens): empty tokens still get their separator.
  std::string text;
  bool first = true;
  for (int64_t id : ids) {
    const std::string& token = id_to_token(id);
    if (skip_special_tokens &&
        std::find(special_ids_.begin(), special_ids_.end(), id) != special_ids_.end()) {
      continue;
    }
    if (!first) text += ' ';
    text += token;
    first = false;
  }
  replace_all(text, " " + options_.continuing_subword_prefix, "");
  text = strip_whitespace(text);
  if (clean_up_tokenization_spaces) {
    static constexpr std::pair<std::string_view, std::string_view> kCleanups[] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kCleanups) replace_all(text, from, to);
  }
  return text;
}

}  // namespace accel::models
