/// @file
/// The wire protocol of `hpcml serve`: requests and replies as MPI point-to-point
/// messages of bytes on a communicator duplicated for serving.
///
/// Request (client -> server, tag kTagRequest), one message:
///   magic u32 | version u32 | request id u64 | model name | input count u32 |
///   per input: name | dtype i32 | ndim u32 | dims i64[ndim] | ragged offsets count u32 |
///              offsets i64[count] | payload offset u64 | payload bytes u64
///   then the payloads, each 8-byte aligned, in input order.
/// Reply (server -> client, tag kTagReply): magic | version | request id | status i32 |
///   server timing (6 x f64, 2 x i32) | status 0: one output tensor (dtype, shape, bytes) |
///   status 1: a one-line error message.
/// Done (client -> server, tag kTagDone, 0 bytes): this client sends nothing more.
/// Heartbeat (either way, tag kTagHeartbeat, 0 bytes): the sender is alive.
///
/// Strings are u32 length + bytes. Both ends run the same build on the same
/// architecture (one MPI job), so integers are in native byte order.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace hpcml::launch::serve {

inline constexpr int kTagRequest = 7101;
inline constexpr int kTagReply = 7102;
inline constexpr int kTagDone = 7103;
inline constexpr int kTagHeartbeat = 7104;
inline constexpr std::uint32_t kProtocolVersion = 1;
/// Bytes at the start of every request that hold magic, version and request id.
inline constexpr size_t kRequestPrefixBytes = 16;
/// Default heartbeat period, both ways (ServerOptions, ClientOptions, serve.heartbeat_s).
inline constexpr double kDefaultHeartbeatS = 1.0;

/// A request the server refuses (malformed, unknown model, wrong input): its
/// message goes back to that client as the error reply.
class RequestError : public Error {
  using Error::Error;
};

/// Element types on the wire.
enum class DType : std::int32_t { kFloat32 = 0, kFloat64 = 1, kInt32 = 2, kInt64 = 3, kUInt8 = 4, kBool = 5 };
/// "float32", ...
const char* dtype_name(DType dtype);
/// From "float32", "float64", "int32", "int64", "uint8", "bool"; throws ConfigError naming `what`.
DType parse_dtype(const std::string& text, const std::string& what);
/// The one mapping between wire dtypes and LibTorch's (exhaustive; throws RequestError for others).
c10::ScalarType to_scalar_type(DType dtype);
DType from_scalar_type(c10::ScalarType type, const std::string& what);

/// One named input of a request. `offsets` (int64, rows + 1) is set for a ragged
/// input: row i owns values[offsets[i]:offsets[i+1]] (items of variable count).
struct Input {
  at::Tensor values;
  at::Tensor offsets;  ///< undefined for a fixed input (values is (rows, ...))
  bool ragged() const { return offsets.defined(); }
  /// Rows (events, images...) this input carries.
  std::int64_t rows() const;
};
using NamedInputs = std::map<std::string, Input>;

/// Fixed inputs, each (rows, ...).
NamedInputs fixed_inputs(const std::map<std::string, at::Tensor>& inputs);

/// Server-side timing of one request, sent back in its reply (microseconds).
struct ServerTiming {
  double queue_us = 0;     ///< enqueue -> its batch starts
  double input_us = 0;     ///< batch assembly (this request's share)
  double infer_us = 0;     ///< model forward of its batch (whole batch)
  double output_us = 0;    ///< slicing and packing its reply
  double overhead_us = 0;  ///< receive + unpack + assembly share + scatter + reply: the server's own cost
  double compute_share_us = 0;  ///< (input + infer + output of the batch) / requests in the batch
  std::int32_t batch_rows = 0;
  std::int32_t batch_requests = 0;
};

/// A parsed request; its tensors view `buffer` (no copy), which it keeps alive.
struct Request {
  std::uint64_t id = 0;
  std::string model;
  NamedInputs inputs;
  std::int64_t rows = 0;
  std::shared_ptr<std::vector<char>> buffer;
};

/// Packs a request (copies the tensors' bytes; they may be non-contiguous).
/// Throws RequestError for a dtype the protocol does not carry.
std::vector<char> pack_request(std::uint64_t id, const std::string& model, const NamedInputs& inputs);

/// The request id of a message's first kRequestPrefixBytes, or 0 when they do not
/// start a request (bad magic or version).
std::uint64_t peek_request_id(const char* data, size_t size);

/// Parses a whole request message. Throws RequestError (one line) when it is
/// malformed: truncated, bad lengths, offsets out of range, rows disagreeing.
Request parse_request(std::shared_ptr<std::vector<char>> buffer);

std::vector<char> pack_reply(std::uint64_t id, const ServerTiming& timing, const at::Tensor& output);
std::vector<char> pack_error_reply(std::uint64_t id, const std::string& message);

struct Reply {
  std::uint64_t id = 0;
  bool ok = false;
  std::string error;
  ServerTiming timing;
  at::Tensor output;  ///< owns its memory
};
/// Parses a reply (copies the output). Throws CommError when malformed.
Reply parse_reply(const char* data, size_t size);

}  // namespace hpcml::launch::serve
