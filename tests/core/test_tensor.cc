// Unit tests of the tensor core: dtype traits and 16-bit rounding, views sharing storage,
// factories, type promotion, printing, the Philox stream, and the error messages of bad
// calls (each names the op and shows the shapes).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "backends/cpu/philox.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/random.h"

using namespace accel;
using ::testing::HasSubstr;

namespace {

// Runs f, expects an accel::Error, and returns its message.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an accel::Error";
  return "";
}

}  // namespace

TEST(DType, TraitsTable) {
  EXPECT_EQ(itemsize(kFloat32), 4);
  EXPECT_EQ(itemsize(kFloat64), 8);
  EXPECT_EQ(itemsize(kFloat16), 2);
  EXPECT_EQ(itemsize(kBFloat16), 2);
  EXPECT_EQ(itemsize(kInt64), 8);
  EXPECT_EQ(itemsize(kInt32), 4);
  EXPECT_EQ(itemsize(kBool), 1);
  EXPECT_STREQ(dtype_name(kBFloat16), "bfloat16");
  EXPECT_EQ(dtype_from_safetensors_name("BF16"), kBFloat16);
  EXPECT_THAT(error_of([] { dtype_from_safetensors_name("F8_E4M3"); }), HasSubstr("F8_E4M3"));
}

TEST(DType, BFloat16RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
  EXPECT_EQ(BFloat16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3f80);
  // 1 + 3 * 2^-8 is between 1 + 2^-7 (odd mantissa) and 1 + 2^-6: ties to even goes up.
  EXPECT_EQ(BFloat16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3f82);
  // Just above the tie rounds up.
  EXPECT_EQ(BFloat16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)).bits, 0x3f81);
  EXPECT_EQ(float(BFloat16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(float(BFloat16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(float(BFloat16(std::numeric_limits<float>::infinity()))));
  // The largest float rounds to infinity in bf16 (its exponent overflows when rounding up).
  EXPECT_TRUE(std::isinf(float(BFloat16(std::numeric_limits<float>::max()))));
}

TEST(DType, HalfRoundsToNearestEven) {
  EXPECT_EQ(Half(1.0f).bits, 0x3c00);
  EXPECT_EQ(Half(65504.0f).bits, 0x7bff);  // largest finite half
  EXPECT_EQ(Half(65519.0f).bits, 0x7bff);  // below the rounding boundary
  EXPECT_EQ(Half(65520.0f).bits, 0x7c00);  // rounds to infinity
  // 1 + 2^-11 is the tie between 1 and 1 + 2^-10: to even (1).
  EXPECT_EQ(Half(1.0f + std::ldexp(1.0f, -11)).bits, 0x3c00);
  EXPECT_EQ(Half(1.0f + 3 * std::ldexp(1.0f, -11)).bits, 0x3c02);
  // Subnormals: 2^-24 is the smallest; 2^-25 is a tie between 0 and it, to even (0).
  EXPECT_EQ(Half(std::ldexp(1.0f, -24)).bits, 0x0001);
  EXPECT_EQ(Half(std::ldexp(1.0f, -25)).bits, 0x0000);
  EXPECT_EQ(Half(3 * std::ldexp(1.0f, -25)).bits, 0x0002);
  EXPECT_EQ(Half(-0.0f).bits, 0x8000);
  // Every half converts to float and back unchanged.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    Half h = Half::from_bits(uint16_t(bits));
    float f = float(h);
    if (std::isnan(f)) continue;
    ASSERT_EQ(Half(f).bits, bits) << "bits " << bits;
  }
}

TEST(DType, Promotion) {
  EXPECT_EQ(promote_types(kInt64, kFloat32), kFloat32);
  EXPECT_EQ(promote_types(kFloat16, kBFloat16), kFloat32);
  EXPECT_EQ(promote_types(kBool, kInt32), kInt32);
  EXPECT_EQ(promote_types(kFloat32, kFloat64), kFloat64);
  // A number keeps the tensor's kind: int tensor + 2 stays int, half * 0.5 stays half.
  EXPECT_EQ((arange(3) + 2).dtype(), kInt64);
  EXPECT_EQ((ones({2}, kFloat16) * 0.5).dtype(), kFloat16);
  EXPECT_EQ((arange(3) * 0.5).dtype(), kFloat32);
  EXPECT_EQ(div(arange(3), arange(1, 4)).dtype(), kFloat32);
}

TEST(Tensor, FactoriesAndConversions) {
  EXPECT_EQ(zeros({2, 3}).sum().item<float>(), 0.0f);
  EXPECT_EQ(ones({2, 3}, kInt32).sum().item<int64_t>(), 6);
  EXPECT_EQ(full({2}, 2.5).to_vector<float>(), (std::vector<float>{2.5f, 2.5f}));
  EXPECT_EQ(arange(5).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(arange(1.0, 2.0, 0.25).numel(), 4);
  Tensor t = from_vector<float>({1.5f, -2.25f, 3.0f}, {3});
  EXPECT_EQ(t.to(kBFloat16).to(kFloat32).to_vector<float>(), (std::vector<float>{1.5f, -2.25f, 3.0f}));
  EXPECT_EQ(t.to(kInt64).to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(t.to(kBool).to_vector<bool>(), (std::vector<bool>{true, true, true}));
  EXPECT_EQ(zeros({0, 3}).numel(), 0);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor base = arange(24, kFloat32).reshape({2, 3, 4});
  Tensor views[] = {base.view({6, 4}), base.transpose(0, 2), base.permute({2, 0, 1}), base.slice(2, 1, 3),
                    base.select(1, 2), base.narrow(0, 1, 1), base.unsqueeze(1), base[0].expand({5, 3, 4}),
                    base.view({2, 1, 12}).squeeze(1), base.flatten()};
  for (const Tensor& v : views) EXPECT_EQ(v.storage().get(), base.storage().get());
  Tensor col = base.select(2, 1);  // (2, 3) with stride 4
  EXPECT_EQ(col.strides(), (Shape{12, 4}));
  EXPECT_FALSE(col.is_contiguous());
  EXPECT_EQ(col.to_vector<float>(), (std::vector<float>{1, 5, 9, 13, 17, 21}));
  Tensor stepped = base.flatten().slice(0, 1, 10, 3);
  EXPECT_EQ(stepped.to_vector<float>(), (std::vector<float>{1, 4, 7}));
  // A write through a view is seen by the base.
  Tensor row = base.select(0, 1).select(0, 0);
  row.fill_(-1.0);
  EXPECT_EQ(base.select(0, 1).select(0, 0).sum().item<float>(), -4.0f);
  // contiguous() copies only when needed.
  EXPECT_TRUE(base.contiguous().is_same(base));
  EXPECT_NE(base.transpose(0, 1).contiguous().storage().get(), base.storage().get());
  // reshape of a non-viewable layout copies instead of failing.
  EXPECT_EQ(base.transpose(0, 2).reshape({24}).numel(), 24);
  EXPECT_THAT(error_of([&] { base.transpose(0, 2).view({24}); }), HasSubstr("use reshape()"));
}

TEST(Tensor, PrintsLikeLibTorch) {
  EXPECT_EQ(ones({2, 3}).str(), " 1  1  1\n 1  1  1\n[ CPUFloatType{2,3} ]");
  EXPECT_EQ(arange(3).str(), " 0\n 1\n 2\n[ CPULongType{3} ]");
  EXPECT_EQ(from_vector<double>({0.5, -1.25}, {1, 2}).str(), " 0.5000 -1.2500\n[ CPUDoubleType{1,2} ]");
  EXPECT_EQ(zeros({1, 1, 2}, kBFloat16).str(), "(1,.,.) = \n 0  0\n[ CPUBFloat16Type{1,1,2} ]");
}

TEST(Random, PhiloxKnownAnswers) {
  // Known-answer vectors of Random123's kat_vectors for philox4x32_10.
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (PhiloxBlock{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (PhiloxBlock{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (PhiloxBlock{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Random, IntegerDropoutThresholdIsTheFloatTest) {
  // (word >> 8) >= philox_threshold(p) must keep exactly the elements philox_uniform(word) >= p
  // keeps: checked on every 24-bit value next to the threshold, the ends of the range, and p at
  // the grid points, between them and at the ends.
  std::vector<float> probabilities = {0.0f, 0.1f, 0.5f, 1.0f / 3.0f, 0.9f, 1.0f, std::nextafter(1.0f, 0.0f),
                                      std::nextafter(0.0f, 1.0f), 3.0f / 16777216.0f, 3.5f / 16777216.0f};
  Generator gen(7);
  for (float u : rand({200}, {}, &gen).to_vector<float>()) probabilities.push_back(u);
  for (float p : probabilities) {
    const uint32_t threshold = philox_threshold(p);
    std::vector<int64_t> values = {0, 1, (1 << 24) - 1};
    for (int64_t d = -3; d <= 3; ++d) values.push_back(static_cast<int64_t>(threshold) + d);
    for (int64_t v : values) {
      if (v < 0 || v >= (1 << 24)) continue;
      const uint32_t word = static_cast<uint32_t>(v) << 8 | 0xA5u;  // low bits are not part of the draw
      ASSERT_EQ((word >> 8) >= threshold, philox_uniform(word) >= p) << "p " << p << " value " << v;
    }
  }
}

TEST(Random, VectorizedPhiloxIsTheScalarStream) {
  // Sixteen blocks at a time plus a scalar tail; counters crossing 2^32 carry into the high
  // word, and the run of sixteen holding the carry goes through the scalar path.
  constexpr int64_t kBlocks = 53;
  for (uint64_t seed : {uint64_t{0}, uint64_t{1234}, uint64_t{0xfedcba9876543210}}) {
    for (uint64_t first : {uint64_t{0}, uint64_t{5}, uint64_t{0xfffffffbu}, uint64_t{0xffffffe0u}, uint64_t{0x1fffffff0}}) {
      std::vector<uint32_t> words(4 * kBlocks);
      cpu::philox_words(seed, first, kBlocks, words.data());
      for (int64_t i = 0; i < kBlocks; ++i) {
        const PhiloxBlock w = philox_block(seed, first + static_cast<uint64_t>(i));
        for (int k = 0; k < 4; ++k) ASSERT_EQ(words[4 * i + k], w[k]) << "seed " << seed << " block " << first + i;
      }
    }
  }
}

TEST(Random, StreamIsDocumentedAndReproducible) {
  Generator gen(1234);
  Tensor u = rand({10}, {}, &gen);
  // Element i is word i % 4 of block i / 4 (core/random.h).
  std::vector<float> values = u.to_vector<float>();
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(values[i], philox_uniform(philox_block(1234, i / 4)[i % 4])) << i;
  }
  EXPECT_EQ(gen.offset(), 3u);  // ceil(10 / 4) blocks consumed
  gen.manual_seed(1234);
  EXPECT_TRUE(equal(rand({10}, {}, &gen), u));
  // Moments of a large normal draw.
  Tensor z = randn({200000}, kFloat64, &gen);
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(z.std({0}).item<double>(), 1.0, 0.01);
  Tensor k = randint(3, 7, {1000}, kInt64, &gen);
  EXPECT_EQ(amin(k).item<int64_t>(), 3);
  EXPECT_EQ(amax(k).item<int64_t>(), 6);
}

// Dropout draws the same mask in every float dtype (element i keeps by word i of the stream),
// and the 16-bit kernels, which compute in float chunks, give float32's results rounded once:
// forward and backward, over more elements than one batch of Philox blocks and one chunk, with a
// tail that fills neither.
TEST(Random, DropoutIsTheSameDrawAndValueInEveryFloatDtype) {
  constexpr int64_t n = 3 * 2048 + 517;
  constexpr double p = 0.3;
  Generator inputs(21);
  const Tensor x32 = randn({n}, kFloat32, &inputs), g32 = randn({n}, kFloat32, &inputs);
  // dropout(x) and its input gradient for the gradient g, in x's dtype, from seed 5.
  auto run = [&](const Tensor& x_values, const Tensor& g) {
    Tensor x = x_values.clone().requires_grad_(true);
    Generator gen(5);
    Tensor y = dropout(x, p, true, &gen);
    y.backward(g);
    return std::pair{y.detach(), x.grad()};
  };
  auto kept = [](const Tensor& y) { return ne(y, zeros_like(y)); };
  const auto [y32, dx32] = run(x32, g32);
  const auto [y64, dx64] = run(x32.to(kFloat64), g32.to(kFloat64));
  EXPECT_TRUE(equal(kept(y64), kept(y32))) << "float64 drew another mask";
  const double kept_share = kept(y32).to(kFloat64).mean().item<double>();
  EXPECT_NEAR(kept_share, 1 - p, 0.02);
  for (DType dtype : {kBFloat16, kFloat16}) {
    // Inputs exact in the 16-bit type: float32 on them computes what the 16-bit kernel rounds.
    const Tensor x16 = x32.to(dtype), g16 = g32.to(dtype);
    const auto [expected_y, expected_dx] = run(x16.to(kFloat32), g16.to(kFloat32));
    const auto [y, dx] = run(x16, g16);
    EXPECT_TRUE(equal(y, expected_y.to(dtype))) << dtype_name(dtype) << " forward";
    EXPECT_TRUE(equal(dx, expected_dx.to(dtype))) << dtype_name(dtype) << " backward";
  }
}

TEST(Ops, ReductionsAndIndices) {
  Tensor x = from_vector<float>({3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8}, {3, 4});
  EXPECT_EQ(x.sum({1}).to_vector<float>(), (std::vector<float>{9, 22, 21}));
  EXPECT_EQ(x.sum({0}, true).sizes(), (Shape{1, 4}));
  ValuesIndices m = max(x, 1);
  EXPECT_EQ(m.values.to_vector<float>(), (std::vector<float>{4, 9, 8}));
  EXPECT_EQ(m.indices.to_vector<int64_t>(), (std::vector<int64_t>{2, 1, 3}));
  EXPECT_EQ(argmax(x).item<int64_t>(), 5);
  EXPECT_FLOAT_EQ(x.var({0, 1}, 0).item<float>(), 5.8888889f);
  EXPECT_FLOAT_EQ(x.var({0, 1}).item<float>(), 6.4242424f);  // unbiased
  EXPECT_EQ(min(x, 0).indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1, 0}));
}

// Whole-tensor sums (the gradient norm's) take the blocked parallel path: exact for int64,
// within float32's rounding of the float64 sum for float32 and bf16, and bit for bit the same
// at 1 and 2 threads (fixed blocks, added in order). A strided tensor takes the element walk
// and agrees.
TEST(Ops, WholeTensorSumsAreAccurateAndIndependentOfTheThreadCount) {
  Generator gen(17);
  Tensor x = randn({1000003}, kFloat32, &gen) + 0.5;  // not a multiple of the block
  const double exact = x.to(kFloat64).sum().item<double>();
  const int threads = get_num_threads();
  set_num_threads(1);
  const float one = x.sum().item<float>(), mean_one = x.mean().item<float>();
  set_num_threads(2);
  const float two = x.sum().item<float>(), mean_two = x.mean().item<float>();
  set_num_threads(threads);
  EXPECT_EQ(one, two);
  EXPECT_EQ(mean_one, mean_two);
  EXPECT_NEAR(two, exact, std::abs(exact) * 1e-7);
  EXPECT_NEAR(mean_two, exact / 1000003, std::abs(exact / 1000003) * 1e-7);
  EXPECT_NEAR(x.to(kBFloat16).sum().item<double>(), x.to(kBFloat16).to(kFloat64).sum().item<double>(),
              std::abs(exact) * 1.0 / 256);
  EXPECT_EQ(x.view({1000003, 1}).t().sum({1}).item<float>(), two);  // a (1, n) view: one run per output
  Tensor strided = x.narrow(0, 0, 1000002).view({500001, 2}).select(1, 0);
  EXPECT_NEAR(strided.sum().item<double>(), strided.to(kFloat64).sum().item<double>(), std::abs(exact) * 1e-7);
  Tensor k = randint(-1000, 1000, {300000}, kInt64, &gen);
  int64_t expected = 0;
  for (int64_t v : k.to_vector<int64_t>()) expected += v;
  EXPECT_EQ(k.sum().item<int64_t>(), expected);
}

TEST(Ops, MatmulSemantics) {
  Tensor a = arange(6, kFloat32).reshape({2, 3});
  Tensor b = arange(12, kFloat32).reshape({3, 4});
  EXPECT_EQ(matmul(a, b).to_vector<float>(), (std::vector<float>{20, 23, 26, 29, 56, 68, 80, 92}));
  EXPECT_EQ(matmul(arange(3, kFloat32), arange(3, kFloat32)).dim(), 0);
  EXPECT_EQ(matmul(ones({5, 1, 2, 3}), ones({4, 3, 7})).sizes(), (Shape{5, 4, 2, 7}));
  // A transposed operand is used through its strides and gives the same result.
  Tensor bt = b.t().contiguous().t();
  EXPECT_TRUE(equal(matmul(a, bt), matmul(a, b)));
  EXPECT_TRUE(allclose(matmul(a.to(kFloat64), b.to(kFloat64)).to(kFloat32), matmul(a, b)));
  EXPECT_TRUE(allclose(matmul(a.to(kBFloat16), b.to(kBFloat16)).to(kFloat32), matmul(a, b), 1e-2));
  EXPECT_THAT(error_of([&] { matmul(a, a); }), HasSubstr("matmul: shapes [2, 3] and [2, 3] cannot be multiplied"));
}

// A float32 B operand whose rows lie a multiple of 1 KiB apart (BERT-base's 768-wide weights,
// a view into one) is copied into padded rows before oneDNN multiplies it (matmul.cc says
// why): the products, batched, broadcast over the batch or not batched, are the ones float64
// gives.
TEST(Ops, MatmulWithRowsAMultipleOfOneKibApartMatchesFloat64) {
  Generator gen(5);
  Tensor a = randn({2, 512, 64}, kFloat32, &gen), wide = randn({2, 64, 768}, kFloat32, &gen);
  for (const Tensor& b : {wide, wide.narrow(2, 0, 700), wide.select(0, 1), wide.narrow(0, 0, 1)}) {
    SCOPED_TRACE(b.shape_string());
    ASSERT_EQ(b.stride(b.dim() - 2) * b.element_size(), 3072);
    Tensor expected = matmul(a.to(kFloat64), b.to(kFloat64));
    EXPECT_TRUE(allclose(matmul(a, b).to(kFloat64), expected, 1e-5, 1e-5));
  }
}

// Several threads running the same GEMM and attention shapes at once (a server answering
// requests on one model): oneDNN primitives are shared between threads, and oneDNN's default
// scratchpad is not, so this once gave wrong products (matmul.cc: scratchpad_mode::user).
// scripts/sanitize.sh also runs it under ThreadSanitizer.
TEST(Ops, ConcurrentProductsFromSeveralThreadsAreRight) {
  Generator gen(6);
  Tensor x = randn({2, 64, 96}, kFloat32, &gen), weight = randn({128, 96}, kFloat32, &gen),
         bias = randn({128}, kFloat32, &gen), b = randn({2, 96, 80}, kFloat32, &gen);
  Tensor q = randn({2, 4, 64, 32}, kFloat32, &gen), k = randn({2, 4, 64, 32}, kFloat32, &gen),
         v = randn({2, 4, 64, 32}, kFloat32, &gen);
  auto products = [&] {
    return std::vector<Tensor>{linear(x, weight, bias), linear_gelu(x, weight, bias), matmul(x, b),
                               scaled_dot_product_attention(q, k, v)};
  };
  const std::vector<Tensor> expected = products();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      for (int call = 0; call < 30; ++call) {
        std::vector<Tensor> actual = products();
        for (size_t i = 0; i < actual.size(); ++i) {
          if (!allclose(actual[i], expected[i], 1e-6, 1e-6)) ++wrong;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0) << "products that differ from the single-threaded ones";
}

TEST(Ops, ErrorsNameTheOpAndShapes) {
  Tensor a = ones({2, 3});
  EXPECT_THAT(error_of([&] { add(a, ones({4})); }),
              HasSubstr("add: shapes [2, 3] and [4] cannot be broadcast together"));
  EXPECT_THAT(error_of([&] { index_select(a, 1, from_vector<int64_t>({0, 3})); }),
              HasSubstr("index_select: index 3 is out of range: expected values in [0, 3)"));
  EXPECT_THAT(error_of([&] { embedding(a, from_vector<float>({0.0f})); }),
              HasSubstr("embedding: expected an int64 or int32 index tensor but got dtype float32"));
  EXPECT_THAT(error_of([&] { a.sum({2}); }), HasSubstr("sum: dim 2 out of range for a tensor of 2 dims"));
  EXPECT_THAT(error_of([&] { a.view({4}); }), HasSubstr("view: shape [4] is invalid for input of size 6"));
  EXPECT_THAT(error_of([&] { layer_norm(a, {2}); }), HasSubstr("does not end with normalized_shape [2]"));
  EXPECT_THAT(error_of([&] { cross_entropy(a, from_vector<int64_t>({0, 7})); }),
              HasSubstr("cross_entropy: target class 7 is out of range: expected values in [0, 3)"));
  EXPECT_THAT(error_of([&] { linear(a, ones({4, 2})); }), HasSubstr("linear: input of shape [2, 3] does not match weight"));
  EXPECT_THAT(error_of([&] { cat({a, ones({2, 3, 1})}, 0); }), HasSubstr("cat: tensor 1 has 3 dims"));
  EXPECT_THAT(error_of([&] { ones({2}, kInt64).requires_grad_(); }), HasSubstr("only floating-point tensors"));
  EXPECT_THAT(error_of([&] { Tensor().sizes(); }), HasSubstr("undefined tensor"));
  // cuda:99 exists in no build: a CPU build has no CUDA allocator, a CUDA build not that GPU.
  EXPECT_THAT(error_of([&] { ones({2}).to(Device("cuda:99")).numel(); }), HasSubstr("cuda"));
}
