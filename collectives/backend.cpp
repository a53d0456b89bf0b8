#include "collectives/backend.hpp"

#include <ATen/ATen.h>

#include <cstring>
#include <sstream>

#include "collectives/detail/work_impl.hpp"
#include "core/error.hpp"

namespace hpcml::collectives {

namespace {
std::string dtype_list() {
  std::string out;
  for (auto dtype : supported_dtypes()) out += (out.empty() ? "" : ", ") + std::string(c10::toString(dtype));
  return out;
}
}  // namespace

std::string Backend::context(const char* op) const {
  std::ostringstream out;
  out << "[rank " << rank() << "/" << size() << "] " << op << " on communicator '" << comm_name() << "' (backend "
      << name() << ")";
  return out.str();
}

std::string Backend::rank_label() const {
  return "[rank " + std::to_string(rank()) + "/" + std::to_string(size()) +
         (comm_name() == "world" ? std::string() : " of " + comm_name()) + "]";
}

void Backend::unsupported(const char* op) const {
  HPCML_THROW(CommError, "backend ", name(), " does not support ", op);
}

void Backend::check_tensor(const char* op, const char* what, const at::Tensor& tensor) const {
  HPCML_CHECK_AS(CommError, tensor.defined(), context(op), ": ", what, " is an undefined tensor");
  HPCML_CHECK_AS(CommError, accepts_device(tensor.device()), context(op), ": ", what, " is on ",
                 tensor.device().str(), "; backend ", name(), " takes ", accepted_devices());
  HPCML_CHECK_AS(CommError, is_supported(tensor.scalar_type()), context(op), ": ", what, " has dtype ",
                 c10::toString(tensor.scalar_type()), "; backend ", name(), " supports ", dtype_list());
  HPCML_CHECK_AS(CommError, tensor.is_contiguous(), context(op), ": ", what, " (shape ", tensor.sizes(),
                 ") is not contiguous; call .contiguous() first");
}

WorkPtr Backend::allreduce(at::Tensor& tensor, const AllreduceOptions& options) {
  check_tensor("allreduce", "tensor", tensor);
  HPCML_CHECK_AS(CommError, is_op_defined(options.op, tensor.scalar_type()), context("allreduce"), ": op ",
                 to_string(options.op), " is not defined for integer dtype ", c10::toString(tensor.scalar_type()),
                 " (it would truncate); use sum and divide, or a floating dtype");
  return do_allreduce(tensor, options);
}

WorkPtr Backend::broadcast(at::Tensor& tensor, const BroadcastOptions& options) {
  check_tensor("broadcast", "tensor", tensor);
  HPCML_CHECK_AS(CommError, options.root >= 0 && options.root < size(), context("broadcast"), ": root ",
                 options.root, " is not a rank of this communicator (expected 0..", size() - 1, ")");
  return do_broadcast(tensor, options);
}

WorkPtr Backend::allgather(std::vector<at::Tensor>& outputs, const at::Tensor& input,
                           const AllgatherOptions& options) {
  check_tensor("allgather", "input", input);
  HPCML_CHECK_AS(CommError, static_cast<int>(outputs.size()) == size(), context("allgather"), ": expected ",
                 size(), " output tensors (one per rank), found ", outputs.size());
  for (size_t r = 0; r < outputs.size(); ++r) {
    const std::string what = "outputs[" + std::to_string(r) + "]";
    check_tensor("allgather", what.c_str(), outputs[r]);
    HPCML_CHECK_AS(CommError, outputs[r].scalar_type() == input.scalar_type(), context("allgather"), ": ", what,
                   " has dtype ", c10::toString(outputs[r].scalar_type()), ", expected the input's ",
                   c10::toString(input.scalar_type()));
  }
  HPCML_CHECK_AS(CommError, outputs[rank()].numel() == input.numel(), context("allgather"), ": outputs[", rank(),
                 "] has ", outputs[rank()].numel(), " elements, expected this rank's input count ", input.numel());
  return do_allgather(outputs, input, options);
}

WorkPtr Backend::reduce_scatter(at::Tensor& output, const at::Tensor& input, const ReduceScatterOptions& options) {
  check_tensor("reduce_scatter", "input", input);
  check_tensor("reduce_scatter", "output", output);
  HPCML_CHECK_AS(CommError, output.scalar_type() == input.scalar_type(), context("reduce_scatter"),
                 ": output has dtype ", c10::toString(output.scalar_type()), ", expected the input's ",
                 c10::toString(input.scalar_type()));
  HPCML_CHECK_AS(CommError, input.numel() == output.numel() * size(), context("reduce_scatter"), ": input has ",
                 input.numel(), " elements, expected size() * output.numel() = ", output.numel() * size());
  HPCML_CHECK_AS(CommError, is_op_defined(options.op, input.scalar_type()), context("reduce_scatter"), ": op ",
                 to_string(options.op), " is not defined for integer dtype ", c10::toString(input.scalar_type()),
                 " (it would truncate)");
  return do_reduce_scatter(output, input, options);
}

WorkPtr Backend::barrier(const BarrierOptions& options) { return do_barrier(options); }

WorkPtr Backend::alltoall(at::Tensor& output, const at::Tensor& input, const AlltoallOptions& options) {
  check_tensor("alltoall", "input", input);
  check_tensor("alltoall", "output", output);
  HPCML_CHECK_AS(CommError, output.scalar_type() == input.scalar_type(), context("alltoall"), ": output has dtype ",
                 c10::toString(output.scalar_type()), ", expected the input's ", c10::toString(input.scalar_type()));
  HPCML_CHECK_AS(CommError, input.numel() == output.numel() && input.numel() % size() == 0, context("alltoall"),
                 ": input and output need the same element count, divisible by size() = ", size(), "; found ",
                 input.numel(), " and ", output.numel());
  return do_alltoall(output, input, options);
}

WorkPtr Backend::submit(const char*, std::function<void()> task, std::chrono::milliseconds) {
  task();
  return detail::completed_work();
}

std::vector<at::Tensor> Backend::allgather_varying(const at::Tensor& input, const AllgatherOptions& options) {
  HPCML_CHECK_AS(CommError, input.dim() >= 1, context("allgather_varying"), ": input must have at least one dimension");
  AllgatherOptions sync = options;
  sync.async = false;
  // Each rank's leading size; the trailing shape must agree on all ranks.
  at::Tensor my_shape = at::tensor(input.sizes().vec(), at::kLong);
  std::vector<at::Tensor> shapes;
  for (int r = 0; r < size(); ++r) shapes.push_back(at::empty_like(my_shape));
  allgather(shapes, my_shape, sync)->wait();
  std::vector<at::Tensor> outputs;
  for (int r = 0; r < size(); ++r) {
    auto shape = std::vector<int64_t>(shapes[r].data_ptr<int64_t>(), shapes[r].data_ptr<int64_t>() + shapes[r].numel());
    HPCML_CHECK_AS(CommError,
                   shape.size() == static_cast<size_t>(input.dim()) &&
                       std::equal(shape.begin() + 1, shape.end(), input.sizes().begin() + 1),
                   context("allgather_varying"), ": rank ", r, " has shape ", at::IntArrayRef(shape),
                   ", this rank has ", input.sizes(), "; only the first dimension may differ");
    outputs.push_back(at::empty(shape, input.options()));
  }
  allgather(outputs, input, sync)->wait();
  return outputs;
}

std::string Backend::broadcast_string(const std::string& text, int root) {
  BroadcastOptions from;
  from.root = root;
  at::Tensor size = at::tensor({static_cast<int64_t>(rank() == root ? text.size() : 0)}, at::kLong);
  broadcast(size, from);
  at::Tensor bytes = at::zeros({size.item<int64_t>()}, at::kByte);
  if (rank() == root && !text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  broadcast(bytes, from);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

std::shared_ptr<Backend> Backend::split(int color, int key, const std::string& name) {
  BackendOptions options = options_;
  options.name = comm_name() + "/" + name;
  return do_split(color, key, std::move(options));
}

std::shared_ptr<NodeSharedMemory> Backend::map_node_shared(size_t bytes, std::string* why) {
  return do_map_node_shared(bytes, why);
}

std::shared_ptr<NodeSharedMemory> Backend::do_map_node_shared(size_t, std::string* why) {
  if (why != nullptr) *why = "backend " + name() + " has no node-shared memory";
  return nullptr;
}

WorkPtr Backend::do_allreduce(at::Tensor&, const AllreduceOptions&) { unsupported("allreduce"); }
WorkPtr Backend::do_broadcast(at::Tensor&, const BroadcastOptions&) { unsupported("broadcast"); }
WorkPtr Backend::do_allgather(std::vector<at::Tensor>&, const at::Tensor&, const AllgatherOptions&) {
  unsupported("allgather");
}
WorkPtr Backend::do_reduce_scatter(at::Tensor&, const at::Tensor&, const ReduceScatterOptions&) {
  unsupported("reduce_scatter");
}
WorkPtr Backend::do_barrier(const BarrierOptions&) { unsupported("barrier"); }
WorkPtr Backend::do_alltoall(at::Tensor&, const at::Tensor&, const AlltoallOptions&) { unsupported("alltoall"); }
std::shared_ptr<Backend> Backend::do_split(int, int, BackendOptions) { unsupported("split"); }

}  // namespace hpcml::collectives
