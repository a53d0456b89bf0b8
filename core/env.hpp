/// @file
/// Typed, validated reads of environment variables.
#pragma once

#include <optional>
#include <string>

namespace hpcml::env {

/// The variable's value, or nullopt when unset or empty.
std::optional<std::string> get_string(const char* name);
/// The variable as a base-10 integer; nullopt when unset. A malformed value
/// ("4x", "") throws hpcml::ConfigError naming the variable and the value.
std::optional<long> get_int(const char* name);
/// "1/true/yes/on" or "0/false/no/off" (any case); nullopt when unset; else throws.
std::optional<bool> get_bool(const char* name);

}  // namespace hpcml::env
