# CUDA kernels, one concern a file: nvcc with CUB is slow, and small files build in parallel.
set(CAIRN_KERNELS_CUDA_SOURCES
  kernels/cuda/elementwise.cu
  kernels/cuda/relu.cu
  kernels/cuda/reduce_all.cu
  kernels/cuda/reduce_rows.cu
  kernels/cuda/bias_grad.cu
  kernels/cuda/softmax.cu
  kernels/cuda/gemm.cu
  kernels/cuda/dense_lt.cu
  kernels/cuda/random.cu
  kernels/cuda/optimizer.cu
  kernels/cuda/loss.cu)
