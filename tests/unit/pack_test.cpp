// Packed members (models/packed.hpp, launch/train/pack.hpp): member k of a pack, trained
// with its own seed, data and optimizer state, against the same member trained alone by the
// ordinary path (torch::nn layers, task_loss, the fused optimizers), for 2 and 8 members,
// SGD with momentum, Adam and AdamW, FACILE (with its batch norm) and the MLP; the unpacked
// optimizer state; a model that cannot pack.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "launch/train/feed.hpp"
#include "launch/train/optim.hpp"
#include "launch/train/pack.hpp"
#include "models/packed.hpp"
#include "models/registry.hpp"
#include "tests/support/tensor_testing.hpp"

namespace hpcml::launch {
namespace {

constexpr int kSteps = 30;
constexpr int64_t kBatch = 64;

// Tolerance after kSteps steps: a member's arithmetic in the pack is the same formula as
// alone, but its matrix products run in another kernel (baddbmm's per-member GEMMs against
// addmm, possibly another blocking) and its loss is a column mean, so sums are rounded in
// another order: differences of a few float32 ulps per step that training carries along.
// 1e-4 relative is about 800 ulps: far above that drift, far below a wrong gradient.
constexpr double kRtol = 1e-4;
constexpr double kAtol = 1e-5;

struct Workload {
  std::string model;
  std::function<std::unique_ptr<models::Model>(uint64_t seed)> make;
  bool regression;
  int64_t features;
};

Workload facile() {
  return {"facile", [](uint64_t seed) { return models::make("facile", seed); }, true, 15};
}

Workload mlp() {
  return {"mlp", [](uint64_t seed) { return models::make_mlp(12, {16, 8}, 3, seed); }, false, 12};
}

// Member k's batch of step s: its own data (x (B, F), y (B)).
std::pair<at::Tensor, at::Tensor> member_batch(const Workload& w, int k, int step) {
  auto gen = at::detail::createCPUGenerator(1000 * static_cast<uint64_t>(step) + static_cast<uint64_t>(k));
  at::Tensor x = at::randn({kBatch, w.features}, gen) * 2 + 1;
  at::Tensor y = w.regression ? at::rand({kBatch}, gen) * 50 + 1 : at::randint(0, 3, {kBatch}, gen, at::kLong);
  return {x, y};
}

std::unique_ptr<torch::optim::Optimizer> optimizer_for(const std::string& name, std::vector<at::Tensor> params) {
  if (name == "adam") return std::make_unique<FusedAdam>(params, torch::optim::AdamOptions(1e-3));
  if (name == "adamw") {
    return std::make_unique<FusedAdamW>(params, torch::optim::AdamWOptions(1e-3).weight_decay(0.05));
  }
  return std::make_unique<FusedSgd>(params, torch::optim::SGDOptions(1e-3).momentum(0.9));
}

std::vector<at::Tensor> tensors(const std::vector<models::NamedTensor>& named) {
  std::vector<at::Tensor> out;
  for (const auto& [n, t] : named) out.push_back(t);
  return out;
}

// Member k alone, the ordinary way: its model, task_loss, its optimizer.
std::unique_ptr<models::Model> train_alone(const Workload& w, const std::string& optimizer, int k) {
  auto model = w.make(static_cast<uint64_t>(k));
  auto params = tensors(model->named_parameters());
  auto opt = optimizer_for(optimizer, params);
  for (int s = 0; s < kSteps; ++s) {
    const auto [x, y] = member_batch(w, k, s);
    opt->zero_grad();
    task_loss("auto", w.regression, model->forward(x), y).backward();
    opt->step();
  }
  return model;
}

struct Pack {
  std::unique_ptr<models::PackedModel> model;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
};

Pack train_packed(const Workload& w, const std::string& optimizer, int members) {
  std::vector<std::unique_ptr<models::Model>> built;
  for (int k = 0; k < members; ++k) built.push_back(w.make(static_cast<uint64_t>(k)));
  Pack p{std::make_unique<models::PackedModel>(built), nullptr};
  p.optimizer = optimizer_for(optimizer, tensors(p.model->named_parameters()));
  for (int s = 0; s < kSteps; ++s) {
    std::vector<at::Tensor> xs, ys;
    for (int k = 0; k < members; ++k) {
      auto [x, y] = member_batch(w, k, s);
      xs.push_back(x);
      ys.push_back(y);
    }
    p.optimizer->zero_grad();
    pack_losses("auto", w.regression, p.model->forward(at::stack(xs, 1)), at::stack(ys, 1)).sum().backward();
    p.optimizer->step();
  }
  return p;
}

void expect_members_as_alone(const Workload& w, const std::string& optimizer, int members) {
  const Pack pack = train_packed(w, optimizer, members);
  double worst = 0;
  for (int k = 0; k < members; ++k) {
    const auto alone = train_alone(w, optimizer, k);
    const auto mine = pack.model->member_parameters(k);
    const auto theirs = alone->named_parameters();
    ASSERT_EQ(mine.size(), theirs.size());
    for (size_t i = 0; i < mine.size(); ++i) {
      ASSERT_EQ(mine[i].first, theirs[i].first);
      EXPECT_TRUE(testing::tensor_near(mine[i].second, theirs[i].second.detach(), kRtol, kAtol))
          << w.model << " member " << k << " of " << members << ", " << optimizer << ", " << mine[i].first;
      const at::Tensor moved =
          (theirs[i].second.detach() - w.make(static_cast<uint64_t>(k))->named_parameters()[i].second).abs().max();
      EXPECT_GT(moved.item<double>(), 0) << "member " << k << " " << mine[i].first << " did not train";
      worst = std::max(worst, (mine[i].second - theirs[i].second.detach()).abs().max().item<double>());
    }
    const auto mine_buffers = pack.model->member_buffers(k);
    const auto their_buffers = alone->named_buffers();
    ASSERT_EQ(mine_buffers.size(), their_buffers.size());
    for (size_t i = 0; i < mine_buffers.size(); ++i) {
      EXPECT_TRUE(testing::tensor_near(mine_buffers[i].second.to(at::kDouble), their_buffers[i].second.to(at::kDouble),
                                       kRtol, kAtol))
          << w.model << " member " << k << " buffer " << mine_buffers[i].first;
    }
  }
  std::printf("%s, %d members, %s, %d steps: largest parameter difference to alone %.3g\n", w.model.c_str(), members,
              optimizer.c_str(), kSteps, worst);
}

TEST(PackTest, FacileMembersEqualMembersTrainedAlone) {
  for (int members : {2, 8}) {
    for (const char* optimizer : {"sgd", "adam", "adamw"}) expect_members_as_alone(facile(), optimizer, members);
  }
}

TEST(PackTest, MlpMembersEqualMembersTrainedAlone) {
  for (int members : {2, 8}) {
    for (const char* optimizer : {"sgd", "adam"}) expect_members_as_alone(mlp(), optimizer, members);
  }
}

TEST(PackTest, MembersDifferFromEachOther) {
  // Distinct seeds and data: a pack that trained one member K times would pass the tests above
  // only if the members were equal, which they must not be.
  const Pack pack = train_packed(facile(), "adam", 2);
  EXPECT_GT((pack.model->member_parameters(0)[1].second - pack.model->member_parameters(1)[1].second)
                .abs()
                .max()
                .item<double>(),
            1e-3);
}

TEST(PackTest, UnpackedOptimizerStateIsTheMembersOwn) {
  const Workload w = facile();
  for (const char* name : {"sgd", "adam", "adamw"}) {
    const Pack pack = train_packed(w, name, 3);
    const auto alone = w.make(1);
    auto params = tensors(alone->named_parameters());
    auto member_opt = optimizer_for(name, params);
    const auto pack_params = pack.model->named_parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      copy_member_state(*pack.optimizer, pack_params[i].second, *member_opt, params[i], 1);
    }
    // Member 1 trained alone, with its own optimizer.
    auto replay = w.make(1);
    auto replay_params = tensors(replay->named_parameters());
    auto replay_opt = optimizer_for(name, replay_params);
    for (int s = 0; s < kSteps; ++s) {
      const auto [x, y] = member_batch(w, 1, s);
      replay_opt->zero_grad();
      task_loss("auto", true, replay->forward(x), y).backward();
      replay_opt->step();
    }
    ASSERT_EQ(member_opt->state().size(), replay_opt->state().size()) << name;
    // Step both once more with the same gradient: equal parameters need equal state.
    const auto [x, y] = member_batch(w, 1, kSteps);
    for (size_t i = 0; i < params.size(); ++i) {
      torch::NoGradGuard no_grad;
      params[i].copy_(replay_params[i]);
    }
    member_opt->zero_grad();
    task_loss("auto", true, alone->forward(x), y).backward();
    member_opt->step();
    replay_opt->zero_grad();
    task_loss("auto", true, replay->forward(x), y).backward();
    replay_opt->step();
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(testing::tensor_near(params[i].detach(), replay_params[i].detach(), kRtol, kAtol))
          << name << " " << i;
    }
  }
}

TEST(PackTest, AModelThatDoesNotPackIsAConfigError) {
  std::vector<std::unique_ptr<models::Model>> members;
  members.push_back(models::make("particlenet-lite", 0));
  members.push_back(models::make("particlenet-lite", 1));
  try {
    models::PackedModel pack(members);
    FAIL() << "particlenet-lite packed";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("train.pack"), std::string::npos) << what;
    EXPECT_NE(what.find("particlenet-lite"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace hpcml::launch
