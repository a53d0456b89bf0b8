/// @file
/// A campaign through the in-job inference service (infer.via: service; internal to
/// launch/infer): the last ranks serve the campaign's model, the other ranks are the
/// campaign's workers and send every batch to them (docs/campaigns.md).
#pragma once

#include <nlohmann/json.hpp>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "collectives/backend.hpp"
#include "launch/runtime.hpp"
#include "launch/serve/client.hpp"
#include "launch/train/feed.hpp"
#include "launch/train/train_config.hpp"
#include "models/model.hpp"

namespace hpcml::launch {

/// Who does what: every rank of the world gets the same plan.
struct ServiceRoles {
  bool server = false;
  std::vector<int> servers, workers;    ///< world ranks
  collectives::BackendPtr world;        ///< the world (MPI)
  collectives::BackendPtr serve_comm;   ///< the service's communicator (world ranks)
  collectives::BackendPtr report_comm;  ///< the servers' reports to world rank 0
  collectives::BackendPtr group;        ///< this rank's side: the workers, or the servers
  std::string source;                   ///< how the roles were decided ("het job", "mpmd", "count", "ratio")
};

/// Plans the roles from infer.service (collective over the world). Throws ConfigError
/// for a model the service cannot run (only zoo classifiers and regressors) and for
/// a split with no worker or no server.
ServiceRoles plan_service(Context& ctx, const TrainConfig& c);

/// The folder of the model repository the servers load, under the campaign directory.
std::string service_repository(const std::string& campaign_dir);

/// World rank 0: writes the repository: the model with `checkpoint`'s weights, batches
/// of up to infer.batch_size x workers rows, infer.service's instances and queue delay.
void write_service_repository(const std::string& campaign_dir, const TrainConfig& c, const std::string& checkpoint,
                              int workers);

/// A server rank: serves until every worker has said DONE, then sends its report to
/// world rank 0. Returns this rank's exit code.
int serve_campaign(const ServiceRoles& roles, Context& ctx, const TrainConfig& c, const std::string& campaign_dir);

/// A worker's side of the service: its client, and the figures of the sizing report.
class CampaignService {
 public:
  CampaignService(const ServiceRoles& roles, const TrainConfig& c, const std::string& campaign_dir);
  ~CampaignService();
  /// Sends one batch's model inputs (ragged inputs unpadded); returns at once.
  std::future<serve::InferResult> submit(const Example& batch);
  /// The model's output for a submitted batch (ServeError with one line when no
  /// server can answer and there is no fallback).
  at::Tensor wait(std::future<serve::InferResult>& future);
  /// DONE to every server. Every worker calls it after the farm.
  void finish();
  /// Worker rank 0 after finish(): the servers' reports and the job's sizing figures
  /// (utilisation, batch sizes, queue time, F_eq from measured times). `local` is the
  /// worker's model: its forward of the last batch is timed for X.
  nlohmann::json report(collectives::Backend& workers, models::Model& local, double timeout_s);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace hpcml::launch
