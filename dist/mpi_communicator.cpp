// The MPI backend: CPU tensors, MPI_COMM_WORLD duplicated per communicator (so that two
// communicators' collectives never match each other's), MPI initialised on first use.
//
// Every collective is MPI's non-blocking form, polled with MPI_Test against a deadline
// (collective_timeout()): MPI itself has no timeout, and a blocking call would wait forever for a
// rank that never comes. A second duplicate of the communicator carries the diagnosis: a rank
// whose collective times out asks every other rank where it is; a rank inside one of cairn's
// collectives answers from its polling loop (the question is read there), a rank that is stuck
// elsewhere, or dead, cannot, and that is what the message says about it.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/dist/backends.h"
#include "cairn/dist/communicator.h"

namespace cairn::dist {
namespace {

#define CAIRN_MPI_CHECK(expr)                                                                  \
  do {                                                                                         \
    const int cairn_mpi_status_ = (expr);                                                      \
    if (cairn_mpi_status_ != MPI_SUCCESS) {                                                    \
      char cairn_mpi_text_[MPI_MAX_ERROR_STRING];                                              \
      int cairn_mpi_length_ = 0;                                                               \
      MPI_Error_string(cairn_mpi_status_, cairn_mpi_text_, &cairn_mpi_length_);                \
      CAIRN_FAIL(#expr, " failed: ", std::string(cairn_mpi_text_, size_t(cairn_mpi_length_))); \
    }                                                                                          \
  } while (0)

using Clock = std::chrono::steady_clock;

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

bool finalized() {
  int done = 0;
  MPI_Finalized(&done);
  return done != 0;
}

// MPI_Init_thread once per process. FUNNELED: cairn calls MPI from the thread that trains only.
void ensure_initialized() {
  static std::once_flag once;
  std::call_once(once, [] {
    int initialized = 0;
    CAIRN_MPI_CHECK(MPI_Initialized(&initialized));
    if (initialized) return;  // the application did it (and finalises it)
    int provided = 0;
    CAIRN_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    std::atexit(finalize_at_exit);
  });
}

void check_tensor(const Tensor& tensor, const char* op) {
  CAIRN_CHECK(tensor.defined(), "mpi ", op, ": the tensor is undefined");
  CAIRN_CHECK(tensor.dtype() == DType::kFloat32, "mpi ", op, ": expected float32, got ",
              dtype_name(tensor.dtype()));
  CAIRN_CHECK(tensor.device().is_cpu(), "mpi ", op,
              ": the MPI backend reduces CPU tensors, got one on ", tensor.device(),
              " (CUDA tensors go through NCCL: make_communicator(Device::cuda(i)))");
  CAIRN_CHECK(tensor.numel() <= INT_MAX, "mpi ", op, ": ", tensor.numel(),
              " elements is more than one MPI call takes (", INT_MAX, ")");
}

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3g", seconds);
  return text;
}

// One collective of this communicator: what a timeout message names.
struct Collective {
  const char* op;
  uint64_t sequence;  // 1-based, in the order the ranks call them (the same on every rank)
  int64_t count;      // elements (or bytes)
  double timeout;     // seconds
};

// The answer to "where are you?": the last collective this rank started, and the one it is
// waiting for (sequence 0: none).
struct Whereabouts {
  uint64_t started = 0;
  uint64_t waiting_for = 0;
  double waited_seconds = 0;
  char op[40] = {};
};

constexpr int kQueryTag = 1;
constexpr int kReplyTag = 2;

// The communicators and the diagnosis channel, shared by the communicator and its pending
// collectives (which may outlive it by a little inside a GradientReducer).
class MpiState {
 public:
  MpiState() {
    ensure_initialized();
    CAIRN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    CAIRN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &side_));
    CAIRN_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    CAIRN_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    MPI_Comm local;
    CAIRN_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
    CAIRN_MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
    MPI_Comm_free(&local);
    if (size_ > 1) post_query();
  }
  ~MpiState() {
    if (finalized()) return;
    if (query_ != MPI_REQUEST_NULL) {
      MPI_Cancel(&query_);
      MPI_Wait(&query_, MPI_STATUS_IGNORE);
    }
    for (auto& reply : replies_) MPI_Wait(&reply.request, MPI_STATUS_IGNORE);
    MPI_Comm_free(&side_);
    MPI_Comm_free(&comm_);
  }
  MpiState(const MpiState&) = delete;
  MpiState& operator=(const MpiState&) = delete;

  MPI_Comm comm() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }

  Collective begin(const char* op, int64_t count, double timeout) {
    last_op_ = op;
    return {op, ++started_, count, timeout};
  }

  // Polls `request` until it completes, answering the other ranks' questions meanwhile; ends the
  // job when `collective` has waited past its timeout.
  void wait(MPI_Request& request, const Collective& collective) {
    if (request == MPI_REQUEST_NULL) return;
    const Clock::time_point start = Clock::now();
    const auto deadline =
        start + std::chrono::duration_cast<Clock::duration>(
                    std::chrono::duration<double>(collective.timeout));
    const uint64_t outer_waiting = waiting_for_;
    const Clock::time_point outer_since = waiting_since_;
    const char* outer_op = waiting_op_;
    waiting_for_ = collective.sequence;
    waiting_since_ = start;
    waiting_op_ = collective.op;
    for (;;) {
      int done = 0;
      CAIRN_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
      if (done) break;
      serve();
      const Clock::time_point now = Clock::now();
      if (now >= deadline) timed_out(collective, std::chrono::duration<double>(now - start));
      // Spin while the others are likely to arrive soon, then give the cores away: ranks
      // oversubscribed on a few cores must not starve the one they wait for.
      const auto waited = now - start;
      if (waited > std::chrono::milliseconds(20)) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      } else if (waited > std::chrono::microseconds(500)) {
        std::this_thread::yield();
      }
    }
    waiting_for_ = outer_waiting;
    waiting_since_ = outer_since;
    waiting_op_ = outer_op;
  }

  bool test(MPI_Request& request) {
    if (request == MPI_REQUEST_NULL) return true;
    int done = 0;
    CAIRN_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    serve();
    return done != 0;
  }

 private:
  void post_query() {
    CAIRN_MPI_CHECK(
        MPI_Irecv(&query_value_, 1, MPI_UINT64_T, MPI_ANY_SOURCE, kQueryTag, side_, &query_));
  }

  Whereabouts whereabouts() const {
    Whereabouts where;
    where.started = started_;
    where.waiting_for = waiting_for_;
    if (waiting_for_ != 0) {
      where.waited_seconds = std::chrono::duration<double>(Clock::now() - waiting_since_).count();
    }
    const char* op = waiting_for_ != 0 ? waiting_op_ : last_op_;
    std::snprintf(where.op, sizeof(where.op), "%s", op != nullptr ? op : "none");
    return where;
  }

  // Answers every question that has arrived; forgets answers that have gone out.
  void serve() {
    while (query_ != MPI_REQUEST_NULL) {
      int arrived = 0;
      MPI_Status status;
      CAIRN_MPI_CHECK(MPI_Test(&query_, &arrived, &status));
      if (!arrived) break;
      replies_.push_back({std::make_unique<Whereabouts>(whereabouts()), MPI_REQUEST_NULL});
      Reply& reply = replies_.back();
      CAIRN_MPI_CHECK(MPI_Isend(reply.where.get(), int(sizeof(Whereabouts)), MPI_BYTE,
                                status.MPI_SOURCE, kReplyTag, side_, &reply.request));
      post_query();
    }
    while (!replies_.empty()) {
      int sent = 0;
      CAIRN_MPI_CHECK(MPI_Test(&replies_.front().request, &sent, MPI_STATUS_IGNORE));
      if (!sent) break;
      replies_.pop_front();
    }
  }

  [[noreturn]] void timed_out(const Collective& collective, std::chrono::duration<double> waited) {
    std::string message = "mpi " + std::string(collective.op) + " (collective #" +
                          std::to_string(collective.sequence) + " of its communicator, " +
                          std::to_string(collective.count) + " values) did not complete within " +
                          seconds_text(collective.timeout) +
                          " s (the collective timeout: CAIRN_COLLECTIVE_TIMEOUT_S or "
                          "Communicator::set_collective_timeout)";
    // Ask every other rank where it is, and listen for a bounded time.
    const double grace = std::min(5.0, std::max(0.5, collective.timeout));
    std::vector<Whereabouts> answers(size_t(size_), Whereabouts{});
    std::vector<MPI_Request> receives(size_t(size_), MPI_REQUEST_NULL);
    std::vector<MPI_Request> sends(size_t(size_), MPI_REQUEST_NULL);
    std::vector<bool> answered(size_t(size_), false);
    const uint64_t question = collective.sequence;
    bool asked = true;
    for (int r = 0; r < size_ && asked; ++r) {
      if (r == rank_) continue;
      asked = MPI_Irecv(&answers[size_t(r)], int(sizeof(Whereabouts)), MPI_BYTE, r, kReplyTag,
                        side_, &receives[size_t(r)]) == MPI_SUCCESS &&
              MPI_Isend(&question, 1, MPI_UINT64_T, r, kQueryTag, side_, &sends[size_t(r)]) ==
                  MPI_SUCCESS;
    }
    const Clock::time_point until =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(grace));
    int pending = size_ - 1;
    while (asked && pending > 0 && Clock::now() < until) {
      for (int r = 0; r < size_; ++r) {
        if (r == rank_ || answered[size_t(r)]) continue;
        int done = 0;
        if (MPI_Test(&receives[size_t(r)], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) continue;
        if (done) {
          answered[size_t(r)] = true;
          --pending;
        }
      }
      try {
        serve();  // another rank that timed out too asks this one
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::string missing, lines;
    int missing_count = 0;
    for (int r = 0; r < size_; ++r) {
      const Whereabouts& where = answers[size_t(r)];
      std::string line = "\n  rank " + std::to_string(r) + ": ";
      bool joined = true;
      if (r == rank_) {
        line += "this rank, waiting in " + std::string(collective.op) + " #" +
                std::to_string(collective.sequence) + " for " + seconds_text(waited.count()) +
                " s";
      } else if (!answered[size_t(r)]) {
        joined = false;
        line += "no answer within " + seconds_text(grace) +
                " s: it is not inside a cairn collective (stuck or busy in its own code, blocked "
                "outside cairn, or dead)";
      } else {
        const std::string op(where.op, strnlen(where.op, sizeof(where.op)));
        joined = where.started >= collective.sequence;
        if (where.waiting_for != 0) {
          line += "waiting in " + op + " #" + std::to_string(where.waiting_for) + " for " +
                  seconds_text(where.waited_seconds) + " s";
        } else {
          line += "between collectives, the last it started being " + op + " #" +
                  std::to_string(where.started);
        }
        if (!joined) {
          line += " (it has not started #" + std::to_string(collective.sequence) +
                  ": the ranks call collectives in different orders or numbers)";
        }
      }
      if (!joined) {
        missing += (missing_count++ ? ", " : "") + std::to_string(r);
      }
      lines += line;
    }
    message += missing_count > 0
                   ? std::string(missing_count == 1 ? "; missing: rank " : "; missing: ranks ") +
                         missing
                   : std::string("; every rank has joined it (MPI itself is stuck?)");
    message += lines;
    abort_job(message);
  }

  struct Reply {
    std::unique_ptr<Whereabouts> where;  // the buffer MPI sends from
    MPI_Request request;
  };

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm side_ = MPI_COMM_NULL;  // questions and answers about where each rank is
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  uint64_t started_ = 0;
  const char* last_op_ = nullptr;
  uint64_t waiting_for_ = 0;
  Clock::time_point waiting_since_;
  const char* waiting_op_ = nullptr;
  MPI_Request query_ = MPI_REQUEST_NULL;
  uint64_t query_value_ = 0;
  std::deque<Reply> replies_;
};

class MpiPending final : public PendingCollective {
 public:
  MpiPending(std::shared_ptr<MpiState> state, Tensor tensor, Collective collective)
      : state_(std::move(state)), tensor_(std::move(tensor)), collective_(collective) {}
  ~MpiPending() override {
    try {
      state_->wait(request_, collective_);
    } catch (const std::exception& error) {
      abort_job(std::string("mpi: a pending ") + collective_.op + " failed: " + error.what());
    }
  }
  void wait() override { state_->wait(request_, collective_); }
  bool test() override { return state_->test(request_); }
  MPI_Request request_ = MPI_REQUEST_NULL;

 private:
  std::shared_ptr<MpiState> state_;
  Tensor tensor_;  // keeps the buffer alive while MPI writes into it
  Collective collective_;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() : state_(std::make_shared<MpiState>()) {}

  int rank() const override { return state_->rank(); }
  int size() const override { return state_->size(); }
  int local_rank() const override { return state_->local_rank(); }
  std::string backend() const override { return "mpi"; }
  Device device() const override { return Device::cpu(); }

  void allreduce_sum(Tensor& tensor) override {
    check_tensor(tensor, "allreduce_sum");
    const Collective what = begin("allreduce_sum", tensor.numel());
    MPI_Request request = MPI_REQUEST_NULL;
    CAIRN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data(), int(tensor.numel()), MPI_FLOAT,
                                   MPI_SUM, state_->comm(), &request));
    state_->wait(request, what);
  }
  std::unique_ptr<PendingCollective> start_allreduce_sum(Tensor tensor) override {
    check_tensor(tensor, "start_allreduce_sum");
    auto pending = std::make_unique<MpiPending>(state_, tensor,
                                                begin("start_allreduce_sum", tensor.numel()));
    CAIRN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data(), int(tensor.numel()), MPI_FLOAT,
                                   MPI_SUM, state_->comm(), &pending->request_));
    return pending;
  }
  void broadcast(Tensor& tensor, int root) override {
    check_tensor(tensor, "broadcast");
    CAIRN_CHECK(root >= 0 && root < size(), "mpi broadcast: root ", root, " is not a rank of ",
                size());
    const Collective what = begin("broadcast", tensor.numel());
    MPI_Request request = MPI_REQUEST_NULL;
    CAIRN_MPI_CHECK(MPI_Ibcast(tensor.data(), int(tensor.numel()), MPI_FLOAT, root,
                               state_->comm(), &request));
    state_->wait(request, what);
  }
  void barrier() override {
    const Collective what = begin("barrier", 0);
    MPI_Request request = MPI_REQUEST_NULL;
    CAIRN_MPI_CHECK(MPI_Ibarrier(state_->comm(), &request));
    state_->wait(request, what);
  }
  void allreduce_sum(std::vector<double>& values) override {
    CAIRN_CHECK(values.size() <= size_t(INT_MAX), "mpi allreduce_sum: too many values");
    const Collective what = begin("allreduce_sum (host values)", int64_t(values.size()));
    MPI_Request request = MPI_REQUEST_NULL;
    CAIRN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, values.data(), int(values.size()), MPI_DOUBLE,
                                   MPI_SUM, state_->comm(), &request));
    state_->wait(request, what);
  }
  std::vector<std::string> allgather(const std::string& value) override {
    CAIRN_CHECK(value.size() <= size_t(INT_MAX) / size_t(size()),
                "mpi allgather: ", value.size(), " bytes from each of ", size(),
                " ranks is more than one MPI call takes");
    int length = int(value.size());
    std::vector<int> lengths(static_cast<size_t>(size()));
    Collective what = begin("allgather (lengths)", 1);
    MPI_Request request = MPI_REQUEST_NULL;
    CAIRN_MPI_CHECK(
        MPI_Iallgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, state_->comm(), &request));
    state_->wait(request, what);
    std::vector<int> offsets(static_cast<size_t>(size()));
    int64_t total = 0;
    for (size_t r = 0; r < lengths.size(); ++r) {
      offsets[r] = int(total);
      total += lengths[r];
    }
    CAIRN_CHECK(total <= INT_MAX, "mpi allgather: ", total,
                " bytes in all is more than one MPI call takes");
    std::string all(size_t(total), '\0');
    what = begin("allgather", total);
    CAIRN_MPI_CHECK(MPI_Iallgatherv(value.data(), length, MPI_CHAR, all.data(), lengths.data(),
                                    offsets.data(), MPI_CHAR, state_->comm(), &request));
    state_->wait(request, what);
    std::vector<std::string> out;
    for (size_t r = 0; r < lengths.size(); ++r) {
      out.push_back(all.substr(size_t(offsets[r]), size_t(lengths[r])));
    }
    return out;
  }
  void broadcast_bytes(void* data, size_t bytes, int root) {
    CAIRN_CHECK(bytes <= size_t(INT_MAX), "mpi broadcast: too many bytes");
    const Collective what = begin("broadcast (bytes)", int64_t(bytes));
    MPI_Request request = MPI_REQUEST_NULL;
    CAIRN_MPI_CHECK(MPI_Ibcast(data, int(bytes), MPI_BYTE, root, state_->comm(), &request));
    state_->wait(request, what);
  }

 private:
  Collective begin(const char* op, int64_t count) {
    return state_->begin(op, count, collective_timeout());
  }
  std::shared_ptr<MpiState> state_;
};

}  // namespace

namespace detail {

CommunicatorPtr make_mpi_communicator() { return std::make_shared<MpiCommunicator>(); }

bool mpi_initialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void mpi_abort_world(int code) {
  if (mpi_initialized()) MPI_Abort(MPI_COMM_WORLD, code);
}

void mpi_broadcast_bytes(Communicator& comm, void* data, size_t bytes, int root) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&comm);
  CAIRN_CHECK(mpi != nullptr, "mpi_broadcast_bytes: not an MPI communicator (", comm.backend(),
              ")");
  mpi->broadcast_bytes(data, bytes, root);
}

}  // namespace detail
}  // namespace cairn::dist
