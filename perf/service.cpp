#include "perf/service.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/error.hpp"

namespace hpcml::perf {

ServerCurve::ServerCurve(std::vector<BatchPoint> points, const std::string& what) : points_(std::move(points)) {
  HPCML_CHECK_AS(ConfigError, !points_.empty(), what, ": expected at least one (batch, seconds) point");
  for (const auto& p : points_) {
    HPCML_CHECK_AS(ConfigError, std::isfinite(p.batch) && p.batch > 0 && std::isfinite(p.seconds) && p.seconds > 0,
                   what, ": expected positive batch sizes and times, found batch ", p.batch, " in ", p.seconds, " s");
  }
  std::sort(points_.begin(), points_.end(), [](const BatchPoint& a, const BatchPoint& b) { return a.batch < b.batch; });
  for (size_t i = 1; i < points_.size(); ++i) {
    HPCML_CHECK_AS(ConfigError, points_[i].batch != points_[i - 1].batch, what, ": batch ", points_[i].batch,
                   " is given twice");
  }
}

double ServerCurve::seconds(double batch) const {
  const auto& first = points_.front();
  const auto& last = points_.back();
  if (batch <= first.batch) return first.seconds;
  if (batch >= last.batch) return last.seconds * batch / last.batch;
  const auto hi = std::lower_bound(points_.begin(), points_.end(), batch,
                                   [](const BatchPoint& p, double b) { return p.batch < b; });
  const auto lo = hi - 1;
  const double f = (batch - lo->batch) / (hi->batch - lo->batch);
  return lo->seconds + f * (hi->seconds - lo->seconds);
}

std::vector<BatchPoint> parse_batch_times(const std::string& text, const std::string& what) {
  std::vector<BatchPoint> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    const size_t colon = item.find(':');
    BatchPoint p;
    char* end_b = nullptr;
    char* end_s = nullptr;
    bool ok = colon != std::string::npos && colon > 0 && colon + 1 < item.size();
    if (ok) {
      const std::string b = item.substr(0, colon), s = item.substr(colon + 1);
      p.batch = std::strtod(b.c_str(), &end_b);
      p.seconds = std::strtod(s.c_str(), &end_s);
      ok = *end_b == '\0' && *end_s == '\0';
    }
    HPCML_CHECK_AS(ConfigError, ok, what,
                   ": expected BATCH:SECONDS pairs separated by commas (1:0.002,8:0.004), "
                   "found '",
                   item, "'");
    out.push_back(p);
    start = comma + 1;
  }
  return out;
}

std::vector<BatchPoint> batch_times_from_json(const nlohmann::json& doc, const std::string& what) {
  const nlohmann::json& list = doc.is_object() && doc.contains("points") ? doc["points"] : doc;
  HPCML_CHECK_AS(ConfigError, list.is_array(), what,
                 ": expected a list of {\"batch\": ..., \"seconds\": ...} (or {\"points\": [...]}), found ",
                 doc.type_name());
  std::vector<BatchPoint> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& row = list[i];
    for (const char* key : {"batch", "seconds"}) {
      HPCML_CHECK_AS(ConfigError, row.is_object() && row.contains(key) && row[key].is_number(), what, ": point ", i,
                     ": key '", key, "': expected a number, found ",
                     row.is_object() && row.contains(key) ? row[key].dump() : std::string("nothing"));
    }
    out.push_back({row["batch"].get<double>(), row["seconds"].get<double>()});
  }
  return out;
}

ServerCapacity server_capacity(const ServerCurve& curve, const ServiceInputs& in) {
  HPCML_CHECK_AS(ConfigError, in.client_s_per_event > 0 && std::isfinite(in.client_s_per_event),
                 "client time per event: expected a positive number of seconds, found ", in.client_s_per_event);
  HPCML_CHECK_AS(ConfigError, in.rows_per_event > 0 && std::isfinite(in.rows_per_event),
                 "rows per event: expected a positive number, found ", in.rows_per_event);
  HPCML_CHECK_AS(ConfigError, in.request_overhead_s >= 0 && std::isfinite(in.request_overhead_s),
                 "request overhead: expected a number of seconds >= 0, found ", in.request_overhead_s);
  std::vector<double> candidates{in.rows_per_event};
  for (const auto& p : curve.points()) {
    if (p.batch >= in.rows_per_event) candidates.push_back(p.batch);
  }
  ServerCapacity best;
  for (double batch : candidates) {
    const double events = batch / in.rows_per_event;
    const double rate = events / (curve.seconds(batch) + in.request_overhead_s * events);
    if (rate > best.events_per_s) {
      best.events_per_s = rate;
      best.best_batch = batch;
    }
  }
  best.clients_per_server = best.events_per_s * in.client_s_per_event;
  return best;
}

ServicePoint project_service(const ServerCapacity& capacity, const ServiceInputs& in, int clients, int servers) {
  HPCML_CHECK_AS(ConfigError, clients >= 1 && servers >= 1, "service: expected >= 1 client and server ranks, found ",
                 clients, " clients and ", servers, " servers");
  ServicePoint p;
  p.clients = clients;
  p.servers = servers;
  p.offered_events_per_s = clients / in.client_s_per_event;
  const double ceiling = servers * capacity.events_per_s;
  p.delivered_events_per_s = std::min(p.offered_events_per_s, ceiling);
  p.utilisation = p.delivered_events_per_s / ceiling;
  p.saturated = p.offered_events_per_s > ceiling;
  // A relative 1e-9 keeps an exact fit (clients = k * clients_per_server) at k servers.
  p.servers_needed = std::max(1, static_cast<int>(std::ceil(p.offered_events_per_s / capacity.events_per_s - 1e-9)));
  return p;
}

}  // namespace hpcml::perf
