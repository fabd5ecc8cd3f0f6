// Float64 finite-difference gradient checks (tests/core/gradcheck.h) of every differentiable
// op in core/ops.h: one TEST per op, each on random shapes that include broadcasting and
// non-contiguous inputs (strided leaves, and slices/transposes/expands taken inside the
// checked function). Inputs are kept away from kinks (abs, relu, clamp) and ties
// (maximum, max), where a finite difference straddles two branches.
// What it is not: a check of forward values (tests/core/test_golden_ops.cc pins those).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/random.h"
#include "tests/core/gradcheck.h"

using namespace accel;

namespace {

using Inputs = std::vector<Tensor>;

// Standard normal float64 values (no grad), from the test's own generator.
Tensor normal(const Shape& shape, Generator& gen) { return randn(shape, kFloat64, &gen); }

// Values in [low, high).
Tensor uniform(const Shape& shape, Generator& gen, double low, double high) {
  return rand(shape, kFloat64, &gen) * (high - low) + low;
}

// Moves values within `gap` of `point` out to distance >= gap, so a finite difference never
// straddles a kink there.
Tensor away_from(const Tensor& x, double point, double gap = 0.1) {
  return where(x >= point, x + gap, x - gap);
}

// Marks a tensor built without grad as a leaf that requires grad.
Tensor leaf(Tensor t) { return t.requires_grad_(); }

// A leaf of `shape` that is a transposed view (strides not row-major) of a random buffer.
Tensor strided_leaf(const Shape& shape, Generator& gen) {
  Shape reversed(shape.rbegin(), shape.rend());
  Shape order;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) order.push_back(d);
  return leaf(normal(reversed, gen).permute(order));
}

// Runs `op` through gradcheck on a contiguous leaf, a strided leaf and a step-2 slice
// transposed inside fn; make(shape) gives the (no-grad) values the op accepts.
void check_unary(const std::function<Tensor(const Tensor&)>& op,
                 const std::function<Tensor(const Shape&)>& make) {
  Tensor contiguous = leaf(make({2, 3, 4}));
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return op(in[0]); }, {contiguous})) << "contiguous input";

  Tensor transposed = leaf(make({5, 4}).t());  // (4, 5), strides (1, 4)
  ASSERT_FALSE(transposed.is_contiguous());
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return op(in[0]); }, {transposed})) << "strided leaf";

  Tensor base = leaf(make({4, 6}));
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return op(in[0].slice(1, 1, std::nullopt, 2).t()); }, {base}))
      << "sliced and transposed inside fn";
}

// Checks a binary op on broadcast shapes, a strided leaf, and an expand inside fn.
// make(shape) gives values valid for both operands.
void check_binary(const std::function<Tensor(const Tensor&, const Tensor&)>& op,
                  const std::function<Tensor(const Shape&)>& make_a,
                  const std::function<Tensor(const Shape&)>& make_b) {
  auto fn = [&](const Inputs& in) { return op(in[0], in[1]); };
  EXPECT_TRUE(gradcheck(fn, {leaf(make_a({3, 1, 4})), leaf(make_b({4}))})) << "(3, 1, 4) with (4)";
  EXPECT_TRUE(gradcheck(fn, {leaf(make_a({2})), leaf(make_b({3, 2, 1}))})) << "(2) with (3, 2, 1)";
  EXPECT_TRUE(gradcheck(fn, {leaf(make_a({4, 3}).t()), leaf(make_b({3, 4}))})) << "transposed first operand";
  Tensor column = leaf(make_a({3, 1}));
  Tensor wide = leaf(make_b({3, 8}));
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return op(in[0].expand({3, 4}), in[1].slice(1, 0, std::nullopt, 2)); },
                        {column, wide}))
      << "expand and step-2 slice inside fn";
  EXPECT_TRUE(gradcheck(fn, {leaf(make_a({2, 3})), leaf(make_b({}))})) << "(2, 3) with a 0-d tensor";
  Tensor only_b = make_a({2, 3});  // one operand without grad
  EXPECT_TRUE(gradcheck(fn, {only_b, leaf(make_b({2, 3}))})) << "first operand without grad";
}

}  // namespace

// ---- pointwise binary ----

TEST(Gradcheck, Add) {
  Generator gen(1);
  auto any = [&](const Shape& s) { return normal(s, gen); };
  check_binary([](const Tensor& a, const Tensor& b) { return add(a, b); }, any, any);
  check_binary([](const Tensor& a, const Tensor& b) { return add(a, b, 2.5); }, any, any);
  check_binary([](const Tensor& a, const Tensor& b) { return a + b; }, any, any);
}

TEST(Gradcheck, Sub) {
  Generator gen(2);
  auto any = [&](const Shape& s) { return normal(s, gen); };
  check_binary([](const Tensor& a, const Tensor& b) { return sub(a, b); }, any, any);
  check_binary([](const Tensor& a, const Tensor& b) { return sub(a, b, -0.75); }, any, any);
}

TEST(Gradcheck, Mul) {
  Generator gen(3);
  auto any = [&](const Shape& s) { return normal(s, gen); };
  check_binary([](const Tensor& a, const Tensor& b) { return mul(a, b); }, any, any);
  Tensor x = leaf(normal({3, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0] * in[0]; }, {x})) << "same tensor twice";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0] * 3.0; }, {x})) << "scalar operand";
}

TEST(Gradcheck, Div) {
  Generator gen(4);
  auto any = [&](const Shape& s) { return normal(s, gen); };
  auto denominator = [&](const Shape& s) { return away_from(normal(s, gen), 0.0, 0.5); };
  check_binary([](const Tensor& a, const Tensor& b) { return div(a, b); }, any, denominator);
  Tensor x = leaf(denominator({2, 3}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return 2.0 / in[0]; }, {x})) << "scalar numerator";
}

TEST(Gradcheck, PowTensorExponent) {
  Generator gen(5);
  auto positive = [&](const Shape& s) { return uniform(s, gen, 0.5, 2.0); };
  auto any = [&](const Shape& s) { return normal(s, gen); };
  check_binary([](const Tensor& a, const Tensor& b) { return pow(a, b); }, positive, any);
}

TEST(Gradcheck, PowScalarExponent) {
  Generator gen(6);
  for (double exponent : {2.0, 3.0, 0.5, -1.5, 0.0}) {
    check_unary([exponent](const Tensor& x) { return pow(x, exponent); },
                [&](const Shape& s) { return uniform(s, gen, 0.5, 2.0); });
  }
  check_unary([](const Tensor& x) { return pow(x, 2); }, [&](const Shape& s) { return normal(s, gen); });
}

TEST(Gradcheck, Maximum) {
  Generator gen(7);
  // a in (-3, -0.1] U [0.1, 3) and b in (-0.05, 0.05): no ties within eps.
  auto a_values = [&](const Shape& s) { return away_from(uniform(s, gen, -2.0, 2.0), 0.0); };
  auto b_values = [&](const Shape& s) { return uniform(s, gen, -0.05, 0.05); };
  check_binary([](const Tensor& a, const Tensor& b) { return maximum(a, b); }, a_values, b_values);
}

TEST(Gradcheck, Minimum) {
  Generator gen(8);
  auto a_values = [&](const Shape& s) { return away_from(uniform(s, gen, -2.0, 2.0), 0.0); };
  auto b_values = [&](const Shape& s) { return uniform(s, gen, -0.05, 0.05); };
  check_binary([](const Tensor& a, const Tensor& b) { return minimum(a, b); }, a_values, b_values);
}

// ---- pointwise unary ----

TEST(Gradcheck, Neg) {
  Generator gen(10);
  check_unary([](const Tensor& x) { return neg(x); }, [&](const Shape& s) { return normal(s, gen); });
  check_unary([](const Tensor& x) { return -x; }, [&](const Shape& s) { return normal(s, gen); });
}

TEST(Gradcheck, Abs) {
  Generator gen(11);
  check_unary([](const Tensor& x) { return abs(x); }, [&](const Shape& s) { return away_from(normal(s, gen), 0.0); });
}

TEST(Gradcheck, Exp) {
  Generator gen(12);
  check_unary([](const Tensor& x) { return exp(x); }, [&](const Shape& s) { return normal(s, gen); });
}

TEST(Gradcheck, Log) {
  Generator gen(13);
  check_unary([](const Tensor& x) { return log(x); }, [&](const Shape& s) { return uniform(s, gen, 0.3, 3.0); });
}

TEST(Gradcheck, Sqrt) {
  Generator gen(14);
  check_unary([](const Tensor& x) { return sqrt(x); }, [&](const Shape& s) { return uniform(s, gen, 0.3, 3.0); });
}

TEST(Gradcheck, Rsqrt) {
  Generator gen(15);
  check_unary([](const Tensor& x) { return rsqrt(x); }, [&](const Shape& s) { return uniform(s, gen, 0.3, 3.0); });
}

TEST(Gradcheck, Tanh) {
  Generator gen(16);
  check_unary([](const Tensor& x) { return tanh(x); }, [&](const Shape& s) { return normal(s, gen) * 2.0; });
}

TEST(Gradcheck, Sigmoid) {
  Generator gen(17);
  check_unary([](const Tensor& x) { return sigmoid(x); }, [&](const Shape& s) { return normal(s, gen) * 2.0; });
}

TEST(Gradcheck, Relu) {
  Generator gen(18);
  check_unary([](const Tensor& x) { return relu(x); }, [&](const Shape& s) { return away_from(normal(s, gen), 0.0); });
}

TEST(Gradcheck, Gelu) {
  Generator gen(19);
  auto values = [&](const Shape& s) { return normal(s, gen) * 2.0; };
  check_unary([](const Tensor& x) { return gelu(x); }, values);
  check_unary([](const Tensor& x) { return gelu(x, "none"); }, values);
  check_unary([](const Tensor& x) { return gelu(x, "tanh"); }, values);
}

TEST(Gradcheck, Erf) {
  Generator gen(20);
  check_unary([](const Tensor& x) { return erf(x); }, [&](const Shape& s) { return normal(s, gen); });
}

TEST(Gradcheck, Clamp) {
  Generator gen(21);
  // Values kept 0.1 away from both bounds; some inside, some outside the range.
  auto values = [&](const Shape& s) { return away_from(away_from(normal(s, gen), -0.5), 0.5); };
  check_unary([](const Tensor& x) { return clamp(x, -0.5, 0.5); }, values);
  check_unary([](const Tensor& x) { return clamp(x, -0.5); }, values);
  check_unary([](const Tensor& x) { return clamp(x, std::nullopt, 0.5); }, values);
}

TEST(Gradcheck, Where) {
  Generator gen(22);
  Tensor condition = rand({3, 1, 4}, kFloat64, &gen) > 0.5;
  Tensor a = leaf(normal({4}, gen));
  Tensor b = leaf(normal({3, 2, 1}, gen));
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return where(condition, in[0], in[1]); }, {a, b}))
      << "condition (3, 1, 4), a (4), b (3, 2, 1)";
  Tensor strided = strided_leaf({3, 4}, gen);
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return where(condition.select(1, 0), in[0], -1.5); }, {strided}))
      << "scalar other, strided leaf";
  Tensor other = leaf(normal({3, 4}, gen));
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return where(condition.select(1, 0), in[0].t().t(), in[1]); },
                        {normal({3, 4}, gen), other}))
      << "only the second operand requires grad";
}

TEST(Gradcheck, MaskedFill) {
  Generator gen(23);
  Tensor mask = rand({4}, kFloat64, &gen) > 0.5;
  Tensor x = strided_leaf({3, 4}, gen);
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return masked_fill(in[0], mask, 2.0); }, {x}))
      << "broadcast mask (4), strided input (3, 4)";
  Tensor full_mask = rand({2, 3, 4}, kFloat64, &gen) > 0.3;
  Tensor y = leaf(normal({2, 3, 4}, gen));
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return in[0].masked_fill(full_mask, -3.0); }, {y}));
}

// ---- reductions ----

TEST(Gradcheck, Sum) {
  Generator gen(30);
  Tensor x = leaf(normal({2, 3, 4}, gen));
  Tensor strided = strided_leaf({2, 3, 4}, gen);
  for (const Tensor& input : {x, strided}) {
    for (const Shape& dims : std::vector<Shape>{{}, {1}, {0, 2}, {-1}, {2, 0}}) {
      for (bool keepdim : {false, true}) {
        EXPECT_TRUE(gradcheck([&](const Inputs& in) { return sum(in[0], dims, keepdim); }, {input}))
            << "dims " << shape_str(dims) << " keepdim " << keepdim << " contiguous " << input.is_contiguous();
      }
    }
  }
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].sum(); }, {x})) << "method form";
}

TEST(Gradcheck, Mean) {
  Generator gen(31);
  Tensor x = leaf(normal({2, 3, 4}, gen));
  Tensor strided = strided_leaf({2, 3, 4}, gen);
  for (const Tensor& input : {x, strided}) {
    for (const Shape& dims : std::vector<Shape>{{}, {1}, {0, 2}, {-2}}) {
      for (bool keepdim : {false, true}) {
        EXPECT_TRUE(gradcheck([&](const Inputs& in) { return mean(in[0], dims, keepdim); }, {input}))
            << "dims " << shape_str(dims) << " keepdim " << keepdim << " contiguous " << input.is_contiguous();
      }
    }
  }
}

TEST(Gradcheck, MaxAlongDim) {
  Generator gen(32);
  Tensor x = leaf(normal({3, 4, 5}, gen));  // continuous values: no ties
  Tensor strided = strided_leaf({3, 4, 5}, gen);
  for (const Tensor& input : {x, strided}) {
    for (int64_t dim : {0, 1, -1}) {
      for (bool keepdim : {false, true}) {
        EXPECT_TRUE(gradcheck([&](const Inputs& in) { return max(in[0], dim, keepdim).values; }, {input}))
            << "dim " << dim << " keepdim " << keepdim << " contiguous " << input.is_contiguous();
      }
    }
  }
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return max(in[0]); }, {x})) << "over all elements";
}

TEST(Gradcheck, MinAlongDim) {
  Generator gen(33);
  Tensor x = leaf(normal({3, 4, 5}, gen));
  Tensor strided = strided_leaf({3, 4, 5}, gen);
  for (const Tensor& input : {x, strided}) {
    for (int64_t dim : {0, 2}) {
      for (bool keepdim : {false, true}) {
        EXPECT_TRUE(gradcheck([&](const Inputs& in) { return min(in[0], dim, keepdim).values; }, {input}))
            << "dim " << dim << " keepdim " << keepdim << " contiguous " << input.is_contiguous();
      }
    }
  }
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return min(in[0]); }, {x})) << "over all elements";
}

TEST(Gradcheck, Amax) {
  Generator gen(34);
  Tensor x = leaf(normal({3, 4, 5}, gen));
  Tensor strided = strided_leaf({3, 4, 5}, gen);
  for (const Tensor& input : {x, strided}) {
    for (const Shape& dims : std::vector<Shape>{{}, {1}, {0, 2}}) {
      for (bool keepdim : {false, true}) {
        EXPECT_TRUE(gradcheck([&](const Inputs& in) { return amax(in[0], dims, keepdim); }, {input}))
            << "amax dims " << shape_str(dims) << " keepdim " << keepdim;
        EXPECT_TRUE(gradcheck([&](const Inputs& in) { return amin(in[0], dims, keepdim); }, {input}))
            << "amin dims " << shape_str(dims) << " keepdim " << keepdim;
      }
    }
  }
}

TEST(Gradcheck, Var) {
  Generator gen(35);
  Tensor x = leaf(normal({3, 4, 5}, gen));
  Tensor strided = strided_leaf({3, 4, 5}, gen);
  for (const Tensor& input : {x, strided}) {
    for (const Shape& dims : std::vector<Shape>{{}, {1}, {0, 2}}) {
      for (int64_t correction : {0, 1, 2}) {
        for (bool keepdim : {false, true}) {
          EXPECT_TRUE(gradcheck([&](const Inputs& in) { return var(in[0], dims, correction, keepdim); }, {input}))
              << "dims " << shape_str(dims) << " correction " << correction << " keepdim " << keepdim;
        }
      }
    }
  }
}

TEST(Gradcheck, Std) {
  Generator gen(36);
  Tensor x = leaf(normal({3, 4, 5}, gen));
  Tensor strided = strided_leaf({3, 4, 5}, gen);
  for (const Tensor& input : {x, strided}) {
    for (const Shape& dims : std::vector<Shape>{{}, {2}, {0, 1}}) {
      for (int64_t correction : {0, 1, 2}) {
        EXPECT_TRUE(gradcheck([&](const Inputs& in) { return accel::std(in[0], dims, correction, true); }, {input}))
            << "dims " << shape_str(dims) << " correction " << correction;
      }
    }
  }
}

// ---- linear algebra ----

TEST(Gradcheck, Matmul) {
  Generator gen(40);
  auto fn = [](const Inputs& in) { return matmul(in[0], in[1]); };
  struct Case {
    Shape a, b;
  };
  for (const Case& c : std::vector<Case>{{{4}, {4}},                 // dot
                                         {{4}, {4, 3}},              // vector @ matrix
                                         {{3, 4}, {4}},              // matrix @ vector
                                         {{3, 4}, {4, 5}},           // matrix @ matrix
                                         {{2, 3, 4}, {2, 4, 5}},     // batched
                                         {{2, 1, 3, 4}, {3, 4, 2}},  // broadcast batch (2, 3)
                                         {{2, 3, 4}, {4, 5}},        // batched @ matrix
                                         {{4}, {2, 4, 3}},           // vector @ batched
                                         {{2, 3, 4}, {4}}}) {        // batched @ vector
    EXPECT_TRUE(gradcheck(fn, {leaf(normal(c.a, gen)), leaf(normal(c.b, gen))}))
        << shape_str(c.a) << " @ " << shape_str(c.b);
  }
  // Transposed operands: strided leaves, and transposes taken inside fn.
  EXPECT_TRUE(gradcheck(fn, {strided_leaf({3, 4}, gen), strided_leaf({4, 5}, gen)})) << "strided leaves";
  Tensor a = leaf(normal({2, 4, 3}, gen)), b = leaf(normal({2, 5, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return matmul(in[0].transpose(1, 2), in[1].transpose(-1, -2)); },
                        {a, b}))
      << "both transposed inside fn";
  Tensor row = leaf(normal({1, 3, 4}, gen)), batch = leaf(normal({4, 5}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return matmul(in[0].expand({2, 3, 4}), in[1]); }, {row, batch}))
      << "expanded batch operand";
  EXPECT_TRUE(gradcheck(fn, {normal({3, 4}, gen), leaf(normal({4, 2}, gen))})) << "only b requires grad";
  EXPECT_TRUE(gradcheck(fn, {leaf(normal({3, 4}, gen)), normal({4, 2}, gen)})) << "only a requires grad";
}

TEST(Gradcheck, Linear) {
  Generator gen(41);
  Tensor x = leaf(normal({2, 3, 4}, gen));
  Tensor weight = leaf(normal({5, 4}, gen));
  Tensor bias = leaf(normal({5}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {x, weight, bias}))
      << "3-D input with bias";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return linear(in[0], in[1]); }, {x, weight})) << "without bias";
  Tensor vector = leaf(normal({4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {vector, weight, bias}))
      << "1-D input";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return linear(in[0], in[1], in[2]); },
                        {strided_leaf({3, 4}, gen), strided_leaf({5, 4}, gen), bias}))
      << "strided input and weight";
  Tensor wide = leaf(normal({2, 4, 3}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return linear(in[0].transpose(1, 2), in[1], in[2]); },
                        {wide, weight, bias}))
      << "input transposed inside fn";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return linear(in[0], in[1], in[2]); },
                        {normal({3, 4}, gen), weight, normal({5}, gen)}))
      << "only weight requires grad";
}

// ---- nn functions ----

TEST(Gradcheck, Softmax) {
  Generator gen(50);
  Tensor x = leaf(normal({3, 4, 5}, gen));
  Tensor strided = strided_leaf({3, 4, 5}, gen);
  for (const Tensor& input : {x, strided}) {
    for (int64_t dim : {0, 1, 2, -1}) {
      EXPECT_TRUE(gradcheck([&](const Inputs& in) { return softmax(in[0], dim); }, {input}))
          << "dim " << dim << " contiguous " << input.is_contiguous();
    }
  }
}

TEST(Gradcheck, SoftmaxOfZeroDimTensor) {
  Generator gen(53);
  Tensor x = leaf(normal({}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return softmax(in[0], 0); }, {x})) << "softmax";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return log_softmax(in[0], -1); }, {x})) << "log_softmax";
}

TEST(Gradcheck, LogSoftmax) {
  Generator gen(51);
  Tensor x = leaf(normal({3, 4, 5}, gen));
  Tensor strided = strided_leaf({3, 4, 5}, gen);
  for (const Tensor& input : {x, strided}) {
    for (int64_t dim : {0, 1, 2, -1}) {
      EXPECT_TRUE(gradcheck([&](const Inputs& in) { return log_softmax(in[0], dim); }, {input}))
          << "dim " << dim << " contiguous " << input.is_contiguous();
    }
  }
}

TEST(Gradcheck, LayerNorm) {
  Generator gen(52);
  Tensor x = leaf(normal({2, 3, 4}, gen));
  Tensor weight = leaf(normal({4}, gen)), bias = leaf(normal({4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0], {4}, in[1], in[2]); }, {x, weight, bias}))
      << "affine";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0], {4}); }, {x})) << "no affine";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0], {4}, in[1]); }, {x, weight}))
      << "weight only";
  Tensor weight2 = leaf(normal({3, 4}, gen)), bias2 = leaf(normal({3, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0], {3, 4}, in[1], in[2]); },
                        {x, weight2, bias2}))
      << "2-D normalized shape";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0], {4}, in[1], in[2], 1e-3); },
                        {strided_leaf({2, 3, 4}, gen), weight, bias}))
      << "strided input";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return layer_norm(in[0], {4}, in[1], in[2]); },
                        {normal({2, 3, 4}, gen), weight, bias}))
      << "only weight and bias require grad";
}

TEST(Gradcheck, Embedding) {
  Generator gen(53);
  Tensor weight = leaf(normal({6, 3}, gen));
  Tensor indices = from_vector<int64_t>({0, 2, 5, 2, 1, 2, 0, 4}, {2, 4});
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return embedding(in[0], indices); }, {weight})) << "no padding";
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return embedding(in[0], indices.to(kInt32)); }, {weight}))
      << "int32 indices";
  // With padding_idx the padding row's zero gradient is by definition, not a derivative (its
  // values still reach the output), so only the other rows are gradchecked: the padding row
  // is a constant spliced into the table. EmbeddingPaddingRowGetsZeroGrad checks that row.
  Tensor padding_row = normal({1, 3}, gen);
  Tensor other_rows = leaf(normal({5, 3}, gen));
  EXPECT_TRUE(gradcheck(
      [&](const Inputs& in) {
        Tensor table = cat({in[0].narrow(0, 0, 2), padding_row, in[0].narrow(0, 2, 3)}, 0);  // (6, 3)
        return embedding(table, indices, 2);
      },
      {other_rows}))
      << "padding_idx 2";
  EXPECT_TRUE(gradcheck(
      [&](const Inputs& in) { return embedding(cat({in[0], padding_row}, 0), indices.to(kInt32), -1); },
      {other_rows}))
      << "int32 indices, padding_idx -1";
}

TEST(Gradcheck, EmbeddingPaddingRowGetsZeroGrad) {
  Generator gen(54);
  Tensor weight = leaf(normal({6, 3}, gen));
  Tensor indices = from_vector<int64_t>({0, 2, 5, 2, 1, 2}, {2, 3});  // row 2 used three times
  Tensor out = embedding(weight, indices, 2);
  sum(out * normal(out.sizes(), gen)).backward();
  ASSERT_TRUE(weight.grad().defined());
  std::vector<double> padding_row = weight.grad().select(0, 2).to_vector<double>();
  for (double g : padding_row) EXPECT_EQ(g, 0.0) << "padding row 2 received a gradient";
  std::vector<double> used_row = weight.grad().select(0, 5).to_vector<double>();
  double magnitude = 0;
  for (double g : used_row) magnitude += std::abs(g);
  EXPECT_GT(magnitude, 0.0) << "row 5 is used once and must receive a gradient";
}

TEST(Gradcheck, Dropout) {
  Generator gen(55);
  Generator mask_generator(99);
  // Reseeded before each evaluation so that every call draws the same mask.
  auto fn = [&](const Inputs& in) {
    mask_generator.manual_seed(99);
    return dropout(in[0], 0.3, true, &mask_generator);
  };
  EXPECT_TRUE(gradcheck(fn, {leaf(normal({4, 5}, gen))})) << "contiguous";
  EXPECT_TRUE(gradcheck(fn, {strided_leaf({4, 5}, gen)})) << "strided";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return dropout(in[0], 0.3, false); }, {leaf(normal({4, 5}, gen))}))
      << "eval mode is the identity";
}

TEST(Gradcheck, CrossEntropy) {
  // fused: the fused kernel and its backward; composed: log_softmax, nll_loss and the
  // smoothing term, each with its own backward rule.
  for (bool fused : {true, false}) {
    SCOPED_TRACE(fused ? "fused kernel" : "composition");
    Generator gen(56);
    Tensor logits = leaf(normal({4, 5}, gen));
    Tensor target = from_vector<int64_t>({1, 0, 4, 2});
    Tensor target_ignored = from_vector<int64_t>({1, -100, 4, 2});
    for (Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      for (double smoothing : {0.0, 0.1}) {
        EXPECT_TRUE(gradcheck(
            [&](const Inputs& in) { return cross_entropy(in[0], target, -100, reduction, smoothing, fused); },
            {logits}))
            << "reduction " << static_cast<int>(reduction) << " label_smoothing " << smoothing;
        EXPECT_TRUE(gradcheck(
            [&](const Inputs& in) { return cross_entropy(in[0], target_ignored, -100, reduction, smoothing, fused); },
            {logits}))
            << "ignore_index, reduction " << static_cast<int>(reduction) << " label_smoothing " << smoothing;
      }
    }
    Tensor vector_logits = leaf(normal({5}, gen));
    EXPECT_TRUE(gradcheck([&](const Inputs& in) { return cross_entropy(in[0], scalar_tensor(2, kInt64), -100,
                                                                       Reduction::Mean, 0.1, fused); },
                          {vector_logits}))
        << "1-D logits, 0-d target";
    Tensor target_custom_ignore = from_vector<int64_t>({3, 1, 3, 0});
    EXPECT_TRUE(gradcheck(
        [&](const Inputs& in) { return cross_entropy(in[0], target_custom_ignore, 3, Reduction::Mean, 0.0, fused); },
        {logits}))
        << "ignore_index 3";
    // 3-D logits (N, C, d) with (N, d) targets.
    Tensor logits3 = leaf(normal({2, 5, 3}, gen));
    Tensor target3 = from_vector<int64_t>({0, 4, -100, 2, 2, 1}, {2, 3});
    for (Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      EXPECT_TRUE(gradcheck([&](const Inputs& in) { return cross_entropy(in[0], target3, -100, reduction, 0.2, fused); },
                            {logits3}))
          << "3-D logits, reduction " << static_cast<int>(reduction);
    }
    EXPECT_TRUE(gradcheck([&](const Inputs& in) { return cross_entropy(in[0], target, -100, Reduction::Mean, 0.0, fused); },
                          {strided_leaf({4, 5}, gen)}))
        << "strided logits";
    // A wide row, as a vocabulary-sized head would give: every class gets a gradient.
    Tensor wide = leaf(normal({3, 67}, gen));
    EXPECT_TRUE(gradcheck([&](const Inputs& in) {
      return cross_entropy(in[0], from_vector<int64_t>({66, -100, 0}), -100, Reduction::Mean, 0.3, fused);
    }, {wide})) << "(3, 67)";
  }
}

TEST(Gradcheck, NllLoss) {
  Generator gen(57);
  Tensor log_probs = leaf(normal({4, 5}, gen));
  Tensor target = from_vector<int64_t>({1, -100, 4, 1});
  for (Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    EXPECT_TRUE(gradcheck([&](const Inputs& in) { return nll_loss(in[0], target, -100, reduction); }, {log_probs}))
        << "reduction " << static_cast<int>(reduction);
  }
  Tensor log_probs3 = leaf(normal({2, 5, 3}, gen));
  Tensor target3 = from_vector<int64_t>({0, 4, 1, 2, -100, 3}, {2, 3});
  for (Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    EXPECT_TRUE(gradcheck([&](const Inputs& in) { return nll_loss(in[0], target3, -100, reduction); }, {log_probs3}))
        << "3-D, reduction " << static_cast<int>(reduction);
  }
  Tensor vector = leaf(normal({5}, gen));
  Tensor scalar_target = scalar_tensor(3, kInt64);
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return nll_loss(in[0], scalar_target); }, {vector}))
      << "1-D input, 0-d target";
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return nll_loss(in[0], from_vector<int64_t>({1, 0, 4, 1})); },
                        {strided_leaf({4, 5}, gen)}))
      << "strided input";
}

TEST(Gradcheck, MseLoss) {
  Generator gen(58);
  Tensor input = leaf(normal({3, 4}, gen));
  Tensor target = leaf(normal({3, 4}, gen));
  for (Reduction reduction : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    EXPECT_TRUE(gradcheck([&](const Inputs& in) { return mse_loss(in[0], in[1], reduction); }, {input, target}))
        << "reduction " << static_cast<int>(reduction);
  }
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return mse_loss(in[0], in[1]); },
                        {strided_leaf({3, 4}, gen), normal({3, 4}, gen)}))
      << "strided input, constant target";
}

// ---- joining and indexing ----

TEST(Gradcheck, Cat) {
  Generator gen(60);
  Tensor a = leaf(normal({2, 3}, gen)), b = leaf(normal({2, 4}, gen)), c = strided_leaf({2, 2}, gen);
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return cat(in, 1); }, {a, b, c})) << "dim 1, one strided";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return cat(in, -1); }, {a, normal({2, 2}, gen), b}))
      << "dim -1, middle without grad";
  Tensor d = leaf(normal({3, 3}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return cat({in[0], in[1].t()}, 0); }, {a, d}))
      << "dim 0, transposed inside fn";
}

TEST(Gradcheck, Stack) {
  Generator gen(61);
  Tensor a = leaf(normal({2, 3}, gen)), b = strided_leaf({2, 3}, gen), c = leaf(normal({3, 2}, gen));
  for (int64_t dim : {0, 1, 2, -1}) {
    EXPECT_TRUE(gradcheck([&](const Inputs& in) { return stack({in[0], in[1], in[2].t()}, dim); }, {a, b, c}))
        << "dim " << dim;
  }
}

TEST(Gradcheck, IndexSelect) {
  Generator gen(62);
  Tensor x = leaf(normal({4, 5}, gen));
  Tensor index = from_vector<int64_t>({3, 0, 3, 1});  // repeats accumulate
  for (int64_t dim : {0, 1}) {
    EXPECT_TRUE(gradcheck([&](const Inputs& in) { return index_select(in[0], dim, index); }, {x})) << "dim " << dim;
    EXPECT_TRUE(gradcheck([&](const Inputs& in) { return in[0].index_select(dim, index.to(kInt32)); },
                          {strided_leaf({4, 5}, gen)}))
        << "strided, int32 index, dim " << dim;
  }
}

TEST(Gradcheck, Gather) {
  Generator gen(63);
  Tensor x = leaf(normal({3, 5}, gen));
  Tensor index1 = from_vector<int64_t>({4, 0, 4, 1, 1, 1}, {3, 2});  // dim 1, repeats
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return gather(in[0], 1, index1); }, {x})) << "dim 1";
  Tensor index0 = from_vector<int64_t>({2, 0, 1, 2, 2, 0}, {2, 3});  // dim 0, narrower than x in dim 1
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return in[0].gather(0, index0); }, {strided_leaf({3, 5}, gen)}))
      << "dim 0, strided";
}

TEST(Gradcheck, IndexAdd) {
  Generator gen(64);
  Tensor x = leaf(normal({3, 5}, gen));
  Tensor index = from_vector<int64_t>({4, 0, 4});
  Tensor source = leaf(normal({3, 3}, gen));
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return index_add(in[0], 1, index, in[1]); }, {x, source}))
      << "dim 1, repeated index";
  Tensor source0 = strided_leaf({2, 5}, gen);
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return index_add(in[0], 0, from_vector<int64_t>({2, 2}), in[1]); },
                        {x, source0}))
      << "dim 0, strided source";
}

TEST(Gradcheck, ScatterAdd) {
  Generator gen(65);
  Tensor x = leaf(normal({3, 5}, gen));
  Tensor index = from_vector<int64_t>({4, 0, 4, 1, 1, 2}, {2, 3});
  Tensor source = leaf(normal({2, 4}, gen));  // wider than index: the extra column gets zero grad
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return scatter_add(in[0], 1, index, in[1]); }, {x, source}))
      << "dim 1";
  Tensor index0 = from_vector<int64_t>({2, 0, 2, 2, 1, 0}, {2, 3});
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return scatter_add(in[0], 0, index0, in[1]); },
                        {x, strided_leaf({2, 3}, gen)}))
      << "dim 0, strided source";
}

// to(dtype): a float64 -> float32 round trip is not gradcheckable (float32 rounding swamps a
// 1e-6 step), so this checks the rule directly: the gradient is cast back to float64.
TEST(Gradcheck, ToDtypeRoundTripCastsGradientBack) {
  Generator gen(66);
  Tensor x = leaf(normal({3, 4}, gen));
  Tensor w = normal({3, 4}, gen);
  sum(x.to(kFloat32).to(kFloat64) * w).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().dtype(), kFloat64);
  EXPECT_TRUE(tensors_close(x.grad(), w.to(kFloat32).to(kFloat64), 0, 0));
}

// ---- views ----

TEST(Gradcheck, ReshapeAndView) {
  Generator gen(70);
  Tensor x = leaf(normal({2, 3, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].view({6, 4}); }, {x})) << "view";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].reshape({4, -1}); }, {x})) << "reshape -1";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].reshape({12, 2}); }, {strided_leaf({2, 3, 4}, gen)}))
      << "reshape of a strided leaf (copies)";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].transpose(0, 2).reshape({-1}); }, {x}))
      << "reshape after a transpose inside fn";
}

TEST(Gradcheck, Transpose) {
  Generator gen(71);
  Tensor x = leaf(normal({2, 3, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].transpose(0, 2); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].transpose(-1, 1) * 2.0; }, {strided_leaf({2, 3, 4}, gen)}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].t(); }, {leaf(normal({3, 4}, gen))})) << "t()";
}

TEST(Gradcheck, Permute) {
  Generator gen(72);
  Tensor x = leaf(normal({2, 3, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].permute({2, 0, 1}); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].permute({1, -1, 0}).contiguous(); },
                        {strided_leaf({2, 3, 4}, gen)}));
}

TEST(Gradcheck, Slice) {
  Generator gen(73);
  Tensor x = leaf(normal({4, 7}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].slice(1, 1, 6, 2); }, {x})) << "step 2";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].slice(0, -3, std::nullopt, 3); }, {x}))
      << "negative start, step 3";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].slice(1, 0, 2).slice(0, 1, 3); },
                        {strided_leaf({4, 7}, gen)}))
      << "slices of a strided leaf";
}

TEST(Gradcheck, Select) {
  Generator gen(74);
  Tensor x = leaf(normal({3, 4, 2}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].select(1, 2); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].select(-1, -1); }, {x})) << "negative dim and index";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0][1] + in[0][2]; }, {strided_leaf({3, 4, 2}, gen)}))
      << "two selects of one strided leaf";
}

TEST(Gradcheck, Narrow) {
  Generator gen(75);
  Tensor x = leaf(normal({4, 6}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].narrow(1, 2, 3); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].narrow(0, -2, 2); }, {strided_leaf({4, 6}, gen)}));
}

TEST(Gradcheck, Expand) {
  Generator gen(76);
  Tensor x = leaf(normal({3, 1}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].expand({3, 4}); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].expand({2, 3, 4}); }, {x})) << "new leading dim";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].expand({2, -1, 5}); }, {x})) << "-1 keeps a size";
  Tensor y = leaf(normal({4, 3}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].t().unsqueeze(0).expand({2, 3, 4}); }, {y}))
      << "expand of a transpose";
}

TEST(Gradcheck, UnsqueezeAndSqueeze) {
  Generator gen(77);
  Tensor x = leaf(normal({3, 1, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].unsqueeze(0); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].unsqueeze(-1); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].squeeze(1); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].squeeze(); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].unsqueeze(1).squeeze(); }, {strided_leaf({3, 4}, gen)}))
      << "strided leaf";
}

TEST(Gradcheck, Flatten) {
  Generator gen(78);
  Tensor x = leaf(normal({2, 3, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].flatten(); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].flatten(1); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].flatten(0, 1); }, {strided_leaf({2, 3, 4}, gen)}))
      << "strided leaf";
}

TEST(Gradcheck, Contiguous) {
  Generator gen(79);
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].contiguous(); }, {strided_leaf({3, 4}, gen)}));
  Tensor x = leaf(normal({3, 6}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].slice(1, 0, std::nullopt, 2).contiguous(); }, {x}));
}

TEST(Gradcheck, Clone) {
  Generator gen(80);
  Tensor x = leaf(normal({3, 4}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].clone(); }, {x}));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return in[0].clone() * in[0]; }, {strided_leaf({3, 4}, gen)}));
}

// ---- composition: many rules and the engine's gradient summation in one graph ----

TEST(Gradcheck, AttentionBlock) {
  Generator gen(85);
  // x (B=2, T=3, C=4) -> single-head self-attention -> residual -> layer_norm.
  Tensor x = leaf(normal({2, 3, 4}, gen));
  Tensor w_qkv = leaf(normal({12, 4}, gen) * 0.5);
  Tensor gamma = leaf(normal({4}, gen));
  auto fn = [](const Inputs& in) {
    Tensor qkv = linear(in[0], in[1]);                                        // (2, 3, 12)
    Tensor q = qkv.narrow(-1, 0, 4), k = qkv.narrow(-1, 4, 4), v = qkv.narrow(-1, 8, 4);  // (2, 3, 4)
    Tensor scores = matmul(q, k.transpose(-2, -1)) / 2.0;                   // (2, 3, 3)
    Tensor attended = matmul(softmax(scores, -1), v);                       // (2, 3, 4)
    return layer_norm(in[0] + attended, {4}, in[2]);
  };
  EXPECT_TRUE(gradcheck(fn, {x, w_qkv, gamma}));
}

// Backward rules fed a non-contiguous output gradient: a permute (or expand) after the op
// hands its rule a strided view instead of a fresh contiguous buffer.
TEST(Gradcheck, NonContiguousOutputGradient) {
  Generator gen(86);
  Tensor a = leaf(normal({2, 3, 4}, gen)), b = leaf(normal({2, 4, 5}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return matmul(in[0], in[1]).permute({1, 2, 0}); }, {a, b}))
      << "matmul";
  Tensor weight = leaf(normal({5, 4}, gen)), bias = leaf(normal({5}, gen));
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return linear(in[0], in[1], in[2]).transpose(0, 2); },
                        {a, weight, bias}))
      << "linear";
  auto permuted = [](const std::function<Tensor(const Tensor&)>& op) {
    return [op](const Inputs& in) { return op(in[0]).permute({2, 0, 1}); };
  };
  EXPECT_TRUE(gradcheck(permuted([](const Tensor& x) { return softmax(x, -1); }), {a})) << "softmax";
  EXPECT_TRUE(gradcheck(permuted([](const Tensor& x) { return log_softmax(x, 1); }), {a})) << "log_softmax";
  EXPECT_TRUE(gradcheck(permuted([](const Tensor& x) { return layer_norm(x, {4}); }), {a})) << "layer_norm";
  EXPECT_TRUE(gradcheck(permuted([](const Tensor& x) { return gelu(x); }), {a})) << "gelu";
  EXPECT_TRUE(gradcheck(permuted([](const Tensor& x) { return tanh(x) * sigmoid(x); }), {a})) << "tanh, sigmoid";
  Tensor index = from_vector<int64_t>({3, 0, 3});
  EXPECT_TRUE(gradcheck(permuted([&](const Tensor& x) { return index_select(x, 2, index); }), {a}))
      << "index_select";
  Tensor gather_index = from_vector<int64_t>({0, 2, 1, 1, 2, 0}, {1, 2, 3});
  EXPECT_TRUE(gradcheck(permuted([&](const Tensor& x) { return gather(x, 2, gather_index); }), {a})) << "gather";
  Tensor table = leaf(normal({6, 3}, gen));
  Tensor indices = from_vector<int64_t>({0, 2, 5, 2, 1, 4}, {2, 3});
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return embedding(in[0], indices).permute({2, 1, 0}); }, {table}))
      << "embedding";
  Tensor logits = leaf(normal({2, 5, 3}, gen));
  Tensor target = from_vector<int64_t>({0, 4, -100, 2, 2, 1}, {2, 3});
  EXPECT_TRUE(gradcheck([&](const Inputs& in) { return cross_entropy(in[0], target, -100, Reduction::None).t(); },
                        {logits}))
      << "cross_entropy";
  EXPECT_TRUE(gradcheck([](const Inputs& in) { return var(in[0], {1}, 1, true).expand({2, 3, 4}); }, {a}))
      << "var under an expand";
}

// The harness itself: a wrong backward must fail, and the message must locate it.
TEST(Gradcheck, HarnessDetectsAWrongGradient) {
  Generator gen(90);
  Tensor x = leaf(normal({2, 3}, gen));
  // detach() cuts the graph for one factor: the analytic gradient is half the true one.
  auto result = gradcheck([](const Inputs& in) { return in[0] * in[0].detach(); }, {x});
  EXPECT_FALSE(result);
  EXPECT_NE(std::string(result.message()).find("input 0"), std::string::npos) << result.message();
  EXPECT_NE(std::string(result.message()).find("analytic"), std::string::npos) << result.message();
}

TEST(Gradcheck, HarnessRefusesOverlappingInputs) {
  Generator gen(91);
  Tensor expanded = leaf(normal({3, 1}, gen).expand({3, 4}));
  EXPECT_FALSE(gradcheck([](const Inputs& in) { return in[0] * 2.0; }, {expanded}));
}
