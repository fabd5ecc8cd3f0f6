/// @file
/// The elements of several tensors seen as one concatenated range, for the multi-tensor CPU
/// kernels (AdamW's step, sum_of_squares): splitting that range into equal blocks or thread
/// chunks keeps the threads equally loaded whatever the mix of sizes (a BERT has ~200
/// tensors, from 2 to 23M elements), and each block is visited tensor piece by tensor piece.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace accel::cpu {

/// starts[i]: the first element of item i in the concatenation; starts.back(): the total.
template <typename Items, typename Numel>
std::vector<int64_t> concatenation_starts(const Items& items, const Numel& numel) {
  std::vector<int64_t> starts(1, 0);
  starts.reserve(items.size() + 1);
  for (const auto& item : items) starts.push_back(starts.back() + numel(item));
  return starts;
}

/// Visits the elements [begin, end) of the concatenation in order, one call per item they
/// touch: piece(i, from, to) for item i's own elements [from, to).
template <typename Piece>
void for_each_piece(const std::vector<int64_t>& starts, int64_t begin, int64_t end, const Piece& piece) {
  const size_t count = starts.size() - 1;
  // The item holding element `begin`: the last start at or before it.
  size_t i = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin()) - 1;
  for (; i < count && starts[i] < end; ++i) {
    piece(i, std::max(begin, starts[i]) - starts[i], std::min(end, starts[i + 1]) - starts[i]);
  }
}

}  // namespace accel::cpu
