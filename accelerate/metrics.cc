// GLUE metrics with the sklearn / scipy definitions, computed in double precision.
// Degenerate cases follow those libraries: F1 and MCC are 0 where undefined (sklearn's
// zero_division default); Pearson and Spearman are NaN for a constant input (scipy).
// Every metric needs two non-empty inputs of equal length (correlations need two points).
#include "accelerate/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "core/error.h"

namespace accel::metrics {
namespace {

template <typename T>
void check_inputs(const char* metric, const std::vector<T>& a, const std::vector<T>& b, size_t min_size = 1) {
  ACCEL_CHECK(a.size() == b.size(), metric, ": expected inputs of equal length but got ", a.size(), " and ",
              b.size());
  ACCEL_CHECK(a.size() >= min_size, metric, ": expected at least ", min_size, " value(s) but got ", a.size());
}

// Ranks 1..n with ties given the average of the ranks they span (scipy.stats.rankdata "average").
std::vector<double> average_ranks(const std::vector<double>& values) {
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  for (size_t begin = 0; begin < order.size();) {
    size_t end = begin + 1;
    while (end < order.size() && values[order[end]] == values[order[begin]]) ++end;
    double rank = 0.5 * static_cast<double>(begin + 1 + end);  // mean of ranks begin+1 .. end
    for (size_t i = begin; i < end; ++i) ranks[order[i]] = rank;
    begin = end;
  }
  return ranks;
}

}  // namespace

double accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  check_inputs("accuracy", predictions, labels);
  size_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += predictions[i] == labels[i];
  return static_cast<double>(correct) / static_cast<double>(labels.size());
}

double f1(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  check_inputs("f1", predictions, labels);
  int64_t true_positives = 0, false_positives = 0, false_negatives = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    ACCEL_CHECK((predictions[i] == 0 || predictions[i] == 1) && (labels[i] == 0 || labels[i] == 1),
                "f1: expected binary classes 0 and 1 but found prediction ", predictions[i], " and label ", labels[i],
                " at index ", i);
    true_positives += predictions[i] == 1 && labels[i] == 1;
    false_positives += predictions[i] == 1 && labels[i] == 0;
    false_negatives += predictions[i] == 0 && labels[i] == 1;
  }
  int64_t denominator = 2 * true_positives + false_positives + false_negatives;
  return denominator == 0 ? 0.0 : 2.0 * static_cast<double>(true_positives) / static_cast<double>(denominator);
}

// Multiclass MCC from the confusion matrix C (sklearn):
//   (c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))
// with c correct predictions, s samples, p_k / t_k the times class k was predicted / true.
double matthews_corrcoef(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  check_inputs("matthews_corrcoef", predictions, labels);
  std::map<int64_t, double> predicted_count, true_count;
  double correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    predicted_count[predictions[i]] += 1;
    true_count[labels[i]] += 1;
    correct += predictions[i] == labels[i];
  }
  double samples = static_cast<double>(labels.size());
  double predicted_dot_true = 0, predicted_squares = 0, true_squares = 0;
  for (const auto& [label, count] : predicted_count) {
    predicted_squares += count * count;
    auto it = true_count.find(label);
    if (it != true_count.end()) predicted_dot_true += count * it->second;
  }
  for (const auto& [label, count] : true_count) true_squares += count * count;
  double covariance = correct * samples - predicted_dot_true;
  double predicted_variance = samples * samples - predicted_squares;
  double true_variance = samples * samples - true_squares;
  if (predicted_variance * true_variance == 0) return 0.0;
  return covariance / std::sqrt(predicted_variance * true_variance);
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  check_inputs("pearson", x, y, 2);
  double n = static_cast<double>(x.size());
  double mean_x = std::accumulate(x.begin(), x.end(), 0.0) / n;
  double mean_y = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double dx = x[i] - mean_x, dy = y[i] - mean_y;
    xy += dx * dy;
    xx += dx * dx;
    yy += dy * dy;
  }
  if (xx == 0 || yy == 0) return std::numeric_limits<double>::quiet_NaN();
  return std::clamp(xy / std::sqrt(xx * yy), -1.0, 1.0);
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  check_inputs("spearman", x, y, 2);
  return pearson(average_ranks(x), average_ranks(y));
}

}  // namespace accel::metrics
