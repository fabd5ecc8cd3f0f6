// tests/accelerate/test_metrics.cc: GLUE metrics against sklearn 1.9.1 / scipy 1.17.1.
// The expected numbers were computed once in Python on the same inputs and hard-coded:
//   from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
//   from scipy.stats import pearsonr, spearmanr
//   accuracy_score(labels, preds), f1_score(labels, preds), matthews_corrcoef(labels, preds)
//   pearsonr(x, y)[0], spearmanr(x, y)[0]
#include "accelerate/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"

namespace accel::metrics {
namespace {

using ::testing::HasSubstr;

const std::vector<int64_t> kPredictions = {1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1};
const std::vector<int64_t> kLabels = {1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0};

TEST(Metrics, BinaryClassificationMatchesSklearn) {
  EXPECT_DOUBLE_EQ(accuracy(kPredictions, kLabels), 0.7);
  EXPECT_DOUBLE_EQ(f1(kPredictions, kLabels), 0.75);
  EXPECT_DOUBLE_EQ(matthews_corrcoef(kPredictions, kLabels), 0.375);
}

TEST(Metrics, MulticlassMatthewsMatchesSklearn) {
  std::vector<int64_t> predictions = {0, 2, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2};
  std::vector<int64_t> labels = {0, 1, 1, 2, 0, 2, 1, 1, 0, 2, 1, 2};
  EXPECT_NEAR(matthews_corrcoef(predictions, labels), 0.5052911526399114, 1e-15);
  EXPECT_NEAR(accuracy(predictions, labels), 0.6666666666666666, 1e-15);
}

TEST(Metrics, DegenerateCasesAreZeroAsInSklearn) {
  // A constant prediction leaves MCC undefined: sklearn returns 0.
  EXPECT_EQ(matthews_corrcoef({1, 1, 1}, {1, 0, 1}), 0.0);
  // No positives predicted or true: F1 is 0 (zero_division default).
  EXPECT_EQ(f1({0, 0, 0}, {0, 0, 0}), 0.0);
  EXPECT_EQ(f1({1, 1}, {1, 1}), 1.0);
}

TEST(Metrics, CorrelationsMatchScipy) {
  std::vector<double> x = {0.5, 1.2, 3.3, 2.0, 2.0, 4.8, 0.1, 3.3, 2.9, 5.0};  // ties in x and y
  std::vector<double> y = {1.0, 0.8, 2.9, 2.5, 1.7, 4.1, 0.4, 3.0, 3.0, 3.9};
  EXPECT_NEAR(pearson(x, y), 0.9678930139540718, 1e-14);
  EXPECT_NEAR(spearman(x, y), 0.9449585470768286, 1e-14);
  std::vector<double> a = {1, 2, 3, 4, 5}, b = {1, 4, 9, 16, 100};  // monotone, not linear
  EXPECT_NEAR(pearson(a, b), 0.7952035738296035, 1e-14);
  EXPECT_NEAR(spearman(a, b), 1.0, 1e-14);
  EXPECT_NEAR(pearson(a, {5, 4, 3, 2, 1}), -1.0, 1e-15);
}

TEST(Metrics, ConstantInputGivesNanCorrelationAsInScipy) {
  EXPECT_TRUE(std::isnan(pearson({1, 1, 1}, {1, 2, 3})));
  EXPECT_TRUE(std::isnan(spearman({1, 2, 3}, {4, 4, 4})));
}

TEST(Metrics, RejectsMismatchedOrEmptyInputs) {
  try {
    accuracy({1, 0}, {1});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("accuracy: expected inputs of equal length but got 2 and 1"));
  }
  EXPECT_THROW(f1({}, {}), Error);
  EXPECT_THROW(matthews_corrcoef({}, {}), Error);
  EXPECT_THROW(pearson({1.0}, {2.0}), Error);
  EXPECT_THROW(spearman({1.0, 2.0}, {2.0}), Error);
  try {
    f1({2, 0}, {1, 0});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("expected binary classes 0 and 1 but found prediction 2"));
  }
}

}  // namespace
}  // namespace accel::metrics
