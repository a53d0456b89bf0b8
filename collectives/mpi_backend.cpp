#include "collectives/mpi_backend.hpp"

#include <ATen/ATen.h>

#include <sys/mman.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <mutex>

#include "collectives/detail/comm_thread.hpp"
#include "collectives/detail/poll_work.hpp"
#include "collectives/detail/mpi_types.hpp"
#include "core/mpi.hpp"
#include "core/watchdog.hpp"

namespace hpcml::collectives {

int MpiBackend::checked_count(const char* op, int64_t numel) const {
  // The message is built only on failure: this runs on every collective.
  HPCML_CHECK_AS(CommError, numel <= INT_MAX, context(op), ": ", numel, " elements exceed MPI's int count limit (",
                 INT_MAX, "); split the tensor");
  return static_cast<int>(numel);
}

// Sends whose Work was dropped before completing: tested (and their buffers freed)
// at each later send, freed unfinished with the backend.
struct MpiBackend::Detached {
  std::mutex mutex;
  std::vector<std::pair<MPI_Request, std::shared_ptr<const void>>> sends;
  std::atomic<size_t> count{0};  // sends.size(), read without the lock: most sweeps find nothing

  void add(MPI_Request request, std::shared_ptr<const void> keep) {
    std::lock_guard<std::mutex> lock(mutex);
    sends.emplace_back(request, std::move(keep));
    count.store(sends.size(), std::memory_order_relaxed);
  }
  void sweep() {
    if (count.load(std::memory_order_relaxed) == 0) return;
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = sends.begin(); it != sends.end();) {
      int done = 0;
      MPI_Test(&it->first, &done, MPI_STATUS_IGNORE);
      it = done ? sends.erase(it) : it + 1;
    }
    count.store(sends.size(), std::memory_order_relaxed);
  }
  ~Detached() {
    // Still unmatched at teardown: let MPI finish them; their buffers stay allocated.
    for (auto& [request, keep] : sends) {
      if (request != MPI_REQUEST_NULL && mpi_initialized()) MPI_Request_free(&request);
      new std::shared_ptr<const void>(std::move(keep));  // deliberately leaked: MPI may still read it
    }
  }
};

MpiBackend::MpiBackend(MPI_Comm comm, BackendOptions options)
    : Backend(std::move(options)),
      thread_(std::make_unique<detail::CommThread>()),
      detached_(std::make_unique<Detached>()) {
  HPCML_CHECK_AS(CommError, mpi_initialized(), "backend mpi for '", comm_name(),
                 "': MPI is not initialised (construct an hpcml::MpiSession first)");
  {
    auto guard = Watchdog::instance().arm("MPI_Comm_dup", comm_name(), options_.timeout);
    HPCML_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  }
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiBackend::~MpiBackend() {
  thread_.reset();  // finishes queued collectives first
  detached_.reset();
  if (comm_ != MPI_COMM_NULL && mpi_initialized()) MPI_Comm_free(&comm_);
}

template <typename Body>
WorkPtr MpiBackend::launch(const char* op, bool async, std::chrono::milliseconds timeout, Body&& body) {
  timeout = resolve(timeout);
  if (async) {
    return thread_->submit(op, comm_name(), timeout, [this, op, timeout, body = std::forward<Body>(body)]() mutable {
      auto guard = Watchdog::instance().arm(op, comm_name(), timeout);
      body();
    });
  }
  thread_->drain(op, comm_name(), timeout);
  auto guard = Watchdog::instance().arm(op, comm_name(), timeout);
  body();
  return detail::completed_work();
}

WorkPtr MpiBackend::do_allreduce(at::Tensor& tensor, const AllreduceOptions& options) {
  const int count = checked_count("allreduce", tensor.numel());
  const MPI_Datatype type = detail::mpi_datatype(tensor.scalar_type());
  const MPI_Op op = detail::mpi_op(options.op, tensor.scalar_type());
  const bool average = options.op == ReduceOp::kAvg;
  return launch("allreduce", options.async, options.timeout, [this, tensor, count, type, op, average]() mutable {
    HPCML_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), count, type, op, comm_));
    if (average) tensor.div_(size_);
  });
}

WorkPtr MpiBackend::do_broadcast(at::Tensor& tensor, const BroadcastOptions& options) {
  const int count = checked_count("broadcast", tensor.numel());
  const MPI_Datatype type = detail::mpi_datatype(tensor.scalar_type());
  const int root = options.root;
  return launch("broadcast", options.async, options.timeout, [this, tensor, count, type, root]() mutable {
    HPCML_MPI_CHECK(MPI_Bcast(tensor.data_ptr(), count, type, root, comm_));
  });
}

WorkPtr MpiBackend::do_allgather(std::vector<at::Tensor>& outputs, const at::Tensor& input,
                                 const AllgatherOptions& options) {
  const MPI_Datatype type = detail::mpi_datatype(input.scalar_type());
  std::vector<int> counts(size_), displs(size_);
  int64_t total = 0;
  bool equal = true;
  for (int r = 0; r < size_; ++r) {
    counts[r] = checked_count("allgather", outputs[r].numel());
    displs[r] = checked_count("allgather", total);
    total += counts[r];
    equal = equal && counts[r] == counts[0];
  }
  // Outputs that are consecutive pieces of one buffer receive directly (and an
  // input that is already this rank's piece is sent in place); otherwise one
  // receive buffer, copied out.
  const auto itemsize = static_cast<int64_t>(input.element_size());
  const char* base = static_cast<const char*>(outputs[0].data_ptr());
  bool adjacent = true;
  for (int r = 0; r < size_; ++r) {
    adjacent = adjacent && outputs[r].is_contiguous() &&
               static_cast<const char*>(outputs[r].data_ptr()) == base + displs[r] * itemsize;
  }
  const bool in_place = adjacent && input.data_ptr() == outputs[rank_].data_ptr();
  return launch("allgather", options.async, options.timeout,
                [this, outputs, input, type, counts, displs, total, equal, adjacent, in_place]() mutable {
                  at::Tensor flat = adjacent ? at::Tensor() : at::empty({total}, input.options());
                  void* receive = adjacent ? outputs[0].data_ptr() : flat.data_ptr();
                  void* send = in_place ? MPI_IN_PLACE : input.data_ptr();
                  if (equal) {
                    HPCML_MPI_CHECK(MPI_Allgather(send, counts[0], type, receive, counts[0], type, comm_));
                  } else {
                    HPCML_MPI_CHECK(MPI_Allgatherv(send, counts[rank_], type, receive, counts.data(), displs.data(),
                                                   type, comm_));
                  }
                  if (adjacent) return;
                  for (int r = 0; r < size_; ++r) {
                    outputs[r].view({-1}).copy_(flat.narrow(0, displs[r], counts[r]));
                  }
                });
}

WorkPtr MpiBackend::do_reduce_scatter(at::Tensor& output, const at::Tensor& input,
                                      const ReduceScatterOptions& options) {
  const int count = checked_count("reduce_scatter", output.numel());
  const MPI_Datatype type = detail::mpi_datatype(input.scalar_type());
  const MPI_Op op = detail::mpi_op(options.op, input.scalar_type());
  const bool average = options.op == ReduceOp::kAvg;
  return launch("reduce_scatter", options.async, options.timeout,
                [this, output, input, count, type, op, average]() mutable {
                  HPCML_MPI_CHECK(
                      MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(), count, type, op, comm_));
                  if (average) output.div_(size_);
                });
}

WorkPtr MpiBackend::do_alltoall(at::Tensor& output, const at::Tensor& input, const AlltoallOptions& options) {
  const int count = checked_count("alltoall", input.numel() / size_);
  const MPI_Datatype type = detail::mpi_datatype(input.scalar_type());
  return launch("alltoall", options.async, options.timeout, [this, output, input, count, type]() mutable {
    HPCML_MPI_CHECK(MPI_Alltoall(input.data_ptr(), count, type, output.data_ptr(), count, type, comm_));
  });
}

WorkPtr MpiBackend::submit(const char* op, std::function<void()> task, std::chrono::milliseconds timeout) {
  // No watchdog entry of its own: the collectives inside `task` arm theirs.
  return thread_->submit(op, comm_name(), resolve(timeout), std::move(task));
}

WorkPtr MpiBackend::do_barrier(const BarrierOptions& options) {
  return launch("barrier", options.async, options.timeout, [this] { HPCML_MPI_CHECK(MPI_Barrier(comm_)); });
}

std::shared_ptr<Backend> MpiBackend::do_split(int color, int key, BackendOptions options) {
  const auto timeout = options_.timeout;
  thread_->drain("split", comm_name(), timeout);
  MPI_Comm sub = MPI_COMM_NULL;
  {
    auto guard = Watchdog::instance().arm("MPI_Comm_split", comm_name(), timeout);
    HPCML_MPI_CHECK(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &sub));
  }
  if (sub == MPI_COMM_NULL) return nullptr;
  auto backend = std::make_shared<MpiBackend>(sub, std::move(options));
  MPI_Comm_free(&sub);  // the backend holds its own duplicate
  return backend;
}

// Rank 0 creates the segment and broadcasts its name; every other rank maps it; once
// all have (the allreduce), rank 0 unlinks the name.
std::shared_ptr<NodeSharedMemory> MpiBackend::do_map_node_shared(size_t bytes, std::string* why) {
  const auto timeout = options_.timeout;
  thread_->drain("map_node_shared", comm_name(), timeout);
  auto guard = Watchdog::instance().arm("map_node_shared", comm_name(), timeout);
  MPI_Comm node = MPI_COMM_NULL;
  HPCML_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
  int node_size = 0;
  MPI_Comm_size(node, &node_size);
  MPI_Comm_free(&node);
  // Symmetric: either every rank sees all size_ ranks on its node, or none does.
  if (node_size != size_) {
    if (why != nullptr) *why = "the " + std::to_string(size_) + " ranks span more than one node";
    return nullptr;
  }
  char name[64] = {};
  std::string error;
  void* base = nullptr;
  if (rank_ == 0) base = detail::create_shared(name, bytes, &error);
  HPCML_MPI_CHECK(MPI_Bcast(name, sizeof name, MPI_CHAR, 0, comm_));
  if (rank_ != 0 && name[0] != '\0') base = detail::open_shared(name, bytes, &error);
  int ok = base != nullptr ? 1 : 0;
  HPCML_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm_));
  if (rank_ == 0 && name[0] != '\0') shm_unlink(name);
  auto memory = base != nullptr ? std::make_shared<NodeSharedMemory>(base, bytes) : nullptr;
  if (ok == 0) {
    if (why != nullptr) *why = error.empty() ? "another rank could not map the shared segment" : error;
    return nullptr;
  }
  return memory;
}

// ---- Point-to-point ----------------------------------------------------------

namespace {

constexpr int kSinkChunk = 4096;

// A matched message (MPI_Improbe) until MPI_Mrecv consumes it; one dropped unreceived
// is received into a sink, so it never blocks its sender.
struct Matched {
  MPI_Message message = MPI_MESSAGE_NULL;
  int count = 0;
  bool received = false;
  ~Matched();
};

// MPI_Mrecv keeping the first `keep` bytes in `data` and reading every later 4 KiB
// chunk onto the same scratch bytes (a zero-extent datatype), so memory stays bounded
// whatever the sender sent. (A short receive buffer is no option: Open MPI 4.1's
// single-copy shared-memory path writes past the buffer of a truncated receive.)
void mrecv_keep(MPI_Message& message, int count, char* data, size_t keep) {
  if (static_cast<size_t>(count) <= keep) {
    HPCML_MPI_CHECK(MPI_Mrecv(data, count, MPI_BYTE, &message, MPI_STATUS_IGNORE));
    return;
  }
  std::vector<char> scratch(keep + kSinkChunk);
  MPI_Datatype chunk, sink, whole;
  HPCML_MPI_CHECK(MPI_Type_contiguous(kSinkChunk, MPI_BYTE, &chunk));
  HPCML_MPI_CHECK(MPI_Type_create_resized(chunk, 0, 0, &sink));
  const int chunks = static_cast<int>((static_cast<size_t>(count) - keep + kSinkChunk - 1) / kSinkChunk);
  int lengths[2] = {static_cast<int>(keep), chunks};
  MPI_Aint displacements[2] = {0, static_cast<MPI_Aint>(keep)};
  MPI_Datatype types[2] = {MPI_BYTE, sink};
  HPCML_MPI_CHECK(MPI_Type_create_struct(2, lengths, displacements, types, &whole));
  HPCML_MPI_CHECK(MPI_Type_commit(&whole));
  const int rc = MPI_Mrecv(scratch.data(), 1, whole, &message, MPI_STATUS_IGNORE);
  MPI_Type_free(&whole);
  MPI_Type_free(&sink);
  MPI_Type_free(&chunk);
  HPCML_MPI_CHECK(rc);
  if (keep > 0) std::memcpy(data, scratch.data(), keep);
}

Matched::~Matched() {
  if (received || message == MPI_MESSAGE_NULL || !mpi_initialized()) return;
  try {
    mrecv_keep(message, count, nullptr, 0);
  } catch (...) {  // a destructor: nothing to report to
  }
}

}  // namespace

// An async send's Work: one allocation per send (serving sends one per request), an
// MPI_Test per poll; the deadline line is built only when a wait() misses it. Dropped
// unfinished, it hands its request (and the copied buffer, if any) to Detached.
class MpiBackend::SendWork final : public Work {
 public:
  SendWork(std::shared_ptr<MpiBackend> backend, std::shared_ptr<const void> keep, int dest, int tag,
           std::chrono::milliseconds timeout)
      : backend_(std::move(backend)), keep_(std::move(keep)), dest_(dest), tag_(tag), timeout_(timeout) {}
  ~SendWork() override {
    if (!done_ && request_ != MPI_REQUEST_NULL) backend_->detached_->add(request_, std::move(keep_));
  }
  void wait(std::chrono::milliseconds timeout) override {
    if (timeout.count() < 0) timeout = timeout_;
    const auto start = std::chrono::steady_clock::now();
    detail::Backoff backoff;
    while (!step()) {
      const auto waited = std::chrono::steady_clock::now() - start;
      if (waited > timeout) deadline_expired("send", backend_->p2p_object("send", dest_, tag_), waited, timeout);
      backoff.pause();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_) std::rethrow_exception(error_);
  }
  bool is_completed() override { return step(); }
  std::exception_ptr exception() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

  MPI_Request request_ = MPI_REQUEST_NULL;

 private:
  bool step() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (done_) return true;
    try {
      int flag = 0;
      HPCML_MPI_CHECK(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
      done_ = flag != 0;
    } catch (...) {
      error_ = std::current_exception();
      done_ = true;
    }
    return done_;
  }

  std::shared_ptr<MpiBackend> backend_;
  std::shared_ptr<const void> keep_;
  int dest_, tag_;
  std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  bool done_ = false;
  std::exception_ptr error_;
};

size_t MpiBackend::transport_max_bytes() const { return static_cast<size_t>(INT_MAX); }

WorkPtr MpiBackend::do_send(const void* data, size_t bytes, std::shared_ptr<const void> keep, int dest, int tag,
                            const P2POptions& options) {
  const auto timeout = resolve(options.timeout);
  const int count = static_cast<int>(bytes);
  if (!options.async) {
    auto guard = Watchdog::instance().arm("send", p2p_object("send", dest, tag), timeout);
    HPCML_MPI_CHECK(MPI_Send(data, count, MPI_BYTE, dest, tag, comm_));
    return detail::completed_work();
  }
  detached_->sweep();
  auto work = std::make_shared<SendWork>(std::static_pointer_cast<MpiBackend>(shared_from_this()), std::move(keep),
                                         dest, tag, timeout);
  HPCML_MPI_CHECK(MPI_Isend(data, count, MPI_BYTE, dest, tag, comm_, &work->request_));
  return work;
}

std::optional<Message> MpiBackend::do_improbe(int source, int tag) {
  int flag = 0;
  MPI_Message message = MPI_MESSAGE_NULL;
  MPI_Status status;
  HPCML_MPI_CHECK(MPI_Improbe(source == kAnySource ? MPI_ANY_SOURCE : source, tag == kAnyTag ? MPI_ANY_TAG : tag,
                              comm_, &flag, &message, &status));
  if (!flag) return std::nullopt;
  auto matched = std::make_shared<Matched>();
  matched->message = message;
  HPCML_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &matched->count));
  return Message{status.MPI_SOURCE, status.MPI_TAG, static_cast<size_t>(matched->count), matched};
}

void MpiBackend::do_recv(Message& message, void* data, size_t keep) {
  auto* matched = static_cast<Matched*>(message.handle.get());
  matched->received = true;  // even on failure: a failed Mrecv has consumed or poisoned it
  mrecv_keep(matched->message, matched->count, static_cast<char*>(data), keep);
}

MPI_Comm mpi_comm_of(const Backend& backend) {
  const auto* mpi = dynamic_cast<const MpiBackend*>(&backend);
  return mpi == nullptr ? MPI_COMM_NULL : mpi->comm();
}

}  // namespace hpcml::collectives
