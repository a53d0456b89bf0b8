/// @file
/// Alpha-beta-gamma costs of the allreduce algorithms MPI and NCCL use, on a two-level
/// machine (ranks_per_node ranks share a node's intra link; nodes talk over the network),
/// and of hpcml's node-then-network reduction. Equations, sources and assumptions:
/// docs/scaling.md#the-performance-model.
#pragma once

#include <string>
#include <vector>

namespace hpcml::perf {

/// One kind of link: a message of n bytes costs alpha_s + n * beta_s_per_byte.
struct Link {
  double alpha_s = 0;          ///< latency per message (step), seconds
  double beta_s_per_byte = 0;  ///< inverse bandwidth, seconds per byte
};

/// The machine the ranks run on. Ranks are placed in blocks: ranks [kL, (k+1)L) share node k.
struct Topology {
  int ranks_per_node = 1;       ///< L (>= 1)
  Link intra;                   ///< between two ranks of one node (NVLink, shared memory)
  Link network;                 ///< between nodes; beta is per node (all its NICs together)
  double gamma_s_per_byte = 0;  ///< cost of summing one byte (0: folded into beta)
};

/// The allreduce algorithms of the model.
enum class Algorithm {
  kRing,               ///< reduce-scatter + allgather around a ring (MPI large messages, NCCL ring)
  kRecursiveDoubling,  ///< log2 p exchanges of the whole vector (MPICH short messages)
  kRabenseifner,       ///< recursive-halving reduce-scatter + recursive-doubling allgather
  kTree,               ///< NCCL's trees: a chain in the node, a double binary tree across nodes
  kHierarchical,       ///< hpcml's node-then-network: node reduce-scatter, per-rank network allreduce, node allgather
  kAuto,               ///< the cheapest of ring, recursive doubling, Rabenseifner and tree for each message
};

const char* to_string(Algorithm algorithm);
/// "ring", "recursive_doubling", "rabenseifner", "tree", "hierarchical" or "auto"; anything
/// else throws ConfigError "<what>: expected one of [...], found '<name>'".
Algorithm parse_algorithm(const std::string& name, const std::string& what);
/// The algorithms `auto` chooses among (the flat ones MPI and NCCL pick from).
std::vector<Algorithm> flat_algorithms();

/// Seconds one allreduce of `bytes` takes over `ranks` ranks on `topology` (0 at one rank).
/// kAuto gives the cheapest flat algorithm's time.
double allreduce_seconds(Algorithm algorithm, double bytes, int ranks, const Topology& topology);
/// What kAuto picks for this message (the first of flat_algorithms() on a tie).
Algorithm cheapest_algorithm(double bytes, int ranks, const Topology& topology);

/// Nodes the job spans: ceil(ranks / ranks_per_node).
int node_count(int ranks, const Topology& topology);

}  // namespace hpcml::perf
