# Test binaries. Each area owns one line.
cairn_add_test(cpu_kernels_test kernels/cpu_kernels_test.cpp)
