#include "core/error.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

namespace hpcml {

namespace {
// Paths in messages are relative to the repository, not the build machine.
const char* short_path(const char* file) {
  for (const char* layer : {"/core/", "/collectives/", "/io/", "/hpo/", "/models/", "/launch/", "/tests/", "/examples/"}) {
    if (const char* p = std::strstr(file, layer)) return p + 1;
  }
  return file;
}
}  // namespace

Error::Error(const std::string& message, const char* file, int line, const char* condition)
    : std::runtime_error(message + (condition ? std::string(" [check failed: ") + condition + "]" : std::string()) +
                         " (" + short_path(file) + ":" + std::to_string(line) + ")"),
      message_(message),
      file_(short_path(file)),
      line_(line) {}

namespace {
thread_local std::vector<std::string> activities;

std::string one_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      out += "; ";
    } else {
      out += c;
    }
  }
  return out;
}
}  // namespace

Activity::Activity(std::string what) { activities.push_back(std::move(what)); }
Activity::~Activity() { activities.pop_back(); }

std::string Activity::current() {
  std::string out;
  for (const auto& a : activities) out += (out.empty() ? "" : ": ") + a;
  return out;
}

std::string describe_foreign_exception(const std::exception& e) {
  const char* debug_env = std::getenv("HPCML_DEBUG");
  const bool debug = debug_env != nullptr && std::string(debug_env) != "0" && std::string(debug_env) != "";
  std::string text = e.what();
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    text = "out of memory (" + text + "); lower the sizes in the config (batch, widths, samples)";
  } else if (!debug) {
    // LibTorch's c10::Error appends "Exception raised from <function> at <file>:<line>
    // (most recent call first):" and the C++ frames ("frame #0: ..."); keep the message.
    for (const char* marker : {"Exception raised from", "\nframe #"}) {
      const auto at = text.find(marker);
      if (at != std::string::npos) text.resize(at);
    }
  }
  if (!debug) text = one_line(text);
  const std::string activity = Activity::current();
  return activity.empty() ? text : activity + ": " + text;
}

}  // namespace hpcml
