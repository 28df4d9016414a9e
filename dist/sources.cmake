# Data-parallel training: communicators and the bucketed gradient reducer. The backends are
# compiled only where CMake found their library (see the top-level CMakeLists.txt).
set(CAIRN_DIST_SOURCES
  dist/communicator.cpp
  dist/gradient_reducer.cpp)
set(CAIRN_DIST_MPI_SOURCES dist/mpi_communicator.cpp)
set(CAIRN_DIST_NCCL_SOURCES dist/nccl_communicator.cpp)
