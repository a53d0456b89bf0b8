// Point-to-point on the Backend: validation, tensor framing, blocking forms over
// the backends' non-blocking primitives (do_send, do_improbe, do_recv).
#include <ATen/ATen.h>

#include <cstring>
#include <sstream>

#include "collectives/backend.hpp"
#include "collectives/detail/poll_work.hpp"
#include "collectives/detail/work_impl.hpp"
#include "core/error.hpp"
#include "core/watchdog.hpp"

namespace hpcml::collectives {

namespace {

using Clock = std::chrono::steady_clock;

// A tensor message: this header, ndim int64 sizes, then the data (contiguous).
struct TensorHeader {
  char magic[4];
  int8_t dtype;
  uint8_t ndim;
  uint16_t zero;
};
static_assert(sizeof(TensorHeader) == 8);
constexpr char kTensorMagic[4] = {'H', 'T', 'N', '1'};
constexpr int kMaxDims = 16;

size_t header_bytes(int64_t ndim) { return sizeof(TensorHeader) + 8 * static_cast<size_t>(ndim); }

std::string peer_name(int peer) { return peer < 0 ? std::string("any rank") : "rank " + std::to_string(peer); }
std::string tag_name(int tag) { return tag < 0 ? std::string("any tag") : "tag " + std::to_string(tag); }

// The dtype and shape a tensor message's header announces; throws naming the peer
// and tag when `bytes` is not a well-formed tensor message.
struct Announced {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  size_t offset;
};

Announced read_header(const char* bytes, size_t size, const std::string& where) {
  TensorHeader h{};
  HPCML_CHECK_AS(CommError, size >= sizeof h, where, ": a message of ", size,
                 " bytes is not a tensor message (shorter than its header); was it sent as bytes?");
  std::memcpy(&h, bytes, sizeof h);
  HPCML_CHECK_AS(CommError, std::memcmp(h.magic, kTensorMagic, 4) == 0 && h.ndim <= kMaxDims, where,
                 ": a message of ", size, " bytes is not a tensor message (no tensor header); was it sent as bytes?");
  Announced a{static_cast<at::ScalarType>(h.dtype), std::vector<int64_t>(h.ndim), header_bytes(h.ndim)};
  HPCML_CHECK_AS(CommError, size >= a.offset, where, ": tensor message of ", size, " bytes is shorter than its header");
  std::memcpy(a.shape.data(), bytes + sizeof h, 8 * a.shape.size());
  HPCML_CHECK_AS(CommError, is_supported(a.dtype), where, ": tensor message has an unknown dtype code ",
                 static_cast<int>(h.dtype));
  int64_t numel = 1;
  for (int64_t d : a.shape) numel *= d;
  const size_t expected = a.offset + static_cast<size_t>(numel) * c10::elementSize(a.dtype);
  HPCML_CHECK_AS(CommError, size == expected, where, ": tensor message announces ", c10::toString(a.dtype), " ",
                 at::IntArrayRef(a.shape), " (", expected, " bytes with header) but carries ", size, " bytes");
  return a;
}

}  // namespace

std::string Backend::p2p_context(const char* op, int peer, int tag) const {
  std::ostringstream out;
  const bool outgoing = std::strcmp(op, "send") == 0;
  out << context(op) << (outgoing ? " to " : " from ") << peer_name(peer) << " " << tag_name(tag);
  return out.str();
}

std::string Backend::p2p_object(const char* op, int peer, int tag) const {
  const bool outgoing = std::strcmp(op, "send") == 0;
  return comm_name() + (outgoing ? ", to " : ", from ") + peer_name(peer) + ", " + tag_name(tag);
}

void Backend::check_peer(const char* op, int peer, bool any_allowed) const {
  if (any_allowed && peer == kAnySource) return;
  HPCML_CHECK_AS(CommError, peer >= 0 && peer < size(), context(op), ": peer rank ", peer,
                 " is not a rank of this communicator (expected 0..", size() - 1,
                 any_allowed ? ", or kAnySource)" : ")");
}

void Backend::check_tag(const char* op, int tag, bool any_allowed) const {
  if (any_allowed && tag == kAnyTag) return;
  HPCML_CHECK_AS(CommError, tag >= 0 && tag <= kMaxTag, context(op), ": tag ", tag, " is out of range (expected 0..",
                 kMaxTag, any_allowed ? ", or kAnyTag)" : ")");
}

size_t Backend::max_message_bytes() const {
  const size_t transport = transport_max_bytes();
  return options_.max_message_bytes == 0 ? transport : std::min(options_.max_message_bytes, transport);
}

WorkPtr Backend::send(const void* data, size_t bytes, int dest, int tag, const P2POptions& options) {
  check_peer("send", dest, false);
  check_tag("send", tag, false);
  HPCML_CHECK_AS(CommError, bytes <= max_message_bytes(), p2p_context("send", dest, tag), ": a message of ", bytes,
                 " bytes exceeds the ", max_message_bytes(), " bytes backend ", name(),
                 " carries in one piece; refused (send it in parts)");
  HPCML_CHECK_AS(CommError, data != nullptr || bytes == 0, p2p_context("send", dest, tag),
                 ": null buffer for ", bytes, " bytes");
  return do_send(data, bytes, nullptr, dest, tag, options);
}

WorkPtr Backend::send(const at::Tensor& tensor, int dest, int tag, const P2POptions& options) {
  check_tensor("send", "tensor", tensor);
  HPCML_CHECK_AS(CommError, tensor.dim() <= kMaxDims, context("send"), ": tensor has ", tensor.dim(),
                 " dimensions; at most ", kMaxDims, " travel in a message");
  const size_t head = header_bytes(tensor.dim());
  const size_t data = static_cast<size_t>(tensor.numel()) * tensor.element_size();
  auto buffer = std::make_shared<std::vector<char>>(head + data);
  TensorHeader h{{kTensorMagic[0], kTensorMagic[1], kTensorMagic[2], kTensorMagic[3]},
                 static_cast<int8_t>(tensor.scalar_type()), static_cast<uint8_t>(tensor.dim()), 0};
  std::memcpy(buffer->data(), &h, sizeof h);
  std::memcpy(buffer->data() + sizeof h, tensor.sizes().data(), 8 * tensor.dim());
  if (data > 0) std::memcpy(buffer->data() + head, tensor.data_ptr(), data);
  check_peer("send", dest, false);
  check_tag("send", tag, false);
  HPCML_CHECK_AS(CommError, buffer->size() <= max_message_bytes(), p2p_context("send", dest, tag), ": tensor ",
                 c10::toString(tensor.scalar_type()), " ", tensor.sizes(), " is a message of ", buffer->size(),
                 " bytes, over the ", max_message_bytes(), " bytes backend ", name(),
                 " carries in one piece; refused (send it in parts)");
  const void* raw = buffer->data();
  const size_t size = buffer->size();
  return do_send(raw, size, std::move(buffer), dest, tag, options);
}

std::optional<Message> Backend::improbe(int source, int tag) {
  check_peer("probe", source, true);
  check_tag("probe", tag, true);
  return do_improbe(source, tag);
}

Message Backend::probe(int source, int tag, std::chrono::milliseconds timeout) {
  check_peer("probe", source, true);
  check_tag("probe", tag, true);
  return wait_for_message("probe", source, tag, timeout);
}

Message Backend::wait_for_message(const char* op, int source, int tag, std::chrono::milliseconds timeout) {
  timeout = resolve(timeout);
  const auto start = Clock::now();
  detail::Backoff backoff;
  while (true) {
    if (auto message = do_improbe(source, tag)) return std::move(*message);
    if (Clock::now() - start > timeout) {
      deadline_expired(op, p2p_object(op, source, tag), Clock::now() - start, timeout);
    }
    backoff.pause();
  }
}

size_t Backend::recv(Message& message, void* data, size_t capacity) {
  HPCML_CHECK_AS(CommError, static_cast<bool>(message), context("recv"),
                 ": the message was already received (a probed Message is consumed by one recv)");
  if (message.bytes > capacity) {
    const size_t bytes = message.bytes;
    do_recv(message, nullptr, 0);  // consume it, so it does not block the sender or a later probe
    message.handle.reset();
    HPCML_THROW(CommError, p2p_context("recv", message.source, message.tag), ": a message of ", bytes,
                " bytes does not fit the receive buffer of ", capacity, " bytes; it was received and dropped");
  }
  do_recv(message, data, message.bytes);
  message.handle.reset();
  return message.bytes;
}

std::vector<char> Backend::recv_bytes(Message& message) {
  std::vector<char> bytes(message.bytes);
  recv(message, bytes.data(), bytes.size());
  return bytes;
}

size_t Backend::recv_prefix(Message& message, void* data, size_t prefix) {
  HPCML_CHECK_AS(CommError, static_cast<bool>(message), context("recv"),
                 ": the message was already received (a probed Message is consumed by one recv)");
  const size_t kept = std::min(prefix, message.bytes);
  do_recv(message, data, kept);
  message.handle.reset();
  return kept;
}

at::Tensor Backend::recv_tensor(Message& message) {
  const int source = message.source, tag = message.tag;
  const std::vector<char> bytes = recv_bytes(message);
  const Announced a = read_header(bytes.data(), bytes.size(), p2p_context("recv", source, tag));
  at::Tensor out = at::empty(a.shape, at::TensorOptions().dtype(a.dtype));
  if (out.numel() > 0) std::memcpy(out.data_ptr(), bytes.data() + a.offset, bytes.size() - a.offset);
  return out;
}

namespace {

// Copies a received tensor message into `out` after checking dtype and shape.
void unpack_into(const std::vector<char>& bytes, at::Tensor& out, const std::string& where) {
  const Announced a = read_header(bytes.data(), bytes.size(), where);
  HPCML_CHECK_AS(CommError, a.dtype == out.scalar_type() && at::IntArrayRef(a.shape) == out.sizes(), where,
                 ": the message holds ", c10::toString(a.dtype), " ", at::IntArrayRef(a.shape),
                 ", the receive tensor is ", c10::toString(out.scalar_type()), " ", out.sizes());
  if (out.numel() > 0) std::memcpy(out.data_ptr(), bytes.data() + a.offset, bytes.size() - a.offset);
}

}  // namespace

WorkPtr Backend::receive_with(int source, int tag, const P2POptions& options, std::function<void(Message&)> take) {
  check_peer("recv", source, true);
  check_tag("recv", tag, true);
  if (!options.async) {
    Message m = wait_for_message("recv", source, tag, options.timeout);
    take(m);
    return detail::completed_work();
  }
  auto self = shared_from_this();
  return std::make_shared<detail::PollWork>("recv", p2p_object("recv", source, tag), resolve(options.timeout),
                                            [self, source, tag, take = std::move(take)]() {
                                              auto m = self->do_improbe(source, tag);
                                              if (!m) return false;
                                              take(*m);
                                              return true;
                                            });
}

WorkPtr Backend::recv(void* data, size_t capacity, int source, int tag, Message* status, const P2POptions& options) {
  return receive_with(source, tag, options, [this, data, capacity, status](Message& m) {
    if (status != nullptr) *status = Message{m.source, m.tag, m.bytes, nullptr};
    recv(m, data, capacity);
  });
}

WorkPtr Backend::recv(at::Tensor& out, int source, int tag, const P2POptions& options) {
  check_tensor("recv", "tensor", out);
  return receive_with(source, tag, options, [this, out](Message& m) mutable {
    unpack_into(recv_bytes(m), out, p2p_context("recv", m.source, m.tag));
  });
}

WorkPtr Backend::do_send(const void*, size_t, std::shared_ptr<const void>, int, int, const P2POptions&) {
  unsupported("send");
}
std::optional<Message> Backend::do_improbe(int, int) { unsupported("probe"); }
void Backend::do_recv(Message&, void*, size_t) { unsupported("recv"); }

}  // namespace hpcml::collectives
