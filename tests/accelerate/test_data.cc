// tests/accelerate/test_data.cc: the readers on the real GLUE files and on small files made
// here (quotes, CRLF, BOM, bad rows), the map step, collation, and the DataLoader: shuffle
// order, batching, Accelerate's sharding (checked against a line-by-line port of
// BatchSamplerShard), resume, and prefetch.
#include "accelerate/data.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <stdexcept>

#include "core/error.h"

namespace accel::data {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

const std::string kSharedData = ACCEL_SHARED_DATA_DIR;

// Writes `content` to a file in a fresh per-test directory and returns its path.
std::string write_file(const std::string& name, const std::string& content) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::temp_directory_path() /
                 ("accel_test_data_" + std::to_string(getpid()) + "_" + test->test_suite_name() + "_" + test->name());
  fs::create_directories(dir);
  fs::path path = dir / name;
  std::ofstream(path, std::ios::binary) << content;
  return path.string();
}

TableOptions pair_options(bool skip_bad_rows = false) {
  TableOptions options;
  options.text_columns = {"sentence1", "sentence2"};
  options.skip_bad_rows = skip_bad_rows;
  return options;
}

// The accel::Error message of `body`, or a failure when it does not throw one.
template <typename Body>
std::string error_of(Body body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an accel::Error";
  return "";
}

int64_t count_label(const TextDataset& dataset, double label) {
  return std::count_if(dataset.examples.begin(), dataset.examples.end(),
                       [&](const Example& e) { return e.label == label; });
}

// ---- readers ----

TEST(Glue, MrpcTrainAndDev) {
  TextDataset train = read_glue_mrpc(kSharedData + "/mrpc/train.tsv");
  ASSERT_EQ(train.examples.size(), 3668u);
  EXPECT_EQ(count_label(train, 1), 2474);
  EXPECT_EQ(train.num_labels, 2);
  EXPECT_EQ(train.skipped_rows, 0);
  const Example& first = train.examples[0];
  EXPECT_EQ(first.text_a, "Amrozi accused his brother, whom he called \"the witness\", of deliberately distorting his evidence.");
  EXPECT_EQ(first.text_b, "Referring to him as only \"the witness\", Amrozi accused his brother of deliberately distorting his evidence.");
  EXPECT_EQ(first.label, 1);
  TextDataset dev = read_glue_mrpc(kSharedData + "/mrpc/dev.tsv");
  EXPECT_EQ(dev.examples.size(), 408u);
  EXPECT_EQ(count_label(dev, 1), 279);
}

TEST(Glue, Sst2Dev) {
  TextDataset dev = read_glue_sst2(kSharedData + "/sst2/dev.tsv");
  ASSERT_EQ(dev.examples.size(), 872u);
  EXPECT_EQ(count_label(dev, 1), 444);
  EXPECT_EQ(dev.examples[0].text_a, "it 's a charming and often affecting journey . ");
  EXPECT_FALSE(dev.examples[0].text_b.has_value());
}

TEST(Readers, TsvStripsBomToleratesCrlfAndKeepsRawQuotes) {
  std::string path = write_file("a.tsv", "\xEF\xBB\xBFsentence1\tsentence2\tlabel\r\n"
                                         "say \"hi\tthere\t1\r\n"
                                         "\r\n"
                                         "x\ty\t4\r\n");
  TextDataset dataset = read_tsv(path, pair_options());
  ASSERT_EQ(dataset.examples.size(), 2u);
  EXPECT_EQ(dataset.examples[0].text_a, "say \"hi");
  EXPECT_EQ(dataset.examples[0].text_b, "there");
  EXPECT_EQ(dataset.examples[1].label, 4);
  EXPECT_EQ(dataset.num_labels, 5);  // max label + 1
  EXPECT_EQ(dataset.source, path);
}

TEST(Readers, RegressionLabels) {
  TableOptions options;
  options.text_columns = {"text"};
  options.label_column = "score";
  options.regression = true;
  TextDataset dataset = read_tsv(write_file("r.tsv", "score\ttext\n3.25\ta\n-0.5\tb\n"), options);
  ASSERT_EQ(dataset.examples.size(), 2u);
  EXPECT_EQ(dataset.examples[0].label, 3.25);
  EXPECT_EQ(dataset.examples[1].label, -0.5);
  EXPECT_EQ(dataset.num_labels, 1);
}

TEST(Readers, CsvQuotes) {
  std::string path = write_file("a.csv", "sentence1,sentence2,label\r\n"
                                         "\"a, b\",\"he said \"\"no\"\"\",1\r\n"
                                         "\"two\nlines\",plain \"quote\",0\r\n"
                                         "\"cr\r\",,1\n"
                                         "x,y\n");
  std::string message = error_of([&] { read_csv(path, pair_options()); });
  // The multi-line field shifts the line count: the short row is on line 6.
  EXPECT_THAT(message, HasSubstr("a.csv:6: expected 3 comma-separated columns but found 2"));
  TextDataset dataset = read_csv(path, pair_options(/*skip_bad_rows=*/true));
  ASSERT_EQ(dataset.examples.size(), 3u);
  EXPECT_EQ(dataset.skipped_rows, 1);
  EXPECT_EQ(dataset.examples[0].text_a, "a, b");
  EXPECT_EQ(dataset.examples[0].text_b, "he said \"no\"");
  EXPECT_EQ(dataset.examples[1].text_a, "two\nlines");
  EXPECT_EQ(dataset.examples[1].text_b, "plain \"quote\"");
  EXPECT_EQ(dataset.examples[2].text_a, "cr\r");  // a CR inside quotes is data
  EXPECT_EQ(dataset.examples[2].text_b, "");
}

TEST(Readers, CsvMalformedQuotes) {
  std::string path = write_file("q.csv", "sentence1,sentence2,label\n\"a\"b,c,1\nd,e,0\n");
  EXPECT_THAT(error_of([&] { read_csv(path, pair_options()); }),
              HasSubstr("q.csv:2: expected ',' or the end of the line after a closing quote but found 'b'"));
  TextDataset dataset = read_csv(path, pair_options(true));
  EXPECT_EQ(dataset.examples.size(), 1u);
  EXPECT_EQ(dataset.skipped_rows, 1);
  std::string unclosed = write_file("u.csv", "sentence1,sentence2,label\nd,e,0\n\"open,f,1\n");
  EXPECT_THAT(error_of([&] { read_csv(unclosed, pair_options(true)); }),
              HasSubstr("u.csv:3: quoted field is not closed before the end of the file"));
}

TEST(Readers, JsonLines) {
  std::string path = write_file("a.jsonl", "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 1}\r\n"
                                           "\n"
                                           "{\"sentence1\": \"c \\\"q\\\"\", \"sentence2\": \"d\", \"label\": \"2\"}\n"
                                           "{\"text\": \"e\", \"label\": 0}\n"
                                           "[1, 2]\n"
                                           "{\"sentence1\": \"f\", \"sentence2\": \"g\", \"label\": \"x\"}\n"
                                           "{\"sentence1\": \"f\", \"sentence2\": \"g\", \"label\": null}\n");
  EXPECT_THAT(error_of([&] { read_jsonl(path, pair_options()); }),
              HasSubstr("a.jsonl:4: no field \"sentence1\"; the fields are \"label\", \"text\""));
  TextDataset dataset = read_jsonl(path, pair_options(true));
  ASSERT_EQ(dataset.examples.size(), 2u);
  EXPECT_EQ(dataset.skipped_rows, 4);
  EXPECT_EQ(dataset.examples[1].text_a, "c \"q\"");
  EXPECT_EQ(dataset.examples[1].label, 2);
  EXPECT_EQ(dataset.num_labels, 3);
}

TEST(Readers, BadRowsNameFileAndLine) {
  std::string path = write_file("train.tsv", "sentence1\tsentence2\tlabel\n"
                                             "a\tb\t0\n"
                                             "a\tb\n"
                                             "a\tb\t1\n"
                                             "a\tb\tx\n"
                                             "a\tb\t-1\n");
  EXPECT_THAT(error_of([&] { read_tsv(path, pair_options()); }),
              HasSubstr("train.tsv:3: expected 3 tab-separated columns but found 2"));
  TextDataset dataset = read_tsv(path, pair_options(true));
  EXPECT_EQ(dataset.examples.size(), 2u);
  EXPECT_EQ(dataset.skipped_rows, 3);

  std::string labels = write_file("labels.tsv", "sentence1\tsentence2\tlabel\na\tb\t0\na\tb\tx\n");
  EXPECT_THAT(error_of([&] { read_tsv(labels, pair_options()); }),
              HasSubstr("labels.tsv:3: label \"x\" is not an integer class index"));
  // A class index asks for that many classifier outputs (fuzz/fuzz_tsv found this one).
  std::string huge = write_file("huge.tsv", "sentence1\tsentence2\tlabel\na\tb\t1\na\tb\t2222222222222222221\n");
  EXPECT_THAT(error_of([&] { read_tsv(huge, pair_options()); }),
              HasSubstr("huge.tsv:3: label \"2222222222222222221\" is not an integer class index (0, 1, 2, ... at "
                        "most 16777215)"));
  std::string largest = write_file("largest.tsv", "sentence1\tsentence2\tlabel\na\tb\t16777215\n");
  EXPECT_EQ(read_tsv(largest, pair_options()).num_labels, 16777216);
}

TEST(Readers, MissingFileAndMissingColumn) {
  EXPECT_THAT(error_of([] { read_glue_sst2("/nonexistent/dir/dev.tsv"); }), HasSubstr("/nonexistent/dir/dev.tsv"));
  std::string path = write_file("c.tsv", "text\tlabel\na\t1\n");
  EXPECT_THAT(error_of([&] { read_tsv(path, pair_options()); }),
              HasSubstr("no column \"sentence1\"; the columns are \"text\", \"label\""));
}

// ---- map step and collation ----

TEST(MapExamples, KeepsOrderAndPropagatesErrors) {
  TextDataset dataset;
  for (int i = 0; i < 1000; ++i) dataset.examples.push_back({std::to_string(i), std::nullopt, double(i % 2)});
  auto tokenize = [](const Example& e) {
    return Features{{std::stoll(e.text_a)}, {}, e.label};
  };
  std::vector<Features> features = map_examples(dataset, tokenize);
  ASSERT_EQ(features.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(features[i].input_ids, std::vector<int64_t>{i});
  auto failing = [](const Example& e) -> Features {
    if (e.text_a == "777") throw std::runtime_error("cannot tokenize 777");
    return {};
  };
  EXPECT_THROW(map_examples(dataset, failing), std::runtime_error);
}

TEST(Collate, PadsToTheLongestRow) {
  Features a{{101, 7, 102}, {0, 0, 1}, 1}, b{{101, 102}, {}, 0};
  Batch batch = collate({&a, &b}, {5, 9}, /*pad_token_id=*/3, /*regression=*/false);
  EXPECT_EQ(batch.input_ids.sizes(), (Shape{2, 3}));
  EXPECT_EQ(batch.input_ids.to_vector<int64_t>(), (std::vector<int64_t>{101, 7, 102, 101, 102, 3}));
  EXPECT_EQ(batch.attention_mask.to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1, 1, 1, 0}));
  EXPECT_EQ(batch.token_type_ids.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1, 0, 0, 0}));
  EXPECT_EQ(batch.labels.dtype(), kInt64);
  EXPECT_EQ(batch.labels.to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(batch.indices, (std::vector<int64_t>{5, 9}));

  Features c{{1}, {}, 2.5};
  Batch regression = collate({&c}, {0}, 0, /*regression=*/true).to(kCPU);
  EXPECT_EQ(regression.labels.dtype(), kFloat32);
  EXPECT_EQ(regression.labels.to_vector<float>(), std::vector<float>{2.5f});
  EXPECT_THAT(error_of([&] { collate({&c}, {0}, 0, false); }), HasSubstr("expected an integer class index"));
}

// ---- DataLoader ----

// n examples whose single token is the dataset index; lengths vary to exercise padding.
std::shared_ptr<const std::vector<Features>> make_features(int64_t n) {
  auto features = std::make_shared<std::vector<Features>>();
  for (int64_t i = 0; i < n; ++i) {
    features->push_back({std::vector<int64_t>(1 + i % 4, i), {}, double(i % 2)});
  }
  return features;
}

DataLoaderOptions loader_options(int64_t batch_size, bool shuffle = false, bool drop_last = false) {
  DataLoaderOptions options;
  options.batch_size = batch_size;
  options.shuffle = shuffle;
  options.drop_last = drop_last;
  options.seed = 1234;
  return options;
}

std::vector<Batch> run_epoch(DataLoader& loader, int64_t epoch, int64_t skip = 0) {
  loader.start_epoch(epoch, skip);
  std::vector<Batch> batches;
  while (auto batch = loader.next()) batches.push_back(std::move(*batch));
  return batches;
}

TEST(DataLoader, SizesWithAndWithoutDropLast) {
  auto features = make_features(10);
  DataLoader keep(features, loader_options(3));
  DataLoader drop(features, loader_options(3, false, /*drop_last=*/true));
  EXPECT_EQ(keep.size(), 4);
  EXPECT_EQ(drop.size(), 3);
  std::vector<Batch> batches = run_epoch(keep, 0);
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[3].indices, std::vector<int64_t>{9});
  EXPECT_EQ(run_epoch(drop, 0).size(), 3u);
  EXPECT_EQ(batches[1].input_ids.sizes(), (Shape{3, 4}));  // rows 3, 4, 5 have 4, 1, 2 tokens
}

TEST(DataLoader, ShuffleIsAPermutationOfSeedAndEpoch) {
  auto features = make_features(100);
  DataLoader loader(features, loader_options(8, /*shuffle=*/true));
  DataLoader same(features, loader_options(8, true));
  DataLoaderOptions other_seed = loader_options(8, true);
  other_seed.seed = 99;
  DataLoader reseeded(features, other_seed);
  std::vector<int64_t> identity(100);
  std::iota(identity.begin(), identity.end(), 0);
  std::vector<int64_t> epoch0 = loader.epoch_order(0), epoch1 = loader.epoch_order(1);
  EXPECT_TRUE(std::is_permutation(epoch0.begin(), epoch0.end(), identity.begin()));
  EXPECT_NE(epoch0, identity);
  EXPECT_NE(epoch0, epoch1);
  EXPECT_EQ(epoch0, same.epoch_order(0));
  EXPECT_EQ(epoch1, same.epoch_order(1));
  EXPECT_NE(epoch0, reseeded.epoch_order(0));
  EXPECT_EQ(DataLoader(features, loader_options(8)).epoch_order(3), identity);

  std::vector<int64_t> seen;  // what next() yields, in order
  for (const Batch& batch : run_epoch(loader, 1)) {
    seen.insert(seen.end(), batch.indices.begin(), batch.indices.end());
    EXPECT_EQ(batch.input_ids.select(1, 0).to_vector<int64_t>(), batch.indices);
  }
  EXPECT_EQ(seen, epoch1);
}

// Accelerate's BatchSamplerShard._iter_with_no_split, ported line by line as the reference.
std::vector<std::vector<int64_t>> reference_shard(const std::vector<int64_t>& order, size_t batch_size,
                                                  bool drop_last, int64_t processes, int64_t rank, bool even) {
  std::vector<std::vector<int64_t>> sampler;  // torch's BatchSampler
  for (size_t i = 0; i < order.size(); i += batch_size) {
    std::vector<int64_t> batch(order.begin() + i, order.begin() + std::min(order.size(), i + batch_size));
    if (drop_last && batch.size() < batch_size) break;
    sampler.push_back(batch);
  }
  std::vector<std::vector<int64_t>> out;
  std::vector<int64_t> initial_data, batch_to_yield, batch;
  int64_t idx = -1;
  for (const auto& b : sampler) {
    ++idx;
    batch = b;
    if (!drop_last && idx < processes) initial_data.insert(initial_data.end(), batch.begin(), batch.end());
    if (idx % processes == rank) batch_to_yield = batch;
    if (idx % processes == processes - 1 && batch.size() == batch_size) {
      out.push_back(batch_to_yield);
      batch_to_yield.clear();
    }
  }
  if (drop_last || initial_data.empty()) return out;
  if (!even) {
    if (!batch_to_yield.empty()) out.push_back(batch_to_yield);
    return out;
  }
  if (batch_to_yield.size() == batch_size) out.push_back(batch_to_yield);
  while (initial_data.size() < processes * batch_size) {
    std::vector<int64_t> copy = initial_data;
    initial_data.insert(initial_data.end(), copy.begin(), copy.end());
  }
  if (batch.size() == batch_size) {
    batch.clear();
    ++idx;
  }
  size_t cycle_index = 0;
  while (idx % processes != 0 || !batch.empty()) {
    size_t end_index = cycle_index + batch_size - batch.size();
    batch.insert(batch.end(), initial_data.begin() + cycle_index, initial_data.begin() + end_index);
    if (idx % processes == rank) out.push_back(batch);
    cycle_index = end_index;
    batch.clear();
    ++idx;
  }
  return out;
}

TEST(DataLoader, ShardingMatchesAccelerateBatchSamplerShard) {
  for (int64_t n : {1, 5, 23, 24, 25}) {
    for (int64_t batch_size : {1, 4}) {
      for (int64_t processes : {1, 2, 3}) {
        for (bool drop_last : {false, true}) {
          for (bool even : {true, false}) {
            SCOPED_TRACE(testing::Message() << "n=" << n << " B=" << batch_size << " P=" << processes
                                            << " drop_last=" << drop_last << " even=" << even);
            auto features = make_features(n);
            for (int64_t rank = 0; rank < processes; ++rank) {
              DataLoaderOptions options = loader_options(batch_size, /*shuffle=*/true, drop_last);
              options.num_processes = processes;
              options.process_index = rank;
              options.even_batches = even;
              DataLoader loader(features, options);
              // Accelerate shards only when there are several processes.
              bool shard_even = even && processes > 1;
              auto expected = reference_shard(loader.epoch_order(2), batch_size, drop_last, processes, rank, shard_even);
              std::vector<Batch> batches = run_epoch(loader, 2);
              ASSERT_EQ(loader.size(), static_cast<int64_t>(batches.size()));
              ASSERT_EQ(batches.size(), expected.size());
              for (size_t i = 0; i < batches.size(); ++i) EXPECT_EQ(batches[i].indices, expected[i]);
            }
          }
        }
      }
    }
  }
}

// Simulated ranks: what gather_for_metrics sees (round by round, rank by rank, the padding
// dropped from the end) must be the epoch order exactly.
TEST(DataLoader, EvenBatchesPadTheLastRoundAndGatherRecoversTheDataset) {
  const int64_t n = 23, batch_size = 4;  // 23 is not a multiple of 2*4 or 3*4
  auto features = make_features(n);
  for (int64_t processes : {2, 3}) {
    SCOPED_TRACE(testing::Message() << "processes=" << processes);
    std::vector<std::vector<Batch>> per_rank;
    for (int64_t rank = 0; rank < processes; ++rank) {
      DataLoaderOptions options = loader_options(batch_size, /*shuffle=*/true);
      options.num_processes = processes;
      options.process_index = rank;
      DataLoader loader(features, options);
      per_rank.push_back(run_epoch(loader, 0));
    }
    size_t rounds = per_rank[0].size();
    std::vector<int64_t> gathered;
    int64_t padding = 0;
    for (size_t round = 0; round < rounds; ++round) {
      for (const auto& batches : per_rank) {
        ASSERT_EQ(batches.size(), rounds);  // every rank yields as many batches
        ASSERT_EQ(batches[round].indices.size(), size_t(batch_size));
        gathered.insert(gathered.end(), batches[round].indices.begin(), batches[round].indices.end());
        padding += batches[round].num_padding_samples;
        if (round + 1 < rounds) {
          EXPECT_EQ(batches[round].num_padding_samples, 0);
        }
      }
    }
    EXPECT_EQ(padding, int64_t(rounds) * processes * batch_size - n);
    gathered.resize(gathered.size() - padding);
    EXPECT_EQ(gathered, DataLoader(features, loader_options(batch_size, true)).epoch_order(0));
  }
}

TEST(DataLoader, UnevenBatchesCoverTheDatasetOnce) {
  auto features = make_features(23);
  std::vector<int64_t> seen;
  std::vector<int64_t> counts;
  for (int64_t rank = 0; rank < 3; ++rank) {
    DataLoaderOptions options = loader_options(4, true);
    options.num_processes = 3;
    options.process_index = rank;
    options.even_batches = false;
    DataLoader loader(features, options);
    counts.push_back(loader.size());
    for (const Batch& batch : run_epoch(loader, 0)) {
      EXPECT_EQ(batch.num_padding_samples, 0);
      seen.insert(seen.end(), batch.indices.begin(), batch.indices.end());
    }
  }
  EXPECT_EQ(counts, (std::vector<int64_t>{2, 2, 2}));  // 6 batches: the last holds 3 samples
  std::sort(seen.begin(), seen.end());
  std::vector<int64_t> all(23);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(seen, all);
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.indices == b.indices && a.num_padding_samples == b.num_padding_samples &&
         a.input_ids.to_vector<int64_t>() == b.input_ids.to_vector<int64_t>() &&
         a.attention_mask.to_vector<int64_t>() == b.attention_mask.to_vector<int64_t>() &&
         a.token_type_ids.to_vector<int64_t>() == b.token_type_ids.to_vector<int64_t>() &&
         a.labels.to_vector<int64_t>() == b.labels.to_vector<int64_t>();
}

TEST(DataLoader, PrefetchYieldsTheSameBatchesAndResumeSkips) {
  auto features = make_features(61);
  DataLoaderOptions options = loader_options(5, /*shuffle=*/true);
  options.num_processes = 2;
  options.process_index = 1;
  DataLoader prefetching(features, options);
  options.prefetch = false;
  DataLoader direct(features, options);
  for (int64_t epoch : {0, 1}) {
    std::vector<Batch> a = run_epoch(prefetching, epoch), b = run_epoch(direct, epoch);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(same_batch(a[i], b[i])) << "batch " << i;

    std::vector<Batch> resumed = run_epoch(prefetching, epoch, /*skip=*/3);
    ASSERT_EQ(resumed.size(), a.size() - 3);
    for (size_t i = 0; i < resumed.size(); ++i) EXPECT_TRUE(same_batch(resumed[i], a[i + 3])) << "batch " << i;
  }
  EXPECT_TRUE(run_epoch(prefetching, 0, prefetching.size()).empty());
  EXPECT_THAT(error_of([&] { prefetching.start_epoch(0, prefetching.size() + 1); }), HasSubstr("cannot skip"));
}

TEST(DataLoader, StopsCleanlyMidEpochAndRethrowsWorkerErrors) {
  auto features = make_features(40);
  {
    DataLoader loader(features, loader_options(2));
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next());
    loader.start_epoch(1);  // abandons epoch 0 while the worker holds a batch
    ASSERT_TRUE(loader.next());
    EXPECT_EQ(loader.batches_yielded(), 1);
  }  // destroyed mid-epoch: the worker must exit

  auto broken = std::make_shared<std::vector<Features>>(*features);
  (*broken)[5].token_type_ids = {0, 0, 0, 0, 0, 0, 0};  // more token types than tokens
  for (bool prefetch : {true, false}) {
    DataLoaderOptions options = loader_options(2);
    options.prefetch = prefetch;
    DataLoader loader(broken, options);
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next());  // rows 0, 1
    ASSERT_TRUE(loader.next());  // rows 2, 3
    EXPECT_THAT(error_of([&] { loader.next(); }), HasSubstr("dataset index 5"));
  }
}

TEST(DataLoader, SetOptionsAndValidation) {
  auto features = make_features(10);
  DataLoader loader(features, loader_options(3));
  DataLoaderOptions options = loader.options();
  options.num_processes = 2;
  options.process_index = 1;
  loader.set_options(options);
  EXPECT_EQ(loader.size(), 2);  // 4 global batches, every second one
  auto batch = loader.next();   // next() starts the epoch by itself
  ASSERT_TRUE(batch);
  EXPECT_EQ(batch->indices, (std::vector<int64_t>{3, 4, 5}));
  options.process_index = 2;
  EXPECT_THAT(error_of([&] { loader.set_options(options); }), HasSubstr("process_index in [0, 2)"));
  EXPECT_THAT(error_of([&] { DataLoader bad(features, loader_options(0)); }), HasSubstr("expected batch_size > 0"));
}

}  // namespace
}  // namespace accel::data
