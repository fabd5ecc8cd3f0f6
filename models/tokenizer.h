/// @file
/// models/tokenizer.h: BERT's WordPiece tokenizer, token for token equal to Hugging Face's
/// pure-Python BertTokenizer (BasicTokenizer + WordpieceTokenizer): text clean-up, CJK
/// splitting, NFC, lower-casing with Python's str.lower() rules, accent stripping, punctuation
/// splitting and greedy longest-match-first WordPiece. Unicode properties come from utf8proc.
/// It loads a vocab.txt or a Hugging Face tokenizer.json with a WordPiece model, and encodes
/// single texts, pairs and batches with truncation and padding.
///
/// Whatever the source, the pipeline is the slow tokenizer's (NFC included); a tokenizer.json
/// only sets its options. Where HF cannot honour max_length (truncation would have to remove
/// more tokens than there are) it logs and returns a longer sequence; this throws instead.
///
/// What it is not: a general tokenizer.json runtime (it reads a WordPiece model, a
/// BertNormalizer or none, and a BertPreTokenizer or Whitespace pre-tokenizer; anything else is
/// refused with an error), nor a trainer, nor an offset mapper.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace accel::models {

/// How a whitespace-separated word is cut before WordPiece (tokenizer.json's pre_tokenizer).
enum class PreTokenizer {
  bert,        ///< BertPreTokenizer / BasicTokenizer: every punctuation character stands alone
  whitespace,  ///< Whitespace: runs of word characters and runs of other characters
};

struct BertTokenizerOptions {
  bool lowercase = true;               ///< HF do_lower_case
  std::optional<bool> strip_accents;   ///< unset: strip exactly when lowercasing, as HF
  bool clean_text = true;              ///< drop NUL, U+FFFD and controls; whitespace -> ' '
  bool tokenize_chinese_chars = true;  ///< put spaces around CJK ideographs
  PreTokenizer pre_tokenizer = PreTokenizer::bert;
  std::string unk_token = "[UNK]";
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  std::string pad_token = "[PAD]";
  std::string mask_token = "[MASK]";  // optional in the vocab; the other four are required
  std::string continuing_subword_prefix = "##";
  int64_t max_input_chars_per_word = 100;  ///< longer words become unk_token
  /// Matched verbatim in the raw text, before any normalization, and kept whole (HF's added
  /// tokens). from_tokenizer_json replaces them with the file's "added_tokens".
  std::vector<std::string> added_tokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  /// Whitespace-separated words kept as they are: not lowercased, split or WordPiece'd.
  std::vector<std::string> never_split;
};

enum class Truncation { none, longest_first, only_second };
enum class Padding { none, longest, max_length };

struct EncodeOptions {
  bool add_special_tokens = true;  ///< [CLS] A [SEP] (B [SEP])
  Truncation truncation = Truncation::none;
  Padding padding = Padding::none;    ///< on a single encode, `longest` changes nothing
  std::optional<int64_t> max_length;  ///< required by truncation and by Padding::max_length
};

struct Encoding {
  std::vector<int64_t> input_ids;       ///< (T)
  std::vector<int64_t> token_type_ids;  ///< (T) 0 for [CLS] A [SEP], 1 for B [SEP]
  std::vector<int64_t> attention_mask;  ///< (T) 1 for tokens, 0 for padding
};

struct BatchEncoding {
  std::vector<std::vector<int64_t>> input_ids;       ///< (B, T), padded on the right
  std::vector<std::vector<int64_t>> token_type_ids;  ///< (B, T)
  std::vector<std::vector<int64_t>> attention_mask;  ///< (B, T)
};

class BertTokenizer {
 public:
  /// `vocab[i]` is the token with id i.
  BertTokenizer(std::vector<std::string> vocab, BertTokenizerOptions options = {});

  /// vocab.txt: one token a line, the line number (from 0) is its id.
  static BertTokenizer from_vocab(const std::string& path, bool lowercase = true);
  static BertTokenizer from_vocab(const std::string& path, BertTokenizerOptions options);
  /// A Hugging Face tokenizer.json whose model is WordPiece.
  static BertTokenizer from_tokenizer_json(const std::string& path);
  /// A model directory: tokenizer.json if present, else vocab.txt; tokenizer_config.json's
  /// do_lower_case, strip_accents and tokenize_chinese_chars override when present.
  static BertTokenizer from_pretrained(const std::string& dir);

  std::vector<std::string> tokenize(std::string_view text) const;
  std::vector<int64_t> convert_tokens_to_ids(const std::vector<std::string>& tokens) const;
  std::vector<std::string> convert_ids_to_tokens(const std::vector<int64_t>& ids) const;

  Encoding encode(std::string_view text, std::optional<std::string_view> text_pair = std::nullopt,
                  const EncodeOptions& options = {}) const;
  /// Rows are padded to a rectangle: to max_length under Padding::max_length, else to the
  /// longest row.
  BatchEncoding encode_batch(const std::vector<std::string>& texts,
                             const EncodeOptions& options = {}) const;
  BatchEncoding encode_batch(const std::vector<std::string>& texts,
                             const std::vector<std::string>& text_pairs,
                             const EncodeOptions& options = {}) const;

  /// Joins tokens with spaces and glues "##" pieces to their word; the clean-up then removes
  /// the spaces HF removes before punctuation and contractions (" ," " n't" ...).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false,
                     bool clean_up_tokenization_spaces = true) const;

  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  int64_t token_to_id(std::string_view token) const;  ///< unk_token_id() when absent
  const std::string& id_to_token(int64_t id) const;
  int64_t unk_token_id() const { return unk_id_; }
  int64_t cls_token_id() const { return cls_id_; }
  int64_t sep_token_id() const { return sep_id_; }
  int64_t pad_token_id() const { return pad_id_; }
  std::optional<int64_t> mask_token_id() const { return mask_id_; }
  const BertTokenizerOptions& options() const { return options_; }

 private:
  std::vector<std::string> basic_tokenize(std::u32string_view text) const;
  void wordpiece(std::string_view word, std::vector<std::string>& out) const;
  bool is_never_split(std::string_view word) const;
  BatchEncoding encode_rows(const std::vector<std::string>& texts,
                            const std::vector<std::string>* text_pairs,
                            const EncodeOptions& options) const;

  BertTokenizerOptions options_;
  std::vector<std::string> id_to_token_;
  /// A token listed twice in vocab.txt maps to its last line, as in HF.
  std::unordered_map<std::string, int64_t> token_to_id_;
  std::vector<std::u32string> added_tokens_;  ///< options_.added_tokens as code points
  int64_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, pad_id_ = 0;
  std::optional<int64_t> mask_id_;
  std::vector<int64_t> special_ids_;  ///< what decode(skip_special_tokens) leaves out
};

}  // namespace accel::models
