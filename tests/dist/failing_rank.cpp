// A data-parallel job in which rank 1 throws in the middle of step 4 while the others wait for its
// gradients in the allreduce. Its top-level catch calls dist::abort_job(), which must end the
// whole job within seconds with the rank and the error; failure_test.sh checks that.
#include <cstdio>
#include <exception>

#include "cairn/base/error.h"
#include "cairn/dist/communicator.h"
#include "dist/dist_fixtures.h"

int main() {
  using namespace cairn;
  try {
    const dist::CommunicatorPtr comm = dist::make_communicator(Device::cpu());
    auto net = testing::small_mlp();
    net->initialize(init::xavier(), Device::cpu(), 0);
    Trainer trainer(net->collect_params(), testing::make_optimizer("sgd"));
    trainer.enable_data_parallel(comm);
    LoaderOptions options;
    options.batch_size = 8;
    options.shards = comm->size();
    options.shard = comm->rank();
    DataLoader loader(testing::numbered_images(64), options, Device::cpu());
    Batch batch;
    for (int step = 1; loader.next(batch); ++step) {
      if (comm->rank() == 1 && step == 4) {
        CAIRN_FAIL("injected failure in step ", step, " (tests/dist/failing_rank.cpp)");
      }
      testing::train_step(*net, trainer, batch);
    }
    std::printf("rank %d finished: no rank failed (run this with 2 or more ranks)\n", comm->rank());
    return 0;
  } catch (const std::exception& error) {
    dist::abort_job(error.what());
  }
}
