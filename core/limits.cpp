#include "core/limits.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include "core/error.hpp"

namespace hpcml::limits {

namespace {
// A cgroup memory limit in bytes, or 0 when none is set.
uint64_t cgroup_limit() {
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream in(path);
    std::string text;
    if (!(in >> text) || text == "max") continue;
    try {
      return std::stoull(text);
    } catch (const std::exception&) {
      continue;
    }
  }
  return 0;
}
}  // namespace

uint64_t node_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  uint64_t physical = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
  const uint64_t cgroup = cgroup_limit();
  if (cgroup > 0 && (physical == 0 || cgroup < physical)) physical = cgroup;
  return physical > 0 ? physical : (4ull << 30);  // unknown: assume a small node
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 6) {
    bytes /= 1024.0;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return text;
}

void check_fits_in_memory(double bytes, const std::string& what, const std::string& keys) {
  const double budget = static_cast<double>(node_memory_bytes()) / 2.0;
  HPCML_CHECK_AS(ConfigError, bytes <= budget, "config error: ", keys, ": ", what, " would need about ",
                 format_bytes(bytes), ", more than half of this node's memory (", format_bytes(budget * 2.0),
                 "); lower ", keys);
}

}  // namespace hpcml::limits
