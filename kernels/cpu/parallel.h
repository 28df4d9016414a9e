// The CPU path's large memory-bound loops split across threads: the data loader's gather, the
// optimizer updates.
//
// With OpenBLAS on two threads the GEMMs take half as long, and whatever cairn runs on one
// thread between them becomes the larger share of a step. parallel_for splits such a loop into
// contiguous ranges, one per thread, the calling thread taking the first. Each element is
// computed by the same expression as in the one-thread loop, so the bits do not depend on the
// thread count.
//
// How many threads: by default the BLAS's own current count (OpenBLAS's
// openblas_get_num_threads(), read at every call, so openblas_set_num_threads and
// OPENBLAS_NUM_THREADS govern both); 1 with another BLAS. CAIRN_CPU_THREADS=n in the
// environment overrides that, and set_threads(n) overrides both.
// The helper threads sleep on a condition variable between loops rather than spinning, so that
// they never hold a core OpenBLAS's own threads are waiting for.
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
}  // namespace detail

// body(begin, end) over contiguous ranges covering [0, n), each at least min_per_thread long
// (fewer threads otherwise), run concurrently; returns when all have finished. body must not
// throw. A parallel_for inside a body runs serially.
template <typename Body>
void parallel_for(int64_t n, int64_t min_per_thread, const Body& body) {
  detail::parallel_for_erased(
      n, min_per_thread,
      [](const void* erased, int64_t begin, int64_t end) {
        (*static_cast<const Body*>(erased))(begin, end);
      },
      &body);
}

}  // namespace cairn::kernels::cpu
