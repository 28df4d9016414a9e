// AVX-512 products for the CPU convolution (kernels/cpu/conv_avx512.h says why and what).
// Only this file is compiled for AVX-512, through the target pragma below, which comes after
// every #include: the standard library's inline functions must not be compiled for AVX-512 here,
// or the linker could keep that copy for callers on machines without it. Nothing between the
// pragmas calls into std.
#include "cairn/kernels/cpu/conv_avx512.h"

#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CAIRN_CONV_AVX512 1
#endif

namespace cairn::kernels::cpu::conv_avx512 {

bool available() {
#if defined(CAIRN_CONV_AVX512)
  static const bool has = [] {
    const char* setting = std::getenv("CAIRN_CPU_CONV_AVX512");
    const bool off = setting != nullptr && setting[0] == '0';
    return !off && __builtin_cpu_supports("avx512f");
  }();
  return has;
#else
  return false;
#endif
}

void pack_rows(const float* a, int64_t m, int64_t inner, int64_t lda, float* packed) {
  const int64_t blocks = (m + kBlock - 1) / kBlock;
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t i = 0; i < inner; ++i) {
      for (int64_t j = 0; j < kBlock; ++j) {
        const int64_t row = block * kBlock + j;
        packed[(block * inner + i) * kBlock + j] = row < m ? a[row * lda + i] : 0.0f;
      }
    }
  }
}

void pack_columns(const float* a, int64_t m, int64_t inner, int64_t lda, float* packed) {
  const int64_t blocks = (m + kBlock - 1) / kBlock;
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t i = 0; i < inner; ++i) {
      for (int64_t j = 0; j < kBlock; ++j) {
        const int64_t row = block * kBlock + j;
        packed[(block * inner + i) * kBlock + j] = row < m ? a[i * lda + row] : 0.0f;
      }
    }
  }
}

#if defined(CAIRN_CONV_AVX512)
#if defined(__clang__)  // clang has no GCC target pragma (the fuzz build compiles with it)
#pragma clang attribute push(__attribute__((target("avx512f,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#endif
namespace {

constexpr int kVectors = 3;  // 16-column vectors per tile: 8 x 3 accumulators of 32 registers
constexpr int64_t kTile = 16 * kVectors;

inline __mmask16 lanes(int64_t valid) {
  return valid >= 16 ? __mmask16(0xFFFF) : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1u);
}

// One 16-column vector of row `row` into NCHW: its columns [column, column + valid) may cover
// several images; each piece goes to its own image with a compressing store.
inline void store_nchw(__m512 v, float* c, int64_t m, int64_t row, int64_t pq, int64_t column,
                       int64_t valid) {
  int64_t image = column / pq, pixel = column - image * pq;
  if (pixel + valid <= pq) {
    _mm512_mask_storeu_ps(c + (image * m + row) * pq + pixel, lanes(valid), v);
    return;
  }
  int64_t lane = 0;
  while (lane < valid) {
    int64_t count = pq - pixel;
    if (count > valid - lane) count = valid - lane;
    const __mmask16 mask = __mmask16(lanes(lane + count) & ~lanes(lane));
    _mm512_mask_compressstoreu_ps(c + (image * m + row) * pq + pixel, mask, v);
    lane += count;
    ++image;
    pixel = 0;
  }
}

// The tile of rows [block * 8, +8) and columns [column, column + valid), valid <= kTile.
template <bool kNchw>
inline void tile(const float* a, int64_t m, int64_t block, int64_t inner, const float* b,
                 int64_t columns, int64_t column, int64_t valid, int64_t pq, const float* bias,
                 float* c) {
  // Every loop over the accumulators is unrolled, so that they stay in registers (GCC keeps an
  // array indexed by a loop variable in memory).
  __m512 acc[kBlock][kVectors];
#pragma GCC unroll 8
  for (int j = 0; j < kBlock; ++j) {
    const int64_t row = block * kBlock + j;
    const __m512 init = _mm512_set1_ps(bias != nullptr && row < m ? bias[row] : 0.0f);
#pragma GCC unroll 3
    for (int v = 0; v < kVectors; ++v) acc[j][v] = init;
  }
  const __mmask16 m0 = lanes(valid), m1 = lanes(valid - 16), m2 = lanes(valid - 32);
  const float* bp = b + column;
  const float* ap = a + block * inner * kBlock;
  if (valid == kTile) {
    for (int64_t i = 0; i < inner; ++i, bp += columns, ap += kBlock) {
      const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16),
                   b2 = _mm512_loadu_ps(bp + 32);
#pragma GCC unroll 8
      for (int j = 0; j < kBlock; ++j) {
        const __m512 w = _mm512_set1_ps(ap[j]);
        acc[j][0] = _mm512_fmadd_ps(w, b0, acc[j][0]);
        acc[j][1] = _mm512_fmadd_ps(w, b1, acc[j][1]);
        acc[j][2] = _mm512_fmadd_ps(w, b2, acc[j][2]);
      }
    }
  } else {
    for (int64_t i = 0; i < inner; ++i, bp += columns, ap += kBlock) {
      const __m512 b0 = _mm512_maskz_loadu_ps(m0, bp), b1 = _mm512_maskz_loadu_ps(m1, bp + 16),
                   b2 = _mm512_maskz_loadu_ps(m2, bp + 32);
#pragma GCC unroll 8
      for (int j = 0; j < kBlock; ++j) {
        const __m512 w = _mm512_set1_ps(ap[j]);
        acc[j][0] = _mm512_fmadd_ps(w, b0, acc[j][0]);
        acc[j][1] = _mm512_fmadd_ps(w, b1, acc[j][1]);
        acc[j][2] = _mm512_fmadd_ps(w, b2, acc[j][2]);
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kBlock; ++j) {
    const int64_t row = block * kBlock + j;
    if (row >= m) continue;
#pragma GCC unroll 3
    for (int v = 0; v < kVectors; ++v) {
      const int64_t left = valid - 16 * v;
      if (left <= 0) continue;
      if (kNchw) {
        store_nchw(acc[j][v], c, m, row, pq, column + 16 * v, left < 16 ? left : 16);
      } else {
        _mm512_mask_storeu_ps(c + row * columns + column + 16 * v, lanes(left), acc[j][v]);
      }
    }
  }
}

// The address `offset` floats from p, which may lie outside the buffer: only masked loads read
// through it, and they do not touch the lanes masked off.
inline const float* shifted(const float* p, int64_t offset) {
  return reinterpret_cast<const float*>(reinterpret_cast<uintptr_t>(p) +
                                        uintptr_t(offset * int64_t(sizeof(float))));
}

template <bool kNchw>
void multiply_all(const float* a, int64_t m, int64_t inner, const float* b, int64_t columns,
                  int64_t pq, const float* bias, float* c) {
  const int64_t blocks = (m + kBlock - 1) / kBlock;
  for (int64_t column = 0; column < columns; column += kTile) {
    const int64_t valid = columns - column < kTile ? columns - column : kTile;
    for (int64_t block = 0; block < blocks; ++block) {
      tile<kNchw>(a, m, block, inner, b, columns, column, valid, pq, bias, c);
    }
  }
}

}  // namespace

void im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col) {
  const int64_t q_out = g.out_w, pq = g.out_pixels(), columns = images * pq;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t image = 0; image < images; ++image) {
    for (int64_t c = 0; c < g.channels; ++c) {
      const float* plane = x + (image * g.channels + c) * g.in_pixels();
      for (int64_t r = 0; r < g.kernel_h; ++r) {
        for (int64_t s = 0; s < g.kernel_w; ++s) {
          const int64_t row = (c * g.kernel_h + r) * g.kernel_w + s;
          float* out = col + row * columns + image * pq;
          int64_t q0, q1;
          conv_valid_outputs(s, g.width, g.out_w, 1, g.pad_w, g.dilation_w, &q0, &q1);
          const int64_t offset = s * g.dilation_w - g.pad_w;
          for (int64_t p = 0; p < g.out_h; ++p, out += q_out) {
            const int64_t ih = conv_in_index(p, r, g.stride_h, g.pad_h, g.dilation_h);
            const bool inside = ih >= 0 && ih < g.height;
            const float* in = shifted(plane, ih * g.width + offset);
            for (int64_t q = 0; q < q_out; q += 16) {
              const __mmask16 store = lanes(q_out - q);
              __m512 v = zero;
              if (inside) {
                const __mmask16 load = __mmask16(lanes(q1 - q) & ~lanes(q0 - q));
                v = _mm512_maskz_loadu_ps(load, shifted(in, q));
              }
              _mm512_mask_storeu_ps(out + q, store, v);
            }
          }
        }
      }
    }
  }
}

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
void im2col(const Conv2DGeometry&, const float*, int64_t, float*) { std::abort(); }
void multiply(const float*, int64_t, int64_t, const float*, int64_t, int64_t, const float*,
              float*) {
  std::abort();  // available() is false: conv.cpp never calls this
}
#endif

}  // namespace cairn::kernels::cpu::conv_avx512
