# Test binaries. Each area owns one line.
cairn_add_test(cpu_kernels_test kernels/cpu_kernels_test.cpp)
cairn_add_test(core_test core/allocator_test.cpp core/tensor_test.cpp core/autograd_test.cpp)
cairn_add_test(blocks_test blocks/blocks_test.cpp blocks/block_gradients_test.cpp)
target_include_directories(blocks_test PRIVATE ${PROJECT_SOURCE_DIR}/samples)
