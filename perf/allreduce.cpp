#include "perf/allreduce.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace hpcml::perf {

namespace {

// floor(log2 p) for p >= 1.
int floor_log2(int p) {
  int q = 0;
  while ((2 << q) <= p) ++q;
  return q;
}

int ceil_log2(int p) {
  int q = floor_log2(p);
  return (1 << q) < p ? q + 1 : q;
}

// The per-rank cost of a network message when `sharing` ranks of a node send over the
// network at once: they share the node's NICs, so each sees 1/sharing of its bandwidth.
Link network_link(const Topology& t, int sharing) { return {t.network.alpha_s, t.network.beta_s_per_byte * sharing}; }

// The bandwidth a ring or a tree runs at across nodes: its slowest hop. Only one flow per
// ring (or tree edge) crosses a node boundary, so it has the node's whole network bandwidth
// (NCCL spreads its channels over the node's NICs).
double crossing_beta(const Topology& t, int local) {
  return local > 1 ? std::max(t.intra.beta_s_per_byte, t.network.beta_s_per_byte) : t.network.beta_s_per_byte;
}

// Ring: 2(p-1) steps of n/p bytes; NCCL's split of the steps' latencies: 2(M-1) cross nodes.
double ring(double n, int p, const Topology& t) {
  const int nodes = node_count(p, t);
  const int local = std::min(p, t.ranks_per_node);
  const double share = (p - 1.0) / p;
  if (nodes == 1) {
    return 2.0 * (p - 1) * t.intra.alpha_s + 2.0 * share * n * t.intra.beta_s_per_byte + share * n * t.gamma_s_per_byte;
  }
  return 2.0 * (p - nodes) * t.intra.alpha_s + 2.0 * (nodes - 1) * t.network.alpha_s +
         2.0 * share * n * crossing_beta(t, local) + share * n * t.gamma_s_per_byte;
}

// The link of an exchange between ranks `distance` apart in the power-of-two group. With
// block placement and L a power of two, partners are on one node iff 2*distance <= L; for
// other L this is the approximation docs/scaling.md states.
Link exchange_link(int distance, const Topology& t, int p) {
  const int local = std::min(p, t.ranks_per_node);
  if (2 * distance <= local) return t.intra;
  return network_link(t, local);
}

// MPICH's non-power-of-two rule (Thakur, Rabenseifner & Gropp 2005, sec. 4): with p' the
// largest power of two <= p and r = p - p', ranks 0..2r-1 pair up; the even one sends its
// vector to the odd one (one message of n bytes and a sum), p' ranks run the algorithm, and
// the result goes back (one more message of n bytes). Partners are neighbours: intra-node
// when L >= 2.
double non_power_of_two_extra(double n, int p, const Topology& t) {
  const int q = floor_log2(p);
  if ((1 << q) == p) return 0;
  const Link link = std::min(p, t.ranks_per_node) >= 2 ? t.intra : network_link(t, 1);
  return 2.0 * (link.alpha_s + n * link.beta_s_per_byte) + n * t.gamma_s_per_byte;
}

// Recursive doubling: log2 p' exchanges of the whole vector, each followed by a sum.
double recursive_doubling(double n, int p, const Topology& t) {
  const int q = floor_log2(p);
  double seconds = non_power_of_two_extra(n, p, t);
  for (int k = 0; k < q; ++k) {
    const Link link = exchange_link(1 << k, t, p);
    seconds += link.alpha_s + n * link.beta_s_per_byte + n * t.gamma_s_per_byte;
  }
  return seconds;
}

// Rabenseifner: recursive halving (step k exchanges and sums n/2^k bytes), then recursive
// doubling of the same pieces in reverse. Partner distances grow from 1 (MPICH's order), so
// the largest pieces stay in the node.
double rabenseifner(double n, int p, const Topology& t) {
  const int q = floor_log2(p);
  double seconds = non_power_of_two_extra(n, p, t);
  double piece = n;
  for (int k = 0; k < q; ++k) {
    piece /= 2;
    const Link link = exchange_link(1 << k, t, p);
    seconds += 2.0 * (link.alpha_s + piece * link.beta_s_per_byte) + piece * t.gamma_s_per_byte;
  }
  return seconds;
}

// NCCL's tree model (src/graph/tuning.cc): latency 2((L-1) intra + log2(M) network steps),
// algorithm bandwidth half the bus bandwidth (every byte goes up the tree and down again,
// pipelined): 2 n beta. In one node NCCL's "tree" is a chain of the p ranks.
double tree(double n, int p, const Topology& t) {
  const int nodes = node_count(p, t);
  const int local = std::min(p, t.ranks_per_node);
  if (nodes == 1) return 2.0 * (p - 1) * t.intra.alpha_s + 2.0 * n * t.intra.beta_s_per_byte + n * t.gamma_s_per_byte;
  return 2.0 * ((local - 1) * t.intra.alpha_s + ceil_log2(nodes) * t.network.alpha_s) +
         2.0 * n * crossing_beta(t, local) + n * t.gamma_s_per_byte;
}

// Node-then-network: a ring reduce-scatter in the node leaves each local rank the sum of 1/L
// of the vector; each local rank allreduces its piece with its peers on the other nodes (L
// concurrent allreduces of n/L bytes over M ranks that share the node's NICs: per rank
// L * beta_network); a ring allgather in the node spreads the result.
double hierarchical(double n, int p, const Topology& t) {
  const int local = std::min(p, t.ranks_per_node);
  const int nodes = node_count(p, t);
  const double share = (local - 1.0) / local;
  const double in_node =
      2.0 * (local - 1) * t.intra.alpha_s + 2.0 * share * n * t.intra.beta_s_per_byte + share * n * t.gamma_s_per_byte;
  if (nodes == 1) return in_node;
  Topology across;
  across.ranks_per_node = 1;
  across.network = network_link(t, local);
  across.intra = across.network;
  across.gamma_s_per_byte = t.gamma_s_per_byte;
  return in_node + allreduce_seconds(Algorithm::kAuto, n / local, nodes, across);
}

}  // namespace

const char* to_string(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kRing:
      return "ring";
    case Algorithm::kRecursiveDoubling:
      return "recursive_doubling";
    case Algorithm::kRabenseifner:
      return "rabenseifner";
    case Algorithm::kTree:
      return "tree";
    case Algorithm::kHierarchical:
      return "hierarchical";
    case Algorithm::kAuto:
      return "auto";
  }
  return "?";
}

Algorithm parse_algorithm(const std::string& name, const std::string& what) {
  for (Algorithm a : {Algorithm::kRing, Algorithm::kRecursiveDoubling, Algorithm::kRabenseifner, Algorithm::kTree,
                      Algorithm::kHierarchical, Algorithm::kAuto}) {
    if (name == to_string(a)) return a;
  }
  HPCML_THROW(ConfigError, what,
              ": expected one of [ring, recursive_doubling, rabenseifner, tree, hierarchical, auto], found '", name,
              "'");
}

std::vector<Algorithm> flat_algorithms() {
  return {Algorithm::kRing, Algorithm::kRecursiveDoubling, Algorithm::kRabenseifner, Algorithm::kTree};
}

int node_count(int ranks, const Topology& topology) {
  const int local = std::max(1, topology.ranks_per_node);
  return (ranks + local - 1) / local;
}

double allreduce_seconds(Algorithm algorithm, double bytes, int ranks, const Topology& topology) {
  HPCML_CHECK(ranks >= 1 && bytes >= 0 && topology.ranks_per_node >= 1, "allreduce_seconds: bad arguments: ranks ",
              ranks, ", bytes ", bytes, ", ranks_per_node ", topology.ranks_per_node);
  if (ranks == 1) return 0;
  switch (algorithm) {
    case Algorithm::kRing:
      return ring(bytes, ranks, topology);
    case Algorithm::kRecursiveDoubling:
      return recursive_doubling(bytes, ranks, topology);
    case Algorithm::kRabenseifner:
      return rabenseifner(bytes, ranks, topology);
    case Algorithm::kTree:
      return tree(bytes, ranks, topology);
    case Algorithm::kHierarchical:
      return hierarchical(bytes, ranks, topology);
    case Algorithm::kAuto:
      return allreduce_seconds(cheapest_algorithm(bytes, ranks, topology), bytes, ranks, topology);
  }
  return 0;
}

Algorithm cheapest_algorithm(double bytes, int ranks, const Topology& topology) {
  Algorithm best = Algorithm::kRing;
  double best_seconds = INFINITY;
  for (Algorithm a : flat_algorithms()) {
    const double s = allreduce_seconds(a, bytes, ranks, topology);
    if (s < best_seconds) {
      best = a;
      best_seconds = s;
    }
  }
  return best;
}

}  // namespace hpcml::perf
