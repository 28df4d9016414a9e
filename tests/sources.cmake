# Test binaries. Each area owns one line.
cairn_add_test(cpu_kernels_test kernels/cpu_kernels_test.cpp)
cairn_add_test(core_test core/allocator_test.cpp core/tensor_test.cpp core/autograd_test.cpp)
cairn_add_test(blocks_test blocks/blocks_test.cpp blocks/block_gradients_test.cpp)
target_include_directories(blocks_test PRIVATE ${PROJECT_SOURCE_DIR}/samples)
cairn_add_test(ops_test ops/ops_cpu_test.cpp ops/ops_gradient_test.cpp ops/ops_bad_input_test.cpp)
cairn_add_test(ops_gpu_test ops/ops_parity_test.cpp ops/dense_test.cpp)
cairn_add_test(training_test blocks/training_test.cpp blocks/data_loader_test.cpp)
cairn_add_test(formats_test blocks/safetensors_test.cpp blocks/idx_test.cpp)
cairn_add_test(hardening_test hardening/hardening_test.cpp hardening/determinism_test.cpp
               hardening/reliability_test.cpp)
target_link_libraries(hardening_test PRIVATE ZLIB::ZLIB)
add_test(NAME embed.find_package_consumer COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/embed/embed_test.sh ${CMAKE_BINARY_DIR} ${PROJECT_SOURCE_DIR} "${CMAKE_CUDA_ARCHITECTURES}")
set_tests_properties(embed.find_package_consumer PROPERTIES TIMEOUT 900 LABELS embed)
cairn_add_test(speed_test speed/hybridize_test.cpp)
target_include_directories(speed_test PRIVATE ${PROJECT_SOURCE_DIR}/samples)

# The sample's command line: every bad value refused with exit status 2, naming the flag, before
# any data is loaded (no data set needed).
if(TARGET train_fashion_mnist)
  add_test(NAME sample.train_fashion_mnist_command_line
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/samples/train_fashion_mnist_cli_test.sh
                   $<TARGET_FILE:train_fashion_mnist>)
  set_tests_properties(sample.train_fashion_mnist_command_line PROPERTIES TIMEOUT 300)
endif()
