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
  kernels/cpu/loss.cpp
  kernels/cpu/conv.cpp
  kernels/cpu/conv_avx2.cpp
  kernels/cpu/conv_avx512.cpp
  kernels/cpu/pool.cpp
  kernels/cpu/dropout.cpp
  kernels/cpu/norm.cpp)

# GCC notes on every fresh build that passing a 32-byte vector (small_gemm.cpp's `Lanes`) by value
# changed ABI in GCC 4.6 when AVX is on. Harmless here: `Lanes` lives in small_gemm.cpp's internal
# helpers, all inline in one translation unit, and never crosses a call between units compiled
# with different flags or compilers (the public functions take floats and pointers only), so the
# note would only teach users to ignore warnings.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set_source_files_properties(kernels/cpu/small_gemm.cpp PROPERTIES COMPILE_OPTIONS -Wno-psabi)
endif()
