#include "perf/system.hpp"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "core/config.hpp"
#include "core/error.hpp"

namespace hpcml::perf {

namespace {

// Figures and where they come from; docs/scaling.md#systems has the same table.
constexpr double kNvlink3PairBytesPerS = 100e9;    // 4 NVLink-3 links x 25 GB/s per direction
constexpr double kNvlinkStepS = 3.4e-6;            // NCCL's per-step NVLink latency (ring, Simple)
constexpr double kNetworkStepS = 9.6e-6;           // NCCL's per-step network latency (ring, Simple)
constexpr double kSlingshot11NicBytesPerS = 25e9;  // Cassini NIC: 200 Gb/s
constexpr double kHdrBytesPerS = 25e9;             // InfiniBand HDR: 200 Gb/s

const char* kNcclTuning =
    "NCCL's tuning model, src/graph/tuning.cc (hwLat: NVLink ring Simple 3.4 us, network ring Simple 9.6 us "
    "per step), https://github.com/NVIDIA/nccl/blob/master/src/graph/tuning.cc";
const char* kNvlink3 =
    "A100: 12 NVLink-3 links, 600 GB/s in all (300 GB/s each way), "
    "https://www.nvidia.com/en-us/data-center/nvlink/; with 4 fully connected GPUs, 4 links (100 GB/s each way) "
    "per pair (assumption: links split evenly; NCCL's several rings can use more)";

// Both presets: 4 A100 per node over NVLink 3 and NCCL's latencies; they differ in the network.
System a100_nodes(const char* name, const char* description, const std::string& network_source,
                  double network_bytes_per_s) {
  System s;
  s.name = name;
  s.description = description;
  s.source = network_source + "; node: " + kNvlink3 + "; alphas: " + kNcclTuning;
  s.topology.ranks_per_node = 4;
  s.topology.intra = {kNvlinkStepS, 1.0 / kNvlink3PairBytesPerS};
  s.topology.network = {kNetworkStepS, 1.0 / network_bytes_per_s};
  s.algorithm = Algorithm::kAuto;
  return s;
}

System perlmutter() {
  return a100_nodes("perlmutter-gpu",
                    "NERSC Perlmutter GPU nodes: 4 A100 per node over NVLink 3, 4 Slingshot-11 NICs per node",
                    "4 A100 and 4 HPE Slingshot-11 NICs per GPU node: https://docs.nersc.gov/systems/perlmutter/"
                    "architecture/; Cassini NIC 200 Gb/s (25 GB/s): https://glennklockwood.com/garden/slingshot "
                    "(network: 4 x 25 = 100 GB/s per node, peak, not measured)",
                    4 * kSlingshot11NicBytesPerS);
}

System ib_hdr() {
  return a100_nodes("ib-hdr",
                    "a generic InfiniBand HDR cluster: 4 GPUs per node over NVLink 3, one 200 Gb/s HDR HCA per node",
                    "InfiniBand HDR: 200 Gb/s per port (25 GB/s per node, peak; one HCA per node is this preset's "
                    "assumption), e.g. NVIDIA ConnectX-6 https://www.nvidia.com/en-us/networking/infiniband-adapters/",
                    kHdrBytesPerS);
}

double number(const YAML::Node& node, const std::string& key, const std::string& what) {
  double value = 0;
  const bool ok = node && node.IsScalar() && YAML::convert<double>::decode(node, value) && std::isfinite(value);
  HPCML_CHECK_AS(ConfigError, ok, what, ": key '", key, "': expected a number, found ",
                 config::detail::describe_node(node));
  return value;
}

void check_keys(const YAML::Node& node, const std::set<std::string>& known, const std::string& prefix,
                const std::string& what) {
  std::vector<std::string> names(known.begin(), known.end());
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (known.count(key) > 0) continue;
    const std::string guess = config::detail::nearest(key, names);
    HPCML_THROW(ConfigError, what, ": unknown key '", prefix, key, "'",
                guess.empty() ? std::string() : "; did you mean '" + prefix + guess + "'?");
  }
}

Link link_from_yaml(const YAML::Node& node, const std::string& key, const std::string& what) {
  HPCML_CHECK_AS(ConfigError, node && node.IsMap(), what, ": key '", key,
                 "': expected a mapping {alpha_s, beta_s_per_byte or bandwidth_gb_per_s}, found ",
                 config::detail::describe_node(node));
  check_keys(node, {"alpha_s", "beta_s_per_byte", "bandwidth_gb_per_s"}, key + ".", what);
  Link link;
  link.alpha_s = number(node["alpha_s"], key + ".alpha_s", what);
  HPCML_CHECK_AS(ConfigError, link.alpha_s >= 0, what, ": key '", key, ".alpha_s': expected a number >= 0, found ",
                 link.alpha_s);
  const bool has_beta = static_cast<bool>(node["beta_s_per_byte"]);
  const bool has_bw = static_cast<bool>(node["bandwidth_gb_per_s"]);
  HPCML_CHECK_AS(ConfigError, has_beta != has_bw, what, ": key '", key,
                 "': expected exactly one of beta_s_per_byte and bandwidth_gb_per_s, found ",
                 has_beta ? "both" : "neither");
  const std::string which = key + (has_beta ? ".beta_s_per_byte" : ".bandwidth_gb_per_s");
  const double v = number(has_beta ? node["beta_s_per_byte"] : node["bandwidth_gb_per_s"], which, what);
  HPCML_CHECK_AS(ConfigError, v > 0, what, ": key '", which, "': expected a positive number, found ", v);
  link.beta_s_per_byte = has_beta ? v : 1.0 / (v * 1e9);
  return link;
}

std::string scalar_text(const YAML::Node& node, const std::string& key, const std::string& what) {
  HPCML_CHECK_AS(ConfigError, node.IsScalar(), what, ": key '", key, "': expected a string, found ",
                 config::detail::describe_node(node));
  return node.as<std::string>();
}

}  // namespace

const std::vector<System>& preset_systems() {
  static const std::vector<System> presets{perlmutter(), ib_hdr()};
  return presets;
}

System system_from_yaml(const YAML::Node& node, const std::string& what) {
  HPCML_CHECK_AS(ConfigError, node.IsMap(), what,
                 ": expected a mapping of keys (ranks_per_node, intra, network, ...), "
                 "found ",
                 config::detail::describe_node(node));
  check_keys(node,
             {"name", "description", "source", "ranks_per_node", "intra", "network", "gamma_s_per_byte", "algorithm"},
             "", what);
  System s;
  s.name = node["name"] ? scalar_text(node["name"], "name", what) : "custom";
  if (node["description"]) s.description = scalar_text(node["description"], "description", what);
  s.source = node["source"] ? scalar_text(node["source"], "source", what) : "user-defined system file";
  const double local = number(node["ranks_per_node"], "ranks_per_node", what);
  HPCML_CHECK_AS(ConfigError, local >= 1 && local <= 1e6 && std::floor(local) == local, what,
                 ": key 'ranks_per_node': expected an integer in [1, 1000000], found ",
                 config::detail::describe_node(node["ranks_per_node"]));
  s.topology.ranks_per_node = static_cast<int>(local);
  s.topology.intra = link_from_yaml(node["intra"], "intra", what);
  s.topology.network = link_from_yaml(node["network"], "network", what);
  if (node["gamma_s_per_byte"]) {
    s.topology.gamma_s_per_byte = number(node["gamma_s_per_byte"], "gamma_s_per_byte", what);
    HPCML_CHECK_AS(ConfigError, s.topology.gamma_s_per_byte >= 0, what,
                   ": key 'gamma_s_per_byte': expected a number >= 0, found ", s.topology.gamma_s_per_byte);
  }
  if (node["algorithm"]) {
    s.algorithm = parse_algorithm(scalar_text(node["algorithm"], "algorithm", what), what + ": key 'algorithm'");
  }
  return s;
}

System find_system(const std::string& name_or_path, const std::string& what) {
  std::string names;
  for (const auto& s : preset_systems()) {
    if (s.name == name_or_path) return s;
    names += (names.empty() ? "" : ", ") + s.name;
  }
  std::ifstream in(name_or_path);
  HPCML_CHECK_AS(ConfigError, in.good(), what, ": expected a preset [", names,
                 "] or a readable system file (YAML or JSON), found '", name_or_path, "'");
  std::stringstream text;
  text << in.rdbuf();
  YAML::Node node;
  try {
    node = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    HPCML_THROW(ConfigError, what, ": ", name_or_path, ": not YAML or JSON (line ", e.mark.line + 1, ": ", e.msg, ")");
  }
  return system_from_yaml(node, what + ": " + name_or_path);
}

std::string system_to_yaml(const System& s) {
  YAML::Emitter out;
  out.SetDoublePrecision(17);
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << s.name;
  if (!s.description.empty()) out << YAML::Key << "description" << YAML::Value << s.description;
  out << YAML::Key << "source" << YAML::Value << s.source;
  out << YAML::Key << "ranks_per_node" << YAML::Value << s.topology.ranks_per_node;
  for (const auto& [key, link] : {std::pair<const char*, Link>{"intra", s.topology.intra},
                                  std::pair<const char*, Link>{"network", s.topology.network}}) {
    out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "alpha_s" << YAML::Value << link.alpha_s;
    out << YAML::Key << "beta_s_per_byte" << YAML::Value << link.beta_s_per_byte;
    out << YAML::EndMap;
  }
  out << YAML::Key << "gamma_s_per_byte" << YAML::Value << s.topology.gamma_s_per_byte;
  out << YAML::Key << "algorithm" << YAML::Value << to_string(s.algorithm);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace hpcml::perf
