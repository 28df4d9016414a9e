// parallel_for (kernels/cpu/parallel.h) and the kernels that split their loops with it: every
// index exactly once, and the same bits at any thread count.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/optimizer.h"
#include "cairn/kernels/reduce.h"

extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

namespace cairn::kernels::cpu {
namespace {

// Restores the thread setting a test changed.
struct ThreadCount {
  explicit ThreadCount(int count) { set_threads(count); }
  ~ThreadCount() { set_threads(0); }
};

TEST(ParallelFor, CoversEveryIndexOnceInRangesOfAtLeastTheMinimum) {
  for (int count : {1, 2, 3, 4}) {
    const ThreadCount threads(count);
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(100), int64_t(100003)}) {
      SCOPED_TRACE(::testing::Message() << "threads=" << count << " n=" << n);
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> ranges{0};
      parallel_for(n, 10, [&](int64_t begin, int64_t end) {
        EXPECT_LT(begin, end);
        if (n >= 10) EXPECT_GE(end - begin, 10);
        ranges.fetch_add(1);
        for (int64_t i = begin; i < end; ++i) hits[size_t(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "index " << i;
      // Four ranges per thread (so that a thread that starts late leaves its share to the
      // others), unless that would make them shorter than 10; one range on one thread.
      const int64_t expected = n == 0 ? 0
                               : count == 1
                                   ? 1
                                   : std::max<int64_t>(1, std::min<int64_t>(4 * count, n / 10));
      EXPECT_EQ(ranges.load(), expected);
    }
  }
}

TEST(ParallelFor, RunsOnMoreThanOneThread) {
  const ThreadCount threads(2);
  std::atomic<int> arrived{0}, saw_both{0};
  parallel_for(2, 1, [&](int64_t, int64_t) {
    arrived.fetch_add(1);
    // Wait (bounded) for the other range. Run one after the other, the first range would give
    // up without seeing the second.
    for (int i = 0; i < 2000000 && arrived.load() < 2; ++i) std::this_thread::yield();
    if (arrived.load() == 2) saw_both.fetch_add(1);
  });
  EXPECT_EQ(saw_both.load(), 2);
}

TEST(ParallelFor, LoopsBackToBackNeverMixUpTheirRanges) {
  // Thousands of short loops in a row, each with its own body and data: a helper still finishing
  // one loop, or waking late, must never run a range of the next with the wrong body.
  const ThreadCount threads(3);
  std::vector<int64_t> sums(2000, 0);
  for (size_t loop = 0; loop < sums.size(); ++loop) {
    std::vector<std::atomic<int64_t>> partial(64);
    parallel_for(64, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) partial[size_t(i)].store(int64_t(loop) * 1000 + i);
    });
    for (int64_t i = 0; i < 64; ++i) sums[loop] += partial[size_t(i)].load();
  }
  for (size_t loop = 0; loop < sums.size(); ++loop) {
    ASSERT_EQ(sums[loop], int64_t(loop) * 64000 + 63 * 64 / 2) << "loop " << loop;
  }
}

TEST(ParallelBlasParts, RunsEveryPartOnceWithTheBlasAtOneThread) {
  const ThreadCount threads(2);
  const bool openblas = openblas_get_num_threads != nullptr && openblas_set_num_threads != nullptr;
  const int before = openblas ? openblas_get_num_threads() : 1;
  if (openblas) openblas_set_num_threads(2);
  std::vector<std::atomic<int>> hits(2);
  std::atomic<int> blas_threads_seen{0};
  parallel_blas_parts(2, [&](int part) {
    hits[size_t(part)].fetch_add(1);
    if (openblas) blas_threads_seen.fetch_add(openblas_get_num_threads());
  });
  EXPECT_EQ(hits[0].load(), 1);
  EXPECT_EQ(hits[1].load(), 1);
  if (openblas) {
    EXPECT_EQ(blas_threads_seen.load(), 2) << "each part should see OpenBLAS at one thread";
    EXPECT_EQ(openblas_get_num_threads(), 2) << "and the count restored after";
    openblas_set_num_threads(before);
  }
}

TEST(ParallelFor, NestedLoopsRunSeriallyInsteadOfDeadlocking) {
  const ThreadCount threads(2);
  std::atomic<int64_t> total{0};
  parallel_for(4, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      parallel_for(1000, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
    }
  });
  EXPECT_EQ(total.load(), 4000);
}

TEST(ParallelFor, CallersOnSeveralThreadsTakeTurns) {
  const ThreadCount threads(2);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&] {
      for (int round = 0; round < 200; ++round) {
        parallel_for(64, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
      }
    });
  }
  for (auto& caller : callers) caller.join();
  EXPECT_EQ(total.load(), 3 * 200 * 64);
}

TEST(ParallelFor, FollowsOpenBlasThreadCountByDefault) {
  if (openblas_set_num_threads == nullptr || openblas_get_num_threads == nullptr) {
    GTEST_SKIP() << "the BLAS linked in is not OpenBLAS";
  }
  if (std::getenv("CAIRN_CPU_THREADS") != nullptr) GTEST_SKIP() << "CAIRN_CPU_THREADS is set";
  const int before = openblas_get_num_threads();
  set_threads(0);
  openblas_set_num_threads(1);
  EXPECT_EQ(threads(), 1);
  openblas_set_num_threads(3);
  EXPECT_EQ(threads(), 3);
  setenv("CAIRN_CPU_THREADS", "4", 1);  // the environment wins over the BLAS
  EXPECT_EQ(threads(), 4);
  set_threads(2);  // and an explicit count over both
  EXPECT_EQ(threads(), 2);
  set_threads(0);
  unsetenv("CAIRN_CPU_THREADS");
  EXPECT_EQ(threads(), 3);
  openblas_set_num_threads(before);
}

std::vector<float> values(int64_t n, uint32_t salt) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t state = 2654435761u * (salt + 1);
  for (auto& x : v) {
    state = state * 1664525u + 1013904223u;
    x = float(int32_t(state >> 8) - (1 << 23)) / float(1 << 22);  // about [-2, 2)
  }
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Large enough (and odd enough) that three threads split them, with remainders.
constexpr int64_t kRows = 301, kCols = 257, kN = kRows * kCols;

template <typename Run>
void expect_same_bits_at_1_and_3_threads(const Run& run) {
  std::vector<float> one, three;
  {
    const ThreadCount threads(1);
    one = run();
  }
  {
    const ThreadCount threads(3);
    three = run();
  }
  EXPECT_TRUE(same_bits(one, three));
}

TEST(ParallelKernels, ElementwiseAndUpdatesGiveTheSameBitsAtAnyThreadCount) {
  const std::vector<float> x = values(kN, 1), other = values(kN, 2), row = values(kCols, 3),
                           column = values(kRows, 4);
  expect_same_bits_at_1_and_3_threads([&] {
    std::vector<float> y(static_cast<size_t>(kN));
    unary(UnaryOp::kSigmoid, x.data(), y.data(), kN);
    return y;
  });
  for (Broadcast broadcast :
       {Broadcast::kNone, Broadcast::kScalar, Broadcast::kRow, Broadcast::kColumn}) {
    SCOPED_TRACE(static_cast<int>(broadcast));
    const float* b = broadcast == Broadcast::kRow      ? row.data()
                     : broadcast == Broadcast::kColumn ? column.data()
                                                       : other.data();
    expect_same_bits_at_1_and_3_threads([&] {
      std::vector<float> y(static_cast<size_t>(kN));
      binary(BinaryOp::kDiv, x.data(), b, y.data(), kRows, kCols, broadcast);
      return y;
    });
  }
  expect_same_bits_at_1_and_3_threads([&] {
    std::vector<float> dx(static_cast<size_t>(kN));
    unary_backward(UnaryOp::kRelu, x.data(), nullptr, other.data(), dx.data(), kN);
    return dx;
  });
  expect_same_bits_at_1_and_3_threads([&] {
    std::vector<float> sums = values(kCols, 6);  // accumulated into
    sum_columns(x.data(), kRows, kCols, sums.data(), Accumulate::kAdd);
    return sums;
  });
  expect_same_bits_at_1_and_3_threads([&] {
    std::vector<float> weight = x, velocity = values(kN, 5);
    SgdConfig config;
    config.learning_rate = 0.1f, config.momentum = 0.9f, config.weight_decay = 1e-4f;
    sgd_update(weight.data(), other.data(), velocity.data(), kN, config);
    weight.insert(weight.end(), velocity.begin(), velocity.end());
    return weight;
  });
  expect_same_bits_at_1_and_3_threads([&] {
    std::vector<float> weight = x, mean(static_cast<size_t>(kN), 0.0f),
                       variance(static_cast<size_t>(kN), 0.0f);
    AdamConfig config;
    config.learning_rate = 1e-3f, config.step = 1;
    adam_update(weight.data(), other.data(), mean.data(), variance.data(), kN, config);
    return weight;
  });
}

}  // namespace
}  // namespace cairn::kernels::cpu
