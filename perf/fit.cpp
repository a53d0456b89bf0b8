#include "perf/fit.hpp"

#include <cmath>
#include <set>

#include "core/error.hpp"

namespace hpcml::perf {

namespace {

// The model is linear in (alpha, beta): seconds = A alpha + B beta, with A and B the
// algorithm's cost on unit links (every rank on one node: the measurements are one node's).
void coefficients(Algorithm algorithm, double bytes, int ranks, double* a, double* b) {
  Topology unit;
  unit.ranks_per_node = ranks;
  unit.intra = {1.0, 0.0};
  *a = allreduce_seconds(algorithm, bytes, ranks, unit);
  unit.intra = {0.0, 1.0};
  *b = allreduce_seconds(algorithm, bytes, ranks, unit);
}

void check_points(const std::vector<Measurement>& points, const std::string& what) {
  std::set<double> sizes;
  for (const auto& m : points) {
    HPCML_CHECK_AS(ConfigError, std::isfinite(m.seconds) && m.seconds > 0, what, ": expected positive times, found ",
                   m.seconds, " s at ", m.bytes, " bytes");
    HPCML_CHECK_AS(ConfigError, std::isfinite(m.bytes) && m.bytes > 0, what, ": expected positive sizes, found ",
                   m.bytes, " bytes");
    HPCML_CHECK_AS(ConfigError, m.ranks == points.front().ranks, what, ": expected one rank count, found rows at ",
                   points.front().ranks, " and ", m.ranks, " ranks (fit one rank count at a time)");
    sizes.insert(m.bytes);
  }
  HPCML_CHECK_AS(ConfigError, sizes.size() >= 2, what, ": expected measurements at 2 or more distinct sizes, found ",
                 sizes.size());
  HPCML_CHECK_AS(ConfigError, points.front().ranks >= 2, what, ": expected rows at 2 or more ranks, found ",
                 points.front().ranks, " (one rank does not communicate)");
}

}  // namespace

LinkFit fit_link(const std::vector<Measurement>& points, Algorithm algorithm, const std::string& what) {
  HPCML_CHECK_AS(ConfigError, algorithm != Algorithm::kAuto && algorithm != Algorithm::kHierarchical, what,
                 ": fit one algorithm (ring, recursive_doubling, rabenseifner or tree), found '", to_string(algorithm),
                 "'");
  HPCML_CHECK_AS(ConfigError, !points.empty(), what, ": no measurements to fit");
  check_points(points, what);
  const int ranks = points.front().ranks;
  // Normal equations of sum_i w_i (t_i - A_i alpha - B_i beta)^2 with w_i = 1 / t_i^2.
  double saa = 0, sab = 0, sbb = 0, sat = 0, sbt = 0;
  std::vector<double> as, bs;
  for (const auto& m : points) {
    double a = 0, b = 0;
    coefficients(algorithm, m.bytes, ranks, &a, &b);
    as.push_back(a);
    bs.push_back(b);
    const double w = 1.0 / (m.seconds * m.seconds);
    saa += w * a * a;
    sab += w * a * b;
    sbb += w * b * b;
    sat += w * a * m.seconds;
    sbt += w * b * m.seconds;
  }
  LinkFit fit;
  const double det = saa * sbb - sab * sab;
  double alpha = det != 0 ? (sat * sbb - sbt * sab) / det : 0;
  double beta = det != 0 ? (saa * sbt - sab * sat) / det : sbt / sbb;
  if (alpha < 0) {
    // A negative latency has no meaning; at 0 the best beta is the one-parameter fit.
    fit.alpha_clamped = true;
    alpha = 0;
    beta = sbt / sbb;
  }
  HPCML_CHECK_AS(ConfigError, beta > 0 && std::isfinite(beta), what, ": the fitted beta is not positive (", beta,
                 " s/byte): the times do not grow with the size");
  fit.link = {alpha, beta};
  double sum_sq = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    const double predicted = as[i] * alpha + bs[i] * beta;
    const double r = (predicted - points[i].seconds) / points[i].seconds;
    fit.predicted_s.push_back(predicted);
    fit.relative_residual.push_back(r);
    sum_sq += r * r;
    fit.max_abs_relative_residual = std::max(fit.max_abs_relative_residual, std::abs(r));
  }
  fit.rms_relative_residual = std::sqrt(sum_sq / static_cast<double>(points.size()));
  return fit;
}

std::vector<Measurement> allreduce_rows(const nlohmann::json& rows, const std::string& impl, const std::string& path,
                                        int ranks, const std::string& what) {
  HPCML_CHECK_AS(ConfigError, rows.is_array(), what, ": expected a list of rows (hpcml bench allreduce --json), found ",
                 rows.type_name());
  std::vector<Measurement> out;
  std::set<std::string> impls;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    const std::string where = what + ": row " + std::to_string(i);
    HPCML_CHECK_AS(ConfigError, row.is_object(), where, ": expected an object, found ", row.dump());
    HPCML_CHECK_AS(ConfigError, row.contains("impl") && row["impl"].is_string(), where,
                   ": key 'impl': expected a string, found ", row.contains("impl") ? row["impl"].dump() : "nothing");
    impls.insert(row["impl"].get<std::string>());
    if (row["impl"] != impl || (row.contains("path") && row["path"] != path)) continue;
    for (const char* key : {"bytes", "latency_us"}) {
      HPCML_CHECK_AS(ConfigError, row.contains(key) && row[key].is_number() && row[key].get<double>() > 0, where,
                     ": key '", key, "': expected a positive number, found ",
                     row.contains(key) ? row[key].dump() : "nothing");
    }
    Measurement m;
    m.bytes = row["bytes"].get<double>();
    m.seconds = row["latency_us"].get<double>() * 1e-6;
    m.ranks = ranks;
    if (row.contains("ranks")) {
      HPCML_CHECK_AS(ConfigError, row["ranks"].is_number_integer() && row["ranks"].get<int64_t>() >= 1, where,
                     ": key 'ranks': expected a positive integer, found ", row["ranks"].dump());
      m.ranks = static_cast<int>(row["ranks"].get<int64_t>());
      if (ranks > 0 && m.ranks != ranks) continue;  // another rank count of the same sweep
    }
    HPCML_CHECK_AS(ConfigError, m.ranks > 0, where, ": no 'ranks' in the row; give --ranks");
    out.push_back(m);
  }
  std::string list;
  for (const auto& name : impls) list += (list.empty() ? "" : ", ") + name;
  HPCML_CHECK_AS(ConfigError, !out.empty(), what, ": no rows with impl '", impl, "' and path '", path, "'",
                 ranks > 0 ? " at " + std::to_string(ranks) + " ranks" : std::string(), "; the file has impls [", list,
                 "]");
  return out;
}

}  // namespace hpcml::perf
