#include "core/env.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "core/error.hpp"

namespace hpcml::env {

std::optional<std::string> get_string(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

std::optional<long> get_int(const char* name) {
  auto text = get_string(name);
  if (!text) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(text->c_str(), &end, 10);
  if (errno != 0 || end == text->c_str() || *end != '\0') {
    HPCML_THROW(ConfigError, "environment variable ", name, ": expected an integer, found '", *text, "'");
  }
  return value;
}

std::optional<bool> get_bool(const char* name) {
  auto text = get_string(name);
  if (!text) return std::nullopt;
  std::string lower = *text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "1" || lower == "true" || lower == "yes" || lower == "on") return true;
  if (lower == "0" || lower == "false" || lower == "no" || lower == "off") return false;
  HPCML_THROW(ConfigError, "environment variable ", name, ": expected 1/0/true/false/yes/no/on/off, found '",
              *text, "'");
}

}  // namespace hpcml::env
