#include "core/error.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <new>

#include <regex>

namespace {

int evaluations = 0;
int counted(int value) {
  ++evaluations;
  return value;
}

TEST(Error, CheckCarriesMessageConditionAndLocation) {
  try {
    const int found = 3;
    HPCML_CHECK(found == 4, "tensor 'fc1.weight': expected 4 dims, found ", found);
    FAIL() << "HPCML_CHECK did not throw";
  } catch (const hpcml::Error& e) {
    EXPECT_EQ(e.message(), "tensor 'fc1.weight': expected 4 dims, found 3");
    EXPECT_STREQ(e.file(), "tests/unit/error_test.cpp");
    EXPECT_GT(e.line(), 0);
    EXPECT_TRUE(std::regex_search(
        e.what(), std::regex(R"(found 3 \[check failed: found == 4\] \(tests/unit/error_test\.cpp:\d+\)$)")))
        << e.what();
  }
}

TEST(Error, ThrowAsSubclassIsCatchableByRoot) {
  EXPECT_THROW(HPCML_THROW(hpcml::ConfigError, "key 'a'"), hpcml::ConfigError);
  EXPECT_THROW(HPCML_CHECK_AS(hpcml::IoError, false, "file 'x'"), hpcml::Error);
}

// A LibTorch error reaches the user as one line: its message, without the C++ frames
// LibTorch appends, prefixed with what hpcml was doing.
TEST(Error, ForeignExceptionsBecomeOneLineWithTheActivity) {
  unsetenv("HPCML_DEBUG");
  try {
    hpcml::Activity outer("training model 'mlp'");
    hpcml::Activity inner("step 3");
    (void)at::ones({2, 3}).matmul(at::ones({2, 3}));
    FAIL() << "the shapes should not multiply";
  } catch (const std::exception& e) {
    const std::string raw = e.what();
    const std::string line = hpcml::describe_foreign_exception(e);
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_EQ(line.find("frame #"), std::string::npos) << line;
    EXPECT_EQ(line.find("Exception raised from"), std::string::npos) << line;
    EXPECT_NE(line.find("2x3"), std::string::npos) << line;  // LibTorch's own words stay
    // The scopes were left by the unwinding: no activity is named any more.
    EXPECT_EQ(hpcml::Activity::current(), "");
    EXPECT_EQ(line.rfind("training", 0), std::string::npos) << line;
  }
  {
    hpcml::Activity outer("training model 'mlp'");
    hpcml::Activity inner("step 3");
    EXPECT_EQ(hpcml::Activity::current(), "training model 'mlp': step 3");
    const std::runtime_error e("bad thing\nException raised from f at x.cpp:1 (most recent call first):\nframe #0: f");
    EXPECT_EQ(hpcml::describe_foreign_exception(e), "training model 'mlp': step 3: bad thing");
    setenv("HPCML_DEBUG", "1", 1);
    EXPECT_NE(hpcml::describe_foreign_exception(e).find("frame #0: f"), std::string::npos);
    unsetenv("HPCML_DEBUG");
    EXPECT_EQ(hpcml::describe_foreign_exception(std::bad_alloc()).find("training model 'mlp': step 3: out of memory"),
              0u);
  }
}

TEST(Error, CheckEvaluatesConditionOnce) {
  evaluations = 0;
  HPCML_CHECK(counted(1) == 1, "never");
  EXPECT_EQ(evaluations, 1);
}

}  // namespace
