// What the serve files share: the clock their latencies are read on, and the options of the
// sends they detach (a request, a reply, a heartbeat).
#pragma once

#include <chrono>

#include "collectives/types.hpp"

namespace hpcml::launch::serve {

using Clock = std::chrono::steady_clock;

inline double us_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

inline constexpr collectives::P2POptions kAsync{/*async=*/true};

}  // namespace hpcml::launch::serve
