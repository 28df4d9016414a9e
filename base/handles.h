// Opaque handles for the CUDA objects cairn passes between layers: a stream, a cuBLAS handle, a
// cuBLASLt handle. Declared here, below every layer, so that headers of kernels/ and core/ name
// them without including CUDA (they are the same types as cudaStream_t, cublasHandle_t and
// cublasLtHandle_t).
#pragma once

struct CUstream_st;
struct cublasContext;
struct cublasLtContext;

namespace cairn {

using StreamHandle = CUstream_st*;  // == cudaStream_t
using BlasHandle = cublasContext*;  // == cublasHandle_t
using LtHandle = cublasLtContext*;  // == cublasLtHandle_t

}  // namespace cairn
