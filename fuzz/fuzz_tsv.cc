// Fuzz target: arbitrary bytes as a GLUE-style data file.
// The input is written to a file and read with data::read_glue_mrpc and data::read_glue_sst2
// (the TSV reader with the MRPC and SST-2 columns), strict and with skip_bad_rows, and with
// data::read_csv (RFC 4180 quotes) and a regression label.
// A bug: anything but an accel::Error (crash, ASan/UBSan report, a std::out_of_range or
// other exception escaping, hang), or a dataset whose counts do not add up (an accepted
// strict read that skipped rows, a class label outside [0, num_labels)).
#include <cmath>

#include "accelerate/data.h"
#include "fuzz/fuzz_util.h"

namespace {

void check_dataset(const accel::data::TextDataset& dataset, bool skip_bad_rows, bool regression) {
  if (!skip_bad_rows) FUZZ_ASSERT(dataset.skipped_rows == 0);
  FUZZ_ASSERT(dataset.num_labels >= 1);
  if (regression) return;
  for (const accel::data::Example& example : dataset.examples) {
    FUZZ_ASSERT(example.label >= 0 && example.label < double(dataset.num_labels));
    FUZZ_ASSERT(example.label == std::floor(example.label));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace ad = accel::data;
  using accel::fuzz::expect_only_accel_errors;
  const std::string path = accel::fuzz::write_scratch_file("data.tsv", data, size);
  for (bool skip : {false, true}) {
    expect_only_accel_errors([&] { check_dataset(ad::read_glue_mrpc(path, skip), skip, false); });
    expect_only_accel_errors([&] { check_dataset(ad::read_glue_sst2(path, skip), skip, false); });
  }
  ad::TableOptions options;
  options.text_columns = {"sentence1", "sentence2"};
  options.regression = true;
  expect_only_accel_errors([&] { check_dataset(ad::read_csv(path, options), false, true); });
  options.text_columns = {"sentence"};
  options.regression = false;
  options.skip_bad_rows = true;
  expect_only_accel_errors([&] { check_dataset(ad::read_csv(path, options), true, false); });
  return 0;
}
