// Data-parallel cost on the CPU: what the gradient allreduce costs per step against the step, and
// samples/s from 1 to N processes. Not a Google Benchmark program: it runs under mpirun.
//
//   mpirun -np 2 build-bench/bench/bench_data_parallel [--steps 60] [--batch 256] [--width 256]
//                                                      [--bucket-kb 4096]
//
// The sample's MLP (784 -> width relu -> 10) on seeded random pixels, --batch samples per rank
// per step. It measures, on every rank, then reports rank 0's view (slowest rank for times):
//   step        one data-parallel training step (forward, backward with the bucketed allreduce
//               started from the hooks, waiting for it, the update)
//   local step  the same step with a single-process communicator (no communication)
//   allreduce   one blocking MPI allreduce of all the gradients (the step's communication alone)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cairn/blocks/layers.h"
#include "cairn/blocks/loss.h"
#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/trainer.h"
#include "cairn/core/autograd.h"
#include "cairn/dist/communicator.h"

namespace {

using namespace cairn;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Setup {
  int steps = 60;
  int64_t batch = 256;
  int64_t width = 256;
  int64_t bucket_kb = 4096;
};

// Seconds per step, median-free: total over `steps` after 5 warm-up steps.
double time_steps(Block& net, Trainer& trainer, const Tensor& x, const Tensor& y, int steps,
                  dist::Communicator& comm) {
  const SoftmaxCrossEntropyLoss loss_fn;
  auto one = [&] {
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn(net(x), y);
    }
    loss.backward();
    trainer.step(1);
  };
  for (int i = 0; i < 5; ++i) one();
  comm.barrier();
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) one();
  return seconds_since(start) / steps;
}

}  // namespace

int main(int argc, char** argv) {
  Setup setup;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--steps")
      setup.steps = std::atoi(argv[i + 1]);
    else if (flag == "--batch")
      setup.batch = std::atoll(argv[i + 1]);
    else if (flag == "--width")
      setup.width = std::atoll(argv[i + 1]);
    else if (flag == "--bucket-kb")
      setup.bucket_kb = std::atoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_data_parallel: unknown option %s\n", flag.c_str());
      return 2;
    }
  }
  try {
    const Device cpu = Device::cpu();
    const dist::CommunicatorPtr comm = dist::make_communicator(cpu);
    auto make_net = [&] {
      auto net = make<Sequential>();
      net->add(make<Dense>(setup.width, "relu", 784));
      net->add(make<Dense>(10, "", setup.width));
      net->initialize(init::xavier(), cpu, 0);
      return net;
    };
    const Tensor x = Tensor::uniform({setup.batch, 784}, -1, 1, 1 + uint64_t(comm->rank()), cpu);
    std::vector<int32_t> labels(size_t(setup.batch));
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t(i % 10);
    const Tensor y = Tensor::from_int32(labels, {setup.batch}, cpu);

    auto dp_net = make_net();
    Trainer dp(dp_net->collect_params(), std::make_shared<SGD>(0.01f));
    dist::BucketOptions buckets;
    buckets.bucket_bytes = setup.bucket_kb * 1024;
    dp.enable_data_parallel(comm, buckets);
    const double step = time_steps(*dp_net, dp, x, y, setup.steps, *comm);

    auto local_net = make_net();
    Trainer local(local_net->collect_params(), std::make_shared<SGD>(0.01f));
    local.enable_data_parallel(dist::single_process_communicator());
    const double local_step = time_steps(*local_net, local, x, y, setup.steps, *comm);

    int64_t gradient_floats = 0;
    for (const auto& [name, parameter] : dp_net->collect_params()) {
      gradient_floats += parameter->data().numel();
    }
    Tensor gradients = Tensor::zeros({gradient_floats}, cpu);
    for (int i = 0; i < 5; ++i) comm->allreduce_sum(gradients);
    comm->barrier();
    const auto start = Clock::now();
    for (int i = 0; i < setup.steps; ++i) comm->allreduce_sum(gradients);
    const double allreduce = seconds_since(start) / setup.steps;

    // The slowest rank sets the pace: report maxima (sum of one-hot vectors gives all ranks').
    const int size = comm->size();
    std::vector<double> all(size_t(3 * size), 0.0);
    all[size_t(3 * comm->rank())] = step;
    all[size_t(3 * comm->rank() + 1)] = local_step;
    all[size_t(3 * comm->rank() + 2)] = allreduce;
    comm->allreduce_sum(all);
    double worst_step = 0, worst_local = 0, worst_allreduce = 0;
    for (int r = 0; r < size; ++r) {
      worst_step = std::max(worst_step, all[size_t(3 * r)]);
      worst_local = std::max(worst_local, all[size_t(3 * r + 1)]);
      worst_allreduce = std::max(worst_allreduce, all[size_t(3 * r + 2)]);
    }
    if (comm->rank() == 0) {
      const char* threads = std::getenv("OPENBLAS_NUM_THREADS");
      std::printf(
          "ranks %d, OPENBLAS_NUM_THREADS=%s, batch %lld per rank, %lld gradient floats (%.2f "
          "MiB), %d buckets of at most %lld KiB\n",
          size, threads ? threads : "(unset)", (long long)setup.batch, (long long)gradient_floats,
          double(gradient_floats) * 4 / (1 << 20), int(dp.gradient_reducer()->bucket_count()),
          (long long)setup.bucket_kb);
      std::printf("  data-parallel step  %8.3f ms   %10.0f samples/s in all\n", worst_step * 1e3,
                  double(setup.batch) * size / worst_step);
      std::printf("  local step          %8.3f ms   (the same step without communication)\n",
                  worst_local * 1e3);
      std::printf("  blocking allreduce  %8.3f ms   (%.1f%% of the data-parallel step)\n",
                  worst_allreduce * 1e3, 100 * worst_allreduce / worst_step);
    }
    return 0;
  } catch (const std::exception& error) {
    dist::abort_job(std::string("bench_data_parallel: ") + error.what());
  }
}
