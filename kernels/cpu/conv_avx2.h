// The products of the CPU convolution for machines with AVX2 and FMA but not AVX-512:
// conv_avx512.h's multiply (why it exists is said there), on the same packed operands
// (conv_avx512::pack_rows / pack_columns, blocks of kBlock rows), with the same sums in the same
// order, so the two give the same bits. kernels/cpu/conv.cpp takes AVX-512 where the CPU has it,
// these where it has AVX2, and OpenBLAS otherwise.
#pragma once

#include <cstdint>

#include "cairn/kernels/cpu/conv_avx512.h"

namespace cairn::kernels::cpu::conv_avx2 {

using conv_avx512::kBlock;

// Whether the CPU runs AVX2 and FMA (read once). CAIRN_CPU_CONV_AVX2=0 in the environment says
// no, for comparing with the OpenBLAS path.
bool available();

// conv_avx512::multiply's contract, on 8-lane vectors.
void multiply(const float* packed, int64_t m, int64_t inner, const float* b, int64_t columns,
              int64_t nchw_pq, const float* bias, float* c);

}  // namespace cairn::kernels::cpu::conv_avx2
