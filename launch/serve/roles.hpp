/// @file
/// The role plan of `hpcml serve`: which ranks of MPI_COMM_WORLD are model servers
/// and which are clients.
#pragma once

#include <string>
#include <vector>

#include "collectives/backend.hpp"

namespace hpcml::launch::serve {

enum class Role { kClient, kServer };
const char* to_string(Role role);

/// What one rank knows about its place in the launch (-1: not known).
struct RankFacts {
  int het_group = -1;  ///< Slurm het-job component (SLURM_HET_GROUP / SLURM_NTASKS_HET_GROUP_<k>)
  int appnum = -1;     ///< MPI_APPNUM: the app context of an mpirun MPMD line (0, 1, ...)
};

/// How to split when the launch does not decide.
struct RoleOptions {
  /// "auto": a Slurm het job (several groups) or an MPMD line (several app contexts)
  /// decides, else `servers`/`server_ratio`; "count": always `servers`/`server_ratio`.
  std::string mode = "auto";
  int servers = 1;            ///< server ranks (the last ranks of the world)
  double server_ratio = 0.0;  ///< > 0: round(ratio * world size) servers (at least 1), instead of `servers`
};

/// The split of the world.
struct RolePlan {
  std::vector<Role> roles;   ///< by world rank
  std::vector<int> servers;  ///< world ranks, ascending
  std::vector<int> clients;  ///< world ranks, ascending
  std::string source;        ///< "het job", "mpmd", "count" or "ratio"
};

/// Pure function of every rank's facts (indexed by world rank) and the options:
/// - het groups on every rank and more than one group: the last group serves,
///   every other group runs clients (group 0 is the clients' group);
/// - else several MPMD app contexts: the last app context serves, the others are clients;
/// - else the last `servers` (or round(server_ratio * N)) ranks serve.
/// Throws hpcml::ConfigError naming `serve.servers` / `serve.server_ratio` /
/// `serve.roles` when the split leaves no client or no server.
RolePlan plan_roles(const std::vector<RankFacts>& facts, const RoleOptions& options);

/// "0,1,2": world ranks for the roles line every rank 0 prints.
std::string rank_list(const std::vector<int>& ranks);

/// This rank's facts: its het group from Slurm (RuntimeEnv) and MPI_APPNUM.
RankFacts local_facts();

/// Gathers every rank's facts over `world` (the world's ranks) and plans (collective
/// over `world`, under `timeout_s`). Every rank gets the same plan.
RolePlan plan_world(collectives::Backend& world, const RoleOptions& options, double timeout_s);

}  // namespace hpcml::launch::serve
