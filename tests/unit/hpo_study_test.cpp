// The study's view for the samplers (launch/hpo/study.hpp, sampler_history): what each trial
// state is passed as. Expectations are written out by hand from docs/hpo.md.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "launch/hpo/study.hpp"

namespace {

using hpcml::hpo::TrialState;
using hpcml::launch::hpo_driver::sampler_history;
using hpcml::launch::hpo_driver::Trial;

Trial trial(std::int64_t n, TrialState state, std::optional<double> value, double resource,
            std::vector<std::pair<std::int64_t, double>> rungs) {
  Trial t;
  t.record.number = n;
  t.record.state = state;
  t.record.value = value;
  t.record.resource = resource;
  t.record.params["x"] = static_cast<double>(n);
  t.rungs = std::move(rungs);
  return t;
}

TEST(HpoStudy, SamplerHistoryPassesEachStateAsDocumented) {
  const std::vector<Trial> trials = {
      trial(0, TrialState::kComplete, 0.5, 27, {{1, 0.9}, {3, 0.7}, {9, 0.6}}),  // as it is
      trial(1, TrialState::kPruned, 0.8, 3, {{1, 0.85}, {3, 0.8}}),            // as it is
      trial(2, TrialState::kFailed, std::nullopt, 0, {{1, 0.95}}),             // pruned at 0, no value
      trial(3, TrialState::kRunning, std::nullopt, 0, {}),                     // pending: running
      trial(4, TrialState::kRunning, 0.4, 1, {{1, 0.4}, {3, 0.35}}),           // past rung 3: pruned there
  };
  const auto h = sampler_history(trials);
  ASSERT_EQ(h.size(), trials.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    EXPECT_EQ(h[i].number, static_cast<std::int64_t>(i));
    EXPECT_EQ(h[i].params, trials[i].record.params);
  }
  EXPECT_EQ(h[0].state, TrialState::kComplete);
  EXPECT_EQ(h[0].value, 0.5);
  EXPECT_EQ(h[0].resource, 27);
  EXPECT_EQ(h[1].state, TrialState::kPruned);
  EXPECT_EQ(h[1].value, 0.8);
  EXPECT_EQ(h[1].resource, 3);
  EXPECT_EQ(h[2].state, TrialState::kPruned);
  EXPECT_FALSE(h[2].value.has_value());
  EXPECT_EQ(h[2].resource, 0);
  EXPECT_EQ(h[3].state, TrialState::kRunning);
  EXPECT_FALSE(h[3].value.has_value());
  EXPECT_EQ(h[4].state, TrialState::kPruned);
  EXPECT_EQ(h[4].value, 0.35);
  EXPECT_EQ(h[4].resource, 3);
}

}  // namespace
