#include "core/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

#include "core/error.hpp"

namespace hpcml::log {

namespace {
std::shared_ptr<spdlog::logger> make_logger(int rank, int size, const std::string& group = "") {
  auto logger = std::make_shared<spdlog::logger>("hpcml", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern("[%H:%M:%S.%e] [rank " + std::to_string(rank) + "/" + std::to_string(size) +
                      (group.empty() ? "" : " of " + group) + "] %l: %v");
  logger->flush_on(spdlog::level::warn);
  return logger;
}

std::shared_ptr<spdlog::logger>& instance() {
  static std::shared_ptr<spdlog::logger> logger = make_logger(0, 1);
  return logger;
}
}  // namespace

void init(int rank, int size, const LogOptions& options) {
  const auto level = spdlog::level::from_str(options.level);
  if (level == spdlog::level::off && options.level != "off") {
    HPCML_THROW(ConfigError, "log.level: expected one of trace, debug, info, warn, error, off; found '",
                options.level, "'");
  }
  auto logger = make_logger(rank, size, options.group);
  // Ranks other than 0 stay quiet below warnings unless asked.
  logger->set_level(rank == 0 || options.all_ranks ? level : std::max(level, spdlog::level::warn));
  instance() = std::move(logger);
}

spdlog::logger& logger() { return *instance(); }

}  // namespace hpcml::log
