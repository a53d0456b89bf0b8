/// @file
/// Sizing the inference service: a server rank's capacity from its measured time per batch,
/// events/s for C client ranks and S server ranks, and the server ranks a het job needs.
/// docs/scaling.md#service-sizing states the model and what it ignores.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace hpcml::perf {

/// A server's measured time for one batch of `batch` rows.
struct BatchPoint {
  double batch = 0;
  double seconds = 0;
};

/// The server's time per batch against the batch size: piecewise-linear between the measured
/// points, the smallest point's time below it (a batch is never cheaper than the smallest
/// measured one), and beyond the largest the largest point's cost per row (flat per row).
class ServerCurve {
 public:
  /// Throws ConfigError "<what>: ..." for no points, a batch or time <= 0 or not finite, or a
  /// batch measured twice.
  ServerCurve(std::vector<BatchPoint> points, const std::string& what);
  double seconds(double batch) const;
  const std::vector<BatchPoint>& points() const { return points_; }

 private:
  std::vector<BatchPoint> points_;  // sorted by batch
};

/// "1:0.002,8:0.004" (batch:seconds, comma-separated) as points; ConfigError naming `what`.
std::vector<BatchPoint> parse_batch_times(const std::string& text, const std::string& what);
/// [{"batch": 1, "seconds": 0.002}, ...] or {"points": [...]}; ConfigError naming `what`.
std::vector<BatchPoint> batch_times_from_json(const nlohmann::json& doc, const std::string& what);

struct ServiceInputs {
  double client_s_per_event = 0;  ///< a client rank's own CPU time per event (it never waits on the server)
  double rows_per_event = 1;      ///< rows one event's request carries
  double request_overhead_s = 0;  ///< server time per request on top of the batch (unpacking, reply)
};

/// A server rank at its best batch.
struct ServerCapacity {
  double best_batch = 0;          ///< rows per batch that gives the most events/s
  double events_per_s = 0;        ///< (batch / rows_per_event) / (T(batch) + overhead * batch / rows_per_event)
  double clients_per_server = 0;  ///< events_per_s * client_s_per_event: clients one server feeds
};

/// The best of the measured batches of at least one event's rows (and one event's rows
/// itself); on a piecewise-linear curve events/s is monotone between points, so the best is
/// at a point. Throws ConfigError for inputs <= 0.
ServerCapacity server_capacity(const ServerCurve& curve, const ServiceInputs& inputs);

/// C client ranks and S server ranks.
struct ServicePoint {
  int clients = 0;
  int servers = 0;
  double offered_events_per_s = 0;    ///< clients / client_s_per_event
  double delivered_events_per_s = 0;  ///< min(offered, servers * capacity)
  double utilisation = 0;             ///< delivered / (servers * capacity)
  bool saturated = false;             ///< offered > servers * capacity
  int servers_needed = 0;             ///< ceil(offered / capacity): the het job's server ranks
};
ServicePoint project_service(const ServerCapacity& capacity, const ServiceInputs& inputs, int clients, int servers);

}  // namespace hpcml::perf
