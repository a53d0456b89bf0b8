/// @file
/// Peak-memory probes for tests that must show an allocation did NOT happen
/// (e.g. no N x N matrix in graph construction). Linux only.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace hpcml::testing {

/// A field of /proc/self/status in kB ("VmHWM": peak resident memory since the
/// last reset; "VmRSS"), or -1 when absent.
inline int64_t status_kb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  return -1;
}

/// Resets VmHWM to the current RSS (Linux >= 4.0: "5" > /proc/self/clear_refs).
/// False when the kernel refuses.
inline bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.close();
  return !out.fail();
}

}  // namespace hpcml::testing
