// The fake device's NCCL: the entry points cairn calls (dist/nccl_communicator.cpp), between
// processes on one machine, over Unix-domain stream sockets.
//
// What it models: ncclGetUniqueId makes a fresh socket path; ncclCommInitRank connects every rank
// to rank 0 (a star) and returns when all are connected, as the real one returns when the
// communicator is complete. A collective checks its buffers when called and queues the exchange
// on the stream, so it runs in stream order on the stream's worker, or is recorded into the graph
// being captured and repeated at each replay. Rank 0 gathers every rank's contribution, reduces in
// rank order 0..n-1 (so results are deterministic) and sends the result back. Stricter than NCCL:
// every message carries {sequence number, collective, count, type, op, root}, and ranks that
// disagree get ncclInvalidUsage as the asynchronous error (real NCCL hangs or corrupts); a peer
// that exits, aborts or stops making progress for CAIRN_FAKE_NCCL_TIMEOUT_S seconds (default 120)
// gives the others an asynchronous error instead of a hang; a communicator used from two streams
// at once, or replayed after ncclCommDestroy, is an error.
//
// What it cannot: run anything but AllReduce (sum, prod, max, min) and Broadcast on float32,
// float64, int32 and int64; model NCCL's bandwidth, its ring/tree reduction order, or
// non-blocking communicators; span machines. MPI is not used: cairn initialises MPI
// THREAD_FUNNELED, and the exchanges run on stream worker threads.
#include <nccl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cairn/tests/fake_cuda/fake_device.h"

namespace cairn::fake_cuda {
namespace {

constexpr char kMagic[16] = "cairn-fake-nccl";
constexpr int kInitDeadlineMs = 60000;

// What ncclUniqueId's 128 bytes hold here.
struct IdLayout {
  char magic[16];
  char path[104];  // fits sockaddr_un::sun_path (108)
  uint64_t nonce;  // a peer must present it, so a stray connection is refused
};
static_assert(sizeof(IdLayout) == NCCL_UNIQUE_ID_BYTES, "the id layout must fill ncclUniqueId");

enum Kind : int32_t { kHello = 1, kWelcome, kAllReduce, kBroadcast, kResult, kMismatch };

// Every message starts with this. The collective fields must agree across ranks.
struct Header {
  uint64_t sequence = 0;  // collectives this communicator ran before, plus one
  int32_t kind = 0;
  int32_t rank = 0;
  uint64_t count = 0;
  int32_t datatype = -1;
  int32_t op = -1;       // AllReduce only
  int32_t root = -1;     // Broadcast only
  int32_t reserved = 0;  // no uninitialised padding on the wire
  uint64_t nonce = 0;
  uint64_t payload_bytes = 0;  // bytes that follow the header
};

struct Collective {
  Kind kind;
  const void* send;
  void* recv;
  size_t count;
  ncclDataType_t datatype;
  ncclRedOp_t op;
  int root;
};

struct CommState {
  int rank = 0, nranks = 1;
  std::vector<int> fds;  // rank 0: fds[r] reaches rank r (r >= 1); other ranks: fds[0]
  int timeout_ms = 120000;
  std::atomic<int> async_error{ncclSuccess};
  std::atomic<bool> busy{false};       // an exchange is running
  std::atomic<bool> aborted{false};    // ncclCommAbort: queued exchanges are dropped
  std::atomic<bool> destroyed{false};  // ncclCommDestroy or Abort: the handle is gone
  uint64_t sequence = 0;               // touched only by the exchange holding `busy`
  std::mutex mutex;
  std::condition_variable idle;
  int pending = 0;  // queued (not captured) exchanges not yet run, for ncclCommDestroy
  ~CommState() {
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
  }
};

// The element types the fake reduces, and their names for reports.
struct TypeInfo {
  int type;
  const char* name;
  size_t bytes;
};
constexpr TypeInfo kTypes[] = {{ncclFloat32, "float32", 4},
                               {ncclFloat64, "float64", 8},
                               {ncclInt32, "int32", 4},
                               {ncclInt64, "int64", 8}};

const TypeInfo* type_info(int datatype) {
  for (const TypeInfo& info : kTypes) {
    if (info.type == datatype) return &info;
  }
  return nullptr;
}
const char* type_name(int datatype) {
  const TypeInfo* info = type_info(datatype);
  return info != nullptr ? info->name : "unsupported type";
}
// 0: unsupported.
size_t type_bytes(int datatype) {
  const TypeInfo* info = type_info(datatype);
  return info != nullptr ? info->bytes : 0;
}

// ncclSum, ncclProd, ncclMax, ncclMin are 0..3, the ops the fake supports.
bool supported_op(int op) { return op >= ncclSum && op <= ncclMin; }
const char* op_name(int op) {
  static const char* const names[] = {"sum", "prod", "max", "min"};
  return supported_op(op) ? names[op] : "-";
}

const char* kind_name(int kind) {
  return kind == kAllReduce ? "ncclAllReduce" : kind == kBroadcast ? "ncclBroadcast" : "message";
}

void report(const CommState& state, const std::string& message) {
  std::fprintf(stderr, "fake NCCL: rank %d of %d: %s\n", state.rank, state.nranks, message.c_str());
}

// Records the communicator's first error and closes it for writing and reading, so that every
// peer sees EOF now rather than at its timeout. The fds stay open (closed by ~CommState) so that
// no other thread's poll() can meet a reused descriptor.
void shut_down(CommState& state) {
  for (int fd : state.fds) {
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
  }
}

void fail_comm(CommState& state, ncclResult_t error, const std::string& message) {
  int expected = ncclSuccess;
  const bool first = state.async_error.compare_exchange_strong(expected, error);
  if (first && !state.aborted.load()) report(state, message);
  shut_down(state);
}

// ---- Sockets with a progress timeout ----

// Waits until fd is ready for `events`; "" or why not.
std::string wait_ready(int fd, short events, int timeout_ms) {
  pollfd entry{fd, events, 0};
  for (;;) {
    const int ready = poll(&entry, 1, timeout_ms);
    if (ready > 0) return "";
    if (ready == 0) return "no progress for " + std::to_string(timeout_ms) + " ms";
    if (errno != EINTR) return std::string("poll: ") + std::strerror(errno);
  }
}

// An I/O failure: ncclRemoteError when the peer went away or stalled, ncclSystemError otherwise.
struct IoError {
  ncclResult_t code = ncclSuccess;
  std::string why;
  explicit operator bool() const { return code != ncclSuccess; }
};

IoError io_error(int error) {
  const bool remote = error == EPIPE || error == ECONNRESET;
  return {remote ? ncclRemoteError : ncclSystemError, std::strerror(error)};
}

IoError send_all(int fd, const void* data, size_t bytes, int timeout_ms) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const std::string why = wait_ready(fd, POLLOUT, timeout_ms);
    if (!why.empty()) return {ncclRemoteError, why};
    const ssize_t sent = send(fd, p, bytes, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return io_error(errno);
    }
    p += sent;
    bytes -= size_t(sent);
  }
  return {};
}

IoError recv_all(int fd, void* data, size_t bytes, int timeout_ms) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const std::string why = wait_ready(fd, POLLIN, timeout_ms);
    if (!why.empty()) return {ncclRemoteError, why};
    const ssize_t got = recv(fd, p, bytes, 0);
    if (got == 0) return {ncclRemoteError, "the peer closed the connection"};
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return io_error(errno);
    }
    p += got;
    bytes -= size_t(got);
  }
  return {};
}

IoError send_message(int fd, const Header& header, const void* payload, int timeout_ms) {
  IoError error = send_all(fd, &header, sizeof header, timeout_ms);
  if (!error && header.payload_bytes > 0) {
    error = send_all(fd, payload, header.payload_bytes, timeout_ms);
  }
  return error;
}

// ---- Reduction ----

// Integers are combined as unsigned, so that they wrap as on the GPU instead of overflowing.
template <typename T, bool = std::is_integral_v<T>>
struct Arithmetic {
  using type = T;
};
template <typename T>
struct Arithmetic<T, true> {
  using type = std::make_unsigned_t<T>;
};

template <typename T>
T combine(ncclRedOp_t op, T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (a != a) return a;  // a NaN from any rank shows
    if (b != b) return b;
  }
  using Wide = typename Arithmetic<T>::type;
  switch (op) {
    case ncclSum:
      return T(Wide(a) + Wide(b));
    case ncclProd:
      return T(Wide(a) * Wide(b));
    case ncclMax:
      return a > b ? a : b;
    default:
      return a < b ? a : b;  // ncclMin; others are refused before queueing
  }
}

template <typename T>
void combine_into(ncclRedOp_t op, char* acc, const char* other, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    T a, b;
    std::memcpy(&a, acc + i * sizeof(T), sizeof(T));
    std::memcpy(&b, other + i * sizeof(T), sizeof(T));
    a = combine(op, a, b);
    std::memcpy(acc + i * sizeof(T), &a, sizeof(T));
  }
}

// acc = acc op other, elementwise.
void reduce_into(const Collective& c, char* acc, const char* other) {
  switch (c.datatype) {
    case ncclFloat32:
      return combine_into<float>(c.op, acc, other, c.count);
    case ncclFloat64:
      return combine_into<double>(c.op, acc, other, c.count);
    case ncclInt32:
      return combine_into<int32_t>(c.op, acc, other, c.count);
    default:
      return combine_into<int64_t>(c.op, acc, other, c.count);
  }
}

// ---- Exchanges (on the stream's worker) ----

Header header_for(const CommState& state, const Collective& c) {
  Header h;
  h.sequence = state.sequence;
  h.kind = c.kind;
  h.rank = state.rank;
  h.count = c.count;
  h.datatype = c.datatype;
  h.op = c.kind == kAllReduce ? int32_t(c.op) : -1;
  h.root = c.kind == kBroadcast ? c.root : -1;
  const bool contributes = c.kind == kAllReduce || c.root == state.rank;
  h.payload_bytes = contributes ? c.count * type_bytes(c.datatype) : 0;
  return h;
}

bool agree(const Header& a, const Header& b) {
  return a.sequence == b.sequence && a.kind == b.kind && a.count == b.count &&
         a.datatype == b.datatype && a.op == b.op && a.root == b.root;
}

std::string describe(const Header& h) {
  return "rank " + std::to_string(h.rank) + ": #" + std::to_string(h.sequence) + " " +
         kind_name(h.kind) + " count=" + std::to_string(h.count) + " " + type_name(h.datatype) +
         " op=" + op_name(h.op) + " root=" + std::to_string(h.root);
}

// Rank 0: gather every header, then every payload in rank order, reduce, send the result back.
void root_exchange(CommState& state, const Collective& c, const Header& mine) {
  const std::string what = std::string(kind_name(c.kind)) + " #" + std::to_string(mine.sequence);
  std::vector<Header> headers(size_t(state.nranks));
  headers[0] = mine;
  bool consistent = true;
  for (int r = 1; r < state.nranks; ++r) {
    if (IoError e = recv_all(state.fds[r], &headers[r], sizeof(Header), state.timeout_ms)) {
      return fail_comm(state, e.code, what + ": rank " + std::to_string(r) + ": " + e.why);
    }
    consistent = consistent && agree(mine, headers[r]);
  }
  const size_t bytes = c.count * type_bytes(c.datatype);
  std::vector<char> acc(bytes), incoming;
  if (bytes > 0 && (c.kind == kAllReduce || c.root == 0)) std::memcpy(acc.data(), c.send, bytes);
  for (int r = 1; r < state.nranks; ++r) {
    // A disagreeing rank's payload is read and dropped, to keep each stream in step.
    incoming.resize(headers[r].payload_bytes);
    if (IoError e = recv_all(state.fds[r], incoming.data(), incoming.size(), state.timeout_ms)) {
      return fail_comm(state, e.code, what + ": rank " + std::to_string(r) + ": " + e.why);
    }
    if (!consistent) continue;
    if (c.kind == kAllReduce) reduce_into(c, acc.data(), incoming.data());
    if (c.kind == kBroadcast && c.root == r) acc.swap(incoming);
  }
  Header reply = mine;
  reply.kind = consistent ? kResult : kMismatch;
  reply.payload_bytes = consistent ? bytes : 0;
  for (int r = 1; r < state.nranks; ++r) {
    if (IoError e = send_message(state.fds[r], reply, acc.data(), state.timeout_ms)) {
      return fail_comm(state, e.code, what + ": rank " + std::to_string(r) + ": " + e.why);
    }
  }
  if (!consistent) {
    std::string message = "collective " + what + ": the ranks disagree (";
    for (const Header& h : headers) message += (&h == &headers[0] ? "" : "; ") + describe(h);
    return fail_comm(state, ncclInvalidUsage, message + ")");
  }
  if (bytes > 0) std::memcpy(c.recv, acc.data(), bytes);
}

// Ranks 1..n-1: send this rank's part to rank 0, wait for the result.
void leaf_exchange(CommState& state, const Collective& c, const Header& mine) {
  const std::string what = std::string(kind_name(c.kind)) + " #" + std::to_string(mine.sequence);
  const int fd = state.fds[0];
  if (IoError e = send_message(fd, mine, c.send, state.timeout_ms)) {
    return fail_comm(state, e.code, what + ": sending to rank 0: " + e.why);
  }
  Header reply;
  if (IoError e = recv_all(fd, &reply, sizeof reply, state.timeout_ms)) {
    return fail_comm(state, e.code, what + ": waiting for rank 0: " + e.why);
  }
  if (reply.kind == kMismatch) {
    return fail_comm(state, ncclInvalidUsage,
                     what + ": the ranks disagree on this collective (rank 0 reports how)");
  }
  const size_t bytes = c.count * type_bytes(c.datatype);
  Header echoed = reply;  // rank 0 echoes this rank's collective fields under kResult
  echoed.kind = mine.kind;
  if (reply.kind != kResult || !agree(mine, echoed) || reply.payload_bytes != bytes) {
    return fail_comm(state, ncclInternalError, what + ": unexpected reply from rank 0");
  }
  if (IoError e = recv_all(fd, c.recv, bytes, state.timeout_ms)) {
    return fail_comm(state, e.code, what + ": receiving from rank 0: " + e.why);
  }
}

void run_exchange(CommState& state, const Collective& c) {
  if (state.aborted.load()) return;  // ncclCommAbort drops what was queued
  if (state.destroyed.load()) {
    return fail_comm(state, ncclInvalidUsage,
                     std::string(kind_name(c.kind)) + " ran after ncclCommDestroy");
  }
  if (state.async_error.load() != ncclSuccess) return;  // a failed communicator moves nothing
  if (state.busy.exchange(true)) {
    return fail_comm(state, ncclInvalidUsage,
                     std::string(kind_name(c.kind)) +
                         " overlaps another collective of the same "
                         "communicator (used from two streams at once?)");
  }
  const size_t bytes = c.count * type_bytes(c.datatype);
  const bool sends = c.kind == kAllReduce || c.root == state.rank;
  if (!is_device_range(c.recv, bytes) || (sends && !is_device_range(c.send, bytes))) {
    fail_comm(state, ncclUnhandledCudaError,
              std::string(kind_name(c.kind)) + ": a buffer was freed before the collective ran");
  } else {
    ++state.sequence;
    const Header mine = header_for(state, c);
    if (state.nranks == 1) {
      if (bytes > 0 && c.recv != c.send) std::memmove(c.recv, c.send, bytes);
    } else if (state.rank == 0) {
      root_exchange(state, c, mine);
    } else {
      leaf_exchange(state, c, mine);
    }
  }
  state.busy.store(false);
}

// ---- Set-up ----

int timeout_ms_from_environment() {
  const char* setting = std::getenv("CAIRN_FAKE_NCCL_TIMEOUT_S");
  const double seconds = setting != nullptr ? std::atof(setting) : 0.0;
  return seconds > 0.0 ? int(seconds * 1000.0) : 120000;
}

sockaddr_un address_of(const IdLayout& id) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, id.path, sizeof id.path);
  return address;
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = deadline - std::chrono::steady_clock::now();
  return int(
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(left).count()));
}

// Rank 0: accept the n - 1 others, check who they are, then welcome them all.
ncclResult_t accept_peers(CommState& state, const IdLayout& id) {
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return ncclSystemError;
  const sockaddr_un address = address_of(id);
  if (bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, state.nranks) != 0) {
    report(state, std::string("cannot listen on ") + id.path + ": " + std::strerror(errno));
    close(listener);
    return ncclSystemError;
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kInitDeadlineMs);
  ncclResult_t result = ncclSuccess;
  for (int joined = 1; joined < state.nranks && result == ncclSuccess;) {
    const std::string why = wait_ready(listener, POLLIN, remaining_ms(deadline));
    const int fd = why.empty() ? accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : -1;
    Header hello;
    if (fd < 0 || recv_all(fd, &hello, sizeof hello, remaining_ms(deadline))) {
      report(state, "ncclCommInitRank: waiting for the other ranks: " +
                        (why.empty() ? "a peer failed to introduce itself" : why));
      result = why.empty() ? ncclSystemError : ncclRemoteError;
    } else if (hello.kind != kHello || hello.nonce != id.nonce ||
               hello.count != uint64_t(state.nranks) || hello.rank < 1 ||
               hello.rank >= state.nranks || state.fds[hello.rank] >= 0) {
      report(state, "ncclCommInitRank: rank " + std::to_string(hello.rank) + " of " +
                        std::to_string(hello.count) + " does not fit this communicator of " +
                        std::to_string(state.nranks));
      result = ncclInvalidUsage;
    } else {
      state.fds[hello.rank] = fd;
      ++joined;
      continue;
    }
    if (fd >= 0) close(fd);
  }
  unlink(id.path);  // every rank is in (or init failed): the name is no longer needed
  close(listener);
  Header welcome;
  welcome.kind = kWelcome;
  for (int r = 1; r < state.nranks && result == ncclSuccess; ++r) {
    if (send_message(state.fds[r], welcome, nullptr, state.timeout_ms)) result = ncclRemoteError;
  }
  return result;
}

// Ranks 1..n-1: connect to rank 0 (retrying until it listens), introduce, wait for the welcome.
ncclResult_t join_root(CommState& state, const IdLayout& id) {
  const sockaddr_un address = address_of(id);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kInitDeadlineMs);
  for (;;) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ncclSystemError;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
      state.fds[0] = fd;
      break;
    }
    const int error = errno;
    close(fd);
    if ((error != ENOENT && error != ECONNREFUSED && error != EAGAIN) ||
        remaining_ms(deadline) == 0) {
      report(state, std::string("ncclCommInitRank: cannot reach rank 0 at ") + id.path + ": " +
                        std::strerror(error));
      return ncclSystemError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Header hello;
  hello.kind = kHello;
  hello.rank = state.rank;
  hello.count = uint64_t(state.nranks);
  hello.nonce = id.nonce;
  Header welcome;
  if (send_message(state.fds[0], hello, nullptr, remaining_ms(deadline)) ||
      recv_all(state.fds[0], &welcome, sizeof welcome, remaining_ms(deadline)) ||
      welcome.kind != kWelcome) {
    report(state, "ncclCommInitRank: rank 0 did not complete the communicator");
    return ncclRemoteError;
  }
  return ncclSuccess;
}

// Leaves CUDA's last error as it was: a refused buffer is NCCL's ncclInvalidArgument, not a CUDA
// fault that would fail the next, unrelated launch check.
bool buffers_ok(const char* what, std::initializer_list<Range> ranges) {
  const bool clean_before = cudaPeekAtLastError() == cudaSuccess;
  const bool ok = check_device_ranges(what, ranges);
  if (!ok && clean_before) cudaGetLastError();
  return ok;
}

bool overlap_differs(const void* send, const void* recv, size_t bytes) {
  const char* s = static_cast<const char*>(send);
  const char* r = static_cast<const char*>(recv);
  return s != r && s < r + bytes && r < s + bytes;
}

void finish_one(CommState& state) {
  std::lock_guard<std::mutex> lock(state.mutex);
  if (--state.pending == 0) state.idle.notify_all();
}

// Queues `c` on the stream. Captured exchanges are not counted as pending: they run at replays.
ncclResult_t queue(const std::shared_ptr<CommState>& state, const char* what, const Collective& c,
                   cudaStream_t stream) {
  const bool eager = !stream_is_capturing(resolve_stream(stream));
  if (eager) {
    std::lock_guard<std::mutex> lock(state->mutex);
    ++state->pending;
  }
  const cudaError_t status = enqueue(stream, what, [state, c, eager] {
    try {
      run_exchange(*state, c);
    } catch (const std::exception& error) {  // e.g. bad_alloc for the staging buffer
      fail_comm(*state, ncclInternalError, error.what());
    }
    if (eager) finish_one(*state);
  });
  if (status == cudaSuccess) return ncclSuccess;
  if (eager) finish_one(*state);
  return ncclUnhandledCudaError;
}

}  // namespace
}  // namespace cairn::fake_cuda

// The handle NCCL's header names.
struct ncclComm {
  std::shared_ptr<cairn::fake_cuda::CommState> state;
};

using cairn::fake_cuda::Collective;
using cairn::fake_cuda::CommState;

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* unique_id) {
  if (unique_id == nullptr) return ncclInvalidArgument;
  try {
    static std::atomic<unsigned> counter{0};
    cairn::fake_cuda::IdLayout id{};
    std::memcpy(id.magic, cairn::fake_cuda::kMagic, sizeof id.magic);
    std::random_device entropy;
    id.nonce = (uint64_t(entropy()) << 32) ^ entropy();
    std::snprintf(id.path, sizeof id.path, "/tmp/cairn-fake-nccl-%d-%u-%016llx.sock", int(getpid()),
                  counter.fetch_add(1), static_cast<unsigned long long>(id.nonce));
    std::memcpy(unique_id, &id, sizeof id);
    return ncclSuccess;
  } catch (...) {
    return ncclInternalError;
  }
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId comm_id, int rank) {
  if (comm == nullptr || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  try {
    cairn::fake_cuda::IdLayout id;
    std::memcpy(&id, &comm_id, sizeof id);
    auto state = std::make_shared<CommState>();
    state->rank = rank;
    state->nranks = nranks;
    state->timeout_ms = cairn::fake_cuda::timeout_ms_from_environment();
    if (std::memcmp(id.magic, cairn::fake_cuda::kMagic, sizeof id.magic) != 0) {
      cairn::fake_cuda::report(*state,
                               "ncclCommInitRank: the id was not made by ncclGetUniqueId "
                               "(not broadcast to this rank?)");
      return ncclInvalidArgument;
    }
    state->fds.assign(size_t(nranks), -1);
    if (nranks > 1) {
      const ncclResult_t joined = rank == 0 ? cairn::fake_cuda::accept_peers(*state, id)
                                            : cairn::fake_cuda::join_root(*state, id);
      if (joined != ncclSuccess) return joined;  // ~CommState closes what was opened
    }
    *comm = new ncclComm{std::move(state)};
    return ncclSuccess;
  } catch (...) {
    return ncclInternalError;
  }
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  if (comm == nullptr) return ncclInvalidArgument;
  const size_t element = cairn::fake_cuda::type_bytes(datatype);
  if (element == 0 || !cairn::fake_cuda::supported_op(op)) {
    cairn::fake_cuda::report(*comm->state, std::string("ncclAllReduce: unsupported type or op ") +
                                               std::to_string(datatype) + "/" + std::to_string(op));
    return ncclInvalidArgument;
  }
  if (count > SIZE_MAX / element) return ncclInvalidArgument;
  const size_t bytes = count * element;
  if (!cairn::fake_cuda::buffers_ok(
          "ncclAllReduce", {{"sendbuff", sendbuff, bytes}, {"recvbuff", recvbuff, bytes}}) ||
      cairn::fake_cuda::overlap_differs(sendbuff, recvbuff, bytes)) {
    return ncclInvalidArgument;
  }
  try {
    const Collective c{cairn::fake_cuda::kAllReduce, sendbuff, recvbuff, count, datatype, op, -1};
    return cairn::fake_cuda::queue(comm->state, "ncclAllReduce", c, stream);
  } catch (...) {
    return ncclInternalError;
  }
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  if (comm == nullptr) return ncclInvalidArgument;
  const CommState& state = *comm->state;
  const size_t element = cairn::fake_cuda::type_bytes(datatype);
  if (element == 0 || root < 0 || root >= state.nranks || count > SIZE_MAX / element) {
    cairn::fake_cuda::report(state, "ncclBroadcast: unsupported type " + std::to_string(datatype) +
                                        " or root " + std::to_string(root));
    return ncclInvalidArgument;
  }
  const size_t bytes = count * element;
  const size_t send_bytes = root == state.rank ? bytes : 0;  // only the root's sendbuff is read
  if (!cairn::fake_cuda::buffers_ok(
          "ncclBroadcast", {{"sendbuff", sendbuff, send_bytes}, {"recvbuff", recvbuff, bytes}}) ||
      cairn::fake_cuda::overlap_differs(sendbuff, recvbuff, send_bytes)) {
    return ncclInvalidArgument;
  }
  try {
    const Collective c{
        cairn::fake_cuda::kBroadcast, sendbuff, recvbuff, count, datatype, ncclSum, root};
    return cairn::fake_cuda::queue(comm->state, "ncclBroadcast", c, stream);
  } catch (...) {
    return ncclInternalError;
  }
}

// Closes the connections at once (the peers see EOF and fail) and drops what is queued.
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  CommState& state = *comm->state;
  state.aborted.store(true);
  state.destroyed.store(true);
  cairn::fake_cuda::shut_down(state);
  delete comm;  // queued work holds the state until it has run
  return ncclSuccess;
}

// As NCCL's (which finalizes first): waits for the queued collectives, bounded by the timeout.
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  CommState& state = *comm->state;
  {
    std::unique_lock<std::mutex> lock(state.mutex);
    const bool drained = state.idle.wait_for(lock, std::chrono::milliseconds(state.timeout_ms),
                                             [&] { return state.pending == 0; });
    if (!drained) {
      cairn::fake_cuda::report(state, "ncclCommDestroy: queued collectives did not run in time");
    }
  }
  state.destroyed.store(true);
  cairn::fake_cuda::shut_down(state);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (comm == nullptr || async_error == nullptr) return ncclInvalidArgument;
  *async_error = static_cast<ncclResult_t>(comm->state->async_error.load());
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  static const char* const texts[] = {"no error",
                                      "unhandled cuda error (fake NCCL: see stderr)",
                                      "unhandled system error (fake NCCL: see stderr)",
                                      "internal error (fake NCCL: see stderr)",
                                      "invalid argument (fake NCCL: see stderr)",
                                      "invalid usage (fake NCCL: see stderr)",
                                      "remote process exited or there was a network error",
                                      "NCCL operation in progress"};
  const int index = int(result);
  return index >= 0 && index < int(sizeof texts / sizeof texts[0]) ? texts[index]
                                                                   : "unknown result code";
}

}  // extern "C"
