// File readers for text classification data: TSV (GLUE style, no quotes), CSV (RFC 4180
// quotes) and JSON Lines, plus the GLUE MRPC and SST-2 layouts on top of the TSV reader.
//
// Common rules: a UTF-8 BOM at the start of the file is dropped, lines end in LF or CRLF,
// empty lines are ignored, the first row of TSV/CSV is the header. A bad row (wrong column
// count, a label that does not parse, a malformed quote) is an accel::Error that names the
// file and the 1-based line, or, with skip_bad_rows, is skipped and counted in skipped_rows.
// Not here: tokenization (map_examples) and batching (data.cc).
#include <algorithm>
#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>

#include "accelerate/data.h"
#include "core/error.h"

namespace accel::data {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ACCEL_CHECK(in, "cannot open data file \"", path, "\"");
  std::ostringstream content;
  content << in.rdbuf();
  std::string text = content.str();
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (text.starts_with(kBom)) text.erase(0, kBom.size());
  return text;
}

std::string_view trim(std::string_view text) {
  const char* kSpace = " \t\r\n";
  size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kSpace) - begin + 1);
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "\"" : ", \"") + name + "\"";
  return out;
}

// The largest class index a reader accepts. The classifier gets (largest label + 1) outputs,
// so a stray huge number (found by fuzz/fuzz_tsv: 2222222222222222221) would otherwise ask
// for a head of that many classes, and above 2^53 the label would not even survive as a double.
constexpr int64_t kMaxClassIndex = (int64_t{1} << 24) - 1;

// Collects examples, parses labels, and applies the bad-row policy.
class DatasetBuilder {
 public:
  DatasetBuilder(const std::string& path, const TableOptions& options) : options_(options) {
    ACCEL_CHECK(options.text_columns.size() == 1 || options.text_columns.size() == 2, path,
                ": expected one or two text columns but got ", options.text_columns.size());
    dataset_.source = path;
  }

  // A row that cannot be used: an error, or skipped and counted with skip_bad_rows.
  void bad_row(int64_t line, const std::string& problem) {
    ACCEL_CHECK(options_.skip_bad_rows, dataset_.source, ":", line, ": ", problem);
    ++dataset_.skipped_rows;
  }

  void add(int64_t line, std::string text_a, std::optional<std::string> text_b, std::string_view label_text) {
    std::optional<double> label = parse_label(trim(label_text));
    if (!label) {
      bad_row(line, "label \"" + std::string(label_text) + "\" is not " +
                        (options_.regression ? "a number"
                                             : "an integer class index (0, 1, 2, ... at most " +
                                                   std::to_string(kMaxClassIndex) + ")"));
      return;
    }
    dataset_.examples.push_back({std::move(text_a), std::move(text_b), *label});
  }

  TextDataset finish() {
    if (options_.regression) {
      dataset_.num_labels = 1;
    } else {
      double max_label = 1;  // at least two classes
      for (const auto& example : dataset_.examples) max_label = std::max(max_label, example.label);
      dataset_.num_labels = static_cast<int64_t>(max_label) + 1;
    }
    return std::move(dataset_);
  }

 private:
  std::optional<double> parse_label(std::string_view text) const {
    const char* end = text.data() + text.size();
    if (options_.regression) {
      double value = 0;
      auto [ptr, error] = std::from_chars(text.data(), end, value);
      if (text.empty() || error != std::errc() || ptr != end) return std::nullopt;
      return value;
    }
    int64_t value = 0;
    auto [ptr, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || error != std::errc() || ptr != end || value < 0 || value > kMaxClassIndex) return std::nullopt;
    return static_cast<double>(value);
  }

  TableOptions options_;
  TextDataset dataset_;
};

// One record of a delimited file: its first line and its fields, or why it could not be split.
struct Record {
  int64_t line = 0;
  std::vector<std::string> fields;
  std::string error;
};

// TSV: split every line on tabs, no quote handling (GLUE's strings hold raw quotes).
std::vector<Record> split_tsv(const std::string& text) {
  std::vector<Record> records;
  int64_t line_number = 0;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = std::min(text.find('\n', begin), text.size());
    std::string_view line(text.data() + begin, end - begin);
    ++line_number;
    begin = end + 1;
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.empty()) continue;
    Record record{line_number, {}, {}};
    size_t field_begin = 0;
    while (true) {
      size_t tab = line.find('\t', field_begin);
      record.fields.emplace_back(line.substr(field_begin, tab - field_begin));
      if (tab == std::string_view::npos) break;
      field_begin = tab + 1;
    }
    records.push_back(std::move(record));
  }
  return records;
}

// CSV per RFC 4180: a field in double quotes may hold commas, newlines and "" for a quote.
// A quote inside an unquoted field is taken literally (as Python's csv module does). An
// unclosed quote would swallow the rest of the file, so it is an error even with skip_bad_rows.
std::vector<Record> split_csv(const std::string& text, const std::string& path) {
  std::vector<Record> records;
  int64_t line_number = 1;
  size_t pos = 0;
  while (pos < text.size()) {
    Record record{line_number, {}, {}};
    std::string field;
    bool record_done = false;
    while (!record_done) {
      size_t quoted_length = 0;  // a '\r' inside the quotes is data, not a line ending
      if (pos < text.size() && text[pos] == '"') {  // quoted field
        int64_t quote_line = line_number;
        ++pos;
        while (true) {
          ACCEL_CHECK(pos < text.size(), path, ":", quote_line, ": quoted field is not closed before the end of the file");
          if (text[pos] == '"') {
            if (pos + 1 < text.size() && text[pos + 1] == '"') {
              field += '"';
              pos += 2;
              continue;
            }
            ++pos;
            break;
          }
          if (text[pos] == '\n') ++line_number;
          field += text[pos++];
        }
        quoted_length = field.size();
        bool at_end = pos >= text.size() || text[pos] == ',' || text[pos] == '\n' ||
                      (text[pos] == '\r' && (pos + 1 == text.size() || text[pos + 1] == '\n'));
        if (!at_end && record.error.empty()) {
          record.error = std::string("expected ',' or the end of the line after a closing quote but found '") +
                         text[pos] + "'";
        }
      }
      // Unquoted text up to the next delimiter (also the tail after a malformed closing quote).
      while (pos < text.size() && text[pos] != ',' && text[pos] != '\n') field += text[pos++];
      if (pos >= text.size() || text[pos] == '\n') {
        if (field.size() > quoted_length && field.ends_with('\r')) field.pop_back();
        record_done = true;
        ++line_number;
      }
      ++pos;  // past ',' or '\n'
      record.fields.push_back(std::move(field));
      field.clear();
    }
    bool blank = record.fields.size() == 1 && record.fields[0].empty() && record.error.empty();
    if (!blank) records.push_back(std::move(record));
  }
  return records;
}

// Builds a dataset from a header record and data records of a delimited file.
TextDataset table_dataset(const std::string& path, std::vector<Record> records, const TableOptions& options,
                          const char* separator_name) {
  DatasetBuilder builder(path, options);
  ACCEL_CHECK(!records.empty(), path, ": expected a header row but the file is empty");
  const std::vector<std::string>& header = records[0].fields;
  auto column_index = [&](const std::string& name) {
    auto it = std::find(header.begin(), header.end(), name);
    ACCEL_CHECK(it != header.end(), path, ": no column \"", name, "\"; the columns are ", quoted_list(header));
    return static_cast<size_t>(it - header.begin());
  };
  size_t text_a = column_index(options.text_columns[0]);
  std::optional<size_t> text_b;
  if (options.text_columns.size() == 2) text_b = column_index(options.text_columns[1]);
  size_t label = column_index(options.label_column);

  for (size_t r = 1; r < records.size(); ++r) {
    Record& record = records[r];
    if (!record.error.empty()) {
      builder.bad_row(record.line, record.error);
    } else if (record.fields.size() != header.size()) {
      builder.bad_row(record.line, "expected " + std::to_string(header.size()) + " " + separator_name +
                                       " columns but found " + std::to_string(record.fields.size()));
    } else {
      std::optional<std::string> second;
      if (text_b) second = std::move(record.fields[*text_b]);
      builder.add(record.line, std::move(record.fields[text_a]), std::move(second), record.fields[label]);
    }
  }
  return builder.finish();
}

std::string json_keys(const nlohmann::json& object) {
  std::vector<std::string> keys;
  for (const auto& item : object.items()) keys.push_back(item.key());
  return keys.empty() ? "(none)" : quoted_list(keys);
}

}  // namespace

TextDataset read_tsv(const std::string& path, const TableOptions& options) {
  return table_dataset(path, split_tsv(read_file(path)), options, "tab-separated");
}

TextDataset read_csv(const std::string& path, const TableOptions& options) {
  return table_dataset(path, split_csv(read_file(path), path), options, "comma-separated");
}

TextDataset read_jsonl(const std::string& path, const TableOptions& options) {
  DatasetBuilder builder(path, options);
  std::istringstream lines(read_file(path));
  std::string line;
  for (int64_t line_number = 1; std::getline(lines, line); ++line_number) {
    if (trim(line).empty()) continue;
    nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!object.is_object()) {
      builder.bad_row(line_number, object.is_discarded() ? "expected a JSON object but the line is not valid JSON"
                                                         : "expected a JSON object but found " +
                                                               std::string(object.type_name()));
      continue;
    }
    // The text fields as strings; the label as a number or a string holding one.
    std::vector<std::string> texts;
    std::string problem;
    for (const auto& name : options.text_columns) {
      auto it = object.find(name);
      if (it == object.end()) {
        problem = "no field \"" + name + "\"; the fields are " + json_keys(object);
      } else if (!it->is_string()) {
        problem = "field \"" + name + "\" should be a string but is " + std::string(it->type_name());
      } else {
        texts.push_back(it->get<std::string>());
        continue;
      }
      break;
    }
    auto label = object.find(options.label_column);
    if (problem.empty() && label == object.end()) {
      problem = "no field \"" + options.label_column + "\"; the fields are " + json_keys(object);
    } else if (problem.empty() && !label->is_number() && !label->is_string()) {
      problem = "label should be a number but is " + std::string(label->type_name());
    }
    if (!problem.empty()) {
      builder.bad_row(line_number, problem);
      continue;
    }
    std::string label_text = label->is_string() ? label->get<std::string>() : label->dump();
    std::optional<std::string> text_b;
    if (texts.size() == 2) text_b = std::move(texts[1]);
    builder.add(line_number, std::move(texts[0]), std::move(text_b), label_text);
  }
  return builder.finish();
}

TextDataset read_glue_mrpc(const std::string& path, bool skip_bad_rows) {
  TableOptions options;
  options.text_columns = {"#1 String", "#2 String"};
  options.label_column = "Quality";
  options.skip_bad_rows = skip_bad_rows;
  return read_tsv(path, options);
}

TextDataset read_glue_sst2(const std::string& path, bool skip_bad_rows) {
  TableOptions options;
  options.text_columns = {"sentence"};
  options.label_column = "label";
  options.skip_bad_rows = skip_bad_rows;
  return read_tsv(path, options);
}

}  // namespace accel::data
