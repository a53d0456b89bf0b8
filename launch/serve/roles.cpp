#include "launch/serve/roles.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.hpp"
#include "core/mpi.hpp"
#include "core/runtime_env.hpp"

namespace hpcml::launch::serve {

const char* to_string(Role role) {
  switch (role) {
    case Role::kClient:
      return "client";
    case Role::kServer:
      return "server";
  }
  return "?";
}

RolePlan plan_roles(const std::vector<RankFacts>& facts, const RoleOptions& options) {
  const int n = static_cast<int>(facts.size());
  HPCML_CHECK_AS(ConfigError, options.mode == "auto" || options.mode == "count",
                 "config error: key 'serve.roles': expected one of [auto, count], found '", options.mode, "'");
  HPCML_CHECK_AS(ConfigError, n >= 2,
                 "serve: the world has ", n, " rank; serving needs at least 2 (one client and one server)");
  RolePlan plan;
  plan.roles.assign(n, Role::kClient);
  const bool all_het = std::all_of(facts.begin(), facts.end(), [](const RankFacts& f) { return f.het_group >= 0; });
  const bool all_app = std::all_of(facts.begin(), facts.end(), [](const RankFacts& f) { return f.appnum >= 0; });
  int max_het = -1, max_app = -1;
  for (const auto& f : facts) {
    max_het = std::max(max_het, f.het_group);
    max_app = std::max(max_app, f.appnum);
  }
  if (options.mode == "auto" && all_het && max_het > 0) {
    plan.source = "het job";
    for (int r = 0; r < n; ++r) plan.roles[r] = facts[r].het_group == max_het ? Role::kServer : Role::kClient;
  } else if (options.mode == "auto" && all_app && max_app > 0) {
    plan.source = "mpmd";
    for (int r = 0; r < n; ++r) plan.roles[r] = facts[r].appnum == max_app ? Role::kServer : Role::kClient;
  } else {
    int servers = options.servers;
    if (options.server_ratio > 0) {
      plan.source = "ratio";
      servers = std::max(1, static_cast<int>(std::lround(options.server_ratio * n)));
      HPCML_CHECK_AS(ConfigError, servers < n, "config error: key 'serve.server_ratio': ", options.server_ratio,
                     " of ", n, " ranks gives ", servers, " servers and no client; expected a smaller ratio");
    } else {
      plan.source = "count";
      HPCML_CHECK_AS(ConfigError, servers >= 1 && servers < n, "config error: key 'serve.servers': expected 1 to ",
                     n - 1, " server ranks for a world of ", n, " ranks (at least one client), found ", servers);
    }
    for (int r = n - servers; r < n; ++r) plan.roles[r] = Role::kServer;
  }
  for (int r = 0; r < n; ++r) (plan.roles[r] == Role::kServer ? plan.servers : plan.clients).push_back(r);
  HPCML_CHECK_AS(ConfigError, !plan.servers.empty() && !plan.clients.empty(), "serve: the ", plan.source,
                 " role plan gives ", plan.clients.size(), " client and ", plan.servers.size(),
                 " server ranks; expected at least one of each (serve.roles=count ignores het groups and MPMD)");
  return plan;
}

RankFacts local_facts() {
  RankFacts facts;
  const auto env = RuntimeEnv::from_environment();
  if (env.het_group && env.het_size && *env.het_size > 1) facts.het_group = *env.het_group;
  facts.appnum = mpi_appnum();
  return facts;
}

RolePlan plan_world(collectives::Backend& world, const RoleOptions& options, double timeout_s) {
  const RankFacts mine = local_facts();
  const int size = world.size();
  const at::Tensor local = at::tensor({mine.het_group, mine.appnum}, at::kInt);
  at::Tensor flat = at::empty({size, 2}, at::kInt);
  std::vector<at::Tensor> outputs;
  for (int r = 0; r < size; ++r) outputs.push_back(flat[r]);  // consecutive pieces: gathered in place
  collectives::AllgatherOptions gather;
  gather.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(timeout_s));
  world.allgather(outputs, local, gather);
  const int* f = flat.data_ptr<int>();
  std::vector<RankFacts> facts(size);
  for (int r = 0; r < size; ++r) facts[r] = RankFacts{f[2 * r], f[2 * r + 1]};
  return plan_roles(facts, options);
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) out += (out.empty() ? "" : ",") + std::to_string(r);
  return out;
}

}  // namespace hpcml::launch::serve
