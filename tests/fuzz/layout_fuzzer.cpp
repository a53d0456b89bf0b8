// libFuzzer target for the pure layout checks of io/layout_checks.cpp:
// hpcml::io::layout::check_offsets(), hpcml::io::layout::validate() and
// h5::Shape::describe(). See docs/data-layout.md,
// "Fuzzing the layout checks".
//
// Contract under test: for ANY input these functions either return or throw
// hpcml::IoError with a non-empty message that starts with the object they check
// ("file 'F'" / the `what` argument); they never crash, never hit undefined
// behaviour (the binary is built with ASan + UBSan, no recovery), never throw
// anything else, and never accept bad data. "Bad data" is decided by a second,
// deliberately straightforward implementation of each check in this file: when
// the two disagree in either direction (accepted bad data, or rejected good data)
// the fuzzer abort()s with a description.
//
// Input format (all readers return 0 / empty once the input is exhausted, so every
// byte string is a valid input):
//
//   u8()     one byte.
//   i64()    one tag byte t, then by t % 4:
//              0: one byte, as a signed int8           (-128..127)
//              1: eight bytes, a little-endian int64
//              2: one byte b, INT64_MAX - b
//              3: one byte b, INT64_MIN + b
//   rank()   i64() clamped to the range of int.
//   str()    one byte b: b < 0x80 picks kWords[b % size], else a literal of
//            (b & 0x0f) bytes that follow.
//   shape()  u8 k (kind = k % 4, is_signed = k & 4), u8 element_size,
//            u8 n (n % 6 dims), then n x i64() dims.
//
//   input    := u8 mode, then mode % 2 == 0 ? offsets : validate
//   offsets  := i64 rows, i64 items, i64 first_index, i64 previous,
//               u8 n, then n x i64() offsets (the array has exactly the entries
//               decoded, so fewer when the input runs out)
//   validate := file expectation u8 has_first [file if has_first & 1]
//   file     := str path, i64 layout, str schema, i64 schema_version, i64 rows,
//               u8 nf (nf % 8 fields), nf x field, u8 nc (nc % 4 collections), nc x collection
//   field    := str name, shape, u8 nfeat (% 4) x str, u8 nunits (% 4) x str, str collection
//   collection := str name, shape offsets, i64 first_offset, i64 last_offset
//   expectation := str schema, i64 schema_version, u8 nr (nr % 6 requests), nr x request
//   request  := str name, u8 kind (% 3: any, float, integer), rank item_rank
//
// The seeds in tests/fuzz/corpus/layout/ follow this format.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "io/layout.hpp"

namespace {

using hpcml::io::h5::Kind;
using hpcml::io::h5::Shape;
using hpcml::io::layout::ElementKind;
using hpcml::io::layout::Expectation;
using hpcml::io::layout::FieldInfo;
using hpcml::io::layout::FieldRequest;
using hpcml::io::layout::FileInfo;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

// Names that make fields, requests, collections and files refer to each other often.
const char* const kWords[] = {"",     "label",   "x",       "hits", "hits/energy", "hits/xyz",
                              "jets", "jets/pt", "offsets", "meta", "schema_a",    "schema_b",
                              "a.h5", "b.h5",    "energy",  "GeV"};
constexpr size_t kWordCount = sizeof(kWords) / sizeof(kWords[0]);

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }

  int64_t i64() {
    const uint8_t tag = u8();
    switch (tag % 4) {
      case 0:
        return static_cast<int8_t>(u8());
      case 1: {
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(u8()) << (8 * i);
        int64_t out;
        std::memcpy(&out, &v, sizeof out);
        return out;
      }
      case 2:
        return kMax - u8();
      default:
        return kMin + u8();
    }
  }

  int rank() {
    const int64_t v = i64();
    if (v > std::numeric_limits<int>::max()) return std::numeric_limits<int>::max();
    if (v < std::numeric_limits<int>::min()) return std::numeric_limits<int>::min();
    return static_cast<int>(v);
  }

  std::string str() {
    const uint8_t b = u8();
    if (b < 0x80) return kWords[b % kWordCount];
    std::string s;
    for (int i = 0; i < (b & 0x0f); ++i) s.push_back(static_cast<char>(u8()));
    return s;
  }

  Shape shape() {
    Shape s;
    const uint8_t k = u8();
    s.kind = static_cast<Kind>(k % 4);
    s.is_signed = (k & 4) != 0;
    s.element_size = u8();
    const int n = u8() % 6;
    for (int i = 0; i < n; ++i) s.dims.push_back(i64());
    return s;
  }

  bool exhausted() const { return pos_ >= size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "layout_fuzzer: PROPERTY VIOLATED: %s\n  %s\n", what, detail.c_str());
  std::abort();
}

// Runs `call`; returns the IoError message when it threw one, "" when it returned.
// Anything else aborts (hpcml::Error of another type) or escapes to libFuzzer,
// which reports it as a crash (std::exception and the rest).
template <typename Call>
bool threw(Call&& call, const std::string& prefix, std::string* message) {
  try {
    call();
    return false;
  } catch (const hpcml::IoError& e) {
    *message = e.message();
    if (message->empty()) fail("IoError with an empty message", e.what());
    if (message->compare(0, prefix.size(), prefix) != 0)
      fail("IoError message does not start with the object checked", "expected prefix '" + prefix + "': " + e.what());
    return true;
  } catch (const hpcml::Error& e) {
    fail("threw hpcml::Error that is not an IoError", e.what());
  }
}

// ---- check_offsets ------------------------------------------------------------

// The reference: whether check_offsets must accept.
bool offsets_ok(const std::vector<int64_t>& o, int64_t rows, int64_t items, int64_t previous) {
  const int64_t count = static_cast<int64_t>(o.size());
  if (rows >= 0) {
    if (rows == kMax || count != rows + 1) return false;
    if (o[0] != 0) return false;
  }
  for (int64_t i = 0; i < count; ++i) {
    const int64_t before = i > 0 ? o[i - 1] : previous;
    if (before >= 0 && o[i] < before) return false;
    if (o[i] < 0) return false;
    if (items >= 0 && o[i] > items) return false;
  }
  if (rows >= 0 && items >= 0 && o[count - 1] != items) return false;
  return true;
}

void fuzz_offsets(Reader& in) {
  const int64_t rows = in.i64();
  const int64_t items = in.i64();
  int64_t first_index = in.i64();
  const int64_t previous = in.i64();
  const int n = in.u8();
  std::vector<int64_t> offsets;
  for (int i = 0; i < n && !in.exhausted(); ++i) offsets.push_back(in.i64());
  const int64_t count = static_cast<int64_t>(offsets.size());
  // check_offsets' precondition: `first_index` is an entry of a real dataset holding
  // `count` entries from there, so first_index + count cannot overflow. Inputs
  // outside it are folded back in (not skipped, so their bytes stay useful).
  if (first_index < 0) first_index = first_index == kMin ? 0 : -first_index;
  if (first_index > kMax - count) first_index -= count;

  const std::string what = "offsets of 'fuzz'";
  std::string message;
  const bool rejected =
      threw([&] { hpcml::io::layout::check_offsets(offsets.data(), count, rows, items, first_index, what, previous); },
            what, &message);
  const bool ok = offsets_ok(offsets, rows, items, previous);
  std::string args = "rows=" + std::to_string(rows) + " items=" + std::to_string(items) +
                     " first_index=" + std::to_string(first_index) + " previous=" + std::to_string(previous) +
                     " offsets=[";
  for (size_t i = 0; i < offsets.size() && i < 16; ++i) args += (i ? ", " : "") + std::to_string(offsets[i]);
  args += offsets.size() > 16 ? ", ...]" : "]";
  if (!rejected && !ok) fail("check_offsets accepted bad offsets", args);
  if (rejected && ok) fail("check_offsets rejected good offsets", args + ": " + message);
}

// ---- validate -----------------------------------------------------------------

FileInfo read_file(Reader& in) {
  FileInfo info;
  info.path = in.str();
  info.layout = in.i64();
  info.schema = in.str();
  info.schema_version = in.i64();
  info.rows = in.i64();
  const int nf = in.u8() % 8;
  for (int i = 0; i < nf; ++i) {
    FieldInfo f;
    f.name = in.str();
    f.shape = in.shape();
    const int nfeat = in.u8() % 4;
    for (int j = 0; j < nfeat; ++j) f.features.push_back(in.str());
    const int nunits = in.u8() % 4;
    for (int j = 0; j < nunits; ++j) f.units.push_back(in.str());
    f.collection = in.str();
    info.fields.push_back(std::move(f));
  }
  const int nc = in.u8() % 4;
  for (int i = 0; i < nc; ++i) {
    FileInfo::Collection c;
    c.name = in.str();
    c.offsets = in.shape();
    c.first_offset = in.i64();
    c.last_offset = in.i64();
    info.collections.push_back(std::move(c));
  }
  return info;
}

Expectation read_expectation(Reader& in) {
  Expectation e;
  e.schema = in.str();
  e.schema_version = in.i64();
  const int nr = in.u8() % 6;
  for (int i = 0; i < nr; ++i) {
    FieldRequest r;
    r.name = in.str();
    r.kind = static_cast<ElementKind>(in.u8() % 3);
    r.item_rank = in.rank();
    e.fields.push_back(std::move(r));
  }
  return e;
}

const FieldInfo* find_field(const FileInfo& info, const std::string& name) {
  for (const auto& f : info.fields)
    if (f.name == name) return &f;
  return nullptr;
}

// The reference: "" when validate must accept, else why it must reject.
std::string validate_problem(const FileInfo& info, const Expectation& expected, const FileInfo* first) {
  if (!expected.schema.empty() && info.schema != expected.schema) return "schema differs from the expectation";
  if (expected.schema_version != 0 && info.schema_version != expected.schema_version)
    return "schema version differs from the expectation";
  if (first && (info.schema != first->schema || info.schema_version != first->schema_version))
    return "schema or version differs from the first file";
  for (const auto& c : info.collections) {
    for (const auto& f : info.fields) {
      if (f.collection != c.name) continue;
      if (f.shape.dims.empty() || f.shape.dims[0] != c.last_offset)
        return "item dataset '" + f.name + "' does not hold offsets[rows] items";
    }
  }
  for (const auto& r : expected.fields) {
    const FieldInfo* f = find_field(info, r.name);
    if (!f) return "requested '" + r.name + "' is missing";
    const Kind k = f->shape.kind;
    if (k != Kind::kFloat && k != Kind::kInteger) return "'" + r.name + "' is not numeric";
    if (r.kind == ElementKind::kFloat && k != Kind::kFloat) return "'" + r.name + "' is not float";
    if (r.kind == ElementKind::kInteger && k != Kind::kInteger) return "'" + r.name + "' is not integer";
    if (f->shape.dims.empty()) return "'" + r.name + "' is a scalar";
    if (r.item_rank >= 0 && f->shape.dims.size() != static_cast<size_t>(r.item_rank) + 1)
      return "'" + r.name + "' has the wrong rank";
    if (f->collection.empty() && f->shape.dims[0] != info.rows) return "'" + r.name + "' has the wrong row count";
    if (first) {
      const FieldInfo* ref = find_field(*first, r.name);
      if (!ref) return "'" + r.name + "' is missing from the first file";
      if (ref->shape.dims.size() != f->shape.dims.size()) return "'" + r.name + "' rank differs from the first file";
      for (size_t d = 1; d < f->shape.dims.size(); ++d)
        if (ref->shape.dims[d] != f->shape.dims[d]) return "'" + r.name + "' item shape differs from the first file";
      if (ref->shape.kind != k) return "'" + r.name + "' kind differs from the first file";
      if (ref->features != f->features) return "'" + r.name + "' features differ from the first file";
    }
  }
  return "";
}

std::string describe_file(const FileInfo& info) {
  std::string s = "{path='" + info.path + "' schema='" + info.schema + "' v" + std::to_string(info.schema_version) +
                  " rows=" + std::to_string(info.rows) + " fields:";
  for (const auto& f : info.fields)
    s += " '" + f.name + "'" + (f.collection.empty() ? "" : "@'" + f.collection + "'") + "=" + f.shape.describe() +
         "[" + std::to_string(f.features.size()) + " features]";
  s += " collections:";
  for (const auto& c : info.collections)
    s += " '" + c.name + "'[" + std::to_string(c.first_offset) + ".." + std::to_string(c.last_offset) + "]";
  return s + "}";
}

void fuzz_validate(Reader& in) {
  const FileInfo info = read_file(in);
  const Expectation expected = read_expectation(in);
  const bool has_first = (in.u8() & 1) != 0;
  const FileInfo first = has_first ? read_file(in) : FileInfo{};
  const FileInfo* first_ptr = has_first ? &first : nullptr;

  // describe() on every shape: must not crash.
  for (const auto* file : {&info, &first}) {
    for (const auto& f : file->fields)
      if (f.shape.describe().empty()) fail("Shape::describe() returned nothing", f.name);
    for (const auto& c : file->collections)
      if (c.offsets.describe().empty()) fail("Shape::describe() returned nothing", c.name);
  }

  std::string message;
  const bool rejected =
      threw([&] { hpcml::io::layout::validate(info, expected, first_ptr); }, "file '" + info.path + "'", &message);
  const std::string problem = validate_problem(info, expected, first_ptr);
  std::string requests;
  for (const auto& r : expected.fields)
    requests +=
        " '" + r.name + "'/" + std::to_string(static_cast<int>(r.kind)) + "/rank " + std::to_string(r.item_rank);
  const std::string args = "info=" + describe_file(info) + " expected={schema='" + expected.schema + "' v" +
                           std::to_string(expected.schema_version) + requests + "}" +
                           (has_first ? " first=" + describe_file(first) : "");
  if (!rejected && !problem.empty()) fail("validate accepted bad data", problem + ": " + args);
  if (rejected && problem.empty()) fail("validate rejected good data", message + ": " + args);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  if (in.u8() % 2 == 0)
    fuzz_offsets(in);
  else
    fuzz_validate(in);
  return 0;
}
