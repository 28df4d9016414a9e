// Trains an MLP on Fashion-MNIST: the book's 784 -> 256 (relu) -> 10 by default.
//
//   train_fashion_mnist [--epochs 10] [--batch-size 256] [--optimizer sgd|adam] [--lr 0.1]
//                       [--depth 1] [--width 256] [--device cpu|cuda|cuda:N] [--seed 0]
//                       [--data DIR] [--out DIR] [--resume CHECKPOINT] [--limit N]
//                       [--init xavier|normal] [--no-standardize] [--lr-schedule constant|cosine]
//                       [--book] [--distributed]
//
// The default decays the learning rate to zero over the run (cosine), so that the last epoch is
// not a coin toss; --book is the book's exact setting (constant rate, N(0, 0.01) weights, raw
// pixels), and options after it override it.
//
// Per epoch it prints train loss, train and test accuracy, seconds and samples per second, and
// writes <out>/checkpoint.safetensors (parameters + optimizer state), <out>/curves.csv and
// <out>/curves.svg; the parameters of the epoch with the best test accuracy so far go to
// <out>/best.safetensors. --resume continues from a checkpoint exactly where it stopped.
// --distributed trains data-parallel under mpirun (distributed.h).
#include <cairn/blocks/checkpoint.h>
#include <cairn/blocks/data_loader.h>
#include <cairn/blocks/layers.h>
#include <cairn/blocks/loss.h>
#include <cairn/blocks/optimizer.h>
#include <cairn/blocks/trainer.h>
#include <cairn/cairn.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include "curves.h"
#include "distributed.h"

namespace {

using namespace cairn;

struct Options {
  int epochs = 10;
  int64_t batch_size = 256;
  std::string optimizer = "sgd";
  float learning_rate = -1;  // default depends on the optimizer
  int depth = 1;
  int64_t width = 256;
  std::string device;
  uint64_t seed = 0;
  std::string data_dir = kFashionMnistDir;
  std::string out_dir = "out/train_fashion_mnist";
  std::string resume;
  int64_t limit = 0;                   // use only the first N training samples (quick runs)
  std::string init = "xavier";         // or "normal": the book's N(0, 0.01)
  std::string lr_schedule = "cosine";  // lr * (1 + cos(pi * t / T)) / 2 per step, or "constant"
  bool standardize = true;  // pixels to zero mean, unit variance (Fashion-MNIST's statistics)
  // Data-parallel over the ranks of mpirun (distributed.h).
  bool distributed = false;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "train_fashion_mnist: " << problem
            << "\nusage: train_fashion_mnist [--epochs N] [--batch-size N] [--optimizer sgd|adam]"
               " [--lr X] [--depth N] [--width N] [--device cpu|cuda|cuda:N] [--seed N]"
               " [--data DIR] [--out DIR] [--resume CHECKPOINT] [--limit N]"
               " [--init xavier|normal] [--no-standardize] [--lr-schedule constant|cosine]"
               " [--book] [--distributed]\n"
               "defaults: cosine learning-rate decay, Xavier weights, standardised pixels;"
               " --book is the book's setting (--lr-schedule constant --init normal"
               " --no-standardize)\n";
  std::exit(2);
}

// The book's exact setting (d2l's MLP): a constant rate, N(0, 0.01) weights, pixels in [0, 1].
void use_book_setting(Options& options) {
  options.lr_schedule = "constant";
  options.init = "normal";
  options.standardize = false;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(flag + " needs a value");
      return argv[++i];
    };
    try {
      if (flag == "--epochs")
        options.epochs = std::stoi(value());
      else if (flag == "--batch-size")
        options.batch_size = std::stoll(value());
      else if (flag == "--optimizer")
        options.optimizer = value();
      else if (flag == "--lr")
        options.learning_rate = std::stof(value());
      else if (flag == "--depth")
        options.depth = std::stoi(value());
      else if (flag == "--width")
        options.width = std::stoll(value());
      else if (flag == "--device")
        options.device = value();
      else if (flag == "--seed")
        options.seed = std::stoull(value());
      else if (flag == "--data")
        options.data_dir = value();
      else if (flag == "--out")
        options.out_dir = value();
      else if (flag == "--resume")
        options.resume = value();
      else if (flag == "--limit")
        options.limit = std::stoll(value());
      else if (flag == "--init")
        options.init = value();
      else if (flag == "--no-standardize")
        options.standardize = false;
      else if (flag == "--lr-schedule")
        options.lr_schedule = value();
      else if (flag == "--book")
        use_book_setting(options);
      else if (flag == "--distributed")
        options.distributed = true;
      else
        usage("unknown option " + flag);
    } catch (const std::logic_error&) {
      usage("bad value for " + flag);
    }
  }
  if (options.init != "xavier" && options.init != "normal") {
    usage("--init must be xavier or normal");
  }
  if (options.lr_schedule != "constant" && options.lr_schedule != "cosine") {
    usage("--lr-schedule must be constant or cosine");
  }
  if (options.optimizer != "sgd" && options.optimizer != "adam") {
    usage("--optimizer must be sgd or adam");
  }
  if (options.learning_rate < 0) options.learning_rate = options.optimizer == "sgd" ? 0.1f : 1e-3f;
  if (options.epochs < 1 || options.batch_size < 1 || options.depth < 0 || options.width < 1) {
    usage("epochs, batch size and width must be positive, depth non-negative");
  }
  return options;
}

Device pick_device(const std::string& name) {
  if (name.empty()) return default_device();
  if (name == "cpu") return Device::cpu();
  if (name.rfind("cuda", 0) == 0) {
    const Device device = Device::cuda(name.size() > 5 ? std::stoi(name.substr(5)) : 0);
    set_default_device(device);  // throws, saying why, when that GPU is not there
    return device;
  }
  usage("unknown device " + name);
}

std::shared_ptr<Sequential> build_mlp(const Options& options) {
  auto net = make<Sequential>();
  for (int i = 0; i < options.depth; ++i) net->add(make<Dense>(options.width, "relu"));
  net->add(make<Dense>(10));
  return net;
}

// Correct predictions in a batch; reading them back is one small synchronisation per batch.
int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  const std::vector<int32_t> predicted = ops::argmax_rows(logits).to_int32_vector();
  const std::vector<int32_t> truth = labels.to_int32_vector();
  int64_t correct = 0;
  for (size_t i = 0; i < truth.size(); ++i) correct += predicted[i] == truth[i];
  return correct;
}

double evaluate(Block& net, DataLoader& loader, dist::Communicator* comm = nullptr) {
  loader.start_epoch(0);
  int64_t correct = 0, seen = 0;
  Batch batch;
  while (loader.next(batch)) {
    correct += count_correct(net(batch.x), batch.y);
    seen += batch.y.numel();
  }
  std::vector<double> counts = {double(correct), double(seen)};  // over the ranks' shards
  distributed::sum(comm, counts);
  return counts[0] / counts[1];
}

void draw_progress(int64_t done, int64_t total, double loss) {
  constexpr int kWidth = 40;
  const int filled = int(kWidth * done / std::max<int64_t>(total, 1));
  std::printf("\r  [%s%s] %lld/%lld loss %.4f", std::string(size_t(filled), '=').c_str(),
              std::string(size_t(kWidth - filled), ' ').c_str(), (long long)done, (long long)total,
              loss);
  std::fflush(stdout);
}

// The best epoch is chosen on the test set, which the sample has no other use for: its accuracy
// is an optimistic estimate, unlike the last epoch's.
void report_best_epoch(const std::vector<curves::EpochRow>& rows, const std::string& path) {
  if (rows.empty()) return;
  const curves::EpochRow& best = rows[curves::best_row(rows)];
  if (best.epoch == rows.back().epoch) {
    std::printf("the last epoch has the best test accuracy (%.4f); its parameters are also in %s\n",
                best.test_accuracy, path.c_str());
  } else {
    std::printf(
        "best test accuracy %.4f at epoch %d (the last epoch, %d, has %.4f): its parameters"
        " are in %s\n",
        best.test_accuracy, best.epoch, rows.back().epoch, rows.back().test_accuracy, path.c_str());
  }
}

int run(const Options& options) {
  const Device device =
      pick_device(options.distributed ? distributed::device_name(options.device) : options.device);
  const dist::CommunicatorPtr comm =
      options.distributed ? dist::make_communicator(device) : nullptr;
  if (comm) distributed::quiet_unless_root(*comm);
  const bool root = !comm || comm->rank() == 0;
  if (comm) {
    std::cout << "cairn: data-parallel over " << comm->size() << " ranks (" << comm->backend()
              << "), " << options.batch_size << " samples per rank per step\n";
  }
  std::cout << "cairn: training on " << device << (device.is_cpu() ? " (no GPU in use)" : "")
            << "\n";

  auto train_data = std::make_shared<LabelledImages>(load_fashion_mnist(options.data_dir, true));
  auto test_data =
      std::make_shared<const LabelledImages>(load_fashion_mnist(options.data_dir, false));
  if (options.limit > 0 && options.limit < train_data->count) {
    train_data->count = options.limit;
    train_data->pixels.resize(size_t(options.limit * train_data->features));
    train_data->labels.resize(size_t(options.limit));
  }
  LoaderOptions train_options;
  train_options.batch_size = options.batch_size;
  train_options.seed = options.seed;
  if (options.standardize) {
    // Fashion-MNIST's training-set pixel mean and standard deviation, after scaling to [0, 1].
    train_options.mean = 0.2860f;
    train_options.stddev = 0.3530f;
  }
  LoaderOptions test_options = train_options;
  test_options.shuffle = false;
  if (comm) {
    distributed::shard(train_options, *comm, ShardRemainder::kDrop);
    distributed::shard(test_options, *comm, ShardRemainder::kUneven);
  }
  DataLoader train_loader(train_data, train_options, device);
  DataLoader test_loader(test_data, test_options, device);

  auto net = build_mlp(options);
  // Weights by the chosen initializer; biases keep Dense's own zeros, as in Gluon.
  net->initialize(options.init == "xavier" ? init::xavier() : init::normal(0.01f), device,
                  options.seed);
  std::shared_ptr<Optimizer> optimizer;
  if (options.optimizer == "sgd") {
    optimizer = std::make_shared<SGD>(options.learning_rate);
  } else {
    optimizer = std::make_shared<Adam>(options.learning_rate);
  }
  Trainer trainer(net->collect_params(), optimizer);
  const SoftmaxCrossEntropyLoss loss_fn;

  if (root) std::filesystem::create_directories(options.out_dir);
  const std::string checkpoint = options.out_dir + "/checkpoint.safetensors";
  const std::string csv = options.out_dir + "/curves.csv";
  const std::string best_parameters = options.out_dir + "/best.safetensors";
  std::vector<curves::EpochRow> rows;
  int first_epoch = 1;
  if (!options.resume.empty()) {
    // Deferred shapes are filled in from the file.
    const auto metadata = load_checkpoint(options.resume, *net, trainer, device);
    first_epoch = std::stoi(metadata.at("epoch")) + 1;
    for (const curves::EpochRow& row : curves::read_csv(csv)) {
      if (row.epoch < first_epoch) rows.push_back(row);
    }
    std::cout << "resumed from " << options.resume << " after epoch " << first_epoch - 1 << "\n";
  }
  if (comm) distributed::start(*net, trainer, comm, train_data->features, device);
  std::cout << *net << "\n";

  const bool interactive = isatty(STDOUT_FILENO);
  std::printf("%5s %10s %9s %9s %8s %12s\n", "epoch", "train loss", "train acc", "test acc",
              "seconds", "samples/s");
  for (int epoch = first_epoch; epoch <= options.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    train_loader.start_epoch(epoch);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, step = 0;
    Batch batch;
    while (train_loader.next(batch)) {
      ++step;
      Tensor logits, loss;
      {
        autograd::RecordScope record;
        logits = (*net)(batch.x);
        loss = loss_fn(logits, batch.y);
      }
      loss.backward();
      if (options.lr_schedule == "cosine") {
        // A function of the global step alone, so a resumed run follows the same schedule.
        const double total = double(options.epochs) * double(train_loader.batches_per_epoch());
        const double done =
            double(epoch - 1) * double(train_loader.batches_per_epoch()) + double(step - 1);
        trainer.set_learning_rate(float(options.learning_rate * 0.5 *
                                        (1.0 + std::cos(3.141592653589793 * done / total))));
      }
      trainer.step(1);  // the loss is already a batch mean
      const double batch_loss = loss.item();
      loss_sum += batch_loss * double(batch.y.numel());
      correct += count_correct(logits, batch.y);
      seen += batch.y.numel();
      if (interactive && step % 10 == 0) {
        draw_progress(step, train_loader.batches_per_epoch(), batch_loss);
      }
    }
    cuda::synchronize(device);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (interactive) std::printf("\r%*s\r", 80, "");
    std::vector<double> totals = {loss_sum, double(correct), double(seen)};  // over the ranks
    distributed::sum(comm.get(), totals);
    loss_sum = totals[0];
    correct = int64_t(totals[1]);
    seen = int64_t(totals[2]);
    curves::EpochRow row;
    row.epoch = epoch;
    row.train_loss = loss_sum / double(seen);
    row.train_accuracy = double(correct) / double(seen);
    row.test_accuracy = evaluate(*net, test_loader, comm.get());
    row.seconds = seconds;
    row.samples_per_second = double(seen) / seconds;
    rows.push_back(row);
    std::printf("%5d %10.4f %9.4f %9.4f %8.2f %12.0f\n", epoch, row.train_loss, row.train_accuracy,
                row.test_accuracy, row.seconds, row.samples_per_second);
    std::fflush(stdout);
    if (!root) continue;  // every rank holds the same parameters: rank 0 writes them
    save_checkpoint(checkpoint, *net, trainer, {{"epoch", std::to_string(epoch)}});
    if (curves::best_row(rows) == rows.size() - 1) net->save_parameters(best_parameters);
    curves::write_csv(csv, rows);
    curves::write_svg(options.out_dir + "/curves.svg", rows,
                      "Fashion-MNIST MLP, " + options.optimizer + ", lr " +
                          std::to_string(options.learning_rate).substr(0, 6) + ", batch " +
                          std::to_string(options.batch_size) + ", on " + device.str());
  }
  std::cout << "wrote " << checkpoint << ", " << csv << " and " << options.out_dir
            << "/curves.svg\n";
  report_best_epoch(rows, best_parameters);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  try {
    return run(options);
  } catch (const std::exception& error) {
    // The other ranks may be waiting for this one in a collective: end the whole job.
    if (options.distributed && dist::mpi_built()) {
      dist::abort_job(std::string("train_fashion_mnist: ") + error.what());
    }
    std::cerr << "train_fashion_mnist: " << error.what() << "\n";
    return 1;
  }
}
