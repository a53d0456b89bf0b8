#include "collectives/gradient_reducer.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <ATen/Parallel.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <functional>
#include <string>

#include "collectives/detail/node_reduction.hpp"
#include "core/error.hpp"
#include "core/trace.hpp"
#include "core/watchdog.hpp"

namespace hpcml::collectives {

const char* to_string(GradCompression compression) {
  switch (compression) {
    case GradCompression::kNone: return "none";
    case GradCompression::kBf16: return "bf16";
    case GradCompression::kFp16: return "fp16";
  }
  return "unknown";
}

const char* to_string(Transport transport) {
  switch (transport) {
    case Transport::kAuto: return "auto";
    case Transport::kMpi: return "mpi";
    case Transport::kSharedMemory: return "shm";
  }
  return "unknown";
}

const char* to_string(Overlap overlap) {
  switch (overlap) {
    case Overlap::kAuto: return "auto";
    case Overlap::kAlways: return "always";
    case Overlap::kNever: return "never";
  }
  return "unknown";
}

namespace {

template <typename E, size_t K>
E parse_named(const std::string& name, const std::array<E, K>& all, const std::string& what) {
  std::string names;
  for (E e : all) {
    if (name == to_string(e)) return e;
    names += std::string(names.empty() ? "" : ", ") + to_string(e);
  }
  HPCML_THROW(ConfigError, what, ": expected one of [", names, "], found '", name, "'");
}

// Whether this rank has a core beyond its intra-op threads (collective over `backend`).
// Ranks on one host with the same affinity set share its cores: unbound ranks (mpirun
// --bind-to none) each see the whole node, and counting it as their own would find a
// "spare" core the other ranks compute on (docs/scaling.md, "Bind the ranks").
bool spare_core(Backend& backend) {
  cpu_set_t set;
  CPU_ZERO(&set);
  const bool known = sched_getaffinity(0, sizeof set, &set) == 0;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  size_t h = std::hash<std::string>{}(host);
  for (int c = 0; known && c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) h = h * 1000003u ^ static_cast<size_t>(c + 1);
  }
  const at::Tensor mine = at::tensor({static_cast<int64_t>(h & 0x7fffffffffffffffULL)}, at::kLong);
  int sharing = 0;
  for (const auto& t : backend.allgather_varying(mine)) sharing += t.item<int64_t>() == mine.item<int64_t>();
  return known && CPU_COUNT(&set) > at::get_num_threads() * std::max(1, sharing);
}

// A digest of names, shapes and dtypes, to find ranks whose models differ.
int64_t layout_digest(const std::vector<NamedTensor>& tensors) {
  size_t h = tensors.size();
  auto mix = [&h](size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
  for (const auto& [name, t] : tensors) {
    mix(std::hash<std::string>{}(name));
    for (auto d : t.sizes()) mix(static_cast<size_t>(d));
    mix(static_cast<size_t>(t.scalar_type()));
  }
  return static_cast<int64_t>(h & 0x7fffffffffffffffULL);
}

}  // namespace

GradCompression parse_compression(const std::string& name, const std::string& what) {
  return parse_named(name, std::array{GradCompression::kNone, GradCompression::kBf16, GradCompression::kFp16}, what);
}

Overlap parse_overlap(const std::string& name, const std::string& what) {
  return parse_named(name, std::array{Overlap::kAuto, Overlap::kAlways, Overlap::kNever}, what);
}

Transport parse_transport(const std::string& name, const std::string& what) {
  return parse_named(name, std::array{Transport::kAuto, Transport::kSharedMemory, Transport::kMpi}, what);
}

GradientReducer::GradientReducer(std::vector<NamedTensor> parameters, std::vector<NamedTensor> buffers,
                                 BackendPtr backend, ReducerOptions options)
    : buffers_(std::move(buffers)), backend_(std::move(backend)), options_(options) {
  HPCML_CHECK(backend_ != nullptr, "gradient reducer: no backend");
  const std::string who = "[rank " + std::to_string(backend_->rank()) + "/" + std::to_string(backend_->size()) +
                          "] gradient reducer";
  HPCML_CHECK_AS(ConfigError, options_.first_bucket_bytes > 0 && options_.bucket_cap_bytes > 0, who,
                 ": bucket sizes must be > 0, found first ", options_.first_bucket_bytes, " and cap ",
                 options_.bucket_cap_bytes);
  bool first_param = true;
  for (auto& [name, t] : parameters) {
    HPCML_CHECK(t.defined() && t.scalar_type() == at::kFloat && t.is_contiguous(), who, ": parameter '", name,
                "' must be a contiguous float32 tensor; found ",
                t.defined() ? std::string(c10::toString(t.scalar_type())) + " on " + t.device().str() : "undefined");
    if (first_param) device_ = t.device();
    first_param = false;
    HPCML_CHECK(t.device() == device_, who, ": parameter '", name, "' is on ", t.device().str(),
                ", expected every parameter on ", device_.str(), " (the first parameter's device)");
    if (!t.requires_grad()) continue;  // frozen: not reduced
    Param param;
    param.name = name;
    param.tensor = t;
    params_.push_back(std::move(param));
  }
  HPCML_CHECK(!params_.empty(), who, ": the model has no parameters that require grad");

  // Every rank must hold the same model, or the buckets would not line up.
  std::vector<NamedTensor> layout;
  for (const auto& p : params_) layout.emplace_back(p.name, p.tensor);
  at::Tensor digest = at::tensor({layout_digest(layout), -layout_digest(layout)}, at::kLong);
  AllreduceOptions min_op;
  min_op.op = ReduceOp::kMin;
  backend_->allreduce(digest, min_op);
  HPCML_CHECK(digest[0].item<int64_t>() == -digest[1].item<int64_t>(), who,
              ": ranks hold different models (parameter names, shapes or dtypes differ; this rank has ",
              params_.size(), " trainable parameters)");

  // Parameters and buffers start equal everywhere: rank 0's.
  {
    at::NoGradGuard no_grad;
    for (auto& p : params_) backend_->broadcast(p.tensor);
    for (auto& [name, b] : buffers_) backend_->broadcast(b);
  }

  // Buckets, in reverse registration order: the last layers' gradients come first.
  int64_t cap = options_.first_bucket_bytes;
  int64_t filled = 0;
  for (int i = static_cast<int>(params_.size()) - 1; i >= 0; --i) {
    const int64_t bytes = params_[i].tensor.numel() * 4;
    if (buckets_.empty() || (filled > 0 && filled + bytes > cap)) {
      if (!buckets_.empty()) cap = options_.bucket_cap_bytes;
      buckets_.emplace_back();
      filled = 0;
    }
    buckets_.back().params.push_back(i);
    params_[i].bucket = static_cast<int>(buckets_.size()) - 1;
    filled += bytes;
  }
  if (!device_.is_cpu()) {
    // On a GPU the backend (nccl) moves the buckets; shared memory and the 16-bit
    // wires are CPU schemes.
    HPCML_CHECK_AS(ConfigError, options_.transport != Transport::kSharedMemory, who,
                   ": transport shm needs CPU parameters, found them on ", device_.str(), "; use transport auto or mpi");
    HPCML_CHECK_AS(ConfigError, options_.compression == GradCompression::kNone, who, ": compression ",
                   options_.compression == GradCompression::kBf16 ? "bf16" : "fp16", " needs CPU parameters, found them on ",
                   device_.str(), "; use compression none (NCCL reduces float32 on the device)");
    transport_note_ = "parameters on " + device_.str() + ": buckets reduced by backend " + backend_->name();
  } else if (backend_->size() > 1 && options_.transport != Transport::kMpi) {
    set_up_shared_memory();
  }
  for (int b = 0; b < static_cast<int>(buckets_.size()) && !node_; ++b) {
    auto& bucket = buckets_[b];
    int64_t numel = 0;
    for (int i : bucket.params) {
      auto& p = params_[i];
      p.direct = options_.compression == GradCompression::kNone && p.tensor.numel() * 4 >= options_.direct_min_bytes;
      if (!p.direct) numel += p.tensor.numel();
    }
    bucket.flat = at::zeros({numel}, at::TensorOptions().dtype(at::kFloat).device(device_));
    int64_t offset = 0;
    for (int i : bucket.params) {
      auto& p = params_[i];
      if (p.direct) continue;
      p.offset = offset;
      p.view = bucket.flat.narrow(0, offset, p.tensor.numel()).view(p.tensor.sizes());
      offset += p.tensor.numel();
    }
    if (options_.compression != GradCompression::kNone) {
      const int64_t n = backend_->size();
      const int64_t chunk = (numel + n - 1) / n;
      const auto dtype = options_.compression == GradCompression::kBf16 ? at::kBFloat16 : at::kHalf;
      bucket.send = at::zeros({n * chunk}, dtype);
      bucket.recv = at::empty({n * chunk}, dtype);
      bucket.gather = at::empty({n * chunk}, dtype);
      bucket.segment = at::empty({chunk}, at::kFloat);
      for (int i : bucket.params) {
        auto& p = params_[i];
        p.send = bucket.send.narrow(0, p.offset, p.tensor.numel()).view(p.tensor.sizes());
      }
    }
  }

  // One rank: nothing to reduce, and no hooks in the way (plain LibTorch speed).
  if (backend_->size() > 1) {
    for (int i = 0; i < static_cast<int>(params_.size()); ++i) {
      hooks_.push_back(collectives::on_grad_ready(params_[i].tensor, [this, i] { on_grad_ready(i); }));
    }
  }
  overlap_ = options_.overlap == Overlap::kAlways ||
             (options_.overlap == Overlap::kAuto && backend_->size() > 1 && spare_core(*backend_));
  ready_.assign(params_.size(), 0);
  reset_step();
}

GradientReducer::~GradientReducer() {
  hooks_.clear();
  // Never leave a bucket allreduce running on memory that is about to go.
  for (auto& bucket : buckets_) {
    if (bucket.work && !bucket.work->is_completed()) bucket.work->wait();
  }
}

// The segment holds every parameter, bucket after bucket, in bucket order.
void GradientReducer::set_up_shared_memory() {
  const auto wire = options_.compression == GradCompression::kBf16   ? at::kBFloat16
                    : options_.compression == GradCompression::kFp16 ? at::kHalf
                                                                       : at::kFloat;
  std::vector<int64_t> bucket_numel;
  for (const auto& bucket : buckets_) {
    int64_t numel = 0;
    for (int i : bucket.params) numel += params_[i].tensor.numel();
    bucket_numel.push_back(numel);
  }
  const size_t bytes = detail::NodeReduction::bytes_needed(backend_->size(), bucket_numel, wire);
  auto memory = backend_->map_node_shared(bytes, &transport_note_);
  if (memory == nullptr) {
    HPCML_CHECK_AS(ConfigError, options_.transport != Transport::kSharedMemory, "[rank ", backend_->rank(), "/",
                   backend_->size(), "] gradient reducer: transport shm (shared memory) is not available: ",
                   transport_note_, "; use transport auto or mpi");
    transport_note_ = "shared memory not used: " + transport_note_;
    return;
  }
  transport_note_.clear();
  node_ = std::make_unique<detail::NodeReduction>(std::move(memory), backend_->rank(), backend_->size(),
                                                  bucket_numel, wire);
  int64_t offset = 0;
  for (const auto& bucket : buckets_) {
    for (int i : bucket.params) {
      auto& p = params_[i];
      p.slot = node_->slot(offset, p.tensor.numel()).view(p.tensor.sizes());
      p.node_offset = offset;
      offset += p.tensor.numel();
    }
  }
}

std::vector<std::vector<std::string>> GradientReducer::bucket_layout() const {
  std::vector<std::vector<std::string>> layout;
  for (const auto& bucket : buckets_) {
    layout.emplace_back();
    for (int i : bucket.params) layout.back().push_back(params_[i].name);
  }
  return layout;
}

// Undefined gradients let backward hand over its freshly computed tensors (one copy
// into the bucket follows); zeroing the bucket views instead would cost a memset
// plus an in-place add over every gradient.
void GradientReducer::zero_grad() {
  for (auto& p : params_) p.tensor.mutable_grad().reset();
}

void GradientReducer::sync_buffers() {
  if (options_.buffers != BufferPolicy::kBroadcast || backend_->size() == 1) return;
  at::NoGradGuard no_grad;
  for (auto& [name, b] : buffers_) backend_->broadcast(b);
}

void GradientReducer::reset_step() {
  std::fill(ready_.begin(), ready_.end(), 0);
  for (auto& bucket : buckets_) {
    bucket.pending = static_cast<int>(bucket.params.size());
    bucket.launched = false;
    bucket.timing = {};
  }
  next_launch_ = 0;
  scaled_ = false;
  if (node_) node_->begin_step();
}

void GradientReducer::on_grad_ready(int index) {
  if (no_sync_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (ready_[index]) return;  // a second backward before finish(): reduced once, at finish()
  ready_[index] = 1;
  auto& p = params_[index];
  const at::Tensor& grad = p.tensor.grad();
  if (node_) {
    // Into this rank's slot (converted to the wire dtype), unless backward
    // accumulated into the slot itself (no zero_grad since the last step).
    if (!grad.defined()) p.slot.zero_();
    else if (grad.data_ptr() != p.slot.data_ptr()) p.slot.copy_(grad);
  } else if (p.direct) {
    // Reduced where it lies; MPI needs it contiguous.
    if (!grad.is_contiguous()) p.tensor.mutable_grad() = grad.contiguous();
  } else if (p.send.defined()) {
    // Compression: straight into the 16-bit send buffer (one pass, no float32 copy).
    if (grad.defined()) p.send.copy_(grad);
    else p.send.zero_();
  } else if (grad.defined() && !grad.is_same(p.view) && grad.data_ptr() != p.view.data_ptr()) {
    p.view.copy_(grad);
  } else if (!grad.defined()) {
    p.view.zero_();
  }
  auto& bucket = buckets_[p.bucket];
  if (--bucket.pending == 0) {
    bucket.timing.ready_us = trace::now_us();
    if (node_) node_->publish(p.bucket);
    else if (overlap_) launch_ready_buckets();
  }
}

void GradientReducer::launch_ready_buckets() {
  // In index order only: every rank must queue the same allreduces in the same order.
  while (next_launch_ < static_cast<int>(buckets_.size()) && buckets_[next_launch_].pending == 0) {
    launch(next_launch_++);
  }
}

void GradientReducer::launch(int b) {
  auto& bucket = buckets_[b];
  bucket.launched = true;
  const bool divide = !scaled_;
  std::vector<at::Tensor> direct;  // final gradients, taken on this (the backward) thread
  for (int i : bucket.params) {
    if (params_[i].direct) direct.push_back(params_[i].tensor.grad());
  }
  bucket.work = backend_->submit("gradient bucket allreduce", [this, b, divide, direct]() mutable {
    auto& bucket = buckets_[b];
    bucket.timing.start_us = trace::now_us();
    if (options_.compression == GradCompression::kNone) {
      for (auto& grad : direct) {
        backend_->allreduce(grad);
        if (divide) grad.div_(backend_->size());
      }
      if (bucket.flat.numel() > 0) {
        backend_->allreduce(bucket.flat);
        if (divide) bucket.flat.div_(backend_->size());
      }
    } else {
      reduce_compressed(bucket, divide);
    }
    bucket.timing.end_us = trace::now_us();
    trace::record("allreduce bucket " + std::to_string(b), "comm", bucket.timing.start_us, bucket.timing.end_us);
  });
}

// 16-bit on the wire, float32 sums: each rank owns one segment of the bucket. An
// alltoall brings it every rank's 16-bit copy of its segment; it sums them in
// float32 and rounds once; an allgather spreads the rounded segments. Traffic
// equals a 16-bit ring allreduce; no partial sum is ever rounded to 16 bits.
void GradientReducer::reduce_compressed(Bucket& bucket, bool divide) const {
  const int64_t n = backend_->size();
  const int64_t numel = bucket.flat.numel();
  const int64_t chunk = bucket.send.numel() / n;
  // The hooks filled bucket.send with this rank's 16-bit gradients.
  backend_->alltoall(bucket.recv, bucket.send);
  const at::Tensor received = bucket.recv.view({n, chunk});
  bucket.segment.copy_(received[0]);
  for (int64_t r = 1; r < n; ++r) bucket.segment.add_(received[r]);  // widened, summed in float32
  if (divide) bucket.segment.div_(n);
  std::vector<at::Tensor> outputs;
  for (int64_t r = 0; r < n; ++r) outputs.push_back(bucket.gather.narrow(0, r * chunk, chunk));
  at::Tensor& mine = outputs[backend_->rank()];
  mine.copy_(bucket.segment);  // the one rounding to 16 bits
  backend_->allgather(outputs, mine);  // in place
  bucket.flat.copy_(bucket.gather.narrow(0, 0, numel));
}

void GradientReducer::backward(const at::Tensor& loss) {
  HPCML_CHECK(loss.numel() == 1, "gradient reducer: backward() needs a scalar loss; found shape ", loss.sizes());
  const int64_t start = trace::now_us();
  if (backend_->size() > 1) {
    // d(loss/n) = d(loss)/n: the allreduce's sum is then the average, with no pass
    // over the gradients to divide them.
    scaled_ = true;
    loss.backward(at::full_like(loss, 1.0 / static_cast<double>(backend_->size())));
  } else {
    loss.backward();
  }
  const int64_t end = trace::now_us();
  trace::record("backward", "compute", start, end);
  if (!no_sync_) {
    stats_.backward_start_us = start;
    stats_.backward_end_us = end;
  }
  finish();
}

void GradientReducer::finish() {
  if (no_sync_) return;
  stats_.update_ms = 0;
  if (backend_->size() == 1) {
    if (update_) update_unsynchronised();
    return;
  }
  const int64_t wait_start = trace::now_us();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int i = 0; i < static_cast<int>(params_.size()); ++i) {
      if (ready_[i]) continue;
      auto& p = params_[i];
      if (!options_.allow_unused) {
        HPCML_THROW(Error, "[rank ", backend_->rank(), "/", backend_->size(), "] gradient reducer: parameter '",
                    p.name, "' got no gradient in this step (not used by the forward pass?); every rank must ",
                    "produce a gradient for every parameter, or set allow_unused (train.allow_unused_parameters)");
      }
      // Unused here: contributes zeros, like DDP with find_unused_parameters.
      if (node_) {
        p.slot.zero_();
      } else if (p.direct) {
        p.tensor.mutable_grad() = at::zeros_like(p.tensor);
      } else if (p.send.defined()) {
        p.send.zero_();
      } else {
        p.view.zero_();
      }
      ready_[i] = 1;
      if (--buckets_[p.bucket].pending == 0) {
        buckets_[p.bucket].timing.ready_us = trace::now_us();
        if (node_) node_->publish(p.bucket);
      }
    }
    if (!node_) launch_ready_buckets();
  }
  if (node_) {
    finish_shared_memory();
    if (shared_params_) wait_for_shared_updates();
  } else {
    for (int b = 0; b < static_cast<int>(buckets_.size()); ++b) {
      buckets_[b].work->wait();
      for (int i : buckets_[b].params) {
        auto& p = params_[i];
        if (!p.direct && !p.tensor.grad().is_same(p.view)) p.tensor.mutable_grad() = p.view;
      }
      if (update_) run_update(b, false);  // while later buckets are still on the wire
    }
  }
  const int64_t wait_end = trace::now_us();
  trace::record("gradient wait", "comm", wait_start, wait_end);
  stats_.exposed_wait_ms = static_cast<double>(wait_end - wait_start) / 1000.0 - stats_.update_ms;
  stats_.buckets.clear();
  for (const auto& bucket : buckets_) stats_.buckets.push_back(bucket.timing);
  reset_step();
}

// Sums with the other ranks (this rank takes chunks of every published bucket);
// each finished bucket is delivered at once (deliver_shared_result).
void GradientReducer::finish_shared_memory() {
  const float scale = scaled_ ? 1.0f : 1.0f / static_cast<float>(backend_->size());
  std::vector<detail::NodeReduction::BucketSpan> spans;
  node_->reduce(scale, backend_->comm_name(), backend_->default_timeout(), &spans,
                [this](int b) { deliver_shared_result(b); });
  for (int b = 0; b < static_cast<int>(buckets_.size()); ++b) {
    auto& timing = buckets_[b].timing;
    timing.start_us = spans[b].start_us;
    timing.end_us = spans[b].end_us;
    if (timing.start_us > 0) {
      trace::record("allreduce bucket " + std::to_string(b), "comm", timing.start_us, timing.end_us);
    }
  }
}

// Float32: each gradient becomes a view of its slot, which holds the average. 16-bit:
// the bucket update reads the rounded averages in the shared result area; without
// one they are widened into the gradient backward produced (this rank's own memory,
// still in its cache), or a fresh one where there is none to overwrite.
void GradientReducer::deliver_shared_result(int bucket) {
  const bool shared = node_->shared_result();
  for (int i : buckets_[bucket].params) {
    auto& p = params_[i];
    at::Tensor& grad = p.tensor.mutable_grad();
    if (!shared) {
      if (!grad.defined() || !grad.is_same(p.slot)) grad = p.slot;
      continue;
    }
    if (update_) {
      grad.reset();  // stale local values; the update reads the result area
      continue;
    }
    if (!grad.defined() || !grad.is_contiguous() || grad.scalar_type() != at::kFloat || grad.requires_grad()) {
      grad = at::empty_like(p.tensor, at::MemoryFormat::Contiguous);
    }
    node_->widen_result(p.node_offset, p.tensor.numel(), grad.data_ptr<float>());
  }
  if (update_) run_update(bucket, shared);
}

void GradientReducer::run_update(int bucket, bool shared_result) {
  const int64_t start = trace::now_us();
  averaged_.clear();
  for (int i : buckets_[bucket].params) {
    auto& p = params_[i];
    AveragedGrad g;
    g.index = i;
    g.param = &p.tensor;
    g.end = p.tensor.numel();
    if (shared_params_) {
      HPCML_CHECK(p.tensor.data_ptr() == shared_param_data_[i], "[rank ", backend_->rank(), "/", backend_->size(),
                  "] gradient reducer: parameter '", p.name, "' no longer lives in the node-shared memory the ranks ",
                  "update together (its storage was replaced, e.g. with set_data, after set_bucket_update); load ",
                  "values with copy_ instead");
      // This rank's part: boundaries on 16 floats, so no two ranks write one cache line.
      const int64_t n = p.tensor.numel();
      const int rank = backend_->rank(), size = backend_->size();
      auto part = [n, size](int r) { return r == size ? n : (r * n / size) & ~int64_t{15}; };
      g.begin = part(rank);
      g.end = part(rank + 1);
      if (g.begin == g.end) continue;
    }
    if (shared_result) {
      g.data = node_->result_data(p.node_offset);
      g.dtype = node_->wire();
    } else {
      at::Tensor& grad = p.tensor.mutable_grad();
      if (!grad.defined()) continue;  // one rank, unused parameter
      if (!grad.is_contiguous()) grad = grad.contiguous();  // one rank: as backward left it
      g.data = grad.data_ptr<float>();
    }
    averaged_.push_back(g);
  }
  if (!averaged_.empty()) update_(averaged_);
  const int64_t end = trace::now_us();
  trace::record("optimizer", "compute", start, end);  // the step, on this bucket
  stats_.update_ms += static_cast<double>(end - start) / 1000.0;
}

void GradientReducer::update_unsynchronised() {
  for (int b = 0; b < static_cast<int>(buckets_.size()); ++b) run_update(b, false);
}

std::string GradientReducer::update_placement() const {
  if (!update_) return "after it";
  if (!shared_params_) return "in the reduction";
  return "in the reduction, each rank updating 1/" + std::to_string(backend_->size()) +
         " of the node-shared parameters";
}

void GradientReducer::set_bucket_update(BucketUpdate update, bool share) {
  HPCML_CHECK(shared_params_ == nullptr || (share && update), "gradient reducer: the ranks already share their ",
              "parameters, each updating a part; the bucket update must stay a range update (share_parameters)");
  HPCML_CHECK_AS(ConfigError, !update || device_.is_cpu(), "gradient reducer: the step inside the reduction reads ",
                 "gradients through CPU pointers, but the parameters are on ", device_.str(),
                 "; set optimizer.step_in_reduction: false (bench ddp: --no-step-in-reduction)");
  update_ = std::move(update);
  if (share && update_ && shared_params_ == nullptr) share_parameters();
}

// Rank 0's values go into one node-shared segment (each parameter on a 64-byte
// boundary, after one control line); every rank then points its parameters there.
void GradientReducer::share_parameters() {
  if (node_ == nullptr || backend_->size() < 2) return;
  for (const auto& p : params_) {
    if (p.tensor.scalar_type() != at::kFloat || !p.tensor.is_contiguous() || !p.tensor.device().is_cpu()) return;
  }
  constexpr size_t kAlign = 64;
  std::vector<size_t> offsets;
  size_t bytes = kAlign;  // the control line: updates done, over all steps
  for (const auto& p : params_) {
    offsets.push_back(bytes);
    bytes += (static_cast<size_t>(p.tensor.numel()) * sizeof(float) + kAlign - 1) / kAlign * kAlign;
  }
  std::string why;
  auto memory = backend_->map_node_shared(bytes, &why);
  if (memory == nullptr) {
    transport_note_ += (transport_note_.empty() ? "" : "; ") + ("parameters not shared: " + why);
    return;
  }
  char* base = static_cast<char*>(memory->base());
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> views;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& param = params_[i].tensor;
    views.push_back(at::from_blob(base + offsets[i], param.sizes(), [keep = memory](void*) {},
                                  at::TensorOptions().dtype(at::kFloat)));
    if (backend_->rank() == 0) views.back().copy_(param);
  }
  backend_->barrier()->wait();
  shared_param_data_.clear();
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].tensor.set_data(views[i]);
    shared_param_data_.push_back(views[i].data_ptr());
  }
  shared_params_ = std::move(memory);
}

void GradientReducer::wait_for_shared_updates() {
  auto* done = static_cast<std::atomic<uint64_t>*>(shared_params_->base());
  static_assert(std::atomic<uint64_t>::is_always_lock_free, "cross-process atomics need lock-free words");
  ++shared_updates_;
  done->fetch_add(1, std::memory_order_acq_rel);
  const uint64_t all = shared_updates_ * static_cast<uint64_t>(backend_->size());
  if (done->load(std::memory_order_acquire) >= all) return;
  auto guard = Watchdog::instance().arm("shared parameter update", backend_->comm_name(), backend_->default_timeout());
  for (int idle = 0; done->load(std::memory_order_acquire) < all;) detail::pause_politely(idle);
}

}  // namespace hpcml::collectives
