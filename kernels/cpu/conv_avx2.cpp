// AVX2 products for the CPU convolution (kernels/cpu/conv_avx2.h says why and what): the AVX-512
// kernels of conv_avx512.cpp for the machines without AVX-512 (Zen 2 and 3, client Intel), with
// 8-lane vectors, masked loads made by comparing lane numbers, and a tile of 4 rows x 24 columns
// (12 accumulators of the 16 registers). No masked stores, and no im2col of its own: AMD's cores
// run vmaskmovps stores in microcode, and a masked im2col with them took a quarter of the epoch. As there, only this file is compiled for AVX2, through the
// target pragma below, which comes after every #include, and nothing between the pragmas calls
// into std.
#include "cairn/kernels/cpu/conv_avx2.h"

#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CAIRN_CONV_AVX2 1
#endif

namespace cairn::kernels::cpu::conv_avx2 {

bool available() {
#if defined(CAIRN_CONV_AVX2)
  static const bool has = [] {
    const char* setting = std::getenv("CAIRN_CPU_CONV_AVX2");
    const bool off = setting != nullptr && setting[0] == '0';
    return !off && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

#if defined(CAIRN_CONV_AVX2)
#if defined(__clang__)  // clang has no GCC target pragma (the fuzz build compiles with it)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace {

constexpr int kRows = 4;     // rows per tile: half of a packed block of kBlock = 8
constexpr int kVectors = 3;  // 8-column vectors per tile: 4 x 3 accumulators
constexpr int64_t kTile = 8 * kVectors;

// The mask of lanes [0, valid), valid clamped to [0, 8].
inline __m256i lanes(int64_t valid) {
  const int v = valid <= 0 ? 0 : valid >= 8 ? 8 : int(valid);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The address `offset` floats from p, which may lie outside the buffer: only masked loads read
// through it, and they do not touch (or fault on) the lanes masked off.
inline const float* shifted(const float* p, int64_t offset) {
  return reinterpret_cast<const float*>(reinterpret_cast<uintptr_t>(p) +
                                        uintptr_t(offset * int64_t(sizeof(float))));
}

// The first `valid` lanes of v to dst: one store for a whole vector, else a lane at a time (AVX2's
// masked store, vmaskmovps, is microcoded on AMD's cores and cost more than the product).
inline void store_lanes(float* dst, __m256 v, int64_t valid) {
  if (valid >= 8) {
    _mm256_storeu_ps(dst, v);
    return;
  }
  alignas(32) float values[8];
  _mm256_store_ps(values, v);
  for (int64_t lane = 0; lane < valid; ++lane) dst[lane] = values[lane];
}

// One 8-column vector of row `row` into NCHW: its columns [column, column + valid) may cover
// several images; each image's piece goes where it belongs.
inline void store_nchw(__m256 v, float* c, int64_t m, int64_t row, int64_t pq, int64_t column,
                       int64_t valid) {
  int64_t image = column / pq, pixel = column - image * pq;
  if (pixel + valid <= pq) {
    store_lanes(c + (image * m + row) * pq + pixel, v, valid);
    return;
  }
  alignas(32) float values[8];
  _mm256_store_ps(values, v);
  for (int64_t lane = 0; lane < valid; ++lane) {
    c[(image * m + row) * pq + pixel] = values[lane];
    if (++pixel == pq) {
      pixel = 0;
      ++image;
    }
  }
}

// acc[j] += ap[j] * (b0, b1, b2) for the tile's rows, one fused multiply-add each. Always
// inlined, so that the accumulators stay in registers.
__attribute__((always_inline)) inline void add_products(__m256 (&acc)[kRows][kVectors],
                                                        const float* ap, __m256 b0, __m256 b1,
                                                        __m256 b2) {
#pragma GCC unroll 4
  for (int j = 0; j < kRows; ++j) {
    const __m256 w = _mm256_broadcast_ss(ap + j);
    acc[j][0] = _mm256_fmadd_ps(w, b0, acc[j][0]);
    acc[j][1] = _mm256_fmadd_ps(w, b1, acc[j][1]);
    acc[j][2] = _mm256_fmadd_ps(w, b2, acc[j][2]);
  }
}

// Rows [block * 8 + half * 4, +4) and columns [column, column + valid), valid <= kTile. The sum
// of each output is the bias (or 0), then one fused multiply-add per inner index, ascending: the
// AVX-512 kernel's order, so both give the same bits.
template <bool kNchw>
inline void tile(const float* a, int64_t m, int64_t block, int half, int64_t inner,
                 const float* b, int64_t columns, int64_t column, int64_t valid, int64_t pq,
                 const float* bias, float* c) {
  __m256 acc[kRows][kVectors];
  const int64_t first_row = block * kBlock + half * kRows;
#pragma GCC unroll 4
  for (int j = 0; j < kRows; ++j) {
    const int64_t row = first_row + j;
    const __m256 init = _mm256_set1_ps(bias != nullptr && row < m ? bias[row] : 0.0f);
#pragma GCC unroll 3
    for (int v = 0; v < kVectors; ++v) acc[j][v] = init;
  }
  const float* bp = b + column;
  const float* ap = a + block * inner * kBlock + half * kRows;
  if (valid == kTile) {
    for (int64_t i = 0; i < inner; ++i, bp += columns, ap += kBlock) {
      const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8),
                   b2 = _mm256_loadu_ps(bp + 16);
      add_products(acc, ap, b0, b1, b2);
    }
  } else {
    const __m256i m0 = lanes(valid), m1 = lanes(valid - 8), m2 = lanes(valid - 16);
    for (int64_t i = 0; i < inner; ++i, bp += columns, ap += kBlock) {
      const __m256 b0 = _mm256_maskload_ps(bp, m0), b1 = _mm256_maskload_ps(shifted(bp, 8), m1),
                   b2 = _mm256_maskload_ps(shifted(bp, 16), m2);
      add_products(acc, ap, b0, b1, b2);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < kRows; ++j) {
    const int64_t row = first_row + j;
    if (row >= m) continue;
#pragma GCC unroll 3
    for (int v = 0; v < kVectors; ++v) {
      const int64_t left = valid - 8 * v;
      if (left <= 0) continue;
      if (kNchw) {
        store_nchw(acc[j][v], c, m, row, pq, column + 8 * v, left < 8 ? left : 8);
      } else {
        store_lanes(c + row * columns + column + 8 * v, acc[j][v], left < 8 ? left : 8);
      }
    }
  }
}

template <bool kNchw>
void multiply_all(const float* a, int64_t m, int64_t inner, const float* b, int64_t columns,
                  int64_t pq, const float* bias, float* c) {
  const int64_t blocks = (m + kBlock - 1) / kBlock;
  for (int64_t column = 0; column < columns; column += kTile) {
    const int64_t valid = columns - column < kTile ? columns - column : kTile;
    for (int64_t block = 0; block < blocks; ++block) {
      tile<kNchw>(a, m, block, 0, inner, b, columns, column, valid, pq, bias, c);
      if (block * kBlock + kRows < m) {
        tile<kNchw>(a, m, block, 1, inner, b, columns, column, valid, pq, bias, c);
      }
    }
  }
}

}  // namespace

void multiply(const float* packed, int64_t m, int64_t inner, const float* b, int64_t columns,
              int64_t nchw_pq, const float* bias, float* c) {
  if (nchw_pq > 0) {
    multiply_all<true>(packed, m, inner, b, columns, nchw_pq, bias, c);
  } else {
    multiply_all<false>(packed, m, inner, b, columns, 0, nullptr, c);
  }
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
void multiply(const float*, int64_t, int64_t, const float*, int64_t, int64_t, const float*,
              float*) {
  std::abort();  // available() is false: conv.cpp never calls this
}
#endif

}  // namespace cairn::kernels::cpu::conv_avx2
