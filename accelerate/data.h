/// @file
/// Data for fine-tuning: text datasets read from TSV, CSV and JSON Lines (with the GLUE MRPC
/// and SST-2 layouts built in), a map step that turns examples into token features, and a
/// DataLoader that shuffles with a seeded per-epoch order, batches with dynamic padding and
/// prefetches on a background thread. Sharding across processes follows Accelerate: whole
/// batches go round-robin to ranks, every rank shuffles identically, and with even_batches the
/// last round is padded with samples from the start (gather_for_metrics drops them again).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/ops.h"

namespace accel::data {

struct Example {
  std::string text_a;
  std::optional<std::string> text_b;  ///< sentence pairs (MRPC)
  double label = 0;                   ///< class index, or a regression target
};

struct TextDataset {
  std::string source;  ///< the file it came from, for messages
  std::vector<Example> examples;
  int64_t num_labels = 2;     ///< 1 for regression
  int64_t skipped_rows = 0;   ///< bad rows skipped with skip_bad_rows
};

struct TableOptions {
  std::vector<std::string> text_columns;  ///< one or two column names
  std::string label_column = "label";
  bool skip_bad_rows = false;  ///< otherwise a bad row is an error naming file and line
  bool regression = false;     ///< labels are real numbers, not class indices
};

/// Delimited text with a header row; no quote handling for TSV (as GLUE), RFC 4180 quotes for CSV.
TextDataset read_tsv(const std::string& path, const TableOptions& options);
TextDataset read_csv(const std::string& path, const TableOptions& options);
/// One JSON object per line; text columns are string fields, the label a number (or a string
/// holding an integer).
TextDataset read_jsonl(const std::string& path, const TableOptions& options);
/// GLUE layouts: MRPC "Quality #1 ID #2 ID #1 String #2 String" (UTF-8 BOM, raw quotes) and
/// SST-2 "sentence label".
TextDataset read_glue_mrpc(const std::string& path, bool skip_bad_rows = false);
TextDataset read_glue_sst2(const std::string& path, bool skip_bad_rows = false);

/// One tokenized example.
struct Features {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> token_type_ids;
  double label = 0;
};

/// The map step: applies `tokenize` to every example (in parallel threads, order kept).
std::vector<Features> map_examples(const TextDataset& dataset, const std::function<Features(const Example&)>& tokenize);

/// A padded batch; tensors on the CPU until moved.
struct Batch {
  Tensor input_ids;       ///< (B, T) int64, padded with pad_token_id
  Tensor attention_mask;  ///< (B, T) int64, 1 for tokens, 0 for padding
  Tensor token_type_ids;  ///< (B, T) int64
  Tensor labels;          ///< (B) int64 class indices, or float32 regression targets
  std::vector<int64_t> indices;  ///< dataset index of each row
  int64_t num_padding_samples = 0;  ///< trailing rows repeated to even out the last round
  Batch to(Device device) const;
};

/// Pads to the longest example in the batch.
Batch collate(const std::vector<const Features*>& rows, const std::vector<int64_t>& indices, int64_t pad_token_id,
              bool regression);

struct DataLoaderOptions {
  int64_t batch_size = 8;
  bool shuffle = false;
  bool drop_last = false;
  uint64_t seed = 0;       ///< the shuffle order of epoch e depends on (seed, e) only
  int64_t pad_token_id = 0;
  bool regression = false;
  bool prefetch = true;    ///< collate the next batch on a background thread
  /// Sharding (set by Accelerator::prepare): this rank's share of whole batches.
  int64_t num_processes = 1;
  int64_t process_index = 0;
  bool even_batches = true;
  Device device = kCPU;    ///< batches are moved here before they are yielded
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const std::vector<Features>> features, DataLoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// Batches this rank yields per epoch (len(dataloader) in PyTorch).
  int64_t size() const;
  int64_t dataset_size() const { return static_cast<int64_t>(features_->size()); }
  const DataLoaderOptions& options() const { return options_; }
  void set_options(const DataLoaderOptions& options);  ///< before iterating (prepare uses it)

  /// Starts epoch `epoch` (its shuffle order), optionally skipping its first batches (resume).
  void start_epoch(int64_t epoch, int64_t skip_batches = 0);
  /// The next batch of the current epoch, or nullopt at its end.
  std::optional<Batch> next();
  int64_t epoch() const { return epoch_; }
  int64_t batches_yielded() const { return position_; }  ///< in the current epoch

  /// The dataset order of epoch `epoch` (all ranks), exposed for tests.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  struct Plan;
  Batch make_batch(int64_t batch_index) const;  ///< collated, on the CPU
  void stop_prefetch();

  std::shared_ptr<const std::vector<Features>> features_;
  DataLoaderOptions options_;
  std::shared_ptr<Plan> plan_;  ///< this epoch's batches for this rank
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  /// Prefetch: a worker collates batch position_+1 while the caller uses batch position_.
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::optional<Batch> prefetched_;
  int64_t prefetched_index_ = -1;
  std::exception_ptr prefetch_error_;  ///< the worker's failure, rethrown by next()
  bool stop_ = false;                  ///< asks the worker to exit (stop_prefetch)
};

}  // namespace accel::data
