// The CPU path's threads: large memory-bound loops (the data loader's gather, the optimizer
// updates, elementwise maps, column sums) and large GEMMs, split across one pool.
//
// With two threads the GEMMs take half as long, and whatever cairn ran on one thread between them
// became the larger share of a step. parallel_for splits such a loop into contiguous ranges,
// a few per thread. Each element is computed by the same expression as in the one-thread loop,
// so the bits of these loops do not depend on the thread count.
//
// How many threads: by default the BLAS's own current count (OpenBLAS's
// openblas_get_num_threads(), read at every call, so openblas_set_num_threads and
// OPENBLAS_NUM_THREADS govern both; while parallel_blas_parts holds OpenBLAS at one thread,
// the count from before); 1 with another BLAS. CAIRN_CPU_THREADS=n in the
// environment overrides that, and set_threads(n) overrides both.
//
// One pool runs everything, GEMMs included. With OpenBLAS's pthread build there are otherwise two
// pools: OpenBLAS's threads spin (yielding) for a tenth of a second after every GEMM, so on a
// two-core machine cairn's helper competed with them for a core, and a loop split in two often ran
// no faster than on one thread. cpu::gemm therefore splits a large GEMM itself
// (parallel_blas_parts) into one single-threaded OpenBLAS call per thread, holding OpenBLAS at one
// thread while they run; OpenBLAS's own threads then stay asleep.
//
// The loop's ranges are claimed one at a time, by the caller and by the helpers, so a helper that
// starts late (its core was busy) leaves its ranges to the others instead of making them wait.
// Between loops a helper watches for the next one for a couple of milliseconds, yielding its core
// to any thread that wants it, and then sleeps on a condition variable.
#pragma once

#include <cstdint>

namespace cairn::kernels::cpu {

// The threads parallel_for uses now (at least 1).
int threads();
// 0 (the default): follow the BLAS's thread count; n >= 1: use n.
void set_threads(int count);

namespace detail {
void parallel_for_erased(int64_t n, int64_t min_per_thread,
                         void (*call)(const void* body, int64_t begin, int64_t end),
                         const void* body);
void parallel_blas_parts_erased(int parts, void (*call)(const void* body, int64_t begin, int64_t end),
                                const void* body);
}  // namespace detail

// body(begin, end) over contiguous ranges covering [0, n), each at least min_per_thread long, run
// concurrently on up to threads() threads (a few ranges per thread); returns when all have
// finished. body must not throw. A parallel_for inside a body runs serially.
template <typename Body>
void parallel_for(int64_t n, int64_t min_per_thread, const Body& body) {
  detail::parallel_for_erased(
      n, min_per_thread,
      [](const void* erased, int64_t begin, int64_t end) {
        (*static_cast<const Body*>(erased))(begin, end);
      },
      &body);
}

// body(part) for part = 0 .. parts - 1, concurrently (parts at most threads()), with
// OpenBLAS's own thread count held at 1 meanwhile so that the BLAS calls the bodies make run on
// the threads that make them. threads() keeps answering the count from before. A program that
// calls openblas_get_num_threads() on another thread at that moment sees 1.
template <typename Body>
void parallel_blas_parts(int parts, const Body& body) {
  detail::parallel_blas_parts_erased(
      parts,
      [](const void* erased, int64_t begin, int64_t) {
        (*static_cast<const Body*>(erased))(int(begin));
      },
      &body);
}

}  // namespace cairn::kernels::cpu
