#include "cairn/kernels/cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

// OpenBLAS's thread count, where the BLAS linked in is OpenBLAS; weak, so that another BLAS links.
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

namespace cairn::kernels::cpu {
namespace {

std::atomic<int> g_threads_override{0};
thread_local bool t_inside_body = false;

// Helpers numbered 1..; helper i runs range i of the current job. Created on first need, never
// destroyed (they sleep between jobs; a process exits with them asleep).
class Pool {
 public:
  void run(int64_t n, int ranges, void (*call)(const void*, int64_t, int64_t), const void* body) {
    std::lock_guard<std::mutex> one_job_at_a_time(run_mutex_);
    while (int(helpers_.size()) < ranges - 1) {
      const int index = int(helpers_.size()) + 1;
      helpers_.emplace_back([this, index] { helper_loop(index); });
      helpers_.back().detach();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = Job{n, ranges, call, body};
      remaining_.store(ranges - 1, std::memory_order_relaxed);
      ++generation_;
    }
    wake_.notify_all();
    run_range(job_, 0);
    // The helpers' ranges are the same size as this one: wait for them briefly before sleeping.
    for (int spin = 0; spin < 2000 && remaining_.load(std::memory_order_acquire) != 0; ++spin) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
    if (remaining_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return remaining_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  struct Job {
    int64_t n = 0;
    int ranges = 0;
    void (*call)(const void*, int64_t, int64_t) = nullptr;
    const void* body = nullptr;
  };

  static void run_range(const Job& job, int index) {
    const int64_t begin = job.n * index / job.ranges, end = job.n * (index + 1) / job.ranges;
    t_inside_body = true;
    if (begin < end) job.call(job.body, begin, end);
    t_inside_body = false;
  }

  void helper_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        job = job_;
      }
      if (index >= job.ranges) continue;  // this job needs fewer helpers
      run_range(job, index);
      if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // so the waiter cannot miss the notify
        done_.notify_one();
      }
    }
  }

  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  Job job_;
  std::atomic<int> remaining_{0};
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
  if (openblas_get_num_threads != nullptr) return std::max(1, openblas_get_num_threads());
  return 1;
}

void set_threads(int count) { g_threads_override.store(std::max(0, count)); }

namespace detail {

void parallel_for_erased(int64_t n, int64_t min_per_thread,
                         void (*call)(const void*, int64_t, int64_t), const void* body) {
  if (n <= 0) return;
  const int64_t by_size = n / std::max<int64_t>(1, min_per_thread);
  const int ranges = t_inside_body || by_size <= 1 ? 1 : int(std::min<int64_t>(threads(), by_size));
  if (ranges <= 1) {
    call(body, 0, n);
    return;
  }
  pool().run(n, ranges, call, body);
}

}  // namespace detail
}  // namespace cairn::kernels::cpu
