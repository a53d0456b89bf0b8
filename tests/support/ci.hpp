/// @file
/// A check that cannot run here: skipped with its reason, or failed under CI.
///
/// Outside CI a test whose precondition this machine lacks (for example a kernel
/// that refuses to reset the peak-RSS counter) is skipped with the reason. Under
/// CI (CI=true, as CI services set it) it fails with that reason, so CI never
/// passes with a check gone. Cases skipped by design (a test meant for another
/// rank count) use GTEST_SKIP directly.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace hpcml::testing {

/// True when CI is set to true (or 1/yes, any case), as in tests/support/ci.sh.
inline bool ci_enforced() {
  const char* ci = std::getenv("CI");
  if (ci == nullptr) return false;
  std::string v(ci);
  for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return v == "true" || v == "1" || v == "yes";
}

}  // namespace hpcml::testing

/// Ends the current test: FAIL under CI, GTEST_SKIP elsewhere; `reason` streams.
#define HPCML_CANNOT_RUN(reason)                                                       \
  do {                                                                                 \
    if (::hpcml::testing::ci_enforced()) {                                             \
      FAIL() << "cannot run and CI=true forbids skipping it: " << reason;              \
    } else {                                                                           \
      GTEST_SKIP() << reason;                                                          \
    }                                                                                  \
  } while (0)
