#include "cairn/kernels/cpu/parallel.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

// OpenBLAS's thread count, where the BLAS linked in is OpenBLAS; weak, so that another BLAS links.
extern "C" int openblas_get_num_threads(void) __attribute__((weak));
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace cairn::kernels::cpu {
namespace {

std::atomic<int> g_threads_override{0};
// While parallel_blas_parts holds OpenBLAS at one thread: the count OpenBLAS had before (0 when
// no such loop is running).
std::atomic<int> g_blas_threads_held{0};
thread_local bool t_inside_body = false;

// Ranges per thread: with more ranges than threads, a thread that starts late (its core was
// busy) finds fewer left, and the others take them instead of waiting for it.
constexpr int kRangesPerThread = 4;

// How long a helper watches for the next loop before it sleeps. A training step runs its loops
// and GEMMs at most a millisecond or so apart; a helper asleep needs a futex wake and, when the
// other cores are busy, a scheduler tick before it gets one. While it watches it yields its core
// every microsecond or so, so a thread that wants the core gets it.
constexpr auto kWatchBeforeSleeping = std::chrono::milliseconds(2);

inline void cpu_relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

// OpenBLAS at one thread for the life of the object, then back to what it was.
class BlasHeldAtOneThread {
 public:
  BlasHeldAtOneThread() {
    if (openblas_get_num_threads == nullptr || openblas_set_num_threads == nullptr) return;
    before_ = openblas_get_num_threads();
    if (before_ <= 1) return;
    g_blas_threads_held.store(before_, std::memory_order_release);
    openblas_set_num_threads(1);
  }
  ~BlasHeldAtOneThread() {
    if (before_ <= 1) return;
    openblas_set_num_threads(before_);
    g_blas_threads_held.store(0, std::memory_order_release);
  }
  BlasHeldAtOneThread(const BlasHeldAtOneThread&) = delete;
  BlasHeldAtOneThread& operator=(const BlasHeldAtOneThread&) = delete;

 private:
  int before_ = 0;
};

// One loop at a time. Its ranges are claimed one by one, by the caller and by whichever helpers
// are awake, from `claim_`: the loop's generation in the high 32 bits, the next range in the low
// 32. A helper holding a stale generation fails its compare-and-swap and rereads, so it can never
// run a range of a loop other than the one it read.
class Pool {
 public:
  // Runs `ranges` ranges of [0, n) on up to `threads` threads (the caller one of them).
  void run(int64_t n, int ranges, int threads, bool hold_blas,
           void (*call)(const void*, int64_t, int64_t), const void* body) {
    std::lock_guard<std::mutex> one_loop_at_a_time(run_mutex_);
    while (int(helpers_.size()) < threads - 1) {
      const int index = int(helpers_.size()) + 1;
      helpers_.emplace_back([this, index] { helper_loop(index); });
      helpers_.back().detach();
    }
    std::optional<BlasHeldAtOneThread> blas_at_one_thread;
    if (hold_blas) blas_at_one_thread.emplace();
    const Job job{n, ranges, threads, call, body};
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = job;
      finished_.store(0, std::memory_order_relaxed);
      generation = (claim_.load(std::memory_order_relaxed) >> 32) + 1;
      claim_.store(generation << 32, std::memory_order_release);
    }
    if (sleeping_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    while (claim_and_run(job, generation)) {
    }
    // Every range is claimed; wait for those still running on helpers.
    for (int spin = 0; finished_.load(std::memory_order_acquire) != ranges; ++spin) {
      if (spin < 256) {
        cpu_relax();
      } else {
        sched_yield();  // the helper running one may be waiting for this core
      }
    }
  }

 private:
  struct Job {
    int64_t n = 0;
    int ranges = 0;
    int threads = 0;  // helpers numbered `threads` and above sit this loop out
    void (*call)(const void*, int64_t, int64_t) = nullptr;
    const void* body = nullptr;
  };

  // Claims the next range of loop `generation` and runs it; false when none is left or the loop
  // is no longer the current one.
  bool claim_and_run(const Job& job, uint64_t generation) {
    uint64_t claim = claim_.load(std::memory_order_acquire);
    for (;;) {
      const uint64_t index = claim & 0xffffffffu;
      if ((claim >> 32) != generation || index >= uint64_t(job.ranges)) return false;
      if (claim_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel)) break;
    }
    const int64_t index = int64_t(claim & 0xffffffffu);
    const int64_t begin = job.n * index / job.ranges, end = job.n * (index + 1) / job.ranges;
    t_inside_body = true;
    if (begin < end) job.call(job.body, begin, end);
    t_inside_body = false;
    finished_.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }

  uint64_t current_generation() const { return claim_.load(std::memory_order_acquire) >> 32; }

  void helper_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kWatchBeforeSleeping;
      for (int spin = 1; current_generation() == seen; ++spin) {
        if (spin % 64 != 0) {
          cpu_relax();
        } else if (std::chrono::steady_clock::now() < until) {
          sched_yield();
        } else {
          break;
        }
      }
      Job job;
      uint64_t generation;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (current_generation() == seen) {
          sleeping_.fetch_add(1, std::memory_order_acq_rel);
          wake_.wait(lock, [&] { return current_generation() != seen; });
          sleeping_.fetch_sub(1, std::memory_order_acq_rel);
        }
        generation = current_generation();
        job = job_;  // the job of `generation`: both change only under mutex_
      }
      seen = generation;
      if (index >= job.threads) continue;
      while (claim_and_run(job, generation)) {
      }
    }
  }

  std::mutex run_mutex_;
  std::mutex mutex_;  // guards job_ and each change of generation, so no helper sleeps through one
  std::condition_variable wake_;
  Job job_;
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> finished_{0};
  std::atomic<int> sleeping_{0};
  std::vector<std::thread> helpers_;
};

Pool& pool() {
  static Pool* instance = new Pool;  // never destroyed: helpers may still be waiting at exit
  return *instance;
}

}  // namespace

int threads() {
  const int forced = g_threads_override.load(std::memory_order_relaxed);
  if (forced >= 1) return forced;
  // Read each time (parallel_for asks only for loops large enough to split), so that a setting
  // made after start-up counts too.
  const char* setting = std::getenv("CAIRN_CPU_THREADS");
  const int from_environment = setting != nullptr ? std::atoi(setting) : 0;
  if (from_environment >= 1) return from_environment;
  if (openblas_get_num_threads != nullptr) {
    const int held = g_blas_threads_held.load(std::memory_order_acquire);
    return std::max(1, held >= 1 ? held : openblas_get_num_threads());
  }
  return 1;
}

void set_threads(int count) { g_threads_override.store(std::max(0, count)); }

namespace detail {

void parallel_for_erased(int64_t n, int64_t min_per_thread,
                         void (*call)(const void*, int64_t, int64_t), const void* body) {
  if (n <= 0) return;
  const int64_t by_size = n / std::max<int64_t>(1, min_per_thread);
  const int count = t_inside_body || by_size <= 1 ? 1 : int(std::min<int64_t>(threads(), by_size));
  if (count <= 1) {
    call(body, 0, n);
    return;
  }
  const int ranges = int(std::min<int64_t>(int64_t(count) * kRangesPerThread, by_size));
  pool().run(n, ranges, count, /*hold_blas=*/false, call, body);
}

void parallel_blas_parts_erased(int parts, void (*call)(const void*, int64_t, int64_t),
                                const void* body) {
  if (parts <= 0) return;
  if (parts == 1 || t_inside_body) {
    for (int part = 0; part < parts; ++part) call(body, part, part + 1);
    return;
  }
  pool().run(parts, parts, parts, /*hold_blas=*/true, call, body);
}

}  // namespace detail
}  // namespace cairn::kernels::cpu
