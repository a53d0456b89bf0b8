#include "launch/infer/campaign_service.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/mpi.hpp"
#include "core/watchdog.hpp"
#include "launch/infer/campaign_files.hpp"
#include "launch/serve/driver.hpp"
#include "launch/serve/roles.hpp"
#include "launch/serve/server.hpp"
#include "models/registry.hpp"

namespace hpcml::launch {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr int kTagServerReport = 7201;

// Zoo classifiers and regressors: the servers build them by name from the checkpoint.
void check_servable(const TrainConfig& c) {
  std::string names;
  bool servable = false;
  for (const auto& e : models::zoo()) {
    if (e.task == "density") continue;
    names += (names.empty() ? "" : ", ") + e.name;
    servable |= e.name == c.model.name;
  }
  HPCML_CHECK_AS(ConfigError, servable, "config error: key 'infer.via': service runs the zoo's classifiers and "
                 "regressors (", names, "); model '", c.model.name, "' runs with via: local");
  // The service's servers run float32: a lower precision would be silently ignored there.
  HPCML_CHECK_AS(ConfigError, c.train.precision == "fp32", "config error: key 'train.precision': infer.via: "
                 "service runs float32, found ", c.train.precision, "; set train.precision: fp32, or infer.via: local");
}

}  // namespace

ServiceRoles plan_service(Context& ctx, const TrainConfig& c) {
  check_servable(c);
  const double timeout_s = c.runtime.collective_timeout_s;
  ServiceRoles r;
  r.world = serve::mpi_world(ctx, timeout_s);
  HPCML_CHECK_AS(ConfigError, r.world->size() >= 2, "config error: key 'infer.via': service needs at least 2 ranks "
                 "(a worker and a server), found ", r.world->size());
  serve::RoleOptions o;
  o.mode = c.infer.service.roles;
  o.servers = c.infer.service.servers;
  o.server_ratio = c.infer.service.server_ratio;
  serve::RolePlan plan;
  try {
    plan = serve::plan_world(*r.world, o, timeout_s);
  } catch (const ConfigError& e) {
    // plan_roles names the serve.* keys; a campaign's are infer.service.*.
    std::string text = e.message();
    for (size_t at; (at = text.find("serve.")) != std::string::npos;) text.replace(at, 6, "infer.service.");
    HPCML_THROW(ConfigError, text);
  }
  r.servers = plan.servers;
  r.workers = plan.clients;
  r.source = plan.source;
  const int rank = r.world->rank();
  r.server = plan.roles[static_cast<size_t>(rank)] == serve::Role::kServer;
  HPCML_CHECK_AS(ConfigError, !r.server || rank != 0, "config error: key 'infer.service': world rank 0 must be a "
                 "worker (it coordinates the campaign); the servers are the last ranks");
  if (rank == 0) {
    std::printf("infer: via service, roles (%s): workers %s; servers %s\n", r.source.c_str(),
                serve::rank_list(r.workers).c_str(), serve::rank_list(r.servers).c_str());
    std::fflush(stdout);
  }
  // Collective over the world, while every rank is surely alive.
  r.serve_comm = r.world->dup("infer-serve");
  r.report_comm = r.world->dup("infer-serve-reports");
  r.group = r.world->split(r.server ? 1 : 0, rank, r.server ? "infer-servers" : "infer-workers");
  return r;
}

std::string service_repository(const std::string& campaign_dir) {
  return (fs::path(campaign_dir) / "service").string();
}

void write_service_repository(const std::string& campaign_dir, const TrainConfig& c, const std::string& checkpoint,
                              int workers) {
  const fs::path dir = fs::path(service_repository(campaign_dir)) / c.model.name;
  fs::create_directories(dir);
  const auto& s = c.infer.service;
  const int64_t max_batch = std::min<int64_t>(int64_t{1} << 20, int64_t{c.infer.batch_size} * std::max(workers, 1));
  std::string text = "# written by hpcml infer (infer.via: service); rewritten by every job\n";
  text += "platform: zoo\nzoo_model: " + c.model.name + "\ncheckpoint: \"" + fs::absolute(checkpoint).string() +
          "\"\nmax_batch_size: " + std::to_string(max_batch) + "\ninstances: " + std::to_string(s.instances) +
          "\nmax_queue_delay_us: " + std::to_string(s.max_queue_delay_us) + "\n";
  campaign_files::publish(dir / "config.yaml", text, /*once=*/false);  // several jobs may write it at once
}

int serve_campaign(const ServiceRoles& roles, Context& ctx, const TrainConfig& c, const std::string& campaign_dir) {
  serve::ServerOptions o;
  o.repository = service_repository(campaign_dir);
  o.client_timeout_s = c.infer.service.client_timeout_s;
  o.intra_op_threads = c.infer.service.server_threads;
  o.compute = c.infer.service.server_compute;
  o.drain_timeout_s = c.runtime.collective_timeout_s;
  o.device = ctx.device.device;
  const serve::ServerReport report = serve::run_server(roles.serve_comm, roles.workers, o);
  json mine = json::parse(report.to_json());
  mine["instances"] = c.infer.service.instances;
  int exit_code = 0;
  if (!report.vanished_clients.empty()) {
    std::string ranks;
    for (int w : report.vanished_clients) ranks += (ranks.empty() ? "" : ", ") + std::to_string(w);
    std::fprintf(stderr, "hpcml: %s infer: worker rank(s) %s vanished (silent past infer.service.client_timeout_s); "
                 "their queued batches were dropped\n", rank_tag().c_str(), ranks.c_str());
    exit_code = kExitError;
  }
  // To world rank 0, under the deadline (it may have ended already: then say so).
  auto text = std::make_shared<std::string>(mine.dump());
  const collectives::WorkPtr send =
      roles.report_comm->send(text->data(), text->size(), 0, kTagServerReport, {/*async=*/true});
  const auto deadline = Clock::now() + std::chrono::duration<double>(c.runtime.collective_timeout_s);
  while (!send->is_completed() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!send->is_completed()) {
    std::fprintf(stderr, "hpcml: %s infer: world rank 0 did not take this server's report in time\n",
                 rank_tag().c_str());
    new std::shared_ptr<std::string>(text);  // the dropped Work detaches the send; MPI may still read it
  }
  return exit_code;
}

struct CampaignService::State {
  std::unique_ptr<serve::Client> client;
  collectives::BackendPtr report_comm;
  std::vector<int> servers;
  std::string model;
  std::vector<std::string> ragged;  // ragged inputs (sent unpadded; the server pads and makes "mask")
  Example last;                     // the last batch sent, for timing the local forward (X)
  // Sums over this worker's requests (microseconds) and rows.
  double requests = 0, rows = 0, pack_us = 0, latency_us = 0, queue_us = 0, input_us = 0, infer_us = 0,
         infer_share_us = 0, output_us = 0;
};

CampaignService::CampaignService(const ServiceRoles& roles, const TrainConfig& c, const std::string& campaign_dir)
    : state_(std::make_unique<State>()) {
  auto& s = *state_;
  serve::ClientOptions o;
  o.server_timeout_s = c.infer.service.server_timeout_s;
  o.retry_s = c.infer.service.retry_s;
  o.fallback = c.infer.service.fallback;
  o.repository = service_repository(campaign_dir);
  s.client = std::make_unique<serve::Client>(roles.serve_comm, roles.servers, o);
  s.report_comm = roles.report_comm;
  s.servers = roles.servers;
  s.model = c.model.name;
  for (const auto& in : models::zoo_entry(c.model.name).inputs)
    if (!in.shape.empty() && in.shape.front() == -1 && in.name != "mask") s.ragged.push_back(in.name);
}

CampaignService::~CampaignService() = default;

std::future<serve::InferResult> CampaignService::submit(const Example& batch) {
  auto& s = *state_;
  serve::NamedInputs inputs;
  for (const auto& [name, t] : batch.inputs) {
    if (name == "mask") continue;
    if (std::find(s.ragged.begin(), s.ragged.end(), name) == s.ragged.end()) {
      inputs[name] = {t.contiguous(), at::Tensor()};
      continue;
    }
    // Padded (B, L, F) with its mask (B, L): the valid items, in order, and offsets.
    const at::Tensor valid = batch.inputs.at("mask").to(at::kBool);
    const at::Tensor lengths = valid.sum(1).to(at::kLong);
    inputs[name] = {t.index({valid}).contiguous(), at::cat({at::zeros({1}, at::kLong), lengths.cumsum(0)})};
  }
  s.last = batch;
  return s.client->infer_async(s.model, inputs);
}

at::Tensor CampaignService::wait(std::future<serve::InferResult>& future) {
  auto& s = *state_;
  serve::InferResult r = s.client->wait(future);
  const double rows = static_cast<double>(r.output.size(0));
  s.requests += 1;
  s.rows += rows;
  s.pack_us += r.pack_us;
  s.latency_us += r.latency_us;
  s.queue_us += r.timing.queue_us;
  s.input_us += r.timing.input_us;
  s.infer_us += r.timing.infer_us;
  s.infer_share_us += r.timing.batch_rows > 0 ? r.timing.infer_us * rows / r.timing.batch_rows : 0.0;
  s.output_us += r.timing.output_us;
  return r.output;
}

void CampaignService::finish() { state_->client->finish(); }

json CampaignService::report(collectives::Backend& workers, models::Model& local, double timeout_s) {
  auto& s = *state_;
  const auto stats = s.client->stats();
  at::Tensor sums = at::tensor({s.requests, s.rows, s.pack_us, s.latency_us, s.queue_us, s.input_us, s.infer_us,
                                s.infer_share_us, s.output_us, static_cast<double>(stats.rerouted),
                                static_cast<double>(stats.duplicates), static_cast<double>(stats.fallbacks)},
                               at::kDouble);
  workers.allreduce(sums);
  if (workers.rank() != 0) return {};
  const auto v = [&](int i) { return sums[i].item<double>(); };
  // X: the worker's own forward of the last batch, per row (median of 5).
  double x_us = 0;
  if (!s.last.inputs.empty()) {
    at::NoGradGuard no_grad;
    local.set_training(false);
    std::vector<double> times;
    for (int i = 0; i < 5; ++i) {
      const auto t0 = Clock::now();
      local.forward(s.last.inputs);
      times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    x_us = times[2] / static_cast<double>(std::max<int64_t>(1, s.last.inputs.begin()->second.size(0)));
  }
  // The servers' reports.
  json servers = json::array();
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (servers.size() < s.servers.size() && Clock::now() < deadline) {
    auto m = s.report_comm->improbe(collectives::kAnySource, kTagServerReport);
    if (!m) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    std::string text(m->bytes, '\0');
    s.report_comm->recv(*m, text.data(), text.size());
    json r = json::parse(text, nullptr, false);
    const double instances = std::max(1, r.value("instances", 1));
    r["utilisation"] = r.value("busy_s", 0.0) / std::max(1e-9, r.value("wall_s", 0.0) * instances);
    servers.push_back(r);
  }
  const double rows = std::max(v(1), 1.0), requests = std::max(v(0), 1.0);
  const double pack = v(2) / rows, infer_share = v(7) / rows;
  // Per request: the time neither packing nor on the server: transfer and rescheduling (T + L).
  const double server_us = (v(4) + v(5) + v(6) + v(8)) / requests;
  const double wait_us = std::max(0.0, v(3) / requests - v(2) / requests - server_us) * requests / rows;
  json out = {{"servers", servers},
              {"requests", v(0)},
              {"rows", v(1)},
              {"rerouted", v(9)},
              {"late_duplicates_dropped", v(10)},
              {"fallbacks", v(11)},
              {"mean_request_rows", v(1) / requests},
              {"mean_queue_us", v(4) / requests},
              {"mean_latency_us", v(3) / requests},
              {"per_row_us", {{"X_local_forward", x_us}, {"S_pack", pack}, {"Y_server_forward", infer_share},
                              {"L_transfer_and_wait", wait_us}}},
              {"F_eq", infer_share > 0 ? (x_us - pack - wait_us) / infer_share : 0.0}};
  if (servers.size() < s.servers.size()) out["missing_server_reports"] = s.servers.size() - servers.size();
  return out;
}

}  // namespace hpcml::launch
