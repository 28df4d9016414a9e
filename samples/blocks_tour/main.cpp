// The "Blocks and Layers" lecture, run natively: five networks built from blocks, each printed as
// a tree, run forward and backward (on the GPU when there is one), with gradient norms.
//
//   blocks_tour                 run the tour on the default device
//   blocks_tour --device cpu    force a device (cpu, cuda, cuda:N)
//   blocks_tour --check-parity  run every network on the CPU and the GPU; print the largest
//                               difference of the output and of each parameter's gradient
#include <cairn/blocks/block.h>
#include <cairn/cairn.h>

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <string>

#include "lecture_networks.h"

namespace {

using namespace cairn;

constexpr uint64_t kSeed = 0;

struct Result {
  Tensor output;
  ParameterDict params;
};

// Initialises `net` on `device`, runs it on the lecture's X (a 2 x 20 uniform draw) and back from
// the sum of its outputs.
Result run(const BlockPtr& net, const Device& device) {
  net->initialize(init::uniform(0.07f), device, kSeed);
  const Tensor x = Tensor::uniform({2, 20}, 0.0f, 1.0f, /*seed=*/2024, Device::cpu()).to(device);
  Tensor output;
  {
    autograd::RecordScope record;
    output = (*net)(x);
    ops::sum(output).backward();
  }
  return {output, net->collect_params()};
}

float max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  float worst = 0.0f;
  for (size_t i = 0; i < x.size(); ++i) {
    const float difference = std::abs(x[i] - y[i]);
    if (!(difference <= worst)) worst = difference;  // NaN wins
  }
  return worst;
}

void tour(const Device& device) {
  std::cout << "cairn blocks tour on " << device << "\n";
  for (const lecture::Network& network : lecture::all_networks()) {
    std::cout << "\n=== " << network.title << " ===\n" << *network.block << "\n";
    Intermediates seen(*network.block);
    const Result result = run(network.block, device);
    std::cout << "after the first forward (shapes inferred):\n" << *network.block << "\n";
    std::cout << "output " << result.output << "\n";
    if (!network.block->children().empty()) {
      const std::string first = network.block->children().front().first;
      std::cout << "intermediate output of child '" << first
                << "': " << shape_str(seen.output(first).shape()) << "\n";
    }
    std::cout << "gradient norms:\n";
    for (const auto& [name, parameter] : result.params) {
      std::cout << "  " << std::left << std::setw(22) << name << std::setw(12)
                << shape_str(parameter->shape());
      if (parameter->is_constant()) {
        std::cout << "constant (no gradient)\n";
      } else {
        std::cout << ops::norm(parameter->grad()).item() << "\n";
      }
    }
  }
}

int check_parity() {
  if (!cuda_available()) {
    std::cout << "parity check skipped: no GPU (" << cuda_unavailable_reason() << ")\n";
    return 0;
  }
  std::cout << "GPU vs CPU, largest absolute difference\n";
  const auto on_cpu = lecture::all_networks();
  const auto on_gpu = lecture::all_networks();
  float worst = 0.0f;
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    const Result cpu = run(on_cpu[i].block, Device::cpu());
    const Result gpu = run(on_gpu[i].block, Device::cuda(0));
    std::cout << "\n"
              << on_cpu[i].title << "\n  output                " << std::scientific
              << std::setprecision(2) << max_abs_difference(cpu.output, gpu.output) << "\n";
    worst = std::max(worst, max_abs_difference(cpu.output, gpu.output));
    for (const auto& [name, parameter] : cpu.params) {
      if (parameter->is_constant()) continue;
      const float difference = max_abs_difference(parameter->grad(), gpu.params.at(name)->grad());
      worst = std::max(worst, difference);
      std::cout << "  grad " << std::left << std::setw(17) << name << difference << "\n";
    }
    std::cout << std::defaultfloat;
  }
  const bool ok = worst < 1e-3f;
  std::cout << "\nlargest difference " << worst << (ok ? " (ok)" : " (TOO LARGE)") << "\n";
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Device device = Device::cpu();
    bool parity = false, device_given = false;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--check-parity") {
        parity = true;
      } else if (arg == "--device" && i + 1 < argc) {
        const std::string name = argv[++i];
        device = name == "cpu" ? Device::cpu()
                 : name.rfind("cuda", 0) == 0
                     ? Device::cuda(name.size() > 5 ? std::stoi(name.substr(5)) : 0)
                     : throw Error("unknown device '" + name + "' (cpu, cuda, cuda:N)");
        device_given = true;
      } else {
        std::cerr << "usage: blocks_tour [--device cpu|cuda[:N]] [--check-parity]\n";
        return 2;
      }
    }
    if (parity) return check_parity();
    tour(device_given ? device : default_device());
    return 0;
  } catch (const Error& error) {
    std::cerr << "blocks_tour: " << error.what() << "\n";
    return 1;
  }
}
