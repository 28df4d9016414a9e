#include "cairn/dist/communicator.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "cairn/base/error.h"
#include "cairn/dist/backends.h"

namespace cairn::dist {
namespace {

class SingleProcessCommunicator final : public Communicator {
 public:
  explicit SingleProcessCommunicator(const Device& device) : device_(device) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "single-process"; }
  Device device() const override { return device_; }

  void allreduce_sum(Tensor& tensor) override { check(tensor, "allreduce_sum"); }
  std::unique_ptr<PendingCollective> start_allreduce_sum(Tensor tensor) override {
    check(tensor, "start_allreduce_sum");
    return std::make_unique<Done>();
  }
  void broadcast(Tensor& tensor, int root) override {
    check(tensor, "broadcast");
    CAIRN_CHECK(root == 0, "broadcast: root ", root, " is not a rank of a single-process job");
  }
  void barrier() override {}
  void allreduce_sum(std::vector<double>&) override {}
  std::vector<std::string> allgather(const std::string& value) override { return {value}; }

 private:
  struct Done final : PendingCollective {
    void wait() override {}
    bool test() override { return true; }
  };
  void check(const Tensor& tensor, const char* op) const {
    CAIRN_CHECK(tensor.defined() && tensor.dtype() == DType::kFloat32, op,
                ": expected a float32 tensor");
  }
  Device device_;
};

int env_int(std::initializer_list<const char*> names, int fallback) {
  for (const char* name : names) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return fallback;
}

// "<length>:<text>" per string: any bytes survive, and a truncated list is detected.
void encode(std::string& out, const std::string& text) {
  out += std::to_string(text.size());
  out += ':';
  out += text;
}

bool decode(const std::string& in, size_t& at, std::string& text) {
  const size_t colon = in.find(':', at);
  if (colon == std::string::npos || colon == at || colon - at > 12) return false;
  size_t length = 0;
  for (size_t i = at; i < colon; ++i) {
    if (in[i] < '0' || in[i] > '9') return false;
    length = length * 10 + size_t(in[i] - '0');
  }
  if (length > in.size() - colon - 1) return false;
  text = in.substr(colon + 1, length);
  at = colon + 1 + length;
  return true;
}

std::string shorten(const std::string& text) {
  return text.size() <= 160 ? text : text.substr(0, 160) + "...";
}

// "'4' on rank 0; '3' on ranks 1, 2": each distinct value once, with the ranks holding it.
std::string per_rank_values(const std::vector<const std::string*>& values) {
  std::vector<std::pair<const std::string*, std::vector<int>>> groups;
  for (size_t r = 0; r < values.size(); ++r) {
    auto same = [&](const auto& group) {
      return (group.first == nullptr) == (values[r] == nullptr) &&
             (values[r] == nullptr || *group.first == *values[r]);
    };
    auto found = std::find_if(groups.begin(), groups.end(), same);
    if (found == groups.end()) {
      groups.push_back({values[r], {}});
      found = groups.end() - 1;
    }
    found->second.push_back(int(r));
  }
  std::string out;
  constexpr size_t kGroups = 8, kRanks = 8;
  for (size_t g = 0; g < groups.size() && g < kGroups; ++g) {
    const auto& [value, ranks] = groups[g];
    if (!out.empty()) out += "; ";
    out += value == nullptr ? "nothing" : "'" + shorten(*value) + "'";
    out += ranks.size() == 1 ? " on rank " : " on ranks ";
    for (size_t i = 0; i < ranks.size() && i < kRanks; ++i) {
      out += (i ? ", " : "") + std::to_string(ranks[i]);
    }
    if (ranks.size() > kRanks) out += " and " + std::to_string(ranks.size() - kRanks) + " more";
  }
  if (groups.size() > kGroups) {
    out += " and " + std::to_string(groups.size() - kGroups) + " other values";
  }
  return out;
}

}  // namespace

double default_collective_timeout() {
  const char* text = std::getenv("CAIRN_COLLECTIVE_TIMEOUT_S");
  if (text == nullptr) return kDefaultCollectiveTimeoutSeconds;
  char* end = nullptr;
  errno = 0;
  const double seconds = std::strtod(text, &end);
  CAIRN_CHECK(*text != '\0' && !std::isspace(static_cast<unsigned char>(*text)) && end != nullptr && *end == '\0' && errno == 0 &&
                  std::isfinite(seconds) && seconds > 0 && seconds <= 1e8,
              "CAIRN_COLLECTIVE_TIMEOUT_S='", shorten(text),
              "': expected a number of seconds, more than 0 and at most 1e8");
  return seconds;
}

Communicator::Communicator() : timeout_seconds_(default_collective_timeout()) {}

void Communicator::set_collective_timeout(double seconds) {
  CAIRN_CHECK(std::isfinite(seconds) && seconds > 0 && seconds <= 1e8,
              "set_collective_timeout: expected seconds in (0, 1e8], got ", seconds);
  timeout_seconds_ = seconds;
}

void check_ranks_agree(Communicator& comm, const Quantities& quantities, const std::string& who) {
  if (comm.size() == 1) return;
  std::string mine;
  for (const auto& [name, value] : quantities) {
    encode(mine, name);
    encode(mine, value);
  }
  const std::vector<std::string> all = comm.allgather(mine);
  // Per rank: name -> value; and the names in the order they first appear.
  std::vector<std::map<std::string, std::string>> by_rank(all.size());
  std::vector<std::string> names;
  for (size_t r = 0; r < all.size(); ++r) {
    size_t at = 0;
    std::string name, value;
    while (at < all[r].size()) {
      CAIRN_CHECK(decode(all[r], at, name) && decode(all[r], at, value), who,
                  ": rank ", r, " sent a malformed list of quantities");
      if (by_rank[r].emplace(name, value).second &&
          std::find(names.begin(), names.end(), name) == names.end()) {
        names.push_back(name);
      }
    }
  }
  std::string problems;
  size_t count = 0;
  for (const std::string& name : names) {
    std::vector<const std::string*> values;
    bool differ = false;
    for (const auto& rank_values : by_rank) {
      const auto found = rank_values.find(name);
      values.push_back(found == rank_values.end() ? nullptr : &found->second);
      differ = differ || values.back() == nullptr || *values.back() != *values.front();
    }
    if (!differ) continue;
    ++count;
    problems += "\n  " + name + ": " + per_rank_values(values);
  }
  CAIRN_CHECK(problems.empty(), who, ": the ranks disagree on ", count,
              count == 1 ? " quantity" : " quantities",
              " that must be equal on every rank (each rank would compute something else, and "
              "the job would deadlock once one rank runs out of steps or collectives before the "
              "others):",
              problems);
}

bool mpi_built() {
#if CAIRN_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool nccl_built() {
#if CAIRN_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

CommunicatorPtr single_process_communicator(const Device& device) {
  return std::make_shared<SingleProcessCommunicator>(device);
}

CommunicatorPtr make_communicator(const Device& device) {
  if (device.is_cuda()) {
#if CAIRN_HAVE_NCCL
    return detail::make_nccl_communicator(device);
#else
    CAIRN_FAIL(
        "make_communicator: this cairn was built without NCCL, so it cannot reduce tensors on ",
        device,
        " (NCCL comes with the CUDA Toolkit or as libnccl-dev; it needs MPI too: "
        "reconfigure with both found)");
#endif
  }
#if CAIRN_HAVE_MPI
  return detail::make_mpi_communicator();
#else
  CAIRN_FAIL(
      "make_communicator: this cairn was built without MPI (on Debian: apt-get install "
      "libopenmpi-dev openmpi-bin, then reconfigure); it trains single-process only");
#endif
}

int launcher_rank() {
  return env_int({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"}, 0);
}
int launcher_size() { return env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}, 1); }
int launcher_local_rank() {
  return env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}, 0);
}

void abort_job(const std::string& message) {
  std::fprintf(stderr, "cairn: rank %d of %d failed: %s; aborting the job\n", launcher_rank(),
               launcher_size(), message.c_str());
  std::fflush(stderr);
#if CAIRN_HAVE_NCCL
  detail::nccl_abort_all();
#endif
#if CAIRN_HAVE_MPI
  detail::mpi_abort_world(1);
#endif
  std::abort();
}

}  // namespace cairn::dist
