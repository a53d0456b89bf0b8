#include "launch/serve/protocol.hpp"

#include <ATen/ATen.h>

#include <cstring>

namespace hpcml::launch::serve {

namespace {

constexpr std::uint32_t kMagic = 0x52535048;  // "HPSR"
constexpr std::uint32_t kMaxName = 4096;
constexpr std::uint32_t kMaxDims = 16;

class Out {
 public:
  explicit Out(std::vector<char>& bytes) : bytes_(bytes) {}
  template <typename T>
  void put(T value) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &value, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  void put_bytes(const void* data, size_t n) {
    const auto* p = static_cast<const char*>(data);
    bytes_.insert(bytes_.end(), p, p + n);
  }
  void align8() { bytes_.resize((bytes_.size() + 7) & ~size_t{7}); }
  size_t size() const { return bytes_.size(); }
  char* data() { return bytes_.data(); }

 private:
  std::vector<char>& bytes_;
};

// Bounds-checked reads; every failure names the field. E is the error type thrown.
template <typename E>
class In {
 public:
  In(const char* data, size_t size, const char* what) : data_(data), size_(size), what_(what) {}
  template <typename T>
  T get(const char* field) {
    need(sizeof(T), field);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string get_string(const char* field) {
    const auto n = get<std::uint32_t>(field);
    if (n > kMaxName) HPCML_THROW(E, what_, ": ", field, " is ", n, " bytes long; at most ", kMaxName, " accepted");
    need(n, field);
    std::string s(data_ + pos_, n);
    pos_ += n;
    return s;
  }
  void need(size_t n, const char* field) const {
    if (n > size_ - pos_)
      HPCML_THROW(E, what_, " is truncated: ", field, " needs ", n, " bytes at offset ", pos_, ", the message has ",
                  size_, " bytes");
  }
  size_t pos() const { return pos_; }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  const char* what_;
};

void put_prefix(Out& out, std::uint64_t id) {
  out.put<std::uint32_t>(kMagic);
  out.put<std::uint32_t>(kProtocolVersion);
  out.put<std::uint64_t>(id);
}

int64_t checked_bytes(int64_t numel, c10::ScalarType type) { return numel * static_cast<int64_t>(c10::elementSize(type)); }

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUInt8:
      return "uint8";
    case DType::kBool:
      return "bool";
  }
  return "unknown";
}

DType parse_dtype(const std::string& text, const std::string& what) {
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kInt32, DType::kInt64, DType::kUInt8, DType::kBool})
    if (text == dtype_name(d)) return d;
  HPCML_THROW(ConfigError, what, ": expected a dtype in [float32, float64, int32, int64, uint8, bool], found '", text,
              "'");
}

c10::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return c10::kFloat;
    case DType::kFloat64:
      return c10::kDouble;
    case DType::kInt32:
      return c10::kInt;
    case DType::kInt64:
      return c10::kLong;
    case DType::kUInt8:
      return c10::kByte;
    case DType::kBool:
      return c10::kBool;
  }
  HPCML_THROW(RequestError, "dtype code ", static_cast<int>(dtype), " is not one the protocol carries (0-5)");
}

DType from_scalar_type(c10::ScalarType type, const std::string& what) {
  switch (type) {
    case c10::kFloat:
      return DType::kFloat32;
    case c10::kDouble:
      return DType::kFloat64;
    case c10::kInt:
      return DType::kInt32;
    case c10::kLong:
      return DType::kInt64;
    case c10::kByte:
      return DType::kUInt8;
    case c10::kBool:
      return DType::kBool;
    default:
      HPCML_THROW(RequestError, what, " has dtype ", c10::toString(type),
                  "; the serve protocol carries float32, float64, int32, int64, uint8, bool");
  }
}

std::int64_t Input::rows() const { return ragged() ? offsets.size(0) - 1 : (values.dim() > 0 ? values.size(0) : 0); }

NamedInputs fixed_inputs(const std::map<std::string, at::Tensor>& inputs) {
  NamedInputs out;
  for (const auto& [name, t] : inputs) out[name] = Input{t, at::Tensor()};
  return out;
}

std::vector<char> pack_request(std::uint64_t id, const std::string& model, const NamedInputs& inputs) {
  std::vector<char> bytes;
  size_t payload = 0;
  for (const auto& [name, in] : inputs) payload += in.values.nbytes() + 8;
  bytes.reserve(128 + 64 * inputs.size() + payload);
  Out out(bytes);
  put_prefix(out, id);
  out.put_string(model);
  out.put<std::uint32_t>(static_cast<std::uint32_t>(inputs.size()));
  std::vector<size_t> payload_slots;
  std::vector<at::Tensor> values;
  for (const auto& [name, in] : inputs) {
    HPCML_CHECK_AS(RequestError, in.values.defined(), "input '", name, "' of model '", model, "' is undefined");
    const at::Tensor v = in.values.contiguous();
    out.put_string(name);
    out.put<std::int32_t>(static_cast<std::int32_t>(from_scalar_type(v.scalar_type(), "input '" + name + "'")));
    out.put<std::uint32_t>(static_cast<std::uint32_t>(v.dim()));
    for (int64_t d : v.sizes()) out.put<std::int64_t>(d);
    if (in.ragged()) {
      const at::Tensor o = in.offsets.to(at::kLong).contiguous();
      out.put<std::uint32_t>(static_cast<std::uint32_t>(o.numel()));
      out.put_bytes(o.data_ptr<int64_t>(), o.numel() * sizeof(int64_t));
    } else {
      out.put<std::uint32_t>(0);
    }
    payload_slots.push_back(out.size());
    out.put<std::uint64_t>(0);
    out.put<std::uint64_t>(static_cast<std::uint64_t>(v.nbytes()));
    values.push_back(v);
  }
  for (size_t i = 0; i < values.size(); ++i) {
    out.align8();
    const std::uint64_t at = out.size();
    std::memcpy(out.data() + payload_slots[i], &at, sizeof(at));
    out.put_bytes(values[i].data_ptr(), values[i].nbytes());
  }
  return bytes;
}

std::uint64_t peek_request_id(const char* data, size_t size) {
  if (size < kRequestPrefixBytes) return 0;
  std::uint32_t magic, version;
  std::uint64_t id;
  std::memcpy(&magic, data, 4);
  std::memcpy(&version, data + 4, 4);
  std::memcpy(&id, data + 8, 8);
  return magic == kMagic && version == kProtocolVersion ? id : 0;
}

Request parse_request(std::shared_ptr<std::vector<char>> buffer) {
  const char* data = buffer->data();
  const size_t size = buffer->size();
  In<RequestError> in(data, size, "request");
  HPCML_CHECK_AS(RequestError, in.get<std::uint32_t>("magic") == kMagic, "request: not an hpcml serve request (bad magic)");
  const auto version = in.get<std::uint32_t>("version");
  HPCML_CHECK_AS(RequestError, version == kProtocolVersion, "request: protocol version ", version,
                 "; this server speaks version ", kProtocolVersion);
  Request r;
  r.id = in.get<std::uint64_t>("request id");
  r.model = in.get_string("model name");
  const auto count = in.get<std::uint32_t>("input count");
  HPCML_CHECK_AS(RequestError, count >= 1 && count <= 64, "request for model '", r.model, "': ", count,
                 " inputs; expected 1 to 64");
  r.rows = -1;
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::string name = in.get_string("input name");
    const auto code = in.get<std::int32_t>("dtype");
    HPCML_CHECK_AS(RequestError, code >= 0 && code <= 5, "request for model '", r.model, "': input '", name,
                   "' has dtype code ", code, "; expected 0-5 (float32 ... bool)");
    const c10::ScalarType type = to_scalar_type(static_cast<DType>(code));
    const auto ndim = in.get<std::uint32_t>("ndim");
    HPCML_CHECK_AS(RequestError, ndim >= 1 && ndim <= kMaxDims, "request for model '", r.model, "': input '", name,
                   "' has ", ndim, " dimensions; expected 1 to ", kMaxDims);
    std::vector<int64_t> dims(ndim);
    int64_t numel = 1;
    for (auto& d : dims) {
      d = in.get<std::int64_t>("dimension");
      HPCML_CHECK_AS(RequestError, d >= 0 && d <= (int64_t{1} << 40) && (d == 0 || numel <= (int64_t{1} << 40) / d),
                     "request for model '", r.model, "': input '", name, "' has a dimension of ", d);
      numel *= d;
    }
    const auto n_offsets = in.get<std::uint32_t>("offsets count");
    at::Tensor offsets;
    if (n_offsets > 0) {
      in.need(n_offsets * sizeof(int64_t), "ragged offsets");
      offsets = at::empty({static_cast<int64_t>(n_offsets)}, at::kLong);
      std::memcpy(offsets.data_ptr<int64_t>(), data + in.pos(), n_offsets * sizeof(int64_t));
      for (std::uint32_t k = 0; k < n_offsets; ++k) in.get<std::int64_t>("ragged offsets");
      const int64_t* o = offsets.data_ptr<int64_t>();
      bool ok = o[0] == 0 && o[n_offsets - 1] == dims[0];
      for (std::uint32_t k = 1; ok && k < n_offsets; ++k) ok = o[k] >= o[k - 1];
      HPCML_CHECK_AS(RequestError, ok, "request for model '", r.model, "': ragged input '", name,
                     "' has offsets that do not rise from 0 to its ", dims[0], " items");
    }
    const auto at_byte = in.get<std::uint64_t>("payload offset");
    const auto nbytes = in.get<std::uint64_t>("payload size");
    HPCML_CHECK_AS(RequestError, static_cast<int64_t>(nbytes) == checked_bytes(numel, type), "request for model '",
                   r.model, "': input '", name, "' declares ", nbytes, " bytes; its shape and dtype need ",
                   checked_bytes(numel, type));
    HPCML_CHECK_AS(RequestError, at_byte % 8 == 0 && at_byte <= size && nbytes <= size - at_byte, "request for model '",
                   r.model, "': input '", name, "' payload [", at_byte, ", +", nbytes, ") lies outside the ", size,
                   "-byte message");
    Input input;
    // A view of the buffer; the Request keeps the buffer alive.
    input.values = at::from_blob(const_cast<char*>(data) + at_byte, dims, at::TensorOptions().dtype(type));
    input.offsets = offsets;
    const int64_t rows = input.rows();
    HPCML_CHECK_AS(RequestError, r.rows < 0 || rows == r.rows, "request for model '", r.model, "': input '", name,
                   "' has ", rows, " rows; the other inputs have ", r.rows);
    r.rows = rows;
    HPCML_CHECK_AS(RequestError, r.inputs.emplace(name, std::move(input)).second, "request for model '", r.model,
                   "': input '", name, "' appears twice");
  }
  HPCML_CHECK_AS(RequestError, r.rows >= 1, "request for model '", r.model, "' has no rows");
  r.buffer = std::move(buffer);
  return r;
}

namespace {
void put_timing(Out& out, const ServerTiming& t) {
  out.put<double>(t.queue_us);
  out.put<double>(t.input_us);
  out.put<double>(t.infer_us);
  out.put<double>(t.output_us);
  out.put<double>(t.overhead_us);
  out.put<double>(t.compute_share_us);
  out.put<std::int32_t>(t.batch_rows);
  out.put<std::int32_t>(t.batch_requests);
}
}  // namespace

std::vector<char> pack_reply(std::uint64_t id, const ServerTiming& timing, const at::Tensor& output) {
  const at::Tensor v = output.contiguous();
  std::vector<char> bytes;
  bytes.reserve(128 + v.nbytes());
  Out out(bytes);
  put_prefix(out, id);
  out.put<std::int32_t>(0);
  put_timing(out, timing);
  out.put<std::int32_t>(static_cast<std::int32_t>(from_scalar_type(v.scalar_type(), "the model's output")));
  out.put<std::uint32_t>(static_cast<std::uint32_t>(v.dim()));
  for (int64_t d : v.sizes()) out.put<std::int64_t>(d);
  out.put_bytes(v.data_ptr(), v.nbytes());
  return bytes;
}

std::vector<char> pack_error_reply(std::uint64_t id, const std::string& message) {
  std::vector<char> bytes;
  Out out(bytes);
  put_prefix(out, id);
  out.put<std::int32_t>(1);
  put_timing(out, ServerTiming{});
  out.put_string(message.size() > kMaxName ? message.substr(0, kMaxName) : message);
  return bytes;
}

Reply parse_reply(const char* data, size_t size) {
  In<CommError> in(data, size, "reply");
  HPCML_CHECK_AS(CommError, in.get<std::uint32_t>("magic") == kMagic && in.get<std::uint32_t>("version") == kProtocolVersion,
                 "reply: not an hpcml serve reply of protocol version ", kProtocolVersion);
  Reply r;
  r.id = in.get<std::uint64_t>("request id");
  const auto status = in.get<std::int32_t>("status");
  auto& t = r.timing;
  t.queue_us = in.get<double>("timing");
  t.input_us = in.get<double>("timing");
  t.infer_us = in.get<double>("timing");
  t.output_us = in.get<double>("timing");
  t.overhead_us = in.get<double>("timing");
  t.compute_share_us = in.get<double>("timing");
  t.batch_rows = in.get<std::int32_t>("timing");
  t.batch_requests = in.get<std::int32_t>("timing");
  if (status != 0) {
    r.ok = false;
    r.error = in.get_string("error message");
    return r;
  }
  r.ok = true;
  const auto code = in.get<std::int32_t>("output dtype");
  HPCML_CHECK_AS(CommError, code >= 0 && code <= 5, "reply: output dtype code ", code);
  const auto ndim = in.get<std::uint32_t>("output ndim");
  HPCML_CHECK_AS(CommError, ndim <= kMaxDims, "reply: output has ", ndim, " dimensions");
  std::vector<int64_t> dims(ndim);
  for (auto& d : dims) d = in.get<std::int64_t>("output dimension");
  r.output = at::empty(dims, at::TensorOptions().dtype(to_scalar_type(static_cast<DType>(code))));
  in.need(r.output.nbytes(), "output payload");
  std::memcpy(r.output.data_ptr(), data + in.pos(), r.output.nbytes());
  return r;
}

}  // namespace hpcml::launch::serve
