# The layers' include arrows run one way (blocks -> dist -> core -> kernels -> base).
add_test(NAME layers.include_arrows_run_one_way COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/check_layers.sh)
# Test binaries. Each area owns one line.
cairn_add_test(cpu_kernels_test kernels/cpu_kernels_test.cpp kernels/cpu_parallel_test.cpp
               kernels/conv_products_test.cpp)
cairn_add_test(core_test core/allocator_test.cpp core/tensor_test.cpp core/autograd_test.cpp core/streams_test.cpp
               core/host_memory_test.cpp)
cairn_add_test(blocks_test blocks/blocks_test.cpp blocks/block_gradients_test.cpp blocks/conv_block_test.cpp
  blocks/load_parameters_test.cpp blocks/sample_curves_test.cpp blocks/pooling_block_test.cpp
  blocks/norm_block_test.cpp blocks/torch_cnn_test.cpp
  ${PROJECT_SOURCE_DIR}/samples/train_fashion_mnist/curves.cpp)
target_include_directories(blocks_test PRIVATE ${PROJECT_SOURCE_DIR}/samples)
cairn_add_test(ops_test ops/ops_cpu_test.cpp ops/ops_gradient_test.cpp ops/ops_bad_input_test.cpp
               ops/conv_test.cpp ops/pool_test.cpp ops/dropout_test.cpp ops/norm_test.cpp)
# The convolution tests once more on the OpenBLAS drivers, which the packed AVX-512 / AVX2 products
# replace wherever the CPU has either (so nearly everywhere, CI included).
add_test(NAME ops.conv_on_the_openblas_path COMMAND ops_test --gtest_filter=*Conv*)
set_tests_properties(ops.conv_on_the_openblas_path PROPERTIES TIMEOUT 600
  ENVIRONMENT "CAIRN_CPU_CONV_AVX512=0;CAIRN_CPU_CONV_AVX2=0")
cairn_add_test(ops_gpu_test ops/ops_parity_test.cpp ops/dense_test.cpp ops/large_shapes_test.cpp
               ops/conv_parity_test.cpp ops/pool_parity_test.cpp ops/adamw_parity_test.cpp
               ops/norm_parity_test.cpp)
cairn_add_test(training_test blocks/training_test.cpp blocks/data_loader_test.cpp
  blocks/adamw_test.cpp)
cairn_add_test(formats_test blocks/safetensors_test.cpp blocks/safetensors_dtypes_test.cpp
  blocks/idx_test.cpp)
cairn_add_test(hardening_test hardening/hardening_test.cpp hardening/determinism_test.cpp
               hardening/reliability_test.cpp)
target_link_libraries(hardening_test PRIVATE ZLIB::ZLIB)
if(NOT CAIRN_FAKE_CUDA)  # the fake device's build is never installed
  add_test(NAME embed.find_package_consumer COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/embed/embed_test.sh ${CMAKE_BINARY_DIR} ${PROJECT_SOURCE_DIR} "${CMAKE_CUDA_ARCHITECTURES}")
  set_tests_properties(embed.find_package_consumer PROPERTIES TIMEOUT 900 LABELS embed)
endif()
cairn_add_test(speed_test speed/hybridize_test.cpp)
target_include_directories(speed_test PRIVATE ${PROJECT_SOURCE_DIR}/samples)
# Data-parallel training. The single-process parts always; the multi-process ones where MPI was
# found, each a job under mpirun (as root on CI: --allow-run-as-root; 3 ranks on 2 cores:
# --oversubscribe).
cairn_add_test(dist_local_test dist/dist_local_test.cpp)
target_compile_definitions(dist_local_test PRIVATE CAIRN_EXPECT_MPI=$<BOOL:${CAIRN_HAVE_MPI}>)
if(CAIRN_HAVE_MPI)
  add_executable(dist_mpi_test dist/dist_mpi_test.cpp)
  target_link_libraries(dist_mpi_test PRIVATE cairn::cairn GTest::gtest GTest::gtest_main)
  target_include_directories(dist_mpi_test PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  add_executable(dist_failing_rank dist/failing_rank.cpp)
  target_link_libraries(dist_failing_rank PRIVATE cairn::cairn)
  target_include_directories(dist_failing_rank PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  set(CAIRN_MPIEXEC ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe ${MPIEXEC_PREFLAGS})
  foreach(ranks 1 2 3)
    add_test(NAME dist.mpi_np${ranks}
             COMMAND ${CAIRN_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} ${ranks} $<TARGET_FILE:dist_mpi_test>
                     ${MPIEXEC_POSTFLAGS})
    set_tests_properties(dist.mpi_np${ranks} PROPERTIES TIMEOUT 120 LABELS "dist;mpi"
                         PROCESSORS ${ranks})
  endforeach()
  add_test(NAME dist.failing_rank_ends_the_job
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/dist/failure_test.sh ${CAIRN_MPIEXEC}
                   ${MPIEXEC_NUMPROC_FLAG} 2 -- $<TARGET_FILE:dist_failing_rank>)
  set_tests_properties(dist.failing_rank_ends_the_job PROPERTIES TIMEOUT 90 LABELS "dist;mpi"
                       PROCESSORS 2)
  # Ranks that disagree on what to compute stop before the first step, each naming the quantity
  # and each rank's value; a rank that stops joining collectives ends the job at the timeout.
  add_executable(dist_disagreeing_ranks dist/disagreeing_ranks.cpp)
  target_link_libraries(dist_disagreeing_ranks PRIVATE cairn::cairn)
  target_include_directories(dist_disagreeing_ranks PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  set(agree_head "cairn: rank [01] of 2 failed: Trainer::enable_data_parallel .*the ranks disagree on")
  set(head_steps ${agree_head})
  set(head_batch ${agree_head})
  set(head_schedule ${agree_head})
  set(head_optimizer ${agree_head})
  set(head_standardize ${agree_head})
  set(head_timeout "cairn: rank 0 of 2 failed: mpi start_allreduce_sum \\(collective #[0-9]+ .*did not complete within 2 s.*; missing: rank 1$")
  set(detail_steps "^  steps per epoch: '4' on rank 0; '3' on rank 1$")
  set(detail_batch "^  batch size \\(per rank\\): '8' on rank 0; '16' on rank 1$")
  set(detail_schedule "^  learning-rate schedule: horizon \\(steps\\): '8' on rank 0; '12' on rank 1")
  set(detail_optimizer "^  optimizer and hyperparameters: 'sgd\\(learning_rate=0.100000001, momentum=0.899999976, weight_decay=0\\)' on rank 0; 'sgd\\(learning_rate=0.200000003,")
  set(detail_standardize "^  normalisation \\(mean, stddev\\): '0.286000013, 0.352999985' on rank 0; '0, 1' on rank 1")
  set(detail_timeout "^  rank 1: no answer within 2 s")
  foreach(mode steps batch schedule optimizer standardize timeout)
    add_test(NAME dist.disagreeing_ranks_${mode}
             COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/dist/failure_test.sh
                     --expect "${head_${mode}}" --expect "${detail_${mode}}"
                     ${CAIRN_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 --
                     $<TARGET_FILE:dist_disagreeing_ranks> ${mode})
    set_tests_properties(dist.disagreeing_ranks_${mode} PROPERTIES TIMEOUT 90 LABELS "dist;mpi"
                         PROCESSORS 2 ENVIRONMENT CAIRN_COLLECTIVE_TIMEOUT_S=2)
  endforeach()
endif()
if(CAIRN_HAVE_MPI AND CAIRN_SANITIZE)
  # Open MPI leaves ~120 KB in ~3,300 allocations per process at MPI_Finalize (measured with a
  # bare MPI_Init/MPI_Iallreduce/MPI_Finalize program), much of it in plugins it has unloaded,
  # so LeakSanitizer cannot even name them for a suppression. Leak checking is off for the MPI
  # jobs; AddressSanitizer's and UBSan's checks of cairn's code stay on.
  set_tests_properties(dist.mpi_np1 dist.mpi_np2 dist.mpi_np3 dist.failing_rank_ends_the_job
                       dist.disagreeing_ranks_steps dist.disagreeing_ranks_batch
                       dist.disagreeing_ranks_schedule dist.disagreeing_ranks_optimizer
                       dist.disagreeing_ranks_standardize dist.disagreeing_ranks_timeout
                       PROPERTIES ENVIRONMENT_MODIFICATION "ASAN_OPTIONS=string_append::detect_leaks=0")
endif()
if(CAIRN_HAVE_MPI AND CAIRN_FAKE_CUDA)
  # NCCL wants one GPU per rank: on the fake device each process gets three, so that rank r
  # reduces on cuda:r (the device != 0 paths run too) through the fake NCCL's sockets.
  set_tests_properties(dist.mpi_np1 dist.mpi_np2 dist.mpi_np3 PROPERTIES
                       ENVIRONMENT CAIRN_FAKE_CUDA_DEVICES=3)
endif()

# The sample's command line: every bad value refused with exit status 2, naming the flag, before
# any data is loaded (no data set needed).
if(TARGET train_fashion_mnist)
  add_test(NAME sample.train_fashion_mnist_command_line
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/samples/train_fashion_mnist_cli_test.sh
                   $<TARGET_FILE:train_fashion_mnist>)
  set_tests_properties(sample.train_fashion_mnist_command_line PROPERTIES TIMEOUT 300)
  if(CAIRN_HAVE_MPI)
    add_test(NAME sample.train_fashion_mnist_ranks_disagree
             COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/samples/train_fashion_mnist_mpi_test.sh
                     $<TARGET_FILE:train_fashion_mnist> ${CAIRN_MPIEXEC})
    set_tests_properties(sample.train_fashion_mnist_ranks_disagree PROPERTIES TIMEOUT 300
                         LABELS "dist;mpi" PROCESSORS 2 ENVIRONMENT CAIRN_COLLECTIVE_TIMEOUT_S=20)
    if(CAIRN_SANITIZE)  # Open MPI's own leaks at MPI_Finalize, as for the dist jobs above
      set_tests_properties(sample.train_fashion_mnist_ranks_disagree PROPERTIES
                           ENVIRONMENT_MODIFICATION "ASAN_OPTIONS=string_append::detect_leaks=0")
    endif()
  endif()
endif()

# The fake CUDA device's own tests: that it refuses what a real device refuses, and the GPU
# host-code hazards only the fake can provoke (heuristic refusals, stream races).
if(CAIRN_FAKE_CUDA)
  cairn_add_test(fake_cuda_test fake_cuda/fake_runtime_test.cpp fake_cuda/fake_blas_test.cpp
                 fake_cuda/fake_launchers_test.cpp fake_cuda/fake_fallback_test.cpp)
endif()
