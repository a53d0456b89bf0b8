/// @file
/// The exception root of hpcml and the check macros that raise it.
///
/// Every error hpcml raises is an hpcml::Error carrying "file:line" and a
/// message that names the rank, the operation and the object involved, with
/// expected vs found values. Subclasses exist only where callers branch on them.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace hpcml {

/// Root of every exception hpcml throws.
///
/// `message()` is what users read; `what()` adds, for developers, the failed
/// condition (from HPCML_CHECK) and the source location:
/// "<message> [check failed: <condition>] (<file>:<line>)".
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, const char* file, int line, const char* condition = nullptr);
  /// The message without the source location (what users should see first).
  const std::string& message() const noexcept { return message_; }
  const char* file() const noexcept { return file_; }
  int line() const noexcept { return line_; }

 private:
  std::string message_;
  const char* file_;
  int line_;
};

/// A bad config key or value: deterministic, the same on every rank.
class ConfigError : public Error {
  using Error::Error;
};
/// A failed or misused collective / MPI call.
class CommError : public Error {
  using Error::Error;
};
/// A failed HDF5 or file-system operation.
class IoError : public Error {
  using Error::Error;
};

/// What this thread is doing, for the one-line report of an error that carries no
/// context of its own (a LibTorch shape error, std::bad_alloc): "training model
/// 'facile'", "exporting checkpoint 'x.pt'". Scopes nest; the innermost is reported
/// with its parents ("training model 'mlp': step 3").
class Activity {
 public:
  explicit Activity(std::string what);
  ~Activity();
  Activity(const Activity&) = delete;
  Activity& operator=(const Activity&) = delete;
  /// The current scopes joined by ": ", or "" outside any.
  static std::string current();
};

/// One line for an exception that is not an hpcml::Error: LibTorch's c10::Error
/// without its C++ stack trace (set HPCML_DEBUG=1 to keep it), std::bad_alloc as
/// "out of memory", newlines folded; prefixed with Activity::current() when set.
std::string describe_foreign_exception(const std::exception& e);

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

}  // namespace hpcml

/// Throws `Type` (an hpcml::Error subclass) with the streamed arguments as message.
#define HPCML_THROW(Type, ...) throw Type(::hpcml::detail::concat(__VA_ARGS__), __FILE__, __LINE__)
#define HPCML_DETAIL_THROW_CHECK(Type, cond, ...) \
  throw Type(::hpcml::detail::concat(__VA_ARGS__), __FILE__, __LINE__, cond)

/// Always-on check for anything a user can trigger from config, data or requests.
/// Throws hpcml::Error with the condition text and the streamed message.
#define HPCML_CHECK(cond, ...)                                                              \
  do {                                                                                      \
    if (!(cond)) HPCML_DETAIL_THROW_CHECK(::hpcml::Error, #cond, __VA_ARGS__);               \
  } while (false)

/// As HPCML_CHECK, throwing the given Error subclass.
#define HPCML_CHECK_AS(Type, cond, ...)                                                     \
  do {                                                                                      \
    if (!(cond)) HPCML_DETAIL_THROW_CHECK(Type, #cond, __VA_ARGS__);                         \
  } while (false)

/// Debug-only contract check (programming errors, not user input); compiled out in Release.
#ifdef NDEBUG
#define HPCML_EXPECTS(cond) ((void)0)
#else
#define HPCML_EXPECTS(cond)                                                                 \
  do {                                                                                      \
    if (!(cond)) HPCML_THROW(::hpcml::Error, "contract violated: " #cond);                  \
  } while (false)
#endif
