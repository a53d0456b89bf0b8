#include "core/error.hpp"

#include <gtest/gtest.h>

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

TEST(Error, CheckEvaluatesConditionOnce) {
  evaluations = 0;
  HPCML_CHECK(counted(1) == 1, "never");
  EXPECT_EQ(evaluations, 1);
}

}  // namespace
