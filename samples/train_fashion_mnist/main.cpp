// Trains a network on Fashion-MNIST: the book's MLP 784 -> 256 (relu) -> 10 by default, the
// course's LeNet or a small ResNet with --model (models.h).
//
//   train_fashion_mnist [--model mlp|lenet|resnet] [--epochs 10] [--batch-size 256]
//                       [--optimizer sgd|adam|adamw] [--lr 0.1] [--weight-decay X]
//                       [--depth 1] [--width 256] [--device cpu|cuda|cuda:N] [--seed 0]
//                       [--data DIR] [--out DIR] [--resume CHECKPOINT] [--limit N]
//                       [--init xavier|normal] [--no-standardize] [--lr-schedule constant|cosine]
//                       [--warmup-steps N] [--restart-schedule] [--book] [--distributed]
//
// The default decays the learning rate to zero over the run (cosine), so that the last epoch is
// not a coin toss; --book is the book's exact setting (constant rate, N(0, 0.01) weights, raw
// pixels), and options after it override it.
//
// Per epoch it prints train loss, train and test accuracy, seconds and samples per second, and
// writes <out>/checkpoint.safetensors (parameters + optimizer state), <out>/curves.csv and
// <out>/curves.svg; the parameters of the epoch with the best test accuracy so far go to
// <out>/best.safetensors. --resume continues from a checkpoint exactly where it stopped: the
// checkpoint records every setting that decides what training computes (the learning-rate
// schedule, optimizer, batch size, data, standardisation, model shape, seed, ranks), a setting
// left off the command line is taken from it, and one given with another value is refused
// (exit status 2, naming the flag); --restart-schedule is the one way to change the schedule
// (--epochs, --lr, --lr-schedule, --warmup-steps) of a resumed run.
// --distributed trains data-parallel under mpirun (distributed.h). --help lists the options; a
// value that cannot be honoured exactly is refused with exit status 2, naming the flag, before
// any data is loaded.
#include <cairn/blocks/checkpoint.h>
#include <cairn/blocks/data_loader.h>
#include <cairn/blocks/layers.h>
#include <cairn/blocks/loss.h>
#include <cairn/blocks/lr_schedule.h>
#include <cairn/blocks/optimizer.h>
#include <cairn/blocks/safetensors.h>
#include <cairn/blocks/trainer.h>
#include <cairn/cairn.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "curves.h"
#include "distributed.h"
#include "models.h"

namespace {

using namespace cairn;

struct Options {
  std::string model = "mlp";
  int epochs = 10;
  int64_t batch_size = 256;
  std::string optimizer = "sgd";
  float learning_rate = -1;  // default depends on the optimizer
  float weight_decay = -1;   // default: 0, and AdamW's 0.01 for adamw
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
  int64_t warmup_steps = 0;     // linear warm-up of the learning rate over the first N steps
  bool restart_schedule = false;  // --resume: a new schedule from the resumed step
  int stop_after = 0;             // stop after this epoch (0: after --epochs), to resume later
  std::set<std::string> given;    // the settings given on the command line, by flag
  // Data-parallel over the ranks of mpirun (distributed.h).
  bool distributed = false;
};

// A command line that cannot be honoured exactly, found after parsing (against a checkpoint):
// exit status 2, like a bad value.
struct Refusal : std::runtime_error {
  Refusal(const std::string& flag, const std::string& problem)
      : std::runtime_error(flag + ": " + problem) {}
};

// ---- The command line (CLI11). Every value is converted strictly, whole, and checked against
// its range here, before any data is loaded: a value that cannot be honoured exactly is refused,
// naming the flag, with exit status 2. ----

[[noreturn]] void refuse(const std::string& flag, const std::string& problem) {
  throw CLI::ValidationError(flag, problem);
}

// A decimal integer in [low, high], nothing else: no sign for unsigned types, no "1e3", no "3x",
// no hex, no spaces, nothing that wraps.
template <typename T>
T parse_integer(const std::string& flag, const std::string& text, T low, T high) {
  T value{};
  const char* end = text.data() + text.size();
  const bool digits = !text.empty() && (std::isdigit(static_cast<unsigned char>(text[0])) ||
                                        (std::is_signed_v<T> && text[0] == '-'));
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (!digits || error == std::errc::invalid_argument || stop != end) {
    refuse(flag, "expected a whole number, got '" + text + "'");
  }
  if (error == std::errc::result_out_of_range || value < low || value > high) {
    refuse(flag, "'" + text + "' is out of range [" + std::to_string(low) + ", " +
                     std::to_string(high) + "]");
  }
  return value;
}

// A whole float, finite; zero allowed only where `allow_zero`.
float parse_float(const std::string& flag, const std::string& text, bool allow_zero) {
  char* end = nullptr;
  errno = 0;
  const float value = text.empty() || std::isspace(static_cast<unsigned char>(text[0]))
                          ? 0.0f
                          : std::strtof(text.c_str(), &end);
  if (end == nullptr || end != text.c_str() + text.size()) {
    refuse(flag, "expected a number, got '" + text + "'");
  }
  if (errno == ERANGE || !std::isfinite(value) || value < 0.0f || (value == 0.0f && !allow_zero)) {
    refuse(flag, std::string("expected a finite number ") + (allow_zero ? ">= 0" : "> 0") +
                     " (as a float), got '" + text + "'");
  }
  return value;
}

float parse_positive_float(const std::string& flag, const std::string& text) {
  return parse_float(flag, text, false);
}
float parse_nonnegative_float(const std::string& flag, const std::string& text) {
  return parse_float(flag, text, true);
}

std::string parse_choice(const std::string& flag, const std::string& text,
                         const std::vector<std::string>& choices) {
  std::string listed;
  for (const std::string& choice : choices) {
    if (text == choice) return text;
    listed += (listed.empty() ? "" : "|") + choice;
  }
  refuse(flag, "expected " + listed + ", got '" + text + "'");
}

// "cpu", "cuda" (the first GPU) or "cuda:N" for a GPU that is there.
std::string parse_device(const std::string& flag, const std::string& text) {
  if (text == "cpu") return text;
  int index = 0;
  if (text != "cuda") {
    const std::string number = text.rfind("cuda:", 0) == 0 ? text.substr(5) : "";
    if (number.empty() || number.find_first_not_of("0123456789") != std::string::npos) {
      refuse(flag, "expected cpu, cuda or cuda:N, got '" + text + "'");
    }
    index = parse_integer<int>(flag, number, 0, 1 << 16);
  }
  if (index >= cuda_device_count()) {
    refuse(flag, "'" + text + "' is not available (" + std::to_string(cuda_device_count()) +
                     " CUDA devices: " + cuda_unavailable_reason() + ")");
  }
  return text;
}

// The book's exact setting (d2l's MLP): a constant rate, N(0, 0.01) weights, pixels in [0, 1].
void use_book_setting(Options& options) {
  options.lr_schedule = "constant";
  options.init = "normal";
  options.standardize = false;
}

Options parse(int argc, char** argv) {
  Options options;
  CLI::App app{"Trains an MLP, LeNet or a small ResNet on Fashion-MNIST and writes a checkpoint and learning curves.",
               "train_fashion_mnist"};
  // A value option whose text `convert` turns into the field, or refuses.
  auto value = [&app, &options](const std::string& flag, const std::string& type,
                                const std::string& help, auto convert) {
    return app
        .add_option_function<std::string>(
            flag,
            [flag, convert, &options](const std::string& text) {
              convert(flag, text);
              options.given.insert(flag);
            },
            help)
        ->type_name(type);
  };
  value("--epochs", "N", "epochs to train, 1 to 100000 (default 10)",
        [&](const std::string& flag, const std::string& text) {
          options.epochs = parse_integer<int>(flag, text, 1, 100000);
        });
  value("--batch-size", "N", "samples per batch, 1 to 1048576 (default 256)",
        [&](const std::string& flag, const std::string& text) {
          options.batch_size = parse_integer<int64_t>(flag, text, 1, int64_t(1) << 20);
        });
  value("--model", "NAME", "mlp, lenet or resnet (default mlp)",
        [&](const std::string& flag, const std::string& text) {
          options.model = parse_choice(flag, text, fashion_models::names());
        });
  value("--optimizer", "NAME", "sgd, adam or adamw (default sgd; adamw for lenet and resnet)",
        [&](const std::string& flag, const std::string& text) {
          options.optimizer = parse_choice(flag, text, {"sgd", "adam", "adamw"});
        });
  value("--lr", "X",
        "learning rate, > 0 (default 0.1 for sgd, 0.001 for adam and adamw; 0.002 for adamw on "
        "lenet and resnet)",
        [&](const std::string& flag, const std::string& text) {
          options.learning_rate = parse_positive_float(flag, text);
        });
  value("--weight-decay", "X",
        "weight decay, >= 0: L2 in the gradient for sgd and adam, decoupled for adamw "
        "(default 0, and 0.01 for adamw; 0.05 for adamw on resnet)",
        [&](const std::string& flag, const std::string& text) {
          options.weight_decay = parse_nonnegative_float(flag, text);
        });
  value("--depth", "N", "mlp: hidden layers, 0 to 64 (default 1)",
        [&](const std::string& flag, const std::string& text) {
          options.depth = parse_integer<int>(flag, text, 0, 64);
        });
  value("--width", "N", "mlp: units per hidden layer, 1 to 16384 (default 256)",
        [&](const std::string& flag, const std::string& text) {
          options.width = parse_integer<int64_t>(flag, text, 1, 16384);
        });
  value("--device", "DEVICE", "cpu, cuda or cuda:N (default: the first GPU, else the CPU)",
        [&](const std::string& flag, const std::string& text) {
          options.device = parse_device(flag, text);
        });
  value("--seed", "N", "seed for the initial weights and the shuffles, 0 to 2^64-1 (default 0)",
        [&](const std::string& flag, const std::string& text) {
          options.seed = parse_integer<uint64_t>(flag, text, 0, UINT64_MAX);
        });
  value("--data", "DIR", "directory of the Fashion-MNIST IDX files",
        [&](const std::string& flag, const std::string& text) {
          if (!std::filesystem::is_directory(text)) refuse(flag, "no directory '" + text + "'");
          options.data_dir = text;
        });
  app.add_option("--out", options.out_dir, "where the checkpoint and curves go")->type_name("DIR");
  value("--resume", "CHECKPOINT",
        "continue from this checkpoint, exactly: settings left out are the checkpoint's, and a "
        "setting that changes what training computes, given with another value, is refused",
        [&](const std::string& flag, const std::string& text) {
          if (!std::filesystem::is_regular_file(text)) refuse(flag, "no file '" + text + "'");
          options.resume = text;
        });
  value("--limit", "N", "train on the first N samples only, N >= 1 (default: all)",
        [&](const std::string& flag, const std::string& text) {
          options.limit = parse_integer<int64_t>(flag, text, 1, INT64_MAX);
        });
  value("--init", "NAME", "xavier or normal (the book's N(0, 0.01)) (default xavier)",
        [&](const std::string& flag, const std::string& text) {
          options.init = parse_choice(flag, text, {"xavier", "normal"});
        });
  app.add_flag_callback(
      "--no-standardize",
      [&] {
        options.standardize = false;
        options.given.insert("--no-standardize");
      },
      "feed pixels scaled to [0, 1] without standardising them");
  value("--lr-schedule", "NAME", "constant or cosine (default cosine)",
        [&](const std::string& flag, const std::string& text) {
          options.lr_schedule = parse_choice(flag, text, {"constant", "cosine"});
        });
  value("--warmup-steps", "N",
        "raise the learning rate linearly over the first N steps, 0 to 2^31 (default 0); a "
        "cosine schedule then decays over the remaining steps",
        [&](const std::string& flag, const std::string& text) {
          options.warmup_steps = parse_integer<int64_t>(flag, text, 0, INT32_MAX + int64_t(1));
        });
  value("--stop-after", "N",
        "stop after epoch N, 1 to --epochs, as if interrupted: the schedule stays that of "
        "--epochs, and --resume finishes the run (default: run to --epochs)",
        [&](const std::string& flag, const std::string& text) {
          options.stop_after = parse_integer<int>(flag, text, 1, 100000);
        });
  app.add_flag_callback(
      "--restart-schedule", [&] { options.restart_schedule = true; },
      "with --resume: start a new learning-rate schedule at the resumed step, over the remaining "
      "epochs (from --lr, or the checkpoint's base rate), instead of continuing the recorded one; "
      "the one way to resume with another --epochs (cosine), --lr, --lr-schedule or "
      "--warmup-steps");
  // --book sets the book's defaults; the options given with it override them wherever they stand
  // on the line (CLI11 runs option callbacks in declaration order, not command-line order).
  app.add_flag("--book",
               "the book's exact setting: --lr-schedule constant --init normal --no-standardize");
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) != "--book") continue;
    use_book_setting(options);
    options.given.insert({"--lr-schedule", "--init", "--no-standardize"});
  }
  app.add_flag("--distributed", options.distributed,
               "train data-parallel over the ranks of mpirun (one GPU per local rank)");
  app.footer(
      "Defaults: cosine learning-rate decay, Xavier weights, standardised pixels. --book is the "
      "book's setting (a constant rate, N(0, 0.01) weights, pixels in [0, 1]).\n\n"
      "What --resume keeps: it continues the checkpoint's run exactly, as if it had never stopped. The checkpoint "
      "records the learning-rate schedule (kind, base rate, horizon, warm-up), the optimizer and "
      "its hyperparameters, --batch-size, --limit and the data set's size, standardisation, "
      "--depth, --width, --seed and the number of ranks; each of these left off the command line "
      "is taken from it, and each given with another value is refused (exit status 2, naming the "
      "flag). A cosine schedule ends at its recorded horizon: resuming with another --epochs is "
      "refused, unless --restart-schedule starts a new schedule at the resumed step over the "
      "remaining epochs. A constant schedule takes any --epochs. --device, --out and --data may "
      "change (the data must have the recorded size).\n\n"
      "--distributed: before the first step the ranks compare their data (size, batch size, "
      "steps per epoch), schedule, optimizer, parameters and step count, and the job stops with "
      "each rank's value of any that differ. A collective that waits longer than "
      "CAIRN_COLLECTIVE_TIMEOUT_S seconds (default 600) ends the job, naming it and the ranks "
      "that did not join it.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    std::exit(app.exit(help));
  } catch (const CLI::ParseError& error) {
    std::cerr << "train_fashion_mnist: " << error.what()
              << "\nrun train_fashion_mnist --help for the options\n";
    std::exit(2);
  }
  if (options.restart_schedule && options.resume.empty()) {
    std::cerr << "train_fashion_mnist: --restart-schedule: only with --resume (a new run starts "
                 "its schedule anyway)\nrun train_fashion_mnist --help for the options\n";
    std::exit(2);
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
  CAIRN_FAIL("unknown device ", name);  // parse() accepts only the names above
}

// The epoch a checkpoint was saved after, from the "epoch" entry run() writes into it.
int checkpoint_epoch(const std::map<std::string, std::string>& metadata, const std::string& path) {
  const auto found = metadata.find("epoch");
  CAIRN_CHECK(found != metadata.end(), path,
              " has no \"epoch\" entry in its metadata: not a checkpoint of this program");
  const std::string& text = found->second;
  int epoch = 0;
  const auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), epoch);
  CAIRN_CHECK(!text.empty() && std::isdigit(static_cast<unsigned char>(text[0])) &&
                  error == std::errc() && stop == text.data() + text.size() && epoch >= 1 &&
                  epoch < INT_MAX,
              path, ": its \"epoch\" entry '", text.substr(0, 40),
              "' is not an epoch number (a whole number >= 1)");
  return epoch;
}

// ---- Resuming. The checkpoint records the run's settings ("run.*") and its learning-rate
// schedule ("lr_schedule.*"); a resumed run takes what the command line leaves out and refuses
// what it changes. ----

std::string bool_text(bool value) { return value ? "true" : "false"; }
// Shortest text that reads back as the same float.
std::string float_text(float value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", double(value));
  return text;
}

// The run's settings as the checkpoint records them.
std::map<std::string, std::string> run_metadata(const Options& options, int ranks,
                                                int64_t train_samples, int64_t steps_per_epoch) {
  return {{"run.model", options.model},
          {"run.weight_decay", float_text(options.weight_decay)},
          {"run.epochs", std::to_string(options.epochs)},
          {"run.batch_size", std::to_string(options.batch_size)},
          {"run.limit", std::to_string(options.limit)},
          {"run.train_samples", std::to_string(train_samples)},
          {"run.steps_per_epoch", std::to_string(steps_per_epoch)},
          {"run.seed", std::to_string(options.seed)},
          {"run.depth", std::to_string(options.depth)},
          {"run.width", std::to_string(options.width)},
          {"run.optimizer", options.optimizer},
          {"run.standardize", bool_text(options.standardize)},
          {"run.ranks", std::to_string(ranks)},
          {"run.init", options.init}};
}

const std::string& recorded(const std::map<std::string, std::string>& metadata,
                            const std::string& key, const std::string& path) {
  const auto found = metadata.find(key);
  CAIRN_CHECK(found != metadata.end(), path, " has no \"", key,
              "\" entry: it was written by an older train_fashion_mnist, which did not record the "
              "settings it trained with, so it cannot be resumed exactly (start a new run)");
  return found->second;
}

// What --resume decided: where to start and under which schedule.
struct Resumed {
  int first_epoch = 1;
  int64_t steps_per_epoch = 0;  // as recorded: checked against the loaded data
  int64_t train_samples = 0;
  LearningRateSchedule schedule;
};

// Takes the checkpoint's settings into `options` where the command line left them out, and
// refuses (Refusal: exit status 2) the ones it gave with another value. Runs before any data is
// loaded; a checkpoint that lacks or garbles an entry is a cairn::Error (exit status 1).
Resumed resolve_resume(Options& options, const std::map<std::string, std::string>& metadata,
                       int ranks) {
  const std::string& path = options.resume;
  Resumed resumed;
  resumed.first_epoch = checkpoint_epoch(metadata, path) + 1;
  auto take = [&](const std::string& flag, const std::string& key, const std::string& current,
                  auto assign) {
    const std::string& value = recorded(metadata, key, path);
    if (options.given.count(flag) == 0) {
      try {
        assign(value);
      } catch (const CLI::ValidationError&) {
        CAIRN_FAIL(path, ": its \"", key, "\" entry '", value.substr(0, 40),
                   "' is not a value of ", flag);
      }
    } else if (current != value) {
      throw Refusal(flag, "'" + current + "' differs from the '" + value + "' that " + path +
                              " was trained with; a resumed run keeps every setting that changes "
                              "what training computes (leave " + flag +
                              " out to take the checkpoint's, or start a new run without --resume)");
    }
  };
  take("--batch-size", "run.batch_size", std::to_string(options.batch_size),
       [&](const std::string& v) {
         options.batch_size = parse_integer<int64_t>("--batch-size", v, 1, int64_t(1) << 20);
       });
  take("--limit", "run.limit", std::to_string(options.limit), [&](const std::string& v) {
    options.limit = parse_integer<int64_t>("--limit", v, 0, INT64_MAX);
  });
  take("--seed", "run.seed", std::to_string(options.seed), [&](const std::string& v) {
    options.seed = parse_integer<uint64_t>("--seed", v, 0, UINT64_MAX);
  });
  // Checkpoints written before --model and --weight-decay existed are of the MLP without decay.
  std::map<std::string, std::string> with_defaults = metadata;
  with_defaults.emplace("run.model", "mlp");
  with_defaults.emplace("run.weight_decay", "0");
  auto take_new = [&](const std::string& flag, const std::string& key, const std::string& current,
                      auto assign) {
    const std::string& value = with_defaults.at(key);
    if (options.given.count(flag) == 0) {
      assign(value);
    } else if (current != value) {
      throw Refusal(flag, "'" + current + "' differs from the '" + value + "' that " + path +
                              " was trained with; a resumed run keeps every setting that changes "
                              "what training computes (leave " + flag +
                              " out to take the checkpoint's, or start a new run without --resume)");
    }
  };
  take_new("--model", "run.model", options.model, [&](const std::string& v) {
    options.model = parse_choice("--model", v, fashion_models::names());
  });
  take_new("--weight-decay", "run.weight_decay", float_text(options.weight_decay),
           [&](const std::string& v) {
             options.weight_decay = parse_nonnegative_float("--weight-decay", v);
           });
  take("--depth", "run.depth", std::to_string(options.depth), [&](const std::string& v) {
    options.depth = parse_integer<int>("--depth", v, 0, 64);
  });
  take("--width", "run.width", std::to_string(options.width), [&](const std::string& v) {
    options.width = parse_integer<int64_t>("--width", v, 1, 16384);
  });
  take("--optimizer", "run.optimizer", options.optimizer, [&](const std::string& v) {
    options.optimizer = parse_choice("--optimizer", v, {"sgd", "adam", "adamw"});
  });
  take("--no-standardize", "run.standardize", bool_text(options.standardize),
       [&](const std::string& v) {
         if (v != "true" && v != "false") refuse("--no-standardize", v);
         options.standardize = v == "true";
       });
  const std::string& recorded_ranks = recorded(metadata, "run.ranks", path);
  if (recorded_ranks != std::to_string(ranks)) {
    throw Refusal("--distributed", path + " was trained on " + recorded_ranks +
                                       " ranks, this job has " + std::to_string(ranks) +
                                       ": the global batch, and so every step, would differ; "
                                       "resume it with mpirun -np " + recorded_ranks);
  }
  resumed.steps_per_epoch =
      parse_integer<int64_t>("run.steps_per_epoch", recorded(metadata, "run.steps_per_epoch", path),
                             1, INT64_MAX);
  resumed.train_samples = parse_integer<int64_t>(
      "run.train_samples", recorded(metadata, "run.train_samples", path), 1, INT64_MAX);
  const int recorded_epochs =
      parse_integer<int>("run.epochs", recorded(metadata, "run.epochs", path), 1, 100000);

  // The schedule.
  CAIRN_CHECK(LearningRateSchedule::in_metadata(metadata), path,
              " records no learning-rate schedule: it was written by an older "
              "train_fashion_mnist, so it cannot be resumed exactly (start a new run)");
  const LearningRateSchedule schedule = LearningRateSchedule::from_metadata(metadata);
  const bool given_epochs = options.given.count("--epochs") > 0;
  if (!given_epochs) options.epochs = recorded_epochs;
  if (options.given.count("--lr") == 0) options.learning_rate = schedule.base_rate;
  if (options.given.count("--lr-schedule") == 0) {
    options.lr_schedule = LearningRateSchedule::kind_name(schedule.kind);
  }
  if (options.given.count("--warmup-steps") == 0) options.warmup_steps = schedule.warmup_steps;
  const int64_t done_steps = int64_t(resumed.first_epoch - 1) * resumed.steps_per_epoch;
  if (resumed.first_epoch > options.epochs) {
    throw Refusal("--epochs", std::to_string(options.epochs) + ": " + path +
                                  " was saved after epoch " +
                                  std::to_string(resumed.first_epoch - 1) +
                                  ", so nothing is left to train; pass --epochs " +
                                  std::to_string(resumed.first_epoch) + " or more to continue it" +
                                  (schedule.kind == LearningRateSchedule::Kind::kCosine
                                       ? " (with --restart-schedule: its cosine schedule ends "
                                         "with epoch " + std::to_string(recorded_epochs) + ")"
                                       : ""));
  }
  if (options.restart_schedule) {
    const int64_t horizon = int64_t(options.epochs - resumed.first_epoch + 1) *
                            resumed.steps_per_epoch;
    LearningRateSchedule fresh;
    fresh.kind = options.lr_schedule == "cosine" ? LearningRateSchedule::Kind::kCosine
                                                 : LearningRateSchedule::Kind::kConstant;
    fresh.base_rate = options.learning_rate;
    fresh.start_step = done_steps;
    fresh.horizon_steps = fresh.kind == LearningRateSchedule::Kind::kCosine ? horizon : 0;
    fresh.warmup_steps = options.warmup_steps;
    if (fresh.kind == LearningRateSchedule::Kind::kCosine && fresh.warmup_steps >= horizon) {
      throw Refusal("--warmup-steps", std::to_string(fresh.warmup_steps) +
                                          " steps of warm-up leave nothing of the restarted "
                                          "schedule's " + std::to_string(horizon) + " steps");
    }
    resumed.schedule = fresh;
    return resumed;
  }
  // Continue the recorded schedule exactly: every schedule setting given must be its own.
  auto differs = [&](const std::string& flag, bool differ, const std::string& given) {
    if (options.given.count(flag) == 0 || !differ) return;
    throw Refusal(flag, "'" + given + "' differs from " + path + "'s schedule (" +
                            schedule.str() + "), which a resumed run continues exactly; pass "
                            "--restart-schedule to start a new schedule at the resumed step "
                            "instead, or leave " + flag + " out");
  };
  differs("--lr-schedule", options.lr_schedule != LearningRateSchedule::kind_name(schedule.kind),
          options.lr_schedule);
  char given_rate[32];
  std::snprintf(given_rate, sizeof(given_rate), "%g", double(options.learning_rate));
  differs("--lr", options.learning_rate != schedule.base_rate, given_rate);
  differs("--warmup-steps", options.warmup_steps != schedule.warmup_steps,
          std::to_string(options.warmup_steps));
  const int64_t last_step = int64_t(options.epochs) * resumed.steps_per_epoch;
  if (schedule.kind == LearningRateSchedule::Kind::kCosine && last_step != schedule.end_step()) {
    throw Refusal("--epochs",
                  std::to_string(options.epochs) + " epochs (" + std::to_string(last_step) +
                      " steps) differs from the horizon of " + path + "'s schedule (" +
                      schedule.str() + ", that is --epochs " + std::to_string(recorded_epochs) +
                      "): continued past its end, or stopped short of it, the schedule would not "
                      "be the one it was trained under. Leave --epochs out (or pass " +
                      std::to_string(recorded_epochs) +
                      ") to finish it exactly, or pass --restart-schedule to start a new cosine "
                      "schedule at the resumed step over the remaining epochs");
  }
  resumed.schedule = schedule;
  return resumed;
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
  // Prediction mode, whatever the caller's: dropout off, batch normalisation on its running
  // statistics. (Outside a RecordScope it is the mode anyway; this makes it impossible to forget.)
  autograd::PredictModeScope predict;
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

int run(Options options) {
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
  // The checkpoint's settings, before any data is loaded: they decide what to load.
  std::map<std::string, std::string> resume_metadata;
  Resumed resumed;
  if (!options.resume.empty()) {
    resume_metadata = load_safetensors(options.resume).metadata;
    resumed = resolve_resume(options, resume_metadata, comm ? comm->size() : 1);
  }
  // The convolutional networks' recipe (docs/training.md's table) for what a new run leaves out:
  // AdamW at lr 0.002, weight decay 0.01 (LeNet) or 0.05 (the ResNet). A resumed run has taken
  // these from its checkpoint already.
  if (options.resume.empty() && options.model != "mlp") {
    if (options.given.count("--optimizer") == 0) options.optimizer = "adamw";
    if (options.optimizer == "adamw") {
      if (options.learning_rate < 0) options.learning_rate = 0.002f;
      if (options.weight_decay < 0) options.weight_decay = options.model == "lenet" ? 0.01f : 0.05f;
    }
  }
  if (options.learning_rate < 0) options.learning_rate = options.optimizer == "sgd" ? 0.1f : 1e-3f;
  if (options.weight_decay < 0) options.weight_decay = options.optimizer == "adamw" ? 0.01f : 0.0f;
  const int last_epoch = options.stop_after > 0 ? options.stop_after : options.epochs;
  if (last_epoch > options.epochs || last_epoch < resumed.first_epoch) {
    throw Refusal("--stop-after", std::to_string(options.stop_after) + " is not an epoch of this run (" +
                                      std::to_string(resumed.first_epoch) + " to " +
                                      std::to_string(options.epochs) + ")");
  }

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
  const int64_t steps_per_epoch = train_loader.batches_per_epoch();
  if (!options.resume.empty() && (train_data->count != resumed.train_samples ||
                                  steps_per_epoch != resumed.steps_per_epoch)) {
    throw Refusal(options.given.count("--limit") ? "--limit" : "--data",
                  options.data_dir + " gives " + std::to_string(train_data->count) +
                      " training samples (" + std::to_string(steps_per_epoch) +
                      " steps per epoch), " + options.resume + " was trained on " +
                      std::to_string(resumed.train_samples) + " (" +
                      std::to_string(resumed.steps_per_epoch) +
                      " steps per epoch): resume it on the same data");
  }
  // The schedule: the checkpoint's (or a restart of it) when resuming, else one over this run.
  LearningRateSchedule schedule = resumed.schedule;
  if (options.resume.empty()) {
    const bool cosine = options.lr_schedule == "cosine";
    const int64_t horizon = int64_t(options.epochs) * steps_per_epoch;
    if (cosine && options.warmup_steps >= horizon) {
      throw Refusal("--warmup-steps", std::to_string(options.warmup_steps) +
                                          " steps of warm-up leave nothing of the run's " +
                                          std::to_string(horizon) + " steps to decay over");
    }
    schedule = cosine ? LearningRateSchedule::cosine(options.learning_rate, horizon,
                                                     options.warmup_steps)
                      : LearningRateSchedule::constant(options.learning_rate, options.warmup_steps);
  }

  fashion_models::ModelOptions model;
  model.name = options.model;
  model.depth = options.depth;
  model.width = options.width;
  model.seed = options.seed;
  const std::shared_ptr<Block> net = fashion_models::build(model);
  // Weights by the chosen initializer; biases keep Dense's own zeros, as in Gluon.
  net->initialize(options.init == "xavier" ? init::xavier() : init::normal(0.01f), device,
                  options.seed);
  std::shared_ptr<Optimizer> optimizer;
  if (options.optimizer == "sgd") {
    optimizer = std::make_shared<SGD>(options.learning_rate, 0.0f, options.weight_decay);
  } else if (options.optimizer == "adam") {
    optimizer = std::make_shared<Adam>(options.learning_rate, 0.9f, 0.999f, 1e-8f,
                                       options.weight_decay);
  } else {
    optimizer = std::make_shared<AdamW>(options.learning_rate, 0.9f, 0.999f, 1e-8f,
                                        options.weight_decay);
  }
  Trainer trainer(net->collect_params(), optimizer);
  const SoftmaxCrossEntropyLoss loss_fn;

  if (root) std::filesystem::create_directories(options.out_dir);
  const std::string checkpoint = options.out_dir + "/checkpoint.safetensors";
  const std::string csv = options.out_dir + "/curves.csv";
  const std::string best_parameters = options.out_dir + "/best.safetensors";
  std::vector<curves::EpochRow> rows;
  const int first_epoch = resumed.first_epoch;
  if (options.resume.empty()) std::cout << "learning rate: " << schedule.str() << "\n";
  if (!options.resume.empty()) {
    // Deferred shapes are filled in from the file.
    load_checkpoint(options.resume, *net, trainer, device);
    for (const curves::EpochRow& row : curves::read_csv(csv)) {
      if (row.epoch < first_epoch) rows.push_back(row);
    }
    std::cout << "resumed from " << options.resume << " after epoch " << first_epoch - 1
              << (options.restart_schedule ? ", with a new schedule: " : ", continuing its ")
              << schedule.str() << "\n";
  }
  if (comm) {
    // What every rank must hold equal besides the network and optimizer (which the trainer
    // compares itself): the data, the schedule and the epochs to run.
    dist::Quantities must_agree = data_parallel_quantities(train_loader);
    const auto schedule_quantities = schedule.quantities();
    must_agree.insert(must_agree.end(), schedule_quantities.begin(), schedule_quantities.end());
    must_agree.emplace_back("epochs (first to last)",
                            std::to_string(first_epoch) + " to " + std::to_string(last_epoch));
    distributed::start(*net, trainer, comm, train_data->features, device, must_agree);
  }
  std::cout << *net << "\n";

  const bool interactive = isatty(STDOUT_FILENO);
  std::printf("%5s %10s %9s %9s %8s %12s\n", "epoch", "train loss", "train acc", "test acc",
              "seconds", "samples/s");
  for (int epoch = first_epoch; epoch <= last_epoch; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    train_loader.start_epoch(epoch);
    fashion_models::reseed_dropout(*net, options.seed, epoch);
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
      // A function of the global step alone, so a resumed run follows the same schedule.
      trainer.set_learning_rate(schedule.rate(int64_t(epoch - 1) * steps_per_epoch + step - 1));
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
    std::map<std::string, std::string> metadata = run_metadata(
        options, comm ? comm->size() : 1, train_data->count, steps_per_epoch);
    metadata.merge(schedule.metadata());
    metadata["epoch"] = std::to_string(epoch);
    save_checkpoint(checkpoint, *net, trainer, metadata);
    if (curves::best_row(rows) == rows.size() - 1) net->save_parameters(best_parameters);
    curves::write_csv(csv, rows);
    curves::write_svg(options.out_dir + "/curves.svg", rows,
                      "Fashion-MNIST " + options.model + ", " + options.optimizer + ", lr " +
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
  } catch (const Refusal& refusal) {
    // Every rank refuses alike (they read the same checkpoint); one that did not would wait.
    if (options.distributed && dist::mpi_built()) {
      dist::abort_job(std::string("train_fashion_mnist: ") + refusal.what());
    }
    std::cerr << "train_fashion_mnist: " << refusal.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "train_fashion_mnist: out of memory (try a smaller --width, --depth or "
                 "--batch-size)\n";
    return 1;
  } catch (const std::exception& error) {
    // The other ranks may be waiting for this one in a collective: end the whole job.
    if (options.distributed && dist::mpi_built()) {
      dist::abort_job(std::string("train_fashion_mnist: ") + error.what());
    }
    std::cerr << "train_fashion_mnist: " << error.what() << "\n";
    return 1;
  }
}
