// Data-parallel jobs that must end, not hang: `dist_disagreeing_ranks MODE`, run under mpirun
// with 2 ranks by failure_test.sh, which checks the message and that the job ended in seconds.
//   steps, batch, schedule, optimizer, standardize: rank 1 differs from rank 0 in that one
//     quantity; Trainer::enable_data_parallel must refuse before the first step, naming it and
//     each rank's value (without the check the ranks would deadlock or train apart).
//   timeout: the ranks agree, but rank 1 sleeps 30 s inside step 3 while rank 0 waits for its
//     gradients; the collective timeout (CAIRN_COLLECTIVE_TIMEOUT_S, set short by the test) must
//     end the job naming the collective and rank 1.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>

#include "cairn/blocks/lr_schedule.h"
#include "cairn/base/error.h"
#include "cairn/dist/communicator.h"
#include "dist/dist_fixtures.h"

int main(int argc, char** argv) {
  using namespace cairn;
  try {
    CAIRN_CHECK(argc == 2,
                "usage: dist_disagreeing_ranks steps|batch|schedule|optimizer|"
                "standardize|timeout");
    const std::string mode = argv[1];
    const dist::CommunicatorPtr comm = dist::make_communicator(Device::cpu());
    const bool odd = comm->rank() == 1;
    auto net = testing::small_mlp();
    net->initialize(init::xavier(), Device::cpu(), 0);
    const float rate = mode == "optimizer" && odd ? 0.2f : 0.1f;
    Trainer trainer(net->collect_params(), std::make_shared<SGD>(rate, 0.9f));
    LoaderOptions options;
    options.batch_size = mode == "batch" && odd ? 16 : 8;
    options.shards = comm->size();
    options.shard = comm->rank();
    if (mode == "standardize" && !odd) {
      options.mean = 0.2860f;
      options.stddev = 0.3530f;
    }
    // 64 samples: 4 steps of 8 per rank; rank 1 with 48 (a smaller --limit): 3 steps.
    DataLoader loader(testing::numbered_images(mode == "steps" && odd ? 48 : 64), options,
                      Device::cpu());
    const int64_t horizon = (mode == "schedule" && odd ? 3 : 2) * loader.batches_per_epoch();
    const LearningRateSchedule schedule = LearningRateSchedule::cosine(rate, horizon);
    dist::Quantities must_agree = data_parallel_quantities(loader);
    const dist::Quantities schedule_quantities = schedule.quantities();
    must_agree.insert(must_agree.end(), schedule_quantities.begin(), schedule_quantities.end());
    trainer.enable_data_parallel(comm, {}, must_agree);
    loader.start_epoch(1);
    Batch batch;
    for (int step = 1; loader.next(batch); ++step) {
      if (mode == "timeout" && odd && step == 3) {
        std::fprintf(stderr, "rank 1: sleeping 30 s inside step 3\n");
        std::this_thread::sleep_for(std::chrono::seconds(30));
      }
      trainer.set_learning_rate(schedule.rate(step - 1));
      testing::train_step(*net, trainer, batch);
    }
    std::printf("rank %d finished: nothing ended the job (run this with 2 ranks)\n", comm->rank());
    return 0;
  } catch (const std::exception& error) {
    dist::abort_job(error.what());
  }
}
