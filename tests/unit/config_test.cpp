// The typed config layer: reading, defaults, overrides and the errors users see.
#include "core/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

#include "launch/run_config.hpp"

namespace {

using hpcml::ConfigError;
using hpcml::config::from_string;
using hpcml::launch::RunConfig;

struct Inner {
  int count = 2;
  std::vector<int> sizes{1, 2};
  template <typename V>
  void describe(V& v) {
    v.field("count", count, "how many", hpcml::config::at_least(1));
    v.field("sizes", sizes, "list", hpcml::config::each(hpcml::config::in_range(1, 100)));
  }
};
struct Outer {
  std::string mode = "fast";
  double rate = 0.5;
  bool flag = false;
  Inner inner;
  template <typename V>
  void describe(V& v) {
    v.field("mode", mode, "mode", hpcml::config::one_of({"fast", "exact"}));
    v.field("rate", rate, "rate", hpcml::config::in_range(0.0, 1.0));
    v.field("flag", flag, "flag");
    v.section("inner", inner, "nested");
  }
};

// The message of the ConfigError that parsing `yaml` raises ("" if none).
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    hpcml::config::parse<Outer>(from_string(yaml, "test.yaml", overrides));
  } catch (const ConfigError& e) {
    return e.message();
  }
  return "";
}

TEST(Config, EmptyDocumentGivesDefaults) {
  const auto c = hpcml::config::parse<Outer>(from_string("", "test.yaml"));
  EXPECT_EQ(c.mode, "fast");
  EXPECT_EQ(c.inner.count, 2);
}

TEST(Config, ReadsNestedValuesOfEveryType) {
  const auto c = hpcml::config::parse<Outer>(
      from_string("mode: exact\nrate: 0.25\nflag: true\ninner: {count: 7, sizes: [3, 4, 5]}\n", "test.yaml"));
  EXPECT_EQ(c.mode, "exact");
  EXPECT_DOUBLE_EQ(c.rate, 0.25);
  EXPECT_TRUE(c.flag);
  EXPECT_EQ(c.inner.count, 7);
  EXPECT_EQ(c.inner.sizes, (std::vector<int>{3, 4, 5}));
}

TEST(Config, OverridesApplyAfterTheFileAndCreateSections) {
  const auto c = hpcml::config::parse<Outer>(
      from_string("inner: {count: 7}\n", "test.yaml", {"inner.count=9", "rate=1", "inner.sizes=[8]"}));
  EXPECT_EQ(c.inner.count, 9);
  EXPECT_DOUBLE_EQ(c.rate, 1.0);
  EXPECT_EQ(c.inner.sizes, (std::vector<int>{8}));
}

TEST(Config, UnknownKeyNamesItSuggestsAndListsAccepted) {
  EXPECT_EQ(error_of("inner: {cont: 3}\n"),
            "config error in test.yaml: unknown key 'inner.cont' (did you mean 'inner.count'?); accepted keys in "
            "'inner': count, sizes");
  EXPECT_EQ(error_of("zzzzzz: 1\n"),
            "config error in test.yaml: unknown key 'zzzzzz'; accepted keys: mode, rate, flag, inner");
}

TEST(Config, WrongTypeNamesKeyExpectedAndFound) {
  EXPECT_EQ(error_of("inner: {count: many}\n"),
            "config error in test.yaml: key 'inner.count': expected an integer >= 1, found 'many'");
  EXPECT_EQ(error_of("inner: {count: 2.5}\n"),
            "config error in test.yaml: key 'inner.count': expected an integer >= 1, found '2.5'");
  EXPECT_EQ(error_of("inner: 3\n"), "config error in test.yaml: key 'inner': expected a mapping, found '3'");
  EXPECT_EQ(error_of("inner: {sizes: [1, x]}\n"),
            "config error in test.yaml: key 'inner.sizes': expected a list of integers each in [1, 100], found "
            "[1, x] (element 1 is 'x')");
  EXPECT_EQ(error_of("flag: maybe\n"), "config error in test.yaml: key 'flag': expected a boolean, found 'maybe'");
}

TEST(Config, OutOfRangeNamesTheRule) {
  EXPECT_EQ(error_of("rate: 1.5\n"), "config error in test.yaml: key 'rate': expected a number in [0, 1], found '1.5'");
  EXPECT_EQ(error_of("mode: slow\n"),
            "config error in test.yaml: key 'mode': expected one of [fast, exact], found 'slow'");
  EXPECT_EQ(error_of("inner: {count: 0}\n"),
            "config error in test.yaml: key 'inner.count': expected an integer >= 1, found '0'");
}

TEST(Config, EachRuleNamesTheFirstElementOutOfRange) {
  EXPECT_EQ(error_of("inner: {sizes: [5, 0, 500]}\n"),
            "config error in test.yaml: key 'inner.sizes': expected a list of integers each in [1, 100], found "
            "[5, 0, 500] (element 1 is 0)");
  EXPECT_EQ(error_of("", {"inner.sizes=[]"}), "");  // an empty list has no element out of range
  std::string long_list = "inner: {sizes: [";
  for (int i = 0; i < 40; ++i) long_list += i == 30 ? "0, " : "10, ";
  long_list += "10]}\n";
  EXPECT_EQ(error_of(long_list),
            "config error in test.yaml: key 'inner.sizes': expected a list of integers each in [1, 100], found a "
            "list of 41 elements (element 30 is 0)");
}

// yaml-cpp keeps both values of a key written twice and returns the first: an error.
TEST(Config, DuplicateKeysAreAnErrorNamingBothLines) {
  EXPECT_EQ(error_of("mode: fast\nrate: 0.1\nmode: exact\n"),
            "config error in test.yaml: key 'mode' appears twice in one mapping (lines 1 and 3); keep one");
  EXPECT_EQ(error_of("inner:\n  count: 3\n  count: 4\n"),
            "config error in test.yaml: key 'inner.count' appears twice in one mapping (lines 2 and 3); keep one");
  EXPECT_EQ(error_of("", {"inner={count: 3, count: 4}"}),
            "config error in --set inner: key 'inner.count' appears twice in one mapping (lines 1 and 1); keep one");
  EXPECT_EQ(error_of("inner:\n  count: 3\nflag: true\n"), "");  // the same name in two mappings is fine
}

TEST(Config, ErrorsFromOverridesSayTheyCameFromSet) {
  EXPECT_EQ(error_of("", {"inner.count=-4"}),
            "config error in --set inner.count: key 'inner.count': expected an integer >= 1, found '-4'");
  EXPECT_EQ(error_of("", {"inner.count"}),
            "config error: --set 'inner.count': expected KEY=VALUE, e.g. runtime.threads=2");
  EXPECT_EQ(error_of("inner: 3\n", {"inner.count=2"}),
            "config error: --set inner.count: 'inner' is '3', not a mapping");
}

TEST(Config, SyntaxErrorsNameTheLine) {
  const std::string e = error_of("mode: fast\ninner: {count: 3\n");
  EXPECT_EQ(e.rfind("config error in test.yaml: not valid YAML at line ", 0), 0u) << e;
}

TEST(Config, ResolvedYamlRoundTrips) {
  Outer c;
  c.inner.count = 11;
  c.mode = "exact";
  const auto again = hpcml::config::parse<Outer>(from_string(hpcml::config::to_yaml(c), "resolved"));
  EXPECT_EQ(again.inner.count, 11);
  EXPECT_EQ(again.mode, "exact");
  EXPECT_EQ(again.inner.sizes, c.inner.sizes);
}

// Values set in code from flags that mirror keys get the keys' checks and name the flag.
TEST(Config, CheckSectionAppliesTheRulesAndNamesTheFlag) {
  Outer c;
  EXPECT_NO_THROW(hpcml::config::check_section(c, "outer", {{"rate", "bench --rate"}}));
  c.rate = 2;
  c.inner.count = 0;
  try {
    hpcml::config::check_section(c, "outer", {{"rate", "bench --rate"}, {"inner.count", "bench --count"}});
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.message(), "config error in bench --rate: key 'outer.rate': expected a number in [0, 1], found '2'");
  }
  c.rate = 0.5;
  try {
    hpcml::config::check_section(c, "outer", {{"inner.count", "bench --count"}});
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.message(), "config error in bench --count: key 'outer.inner.count': expected an integer >= 1, found '0'");
  }
}

TEST(Config, MebibytesConvertToBytesAndBack) {
  EXPECT_EQ(hpcml::config::mib_to_bytes(25.0), int64_t{25} << 20);
  EXPECT_EQ(hpcml::config::mib_to_bytes(0.001), 1048);  // truncated
  EXPECT_DOUBLE_EQ(hpcml::config::bytes_to_mib(int64_t{1} << 20), 1.0);
}

TEST(Config, ReferenceListsEveryKeyWithDefaults) {
  const auto rows = hpcml::config::reference<Outer>();
  ASSERT_EQ(rows.size(), 6u);  // 3 fields + 1 section + 2 nested fields
  EXPECT_EQ(rows[0].key, "mode");
  EXPECT_EQ(rows[0].default_value, "fast");
  EXPECT_EQ(rows[0].accepted, "one of [fast, exact]");
  EXPECT_EQ(rows[3].key, "inner");
  EXPECT_EQ(rows[4].key, "inner.count");
  EXPECT_EQ(rows[4].accepted, ">= 1");
  EXPECT_EQ(rows[5].default_value, "[1, 2]");
}

TEST(RunConfig, EnvironmentSetsDefaultsThatTheFileOverrides) {
  setenv("HPCML_NUM_THREADS", "3", 1);
  auto config = RunConfig::from_environment();
  EXPECT_EQ(config.runtime.threads, 3);
  hpcml::config::read_into(from_string("runtime: {threads: 1}\n", "f.yaml"), config);
  EXPECT_EQ(config.runtime.threads, 1);
  setenv("HPCML_NUM_THREADS", "5000", 1);
  try {
    RunConfig::from_environment();
    FAIL() << "HPCML_NUM_THREADS=5000 accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.message(), "config error in environment variable HPCML_NUM_THREADS: key 'runtime.threads': expected "
                           "an integer in [0, 1024], found '5000'");
  }
  unsetenv("HPCML_NUM_THREADS");
  setenv("HPCML_COLLECTIVE_TIMEOUT_S", "30s", 1);
  EXPECT_THROW(RunConfig::from_environment(), ConfigError);
  unsetenv("HPCML_COLLECTIVE_TIMEOUT_S");
}

}  // namespace
