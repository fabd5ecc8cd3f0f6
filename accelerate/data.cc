// The map step, collation and the DataLoader (the file readers are in readers.cc).
//
// Epoch order. Without shuffle it is 0, 1, ..., N-1. With shuffle it is a Fisher-Yates
// shuffle driven by Philox (core/random.h), so it depends on (seed, epoch) only and every
// rank computes the same order without communicating:
//   key = seed ^ splitmix64(epoch);  order = [0, N)
//   for i = N-1 down to 1:  (w0, w1, w2, w3) = philox_block(key, i)
//                           j = ((w0 << 32) | w1) mod (i + 1);  swap(order[i], order[j])
//
// Sharding (Accelerate's BatchSamplerShard with split_batches=False). The epoch order is cut
// into consecutive batches of batch_size; global batch i goes to rank i % num_processes.
//   drop_last:     only full batches, and only complete rounds of num_processes of them
//                  (as Accelerate: every rank gets the same count, the rest is dropped).
//   even_batches:  the sequence of samples continues cyclically past the end of the order
//                  (sample p is order[p mod N]) until every rank has the same number of full
//                  batches; Batch::num_padding_samples counts those repeated samples.
//   otherwise:     the last batch may be short and some ranks get one batch fewer.
// A single process is not sharded (as in Accelerate): the last batch may be short.
//
// Prefetch. One worker thread per epoch collates batch k+1 while the caller works on batch
// k; prefetched_ is a one-slot queue guarded by mutex_. The move to the device happens in
// next(), on the caller's thread: a CUDA copy then runs on the caller's current device and
// stream, ordered before the kernels that read the batch (the worker's would be on its own).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <numeric>

#include "accelerate/data.h"
#include "core/error.h"
#include "core/random.h"
#include "core/trace.h"

namespace accel::data {
namespace {

constexpr size_t kMaxMapThreads = 8;
constexpr size_t kMinExamplesPerThread = 64;  // below this a thread costs more than it saves

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether the last round is filled up with samples from the start of the epoch.
bool pads_last_round(const DataLoaderOptions& options) {
  return options.even_batches && !options.drop_last && options.num_processes > 1;
}

void check_options(const DataLoaderOptions& options) {
  ACCEL_CHECK(options.batch_size > 0, "DataLoader: expected batch_size > 0 but got ", options.batch_size);
  ACCEL_CHECK(options.num_processes > 0, "DataLoader: expected num_processes > 0 but got ", options.num_processes);
  ACCEL_CHECK(options.process_index >= 0 && options.process_index < options.num_processes,
              "DataLoader: expected process_index in [0, ", options.num_processes, ") but got ",
              options.process_index);
}

// The number of batches rank options.process_index yields per epoch over n samples.
int64_t rank_batch_count(int64_t n, const DataLoaderOptions& options) {
  int64_t processes = options.num_processes;
  if (options.drop_last) return (n / options.batch_size) / processes;
  int64_t global_batches = ceil_div(n, options.batch_size);
  if (pads_last_round(options)) return ceil_div(global_batches, processes);
  return global_batches > options.process_index ? ceil_div(global_batches - options.process_index, processes) : 0;
}

}  // namespace

std::vector<Features> map_examples(const TextDataset& dataset, const std::function<Features(const Example&)>& tokenize) {
  const std::vector<Example>& examples = dataset.examples;
  size_t count = examples.size();
  std::vector<Features> features(count);
  size_t hardware = std::max<size_t>(1, std::thread::hardware_concurrency());
  size_t num_threads = std::clamp<size_t>(count / kMinExamplesPerThread, 1, std::min(hardware, kMaxMapThreads));

  // Thread t maps the contiguous chunk [count*t/num_threads, count*(t+1)/num_threads), so the
  // output order is the input order. The first failure stops the others early and is rethrown.
  std::vector<std::exception_ptr> errors(num_threads);
  std::atomic<bool> failed{false};
  auto map_chunk = [&](size_t t) {
    try {
      for (size_t i = count * t / num_threads; i < count * (t + 1) / num_threads && !failed; ++i) {
        features[i] = tokenize(examples[i]);
      }
    } catch (...) {
      errors[t] = std::current_exception();
      failed = true;
    }
  };
  {
    std::vector<std::jthread> threads;  // joined at the end of this scope, also on a throw
    for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(map_chunk, t);
    map_chunk(0);
  }
  for (const auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  return features;
}

Batch collate(const std::vector<const Features*>& rows, const std::vector<int64_t>& indices, int64_t pad_token_id,
              bool regression) {
  ACCEL_CHECK(!rows.empty(), "collate: expected at least one row but got none");
  ACCEL_CHECK(indices.size() == rows.size(), "collate: expected one dataset index per row (", rows.size(),
              ") but got ", indices.size());
  int64_t batch = static_cast<int64_t>(rows.size());
  size_t longest = 0;
  for (const Features* row : rows) longest = std::max(longest, row->input_ids.size());
  int64_t seq = static_cast<int64_t>(longest);

  std::vector<int64_t> input_ids(batch * seq, pad_token_id);  // (B, T)
  std::vector<int64_t> attention_mask(batch * seq, 0);        // (B, T)
  std::vector<int64_t> token_type_ids(batch * seq, 0);        // (B, T)
  std::vector<int64_t> class_labels;                          // (B) classification
  std::vector<float> regression_labels;                       // (B) regression
  for (int64_t b = 0; b < batch; ++b) {
    const Features& row = *rows[b];
    size_t length = row.input_ids.size();
    ACCEL_CHECK(row.token_type_ids.empty() || row.token_type_ids.size() == length, "collate: dataset index ",
                indices[b], " has ", length, " input_ids but ", row.token_type_ids.size(),
                " token_type_ids (expected as many, or none)");
    std::copy(row.input_ids.begin(), row.input_ids.end(), input_ids.begin() + b * seq);
    std::fill_n(attention_mask.begin() + b * seq, length, 1);
    std::copy(row.token_type_ids.begin(), row.token_type_ids.end(), token_type_ids.begin() + b * seq);
    if (regression) {
      regression_labels.push_back(static_cast<float>(row.label));
    } else {
      ACCEL_CHECK(row.label >= 0 && row.label == std::floor(row.label), "collate: dataset index ", indices[b],
                  " has label ", row.label, ", expected an integer class index");
      class_labels.push_back(static_cast<int64_t>(row.label));
    }
  }

  Batch out;
  out.input_ids = from_vector(input_ids, {batch, seq});
  out.attention_mask = from_vector(attention_mask, {batch, seq});
  out.token_type_ids = from_vector(token_type_ids, {batch, seq});
  out.labels = regression ? from_vector(regression_labels) : from_vector(class_labels);
  out.indices = indices;
  return out;
}

Batch Batch::to(Device device) const {
  Batch moved = *this;
  moved.input_ids = input_ids.to(device);
  moved.attention_mask = attention_mask.to(device);
  moved.token_type_ids = token_type_ids.to(device);
  moved.labels = labels.to(device);
  return moved;
}

// ---- DataLoader ----

struct DataLoader::Plan {
  std::vector<std::vector<int64_t>> batches;  // dataset indices of each of this rank's batches
  std::vector<int64_t> num_padding;           // per batch: trailing samples repeated (even_batches)
};

DataLoader::DataLoader(std::shared_ptr<const std::vector<Features>> features, DataLoaderOptions options)
    : features_(std::move(features)), options_(options) {
  ACCEL_CHECK(features_ != nullptr, "DataLoader: expected a features vector but got a null pointer");
  check_options(options_);
}

DataLoader::~DataLoader() { stop_prefetch(); }

int64_t DataLoader::size() const { return rank_batch_count(dataset_size(), options_); }

void DataLoader::set_options(const DataLoaderOptions& options) {
  check_options(options);
  stop_prefetch();
  options_ = options;
  plan_.reset();  // the next next() starts epoch_ afresh under the new options
  position_ = 0;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(features_->size());
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!options_.shuffle) return order;
  uint64_t key = options_.seed ^ splitmix64(static_cast<uint64_t>(epoch));
  for (int64_t i = static_cast<int64_t>(order.size()) - 1; i > 0; --i) {
    PhiloxBlock block = philox_block(key, static_cast<uint64_t>(i));
    uint64_t random = (uint64_t{block[0]} << 32) | block[1];
    std::swap(order[i], order[random % static_cast<uint64_t>(i + 1)]);
  }
  return order;
}

void DataLoader::start_epoch(int64_t epoch, int64_t skip_batches) {
  stop_prefetch();
  ACCEL_CHECK(epoch >= 0, "DataLoader::start_epoch: expected epoch >= 0 but got ", epoch);
  int64_t count = size();
  ACCEL_CHECK(skip_batches >= 0 && skip_batches <= count, "DataLoader::start_epoch: cannot skip ", skip_batches,
              " batches; this process has ", count, " batches per epoch");

  // Rank r takes global batches r, r + P, r + 2P, ...; batch g covers positions
  // [g*B, (g+1)*B) of the order, continued cyclically past its end under even_batches.
  std::vector<int64_t> order = epoch_order(epoch);
  int64_t n = static_cast<int64_t>(order.size());
  auto plan = std::make_shared<Plan>();
  for (int64_t t = 0; t < count; ++t) {
    int64_t first = (options_.process_index + t * options_.num_processes) * options_.batch_size;
    int64_t end = first + options_.batch_size;
    if (!pads_last_round(options_)) end = std::min(end, n);
    std::vector<int64_t> indices;
    for (int64_t p = first; p < end; ++p) indices.push_back(order[p % n]);
    plan->batches.push_back(std::move(indices));
    plan->num_padding.push_back(std::max<int64_t>(0, end - std::max(first, n)));
  }
  plan_ = std::move(plan);
  epoch_ = epoch;
  position_ = skip_batches;
  if (!options_.prefetch || position_ == count) return;

  worker_ = std::thread([this, first = position_, count] {
    trace::set_thread_name("data loader");
    for (int64_t index = first; index < count; ++index) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stop_ || !prefetched_; });
        if (stop_) return;
      }
      std::optional<Batch> batch;
      std::exception_ptr error;
      try {
        trace::Span span("prefetch batch", "data");
        batch = make_batch(index);
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        prefetched_ = std::move(batch);
        prefetched_index_ = index;
        prefetch_error_ = error;
      }
      ready_.notify_all();
      if (error) return;
    }
  });
}

std::optional<Batch> DataLoader::next() {
  if (!plan_) start_epoch(epoch_);
  if (position_ >= static_cast<int64_t>(plan_->batches.size())) return std::nullopt;
  std::optional<Batch> batch;
  if (options_.prefetch) {
    trace::Span span("wait for batch", "data");
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [this] { return prefetched_.has_value() || prefetch_error_; });
    // A failure stays in place, so every later next() of this epoch reports it too.
    if (prefetch_error_) std::rethrow_exception(prefetch_error_);
    ACCEL_CHECK(prefetched_index_ == position_, "DataLoader: internal error: prefetched batch ", prefetched_index_,
                " but batch ", position_, " is next");
    batch = std::move(prefetched_);
    prefetched_.reset();
    lock.unlock();
    ready_.notify_all();
  } else {
    batch = make_batch(position_);
  }
  ++position_;
  return batch->to(options_.device);
}

Batch DataLoader::make_batch(int64_t batch_index) const {
  const std::vector<int64_t>& indices = plan_->batches[batch_index];
  std::vector<const Features*> rows;
  rows.reserve(indices.size());
  for (int64_t index : indices) rows.push_back(&(*features_)[index]);
  Batch batch = collate(rows, indices, options_.pad_token_id, options_.regression);
  batch.num_padding_samples = plan_->num_padding[batch_index];
  return batch;
}

void DataLoader::stop_prefetch() {
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    ready_.notify_all();
    worker_.join();
  }
  stop_ = false;
  prefetched_.reset();
  prefetched_index_ = -1;
  prefetch_error_ = nullptr;
}

}  // namespace accel::data
