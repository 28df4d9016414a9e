# Tensors, devices, memory, errors, autograd and the op API.
set(CAIRN_CORE_SOURCES
  core/error.cpp
  core/device.cpp
  core/cuda_context.cpp
  core/allocator.cpp
  core/storage.cpp
  core/shape.cpp
  core/tensor.cpp
  core/autograd.cpp
  core/ops/unary_ops.cpp
  core/ops/binary_ops.cpp
  core/ops/reduce_ops.cpp
  core/ops/softmax_ops.cpp
  core/ops/matmul_ops.cpp
  core/ops/dense_ops.cpp
  core/ops/shape_ops.cpp
  core/ops/loss_ops.cpp)
