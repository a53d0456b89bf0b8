// The watchdog ends the process with the deadline line and exit code once an
// armed deadline passes, and does nothing for deadlines that are disarmed in time.
#include "core/watchdog.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace {

TEST(WatchdogDeathTest, ExpiredDeadlineEndsProcessWithMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the watchdog runs a thread
  EXPECT_EXIT(
      {
        auto guard = hpcml::Watchdog::instance().arm("allreduce", "world", std::chrono::milliseconds(200));
        std::this_thread::sleep_for(std::chrono::seconds(5));
      },
      ::testing::ExitedWithCode(hpcml::kExitDeadline),
      R"(deadline exceeded on \[rank 0/1\] \(.*\): allreduce on 'world' still waiting after 0\.[2-4][0-9] s \(deadline 0\.20 s\))");
}

TEST(Watchdog, DisarmedDeadlinesNeverFire) {
  for (int i = 0; i < 1000; ++i) {
    auto guard = hpcml::Watchdog::instance().arm("quick", "world", std::chrono::milliseconds(50));
  }
  auto moved = hpcml::Watchdog::instance().arm("moved", "world", std::chrono::milliseconds(50));
  auto target = std::move(moved);
  target = hpcml::Watchdog::Guard{};
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  SUCCEED();  // reaching here means no disarmed deadline ended the process
}

}  // namespace
