# CUDA kernels, one concern a file: nvcc with CUB is slow, and small files build in parallel.
set(CAIRN_KERNELS_CUDA_SOURCES
  kernels/cuda/elementwise.cu
  kernels/cuda/reduce_all.cu
  kernels/cuda/reduce_rows.cu
  kernels/cuda/bias_grad.cu
  kernels/cuda/softmax.cu
  kernels/cuda/scale_matrix.cu
  kernels/cuda/random.cu
  kernels/cuda/optimizer.cu
  kernels/cuda/loss.cu
  kernels/cuda/conv.cu
  kernels/cuda/pool.cu
  kernels/cuda/dropout.cu
  kernels/cuda/norm.cu)
# Host code of the GPU path (cuBLAS and cuBLASLt calls, no kernel): compiled by the host compiler,
# in the CUDA build and, unchanged, in the fake CUDA device's build (tests/fake_cuda/).
set(CAIRN_KERNELS_CUDA_HOST_SOURCES
  kernels/cuda/gemm.cpp
  kernels/cuda/dense_lt.cpp)
