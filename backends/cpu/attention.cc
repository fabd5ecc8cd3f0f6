// CPU fused attention, forward and backward, computed in float32. Each (batch, head) is one work item:
// its Tq x Tk score matrix is made by one GEMM, scaled, masked and softmaxed in place while it
// is in cache, and multiplied by V straight into the strided output, so the scores never
// travel through memory as separate scaled, masked and softmaxed tensors, and no head is
// copied to a contiguous buffer. Keys that the mask pads out in every row are skipped. The
// small GEMMs are oneDNN's dnnl_sgemm, which runs on the calling thread inside the parallel
// region; the parallelism is over the (batch, head) items. 16-bit q, k and v (autocast's
// projections) are converted per item into float32 scratch while they are in cache, and their
// gradients computed in float32 scratch and rounded once into the 16-bit outputs: the same
// values as float32 casts made beforehand, without those casts' passes over memory. They stay
// float32 products even where the CPU has AMX: oneDNN 2.6 offers bf16 GEMMs only as matmul
// primitives, at head sizes (128 x 128 x 32) one costs nearly as much inside this loop as
// dnnl_sgemm (its per-call setup and operand reorders eat the tiles' speed), and the dense
// copies of the heads it needs (strided operands drop it off AMX) cost the rest
// (bench/README.md, ninth session).
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include <dnnl.h>

#include "backends/cpu/philox.h"
#include "backends/cpu/vec_math.h"
#include "core/kernels.h"
#include "core/parallel.h"
#include "core/random.h"

namespace accel::cpu {

namespace {

// Row-major C (M x N) = alpha * op(A) op(B) + beta * C.
void sgemm(char trans_a, char trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  dnnl_status_t status = dnnl_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  ACCEL_CHECK(status == dnnl_success, "attention: dnnl_sgemm failed with status ", int(status), " on ", M, "x", K,
              " @ ", K, "x", N);
}

// Pointer to the (b, h) matrix of a 4-D tensor and its row stride.
struct HeadView {
  const Tensor& t;
  template <typename T>
  T* at(int64_t b, int64_t h) const {
    return t.data_ptr<T>() + b * t.stride(0) + h * t.stride(1);
  }
  int64_t ld() const { return std::max<int64_t>(t.stride(2), 1); }
};

// One item's (rows, D) matrix of a float32 or 16-bit head view as float32: the tensor's own
// memory for float32, else converted into `buffer` (row stride D).
struct FloatMatrix {
  const float* data;
  int64_t ld;
};
template <typename T>
void convert_rows(const T* from, int64_t ld, int64_t rows, int64_t D, float* to) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < D; ++c) to[r * D + c] = float(from[r * ld + c]);
  }
}
// bfloat16 is the top half of a float: a shift on the bits, which the compiler vectorizes
// (through BFloat16's conversion operator it kept a scalar loop).
template <>
void convert_rows(const BFloat16* from, int64_t ld, int64_t rows, int64_t D, float* to) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(from);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < D; ++c) to[r * D + c] = std::bit_cast<float>(uint32_t(bits[r * ld + c]) << 16);
  }
}
FloatMatrix head_as_float(const HeadView& view, int64_t b, int64_t h, int64_t rows, int64_t D,
                          std::vector<float>& buffer) {
  if (view.t.dtype() == kFloat32) return {view.at<float>(b, h), view.ld()};
  buffer.resize(static_cast<size_t>(rows * D));
  if (view.t.dtype() == kBFloat16) convert_rows(view.at<BFloat16>(b, h), view.ld(), rows, D, buffer.data());
  else convert_rows(view.at<Half>(b, h), view.ld(), rows, D, buffer.data());
  return {buffer.data(), D};
}

// Where an item's (rows, D) gradient is computed: the float32 output's own memory, else
// `buffer`, which store_head then rounds into the 16-bit output.
struct FloatTarget {
  float* data;
  int64_t ld;
};
FloatTarget head_target(const HeadView& view, int64_t b, int64_t h, int64_t rows, int64_t D,
                        std::vector<float>& buffer) {
  if (view.t.dtype() == kFloat32) return {view.at<float>(b, h), view.ld()};
  buffer.resize(static_cast<size_t>(rows * D));
  return {buffer.data(), D};
}
template <typename T>
void round_rows(const float* from, int64_t rows, int64_t D, T* to, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < D; ++c) to[r * ld + c] = T(from[r * D + c]);
  }
}
void store_head(const HeadView& view, int64_t b, int64_t h, int64_t rows, int64_t D, const FloatTarget& target) {
  if (view.t.dtype() == kBFloat16) round_rows(target.data, rows, D, view.at<BFloat16>(b, h), view.ld());
  else if (view.t.dtype() == kFloat16) round_rows(target.data, rows, D, view.at<Half>(b, h), view.ld());
}

// The dropout draw over (B, H, Tq, Tk): keep[i] for the n elements starting at `first` (one
// item's Tq x Tk probabilities are one contiguous range of that draw).
void dropout_keep(uint64_t seed, uint64_t offset, int64_t first, int64_t n, float p, std::vector<uint32_t>& words,
                  char* keep) {
  const int64_t first_block = first >> 2, blocks = ((first + n + 3) >> 2) - first_block;
  words.resize(static_cast<size_t>(4 * blocks));
  philox_words(seed, offset + static_cast<uint64_t>(first_block), blocks, words.data());
  const uint32_t* w = words.data() + (first - 4 * first_block);
  const uint32_t threshold = philox_threshold(p);
  for (int64_t i = 0; i < n; ++i) keep[i] = (w[i] >> 8) >= threshold;
}

// out[i] = keep[i] ? in[i] * scale : 0 (in place when out == in). Every input is read and
// scaled before the select: a loop without a conditional load, which the compiler vectorizes.
void apply_keep(const char* keep, const float* in, float scale, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float scaled = in[i] * scale;
    out[i] = keep[i] != 0 ? scaled : 0.0f;
  }
}

// The forward saves P with the sign bit set on every element dropout dropped (P >= 0, so the
// sign is free; a dropped 0 becomes -0). Backward reads the draw back from it instead of
// running Philox again: P = |saved|, and Pd = dropout(P) = keep ? P * scale : 0.
void mark_dropped(const char* keep, int64_t n, float* P) {
  for (int64_t i = 0; i < n; ++i) P[i] = keep[i] != 0 ? P[i] : -P[i];
}
void unmark_dropped(const float* saved, float scale, int64_t n, float* P, char* keep, float* dropped) {
  for (int64_t i = 0; i < n; ++i) {
    const bool kept = (std::bit_cast<uint32_t>(saved[i]) >> 31) == 0;
    const float probability = std::fabs(saved[i]);
    P[i] = probability;
    keep[i] = kept;
    dropped[i] = kept ? probability * scale : 0.0f;
  }
}

// In place: row = softmax(row + mask_row) over n entries; mask_row may be null. Three sweeps:
// mask and max, exponent and sum (vec::exp_shifted_sum), scale. The max and the sum are SIMD
// reductions (lane-wise partial results, combined at the end), so they do not add in index
// order: the sum may differ from a sequential one in its last bits.
void masked_softmax_row(float* row, const float* mask_row, int64_t mask_stride, int64_t n) {
  // std::max's semantics (a NaN entry is passed over) written as the comparison gcc turns into
  // a vector max; with std::max it kept a scalar loop despite the pragma.
  float max_value = -INFINITY;
  if (mask_row != nullptr && mask_stride == 1) {  // the usual contiguous mask row: a unit-stride loop
#pragma omp simd reduction(max : max_value)
    for (int64_t c = 0; c < n; ++c) {
      row[c] += mask_row[c];
      max_value = row[c] > max_value ? row[c] : max_value;
    }
  } else {
    if (mask_row != nullptr) {
      for (int64_t c = 0; c < n; ++c) row[c] += mask_row[c * mask_stride];
    }
#pragma omp simd reduction(max : max_value)
    for (int64_t c = 0; c < n; ++c) max_value = row[c] > max_value ? row[c] : max_value;
  }
  if (std::isinf(max_value) && max_value < 0) max_value = 0;  // all -inf: as the softmax kernel
  const float inv = 1.0f / vec::exp_shifted_sum(row, max_value, n);
  for (int64_t c = 0; c < n; ++c) row[c] *= inv;
}

// Keys past the last one some query may attend to: where every row of the item's mask holds
// the float's lowest value (or -inf) from column `keys` on, those keys get probability exactly
// 0 (exp underflows) and are left out of both GEMMs, which is how padded positions cost
// nothing. A row that masks every key keeps them all, to give the composition's result.
int64_t attended_keys(const Tensor& mask, int64_t b, int64_t h, int64_t Tq, int64_t Tk) {
  if (!mask.defined()) return Tk;
  const float lowest = std::numeric_limits<float>::lowest();
  const int64_t row_stride = mask.stride(2), column_stride = mask.stride(3);
  const int64_t rows = row_stride == 0 ? 1 : Tq;  // a key-padding mask repeats one row
  const float* base = mask.data_ptr<float>() + b * mask.stride(0) + h * mask.stride(1);
  int64_t keys = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = base + r * row_stride;
    int64_t last = Tk - 1;
    while (last >= 0 && row[last * column_stride] <= lowest) --last;
    if (last < 0) return Tk;
    keys = std::max(keys, last + 1);
  }
  return keys;
}

// The same cut in backward, read from the saved probabilities: columns that are 0 in every
// row have no gradient to give (their dS and Pd^T dO rows are 0).
int64_t keys_with_probability(const float* P, int64_t Tq, int64_t Tk) {
  int64_t keys = 0;
  for (int64_t r = 0; r < Tq; ++r) {
    int64_t last = Tk - 1;
    while (last >= keys && P[r * Tk + last] == 0.0f) --last;
    keys = std::max(keys, last + 1);
  }
  return keys;
}

void attention_kernel(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale,
                      double dropout_p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& probs) {
  kernels::check_attention_dtypes("attention", {&q, &k, &v}, {&mask, &out, &probs});
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  if (out.numel() == 0) return;
  const HeadView Q{q}, K{k}, V{v}, O{out};
  const int64_t mask_row_stride = mask.defined() ? mask.stride(2) : 0;
  const int64_t mask_column_stride = mask.defined() ? mask.stride(3) : 0;
  const float p = static_cast<float>(dropout_p), keep_scale = static_cast<float>(1.0 / (1.0 - dropout_p));
  parallel_for(B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(probs.defined() ? 0 : Tq * Tk), dropped(p > 0 ? Tq * Tk : 0);
    std::vector<char> keep(p > 0 ? Tq * Tk : 0);  // the item's dropout draw
    std::vector<uint32_t> words;
    std::vector<float> q_buffer, k_buffer, v_buffer;  // float32 copies of 16-bit heads
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H, h = item % H;
      float* S = probs.defined() ? probs.data_ptr<float>() + item * Tq * Tk : scratch.data();  // (Tq, Tk)
      float* O_bh = O.at<float>(b, h);
      if (Tk == 0) {
        for (int64_t r = 0; r < Tq; ++r) std::fill_n(O_bh + r * O.ld(), D, 0.0f);
        continue;
      }
      const int64_t keys = attended_keys(mask, b, h, Tq, Tk);
      const FloatMatrix Qf = head_as_float(Q, b, h, Tq, D, q_buffer), Kf = head_as_float(K, b, h, keys, D, k_buffer);
      const FloatMatrix Vf = head_as_float(V, b, h, keys, D, v_buffer);
      sgemm('N', 'T', Tq, keys, D, static_cast<float>(scale), Qf.data, Qf.ld, Kf.data, Kf.ld, 0.0f, S, Tk);
      const float* mask_bh = mask.defined() ? mask.data_ptr<float>() + b * mask.stride(0) + h * mask.stride(1) : nullptr;
      for (int64_t r = 0; r < Tq; ++r) {
        const float* mask_row = mask_bh ? mask_bh + r * mask_row_stride : nullptr;
        masked_softmax_row(S + r * Tk, mask_row, mask_column_stride, keys);
        std::fill(S + r * Tk + keys, S + (r + 1) * Tk, 0.0f);  // the skipped keys' probability
      }
      const float* P = S;
      if (p > 0) {  // dropout(P), drawn element by element as dropout() would over (B, H, Tq, Tk)
        dropout_keep(seed, offset, item * Tq * Tk, Tq * Tk, p, words, keep.data());
        apply_keep(keep.data(), S, keep_scale, Tq * Tk, dropped.data());
        if (probs.defined()) mark_dropped(keep.data(), Tq * Tk, S);
        P = dropped.data();
      }
      sgemm('N', 'N', Tq, D, keys, 1.0f, P, Tk, Vf.data, Vf.ld, 0.0f, O_bh, O.ld());
    }
  });
}

// With P the saved probabilities and Pd = dropout(P):
//   dV = Pd^T dO;  dPd = dO V^T;  dP = dropout'(dPd);  dS = P * (dP - rowsum(dP * P));
//   dQ = scale dS K;  dK = scale dS^T Q.
void attention_backward_kernel(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& probs, double scale, double dropout_p, uint64_t seed, uint64_t offset,
                               const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v) {
  kernels::check_attention_dtypes("attention_backward", {&q, &k, &v, &grad_q, &grad_k, &grad_v}, {&grad_out, &probs});
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  const HeadView Q{q}, K{k}, V{v}, G{grad_out}, GQ{grad_q}, GK{grad_k}, GV{grad_v};
  const float p = static_cast<float>(dropout_p), keep_scale = static_cast<float>(1.0 / (1.0 - dropout_p));
  const float s = static_cast<float>(scale);
  parallel_for(B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> dP(Tq * Tk), dropped(p > 0 ? Tq * Tk : 0), unmarked(p > 0 ? Tq * Tk : 0);
    std::vector<char> keep(p > 0 ? Tq * Tk : 0);  // the item's dropout draw
    std::vector<float> q_buffer, k_buffer, v_buffer, gq_buffer, gk_buffer, gv_buffer;  // for 16-bit heads
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H, h = item % H;
      const FloatTarget gq = head_target(GQ, b, h, Tq, D, gq_buffer), gk = head_target(GK, b, h, Tk, D, gk_buffer);
      const FloatTarget gv = head_target(GV, b, h, Tk, D, gv_buffer);
      if (Tq == 0 || Tk == 0 || D == 0) {
        for (int64_t r = 0; r < Tq; ++r) std::fill_n(gq.data + r * gq.ld, D, 0.0f);
        for (int64_t r = 0; r < Tk; ++r) {
          std::fill_n(gk.data + r * gk.ld, D, 0.0f);
          std::fill_n(gv.data + r * gv.ld, D, 0.0f);
        }
        store_head(GQ, b, h, Tq, D, gq);
        store_head(GK, b, h, Tk, D, gk);
        store_head(GV, b, h, Tk, D, gv);
        continue;
      }
      const float* P = probs.data_ptr<float>() + item * Tq * Tk;
      const float* Pd = P;
      if (p > 0) {
        unmark_dropped(P, keep_scale, Tq * Tk, unmarked.data(), keep.data(), dropped.data());
        P = unmarked.data();
        Pd = dropped.data();
      }
      const int64_t keys = keys_with_probability(P, Tq, Tk);
      for (int64_t r = keys; r < Tk; ++r) {
        std::fill_n(gk.data + r * gk.ld, D, 0.0f);
        std::fill_n(gv.data + r * gv.ld, D, 0.0f);
      }
      const FloatMatrix Qf = head_as_float(Q, b, h, Tq, D, q_buffer), Kf = head_as_float(K, b, h, keys, D, k_buffer);
      const FloatMatrix Vf = head_as_float(V, b, h, keys, D, v_buffer);
      const float* dO = G.at<float>(b, h);
      sgemm('T', 'N', keys, D, Tq, 1.0f, Pd, Tk, dO, G.ld(), 0.0f, gv.data, gv.ld);
      sgemm('N', 'T', Tq, keys, D, 1.0f, dO, G.ld(), Vf.data, Vf.ld, 0.0f, dP.data(), Tk);
      for (int64_t r = 0; r < Tq; ++r) {
        float* dp = dP.data() + r * Tk;
        const float* pr = P + r * Tk;
        if (p > 0) {
          apply_keep(keep.data() + r * Tk, dp, keep_scale, keys, dp);
        }
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < keys; ++c) dot += dp[c] * pr[c];
        for (int64_t c = 0; c < keys; ++c) dp[c] = pr[c] * (dp[c] - dot);
      }
      sgemm('N', 'N', Tq, D, keys, s, dP.data(), Tk, Kf.data, Kf.ld, 0.0f, gq.data, gq.ld);
      sgemm('T', 'N', keys, D, Tq, s, dP.data(), Tk, Qf.data, Qf.ld, 0.0f, gk.data, gk.ld);
      store_head(GQ, b, h, Tq, D, gq);
      store_head(GK, b, h, Tk, D, gk);
      store_head(GV, b, h, Tk, D, gv);
    }
  });
}

}  // namespace

ACCEL_REGISTER_KERNEL(attention, DeviceType::CPU, attention_kernel);
ACCEL_REGISTER_KERNEL(attention_backward, DeviceType::CPU, attention_backward_kernel);

}  // namespace accel::cpu
