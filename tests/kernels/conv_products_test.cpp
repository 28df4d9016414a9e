// The CPU convolution's packed products (kernels/cpu/conv_avx512.h, conv_avx2.h) against their
// contract: each output is the bias (or 0), then one fused multiply-add per inner index in
// ascending order. std::fma rounds exactly as the vector FMA does, so the comparison is exact,
// which also makes the AVX-512 and AVX2 kernels give the same bits as each other.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cairn/kernels/cpu/conv_avx2.h"
#include "cairn/kernels/cpu/conv_avx512.h"

namespace cairn::kernels::cpu {
namespace {

using Multiply = std::function<void(const float*, int64_t, int64_t, const float*, int64_t,
                                    int64_t, const float*, float*)>;

struct Variant {
  std::string name;
  Multiply multiply;
};

std::vector<Variant> available_variants() {
  std::vector<Variant> variants;
  if (conv_avx512::available()) variants.push_back({"avx512", conv_avx512::multiply});
  if (conv_avx2::available()) variants.push_back({"avx2", conv_avx2::multiply});
  return variants;
}

std::vector<float> values(int64_t n, uint32_t salt) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t state = 0x9E3779B9u ^ salt;
  for (auto& x : v) {
    state = state * 1664525u + 1013904223u;
    x = float(int32_t(state >> 8) - (1 << 23)) / float(1 << 23);
  }
  return v;
}

// out = op(a) b (+ bias), a (m, inner) row-major or, transposed, stored (inner, m); the sum in
// the kernels' order.
float reference(const std::vector<float>& a, bool transposed, int64_t m, int64_t inner,
                const std::vector<float>& b, int64_t columns, const float* bias, int64_t row,
                int64_t column) {
  float acc = bias != nullptr ? bias[row] : 0.0f;
  for (int64_t i = 0; i < inner; ++i) {
    const float w = transposed ? a[size_t(i * m + row)] : a[size_t(row * inner + i)];
    acc = std::fma(w, b[size_t(i * columns + column)], acc);
  }
  return acc;
}

TEST(PackedConvProducts, MatchTheirFmaOrderExactlyOnAwkwardShapes) {
  const std::vector<Variant> variants = available_variants();
  if (variants.empty()) GTEST_SKIP() << "this CPU has neither AVX-512F nor AVX2 with FMA";
  // m not a multiple of the 8-row block (or of the AVX2 kernel's 4-row half), columns not a
  // multiple of any tile, images of 7, 49 and 16 pixels (vectors spanning two or more images).
  struct Shape {
    int64_t m, inner, columns, pq;
  };
  for (const Shape shape : {Shape{13, 37, 63, 7}, Shape{3, 5, 98, 49}, Shape{24, 216, 64, 16},
                            Shape{1, 1, 1, 1}, Shape{9, 20, 147, 49}}) {
    const std::vector<float> a = values(shape.m * shape.inner, 1);
    const std::vector<float> b = values(shape.inner * shape.columns, 2);
    const std::vector<float> bias = values(shape.m, 3);
    const int64_t blocks = (shape.m + conv_avx512::kBlock - 1) / conv_avx512::kBlock;
    std::vector<float> packed(size_t(blocks * conv_avx512::kBlock * shape.inner));
    for (const bool transposed : {false, true}) {
      if (transposed) {
        conv_avx512::pack_columns(a.data(), shape.m, shape.inner, shape.m, packed.data());
      } else {
        conv_avx512::pack_rows(a.data(), shape.m, shape.inner, shape.inner, packed.data());
      }
      for (const Variant& variant : variants) {
        SCOPED_TRACE(variant.name + " m=" + std::to_string(shape.m) + " inner=" +
                     std::to_string(shape.inner) + " columns=" + std::to_string(shape.columns) +
                     (transposed ? " transposed" : ""));
        // Row-major (m, columns), no bias.
        std::vector<float> rows(size_t(shape.m * shape.columns), -7.0f);
        variant.multiply(packed.data(), shape.m, shape.inner, b.data(), shape.columns, 0, nullptr,
                         rows.data());
        for (int64_t row = 0; row < shape.m; ++row) {
          for (int64_t column = 0; column < shape.columns; ++column) {
            ASSERT_EQ(rows[size_t(row * shape.columns + column)],
                      reference(a, transposed, shape.m, shape.inner, b, shape.columns, nullptr,
                                row, column))
                << "row " << row << " column " << column;
          }
        }
        // NCHW with a bias: column = image * pq + pixel goes to (image, row, pixel).
        if (shape.columns % shape.pq != 0) continue;
        std::vector<float> nchw(size_t(shape.m * shape.columns), -7.0f);
        variant.multiply(packed.data(), shape.m, shape.inner, b.data(), shape.columns, shape.pq,
                         bias.data(), nchw.data());
        for (int64_t row = 0; row < shape.m; ++row) {
          for (int64_t column = 0; column < shape.columns; ++column) {
            const int64_t image = column / shape.pq, pixel = column % shape.pq;
            ASSERT_EQ(nchw[size_t((image * shape.m + row) * shape.pq + pixel)],
                      reference(a, transposed, shape.m, shape.inner, b, shape.columns,
                                bias.data(), row, column))
                << "row " << row << " column " << column;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace cairn::kernels::cpu
