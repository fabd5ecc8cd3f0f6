/// @file
/// Evaluation metrics as GLUE reports them (sklearn / scipy definitions): accuracy, binary F1
/// of the positive class, Matthews correlation, Pearson and Spearman correlation.
#pragma once

#include <cstdint>
#include <vector>

namespace accel::metrics {

double accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);
/// F1 of class 1 (sklearn's f1_score with average="binary"); 0 when there are no positives.
double f1(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);
double matthews_corrcoef(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);
double pearson(const std::vector<double>& x, const std::vector<double>& y);
/// Pearson of the ranks, ties given their average rank (scipy.stats.spearmanr).
double spearman(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace accel::metrics
