// Wider vectors chosen at run time. The library and its Docker image run on machines other than
// the one that built them, so the CPU kernels are built for baseline x86-64 (SSE2) and never with
// -march=native; the loops worth it are compiled a second time for AVX2 and picked by a CPUID
// check (__builtin_cpu_supports, read once) on each call:
//
//   run_widest([&]() CAIRN_VECTOR_LOOP { for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]); });
//
// CAIRN_VECTOR_LOOP forces the loop into run_avx2, where it is vectorised for AVX2. Only AVX2,
// not FMA: a fused multiply-add rounds once where a * b + c rounds twice, so results would depend
// on the machine. With AVX2 alone each element is computed by the same IEEE operations in the
// same order as in the baseline build, and both versions give the same bits (the CPU path is the
// GPU's oracle). Loops that reduce are left as they are: the compiler keeps their order anyway.
#pragma once

#include <cstdlib>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CAIRN_HAVE_AVX2_DISPATCH 1
#define CAIRN_VECTOR_LOOP __attribute__((always_inline))
#else
#define CAIRN_VECTOR_LOOP
#endif

namespace cairn::kernels::cpu::detail {

#if defined(CAIRN_HAVE_AVX2_DISPATCH)
// CAIRN_CPU_BASELINE=1 in the environment keeps the baseline versions even where AVX2 is there,
// so that bench/check_bit_identity.sh can hold the two against each other on one machine.
inline bool cpu_has_avx2() {
  static const bool has = [] {
    const char* baseline = std::getenv("CAIRN_CPU_BASELINE");
    const bool forced = baseline != nullptr && baseline[0] != '\0' && baseline[0] != '0';
    return !forced && __builtin_cpu_supports("avx2");
  }();
  return has;
}

template <typename Loop>
__attribute__((target("avx2"))) void run_avx2(const Loop& loop) {
  loop();
}

template <typename Loop>
void run_widest(const Loop& loop) {
  if (cpu_has_avx2()) {
    run_avx2(loop);
  } else {
    loop();
  }
}
#else
template <typename Loop>
void run_widest(const Loop& loop) {
  loop();
}
#endif

}  // namespace cairn::kernels::cpu::detail
