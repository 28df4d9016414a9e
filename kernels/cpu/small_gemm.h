// GEMMs too small for OpenBLAS to be worth calling.
//
// A tiny network's step (20-256-10 at batch 2) is five GEMMs of 5,000 to 10,000 multiply-adds.
// OpenBLAS spends longer on each call's fixed work (argument checks, the beta = 0 pass over C,
// packing both operands into its panel layout) than on the arithmetic, so below a work threshold
// cpu::gemm computes the product itself, straight from the operands in place. That pays in the
// layouts where `first` is not transposed (a Dense layer's dx and dW); the forward layout (first
// transposed: every element a dot product) stays with OpenBLAS, which was as fast.
//
// The order of the arithmetic is fixed by the code, not by the machine: every element is the sum
// of its k rounded products (no fused multiply-add) added in order p = 0, 1, ..., k - 1, so the
// baseline build and the AVX2 build give the same bits, on every x86-64. OpenBLAS's kernels
// accumulate in an order of their own, which changes with the CPU it detects; results of this path
// therefore differ from OpenBLAS's in the last bits (a few ulps of the dot products' magnitude:
// tests/kernels/cpu_kernels_test.cpp measures it). CAIRN_CPU_SMALL_GEMM=0 sends every GEMM to
// OpenBLAS, for comparing against earlier results bit for bit.
#pragma once

#include <cstdint>

#include "cairn/kernels/gemm.h"

namespace cairn::kernels::cpu {

// Multiply-adds (m * n * k) at or below which cpu::gemm may use small_gemm. Measured on a Zen 3
// core (bench/bench_small_gemm.cpp): up to here small_gemm took 0.2x to 0.8x OpenBLAS's time in
// the layouts it takes. It keeps winning well beyond (k <= 10 with thousands of rows), but the
// book's MLP at batch 256 starts at 245,760 and its results stay OpenBLAS's, bit for bit.
inline constexpr int64_t kSmallGemmMaxWork = int64_t(1) << 16;

// Whether cpu::gemm hands this plan to small_gemm: at most kSmallGemmMaxWork, `first` not
// transposed, and columns of C of at least 8 rows (where it was measured to win).
bool small_gemm_takes(const ColumnMajorGemmPlan& plan);

// The plan, whatever its size; k >= 1 and `first` not transposed.
void small_gemm(const ColumnMajorGemmPlan& plan);

// Whether small_gemm_takes() may say yes at all: on by default, off when the environment has
// CAIRN_CPU_SMALL_GEMM=0. For comparing the two paths inside one process.
void set_small_gemm_enabled(bool enabled);

// The plan through OpenBLAS, whatever its size (cpu::gemm's other branch; tests compare the two).
void blas_gemm(const ColumnMajorGemmPlan& plan);

}  // namespace cairn::kernels::cpu
