// A tour of accel's tensor core, quoted by docs/tensors.md: storage and views, strides
// worked by hand, the version counter, dtypes and 16-bit rounding, type promotion, and the
// (op, device) dispatch table. Runs in milliseconds; no data or model needed. Each CHECK
// pins a claim the docs make, so CI fails if the docs and the code drift apart.
//
//   build/bin/example_tensors_tour
#include <cmath>
#include <cstdio>
#include <iostream>

#include "core/kernels.h"
#include "core/ops.h"

using namespace accel;

namespace {

int failures = 0;
void check(bool ok, const char* claim) {
  if (!ok) {
    std::cerr << "CHECK FAILED: " << claim << "\n";
    ++failures;
  }
}
#define CHECK(cond) check((cond), #cond)

void describe(const char* name, const Tensor& t) {
  std::cout << name << ": sizes " << shape_str(t.sizes()) << " strides " << shape_str(t.strides()) << " offset "
            << t.storage_offset() << (t.is_contiguous() ? " contiguous" : " non-contiguous") << "\n";
}

}  // namespace

int main() {
  std::cout << std::boolalpha;
  try {
    // ---- storage, sizes, strides ----
    // [snippet:strides]
    Tensor a = arange(24, kFloat32).reshape({2, 3, 4});  // (2, 3, 4), values 0..23
    describe("a", a);  // sizes [2, 3, 4] strides [12, 4, 1] offset 0 contiguous
    // Element (i, j, k) lives at storage index offset + 12 i + 4 j + 1 k.
    float* data = a.data_ptr<float>();
    std::cout << "a[1][2][3] = " << a[1][2][3].item<float>() << " = data[12 + 8 + 3] = " << data[23] << "\n";
    // [end]
    CHECK(a.strides() == (Shape{12, 4, 1}));
    CHECK(a[1][2][3].item<float>() == 23.0f);

    // ---- views share the storage ----
    // [snippet:views]
    Tensor t = a.transpose(1, 2);  // (2, 4, 3): swap the sizes and the strides of dims 1 and 2
    Tensor s = a.select(1, 2);     // a[:, 2, :] -> (2, 4): drop dim 1, offset += 2 * 4
    Tensor n = a.narrow(2, 1, 2);  // a[:, :, 1:3] -> (2, 3, 2): offset += 1 * 1
    describe("t", t);  // sizes [2, 4, 3] strides [12, 1, 4] offset 0 non-contiguous
    describe("s", s);  // sizes [2, 4] strides [12, 1] offset 8 non-contiguous
    describe("n", n);  // sizes [2, 3, 2] strides [12, 4, 1] offset 1 non-contiguous
    std::cout << "t[1][3][2] = " << t[1][3][2].item<float>() << " (storage index 0 + 12*1 + 1*3 + 4*2 = 23)\n";
    std::cout << "one storage: " << (t.storage() == a.storage() && s.storage() == a.storage()) << "\n";
    // [end]
    CHECK(t.strides() == (Shape{12, 1, 4}) && !t.is_contiguous());
    CHECK(s.storage_offset() == 8 && s.strides() == (Shape{12, 1}));
    CHECK(n.storage_offset() == 1 && n.sizes() == (Shape{2, 3, 2}));
    CHECK(t[1][3][2].item<float>() == 23.0f);
    CHECK(t.storage() == a.storage());

    // ---- writes through a view, and the version counter ----
    // [snippet:version]
    uint64_t before = a.version();
    s.fill_(-1);  // writes a[:, 2, :] through the view
    std::cout << "a[0][2] after s.fill_(-1): " << a[0][2].to_vector<float>()[0] << ", version " << before
              << " -> " << a.version() << "\n";
    // [end]
    CHECK(a[0][2][0].item<float>() == -1.0f && a[1][2][3].item<float>() == -1.0f);
    CHECK(a.version() == before + 1);

    // ---- contiguous, view vs reshape, expand ----
    // [snippet:contiguous]
    Tensor tc = t.contiguous();  // a copy in t's row-major order: new storage
    describe("tc", tc);          // sizes [2, 4, 3] strides [12, 3, 1] offset 0 contiguous
    try {
      t.view({2, 12});  // no strides can express merging dims 1 and 2 of t
    } catch (const Error& e) {
      std::cout << "t.view({2, 12}) fails: " << e.what() << "\n";
    }
    Tensor r = t.reshape({2, 12});  // reshape copies when a view is impossible
    Tensor row = from_vector<float>({10, 20, 30}).reshape({3, 1});
    Tensor grid = row.expand({3, 4});  // broadcasting as a view: stride 0 repeats the value
    describe("grid", grid);            // sizes [3, 4] strides [1, 0] offset 0 non-contiguous
    // [end]
    CHECK(tc.strides() == (Shape{12, 3, 1}) && tc.storage() != t.storage());
    CHECK(r.storage() != t.storage());
    CHECK(a.reshape({6, 4}).storage() == a.storage());  // contiguous: reshape is a view
    CHECK(grid.strides() == (Shape{1, 0}) && grid.storage() == row.storage());

    // ---- dtypes and 16-bit rounding ----
    // [snippet:rounding]
    for (float x : {1.0f / 3.0f, 0.1f, 257.0f, 65504.0f, 65520.0f, 1e-8f}) {
      BFloat16 b(x);  // keep the top 16 bits of the float32, rounded to nearest even
      Half h(x);      // IEEE binary16: 5 exponent bits, 10 mantissa bits
      std::printf("%-12.9g fp32 %08x | bf16 %04x = %-12.9g | fp16 %04x = %.9g\n", x, float_bits(x), b.bits,
                  float(b), h.bits, float(h));
    }
    // [end]
    CHECK(float(BFloat16(257.0f)) == 256.0f);  // 8 significant bits: 257 is a tie, rounds to even
    CHECK(float(Half(257.0f)) == 257.0f);      // 11 significant bits
    CHECK(float(Half(65504.0f)) == 65504.0f);  // the largest finite fp16
    CHECK(std::isinf(float(Half(65520.0f))));  // halfway to 65536 rounds up: inf
    CHECK(float(Half(1e-8f)) == 0.0f);         // below half of 2^-24: flushes to zero
    CHECK(float(BFloat16(1e-8f)) != 0.0f);     // bf16 has float32's exponent range

    // [snippet:promotion]
    Tensor i64 = arange(3);                          // int64 (all arguments are integers)
    Tensor f16 = ones({3}, kFloat16), b16 = ones({3}, kBFloat16);
    std::cout << "int64 + float32 -> " << (i64 + ones({3})).dtype() << "\n";     // float32
    std::cout << "float16 * 0.5   -> " << (f16 * 0.5).dtype() << "\n";           // float16: a number does not widen
    std::cout << "bfloat16 + float16 -> " << (b16 + f16).dtype() << "\n";        // float32: neither holds the other
    std::cout << "int64 / int64   -> " << (i64 / arange(1, 4)).dtype() << "\n";  // float32: true division
    // [end]
    CHECK((i64 + ones({3})).dtype() == kFloat32);
    CHECK((f16 * 0.5).dtype() == kFloat16);
    CHECK((b16 + f16).dtype() == kFloat32);
    CHECK((i64 / arange(1, 4)).dtype() == kFloat32);

    // ---- the dispatch table ----
    // [snippet:dispatch]
    Tensor x = from_vector<float>({-2.0f, -0.5f, 0.5f, 2.0f});
    Tensor y = Tensor::empty(x.sizes(), x.dtype(), x.device());
    // What accel::clamp(x, -1, 1) does after checking its arguments: look up the (clamp, cpu)
    // slot and call the kernel, which switches on x's dtype.
    kernels::clamp(x.device(), x, -1.0, 1.0, y);
    std::cout << "clamp: " << shape_str(y.sizes()) << " " << y.to_vector<float>()[0] << " ... "
              << y.to_vector<float>()[3] << "; cpu kernel registered: " << kernels::clamp.has(DeviceType::CPU)
              << "\n";
    try {
      clamp(ones({2}, kBool), 0, 1);  // the kernel's dtype switch has no case for bool
    } catch (const Error& e) {
      std::cout << e.what() << "\n";  // clamp: no kernel for dtype bool on device cpu
    }
    // [end]
    CHECK(equal(y, from_vector<float>({-1.0f, -0.5f, 0.5f, 1.0f})));
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  if (failures > 0) return 1;
  std::cout << "tensors_tour: all checks passed\n";
  return 0;
}
