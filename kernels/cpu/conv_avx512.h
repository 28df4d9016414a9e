// The products of the CPU convolution for machines with AVX-512 (kernels/cpu/conv.cpp uses them
// when avx512_available() says so, and OpenBLAS otherwise).
//
// conv2d's GEMMs are small and oddly shaped: 6 to 64 filters, a column matrix of a few images
// that im2col has just written into the core's L2. OpenBLAS copies both operands again into its
// panel layout on every call, and its product comes out as (K, images*P*Q) rows that one more pass
// rearranges into NCHW. These kernels multiply straight from the column matrix (still in L2) and
// write each 16-column vector of the product where it belongs in the NCHW output (a vector that
// spans two images is split with masked stores), with the bias added on the way.
//
// The sums are in a fixed order (the inner index ascending, one fused multiply-add each), so the
// bits depend on neither the thread count nor the chunking; they differ from OpenBLAS's in the
// last bits, as OpenBLAS's own kernels differ between CPUs.
#pragma once

#include <cstdint>

#include "cairn/kernels/conv_math.h"

namespace cairn::kernels::cpu::conv_avx512 {

// The filters or rows one register tile covers: packed operands come in blocks of this many.
inline constexpr int64_t kBlock = 8;

// Whether the CPU runs AVX-512F (read once). CAIRN_CPU_CONV_AVX512=0 in the environment says no,
// for comparing with the OpenBLAS path.
bool available();

// packed[(block * inner + i) * kBlock + j] = a[(block * kBlock + j) * lda + i] for the m rows of
// a row-major (m, inner) matrix (zero past m): a row block's values for one i, contiguous.
// `packed` holds ceil(m / kBlock) * kBlock * inner floats.
void pack_rows(const float* a, int64_t m, int64_t inner, int64_t lda, float* packed);
// The same for a^T, a stored (inner, m): packed[(block * inner + i) * kBlock + j] =
// a[i * lda + block * kBlock + j].
void pack_columns(const float* a, int64_t m, int64_t inner, int64_t lda, float* packed);

// kernels::cpu::im2col (the same values), for stride_w == 1 only: each output row of a tap is one
// or two masked loads and stores instead of calls to memcpy and memset, which for the 7- and
// 14-pixel rows of small images cost more than the copying.
void im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col);

// c = A b for A packed by pack_rows/pack_columns (m, inner) and b row-major (inner, columns).
// nchw_pq == 0: c is row-major (m, columns). nchw_pq > 0: the columns are images of nchw_pq pixels
// each and c is NCHW, c[(image * m + row) * nchw_pq + pixel]; bias (m values, or null) is added.
void multiply(const float* packed, int64_t m, int64_t inner, const float* b, int64_t columns,
              int64_t nchw_pq, const float* bias, float* c);

}  // namespace cairn::kernels::cpu::conv_avx512
