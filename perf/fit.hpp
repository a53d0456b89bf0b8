/// @file
/// Fitting a link's alpha and beta to measured allreduce times (`hpcml bench allreduce`
/// rows) at one rank count, for one algorithm, by least squares on the relative error.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "perf/allreduce.hpp"

namespace hpcml::perf {

/// One measured allreduce: `bytes` over `ranks` ranks took `seconds`.
struct Measurement {
  double bytes = 0;
  double seconds = 0;
  int ranks = 0;
};

/// A fit's result. The model: seconds = allreduce_seconds(algorithm, bytes, ranks, {L = ranks,
/// intra = {alpha, beta}}), i.e. every rank on one node, gamma folded into beta.
struct LinkFit {
  Link link;
  bool alpha_clamped = false;             ///< the unconstrained alpha came out negative: alpha = 0, beta refitted
  std::vector<double> predicted_s;        ///< per measurement, in input order
  std::vector<double> relative_residual;  ///< (predicted - measured) / measured
  double rms_relative_residual = 0;
  double max_abs_relative_residual = 0;
};

/// Weighted least squares of alpha and beta, each point weighted by 1/seconds^2 so that the
/// relative error counts (sizes span 4 KiB to 64 MiB). All measurements must share one rank
/// count (>= 2). Throws ConfigError "<what>: ..." for fewer than 2 distinct sizes, a
/// non-positive or non-finite time, mixed rank counts, or a beta that comes out <= 0.
/// A negative alpha is clamped at 0 (alpha_clamped) and beta refitted alone.
LinkFit fit_link(const std::vector<Measurement>& points, Algorithm algorithm, const std::string& what);

/// The rows of `hpcml bench allreduce --json` (an array of {impl, path, bytes, latency_us,
/// ranks?, ...}) with this impl and path, as measurements. With `ranks` > 0, rows whose
/// "ranks" differ are skipped and rows without "ranks" take it; with 0, every row must carry
/// "ranks". Throws ConfigError naming `what` and the row.
std::vector<Measurement> allreduce_rows(const nlohmann::json& rows, const std::string& impl, const std::string& path,
                                        int ranks, const std::string& what);

}  // namespace hpcml::perf
