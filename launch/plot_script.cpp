#include "launch/plot_script.hpp"

#include <cstdio>
#include <filesystem>

#include "core/log.hpp"

#ifndef HPCML_SOURCE_DIR
#define HPCML_SOURCE_DIR ""
#endif

namespace hpcml::launch {

void run_plot_script(const std::string& script, const std::string& dir, const std::string& who,
                     const std::string& off) {
  const std::filesystem::path path = std::filesystem::path(HPCML_SOURCE_DIR) / "scripts" / script;
  const std::string cmd = "timeout 120 /usr/bin/python3 '" + path.string() + "' '" + dir + "' 2>&1";
  FILE* pipe = std::filesystem::exists(path) ? popen(cmd.c_str(), "r") : nullptr;
  std::string out = pipe == nullptr ? path.string() + " not found" : "";
  char buffer[512];
  while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  if (pipe == nullptr || pclose(pipe) != 0) {
    HPCML_LOG_WARN("{}: plots not drawn ({}): {} ({} turns this off)", who, cmd, out.substr(0, out.find('\n')), off);
  }
}

}  // namespace hpcml::launch
