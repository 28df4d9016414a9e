# Plain C++ twins of every kernel (and the GEMM plan both paths run).
set(CAIRN_KERNELS_CPU_SOURCES
  kernels/gemm_plan.cpp
  kernels/lt_plan.cpp
  kernels/cpu/elementwise.cpp
  kernels/cpu/reduce.cpp
  kernels/cpu/softmax.cpp
  kernels/cpu/gemm.cpp
  kernels/cpu/small_gemm.cpp
  kernels/cpu/parallel.cpp
  kernels/cpu/random.cpp
  kernels/cpu/optimizer.cpp
  kernels/cpu/loss.cpp)
