# Test binaries. Each area owns one line.
cairn_add_test(cpu_kernels_test kernels/cpu_kernels_test.cpp)
cairn_add_test(core_test core/allocator_test.cpp core/tensor_test.cpp core/autograd_test.cpp)
cairn_add_test(blocks_test blocks/blocks_test.cpp blocks/block_gradients_test.cpp)
target_include_directories(blocks_test PRIVATE ${PROJECT_SOURCE_DIR}/samples)
cairn_add_test(ops_test ops/ops_cpu_test.cpp ops/ops_gradient_test.cpp ops/ops_bad_input_test.cpp)
cairn_add_test(ops_gpu_test ops/ops_parity_test.cpp)
cairn_add_test(training_test blocks/training_test.cpp)
cairn_add_test(formats_test blocks/safetensors_test.cpp blocks/idx_test.cpp)
