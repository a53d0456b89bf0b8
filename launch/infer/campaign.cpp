#include "launch/infer/campaign.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/limits.hpp"
#include "core/watchdog.hpp"
#include "io/h5_dataset.hpp"
#include "io/journal.hpp"
#include "io/predictions.hpp"
#include "launch/farm/farm.hpp"
#include "launch/infer/campaign_files.hpp"
#include "launch/infer/campaign_service.hpp"
#include "launch/infer/claims.hpp"
#include "launch/infer/posterior.hpp"
#include "launch/train/checkpoint.hpp"
#include "launch/train/feed.hpp"
#include "launch/train/setup.hpp"
#include "models/flows/nsf_model.hpp"

namespace hpcml::launch {

namespace {

namespace fs = std::filesystem;
using campaign_files::fingerprint;
using campaign_files::output_names;
using campaign_files::temp_name;
using campaign_files::test_hook_after_commit;
using campaign_files::test_hook_delay;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Rank 0's error (or "") reaches every rank, which throws it: rank-0 checks end the
// job on every rank with the same one line.
void agree(collectives::Backend& world, const std::string& error) {
  const std::string agreed = world.broadcast_string(error);
  HPCML_CHECK_AS(ConfigError, agreed.empty(), agreed);
}

// The campaign, as every rank knows it.
struct Campaign {
  TrainConfig c;
  std::vector<std::string> inputs, outputs, copies;
  fs::path dir, parts;
  std::string task;                 // classification | regression | density
  std::vector<std::string> values;  // the output's value columns (besides row and the copies)
  std::string schema = "hpcml.predictions";
  std::string digest, checkpoint;
  std::unique_ptr<models::Model> model;
  models::flows::NsfModel* flow = nullptr;  // model, when the task is density
  std::unique_ptr<CampaignService> service;  // infer.via: service: the workers' client
  std::string model_name;                    // provenance
  c10::Device device{c10::kCPU};             // where model or forward computes (the CPU when served)
  // A caller's model (CampaignModel): each batch's value columns.
  std::function<std::vector<at::Tensor>(const models::Inputs&)> forward;
};

std::string unit_id(size_t file, int64_t first) { return std::to_string(file) + ":" + std::to_string(first); }
std::string part_name(size_t file, int64_t first) {
  return "f" + std::to_string(file) + "-r" + std::to_string(first) + ".h5";
}

// Runs `write`; a failure there is the output side's (a full disk, an unwritable
// directory), not the input's: it ends the campaign with one line.
template <typename F>
void writing(const Campaign& k, F&& write) {
  try {
    write();
  } catch (const Error& e) {
    // HDF5's message is a page long; its errno says what happened.
    std::string why = e.message();
    const auto at = why.find("errno = ");
    if (at != std::string::npos) why = std::strerror(std::atoi(why.c_str() + at + 8));
    else if (why.size() > 160) why = why.substr(0, 160) + "...";
    HPCML_THROW(farm::FarmFatal, "infer: cannot write the campaign's outputs in '", k.dir.string(), "': ", why,
                "; stopping (not an input's fault: free space, or fix infer.output_dir), then rerun");
  }
}

// Runs the model over rows [first, first + rows) of one input and commits the part.
json run_unit(Campaign& k, const farm::Task& task, std::map<std::string, std::unique_ptr<RowReader>>& readers) {
  const std::string file = task.spec.at("file");
  const size_t index = task.spec.at("index");
  const int64_t first = task.spec.at("first"), unit = task.spec.at("unit");
  auto& reader = readers[file];
  if (!reader) {
    readers.clear();  // one open input at a time per rank
    auto& slot = readers[file];
    slot = std::make_unique<RowReader>(k.c, file, k.copies);
  }
  RowReader& r = *readers[file];
  HPCML_CHECK_AS(IoError, first < r.rows() || first == 0, "input '", file, "' has ", r.rows(),
                 " rows, expected more than ", first, " (it changed since the campaign started)");
  const int64_t rows = std::min(unit, r.rows() - first);
  double read_s = 0, compute_s = 0;
  test_hook_delay(task.id);
  std::vector<at::Tensor> outputs;
  std::vector<std::vector<at::Tensor>> given(k.forward ? k.values.size() : 0);  // a caller's columns
  std::vector<std::future<serve::InferResult>> sent;
  std::vector<Posteriors> drawn;
  std::map<std::string, std::vector<at::Tensor>> copied;
  at::NoGradGuard no_grad;
  if (k.model) k.model->set_training(false);
  const auto gw = k.flow ? models::flows::gw_options_from_file(file) : io::gw::GwOptions{};
  for (int64_t b = first; b < first + rows; b += k.c.infer.batch_size) {
    const int64_t n = std::min<int64_t>(k.c.infer.batch_size, first + rows - b);
    auto t0 = Clock::now();
    std::map<std::string, at::Tensor> extra;
    const Example e = r.read(b, n, &extra);
    read_s += since(t0);
    t0 = Clock::now();
    if (k.flow) {
      const at::Tensor& strain = e.inputs.at("strain");
      HPCML_CHECK_AS(IoError, gw.length == strain.size(1), "input '", file, "': attribute gw.length ", gw.length,
                     " differs from the strain width ", strain.size(1));
      std::vector<int64_t> at_rows(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) at_rows[static_cast<size_t>(i)] = b + i;
      drawn.push_back(draw_posteriors(*k.flow, strain, at_rows, index, static_cast<uint64_t>(k.c.infer.seed),
                                      k.c.infer.samples, gw));
    } else if (k.forward) {
      auto columns = k.forward(e.to_device(k.device).inputs);
      for (size_t j = 0; j < given.size(); ++j) given[j].push_back(std::move(columns.at(j)));
    } else if (k.service) {
      sent.push_back(k.service->submit(e));  // every batch of the unit in flight at once
    } else {
      // On a GPU the copy and the forward are queued, and the next batch is read while they run.
      outputs.push_back(forward_in_precision(*k.model, e.to_device(k.device).inputs, k.c));
    }
    compute_s += since(t0);
    for (auto& [name, t] : extra) copied[name].push_back(t);
  }
  const auto t_wait = Clock::now();
  for (auto& f : sent) outputs.push_back(k.service->wait(f));
  for (auto& out : outputs) {
    out = out.to(at::kCPU).reshape({out.size(0), -1});
    out = k.task == "classification" ? at::softmax(out, 1) : out.to(at::kFloat);
  }
  for (auto& column : given)
    for (auto& t : column) t = t.to(at::kCPU);  // from a GPU: waits for its forward
  compute_s += since(t_wait);
  const auto t_write = Clock::now();
  std::vector<io::Column> columns;
  if (k.flow) {
    Posteriors all;
    auto cat = [&](at::Tensor Posteriors::*member) {
      std::vector<at::Tensor> parts;
      for (const auto& d : drawn) parts.push_back(d.*member);
      return at::cat(parts);
    };
    all.rows = cat(&Posteriors::rows);
    all.samples = cat(&Posteriors::samples);
    all.log_q = cat(&Posteriors::log_q);
    all.log_weights = cat(&Posteriors::log_weights);
    all.stats = cat(&Posteriors::stats);
    columns = posterior_columns(all);
  } else {
    columns.push_back(io::column_from_tensor("row", at::arange(first, first + rows, at::kLong)));
    if (k.forward) {
      for (size_t j = 0; j < given.size(); ++j)
        columns.push_back(io::column_from_tensor(k.values[j], at::cat(given[j]).contiguous()));
    } else {
      columns.push_back(io::column_from_tensor(k.values.front(), at::cat(outputs).contiguous()));
    }
  }
  for (const auto& name : k.copies) columns.push_back(io::column_from_tensor(name, at::cat(copied[name]).contiguous()));
  io::Provenance p{k.model_name, k.digest, "", file, first, rows};
  const fs::path final_path = k.parts / part_name(index, first);
  const fs::path tmp = temp_name(final_path);
  bool committed = false;
  writing(k, [&] {
    io::write_predictions(tmp.string(), std::move(columns), p, k.schema);
    // The commit: link() succeeds once; a second finisher of the same unit loses.
    committed = ::link(tmp.c_str(), final_path.c_str()) == 0;
    const int link_errno = errno;
    ::unlink(tmp.c_str());
    HPCML_CHECK_AS(IoError, committed || link_errno == EEXIST, "cannot commit part '", final_path.string(), "': ",
                   std::strerror(link_errno));
  });
  if (committed && fs::exists(k.dir / k.outputs[index])) {
    // A late finisher whose unit another job committed and assembled (its part was
    // removed): this copy is stray.
    ::unlink(final_path.c_str());
    committed = false;
  }
  fsync_file(k.parts.string());
  if (committed) test_hook_after_commit();
  return {{"rows", rows}, {"compute_s", compute_s}, {"write_s", since(t_write)},
          {"read_s", read_s}, {"superseded", !committed}};
}

// Concatenates a file's committed parts into its predictions file, then removes them.
json assemble(Campaign& k, const farm::Task& task) {
  const size_t index = task.spec.at("index");
  const fs::path out = k.dir / k.outputs[index];
  std::vector<std::string> parts;
  for (const auto& first : task.spec.at("firsts")) parts.push_back((k.parts / part_name(index, first.get<int64_t>())).string());
  bool all_there = true;
  for (const auto& p : parts) all_there = all_there && fs::exists(p);
  if (!all_there && fs::exists(out)) return {{"output", out.string()}, {"already", true}};
  std::vector<std::string> names = {"row"};
  names.insert(names.end(), k.values.begin(), k.values.end());
  names.insert(names.end(), k.copies.begin(), k.copies.end());
  // Each column in its stored dtype (float64 log weights stay float64), units kept.
  std::vector<io::Column> cols;
  for (const auto& part : parts) {
    std::vector<io::Column> more = io::read_columns(part, names);
    if (cols.empty()) {
      cols = std::move(more);
      continue;
    }
    for (size_t c = 0; c < cols.size(); ++c) io::append_rows(cols[c], more[c]);
  }
  const int64_t rows = cols.front().rows();
  io::Provenance p{k.model_name, k.digest, config::to_yaml(k.c), fs::absolute(k.inputs[index]).string(), 0, rows};
  const fs::path tmp = temp_name(out);
  writing(k, [&] {
    io::write_predictions(tmp.string(), std::move(cols), p, k.schema);
    HPCML_CHECK_AS(IoError, ::rename(tmp.c_str(), out.c_str()) == 0, "cannot write '", out, "': ", std::strerror(errno));
  });
  fsync_file(k.dir.string());
  for (const auto& part : parts) fs::remove(part);
  return {{"output", out.string()}, {"rows", rows}};
}

// Rank 0: the campaign directory, its fingerprint (refusing another campaign's
// directory), the pinned checkpoint. Returns the checkpoint to load.
std::string prepare_directory(const Campaign& k, const TrainConfig& c, const CampaignFlags& flags,
                              bool own_model) {
  const fs::path record = k.dir / "campaign.json";
  if (flags.fresh && fs::exists(k.dir)) {
    const std::string aside = moved_aside_name(k.dir.string());
    fs::rename(k.dir, aside);
    std::fprintf(stderr, "hpcml: infer --new: moved the campaign in %s to %s\n", k.dir.c_str(), aside.c_str());
  }
  json before;
  if (fs::exists(record)) {
    std::ifstream in(record);
    before = json::parse(in, nullptr, false);
    HPCML_CHECK_AS(IoError, before.is_object(), "campaign: '", record.string(), "' is not valid JSON");
  }
  if (own_model) return "";  // a caller's model (CampaignModel) loads its own weights
  // The checkpoint: infer.checkpoint, else the one pinned at the first run, else the newest.
  std::string checkpoint = c.infer.checkpoint;
  if (checkpoint.empty() && before.is_object()) checkpoint = before.value("checkpoint", "");
  if (checkpoint.empty()) checkpoint = newest_checkpoint(c.run.dir);
  HPCML_CHECK_AS(ConfigError, !checkpoint.empty(), "config error: key 'infer.checkpoint': no checkpoint given and "
                 "none in '", c.run.dir, "/checkpoints' (run.dir)");
  return checkpoint;
}

// Rank 0: one task per unit of every input (whole HDF5 chunks), plus what earlier runs
// committed outside the journal; a file that does not open gets an "open" task that
// fails with its reason (and succeeds on a retry once repaired).
farm::FarmPlan plan_units(const Campaign& k, std::map<size_t, std::vector<int64_t>>& firsts) {
  farm::FarmPlan plan;
  for (size_t i = 0; i < k.inputs.size(); ++i) {
    int64_t rows = -1, chunk = 0;
    try {
      RowReader r(k.c, k.inputs[i], k.copies);
      rows = r.rows();
      chunk = r.chunk_rows();
    } catch (const Error&) {
      plan.tasks.push_back({std::to_string(i) + ":open", {{"kind", "open"}, {"file", k.inputs[i]}, {"index", i}}});
      continue;
    }
    const int64_t unit = chunk > 0 ? (k.c.infer.unit_rows + chunk - 1) / chunk * chunk : k.c.infer.unit_rows;
    for (int64_t a = 0; a < std::max<int64_t>(rows, 1); a += unit) firsts[i].push_back(a);
    const bool assembled = fs::exists(k.dir / k.outputs[i]);
    for (int64_t a : firsts[i]) {
      plan.tasks.push_back({unit_id(i, a),
                            {{"kind", "unit"}, {"file", k.inputs[i]}, {"index", i}, {"first", a}, {"unit", unit}}});
      if (assembled || fs::exists(k.parts / part_name(i, a)))
        plan.already_done.push_back({unit_id(i, a), true, {{"recovered", true}}, "", -1, 0, true});
    }
    if (assembled)
      plan.already_done.push_back({"assemble:" + std::to_string(i), true, {{"output", k.outputs[i]}}, "", -1, 0, true});
  }
  return plan;
}

// This job's name in claims and its journal: the Slurm job (a requeued job finds its
// own journal), else host and process of rank 0.
std::string job_name() {
  if (const char* id = std::getenv("SLURM_JOB_ID")) return std::string("slurm") + id;
  return this_host() + "-" + std::to_string(::getpid());
}

// What the journals of other jobs on this campaign say is finished (the campaign's
// state is the union of every job's journal).
void add_other_journals(const Campaign& k, const std::string& mine, bool retry_failed, farm::FarmPlan& plan) {
  std::map<std::string, farm::TaskResult> finished;
  for (const auto& entry : fs::directory_iterator(k.dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("journal.", 0) != 0 || entry.path().extension() != ".jsonl" || entry.path() == mine) continue;
    for (const auto& r : io::read_journal(entry.path().string()).records) {
      const std::string event = r.value("event", "");
      if (event != "done" && !(event == "failed" && !retry_failed)) continue;
      auto& slot = finished[r.at("id").get<std::string>()];
      if (slot.ok) continue;  // done anywhere wins over failed
      slot.id = r.at("id");
      slot.ok = event == "done";
      slot.result = r.value("result", json::object());
      slot.error = r.value("error", "");
    }
  }
  for (auto& [id, r] : finished) plan.already_done.push_back(r);
}

// Whether `task` is finished by some job: its part committed or its file assembled.
std::optional<farm::TaskResult> finished_elsewhere(const Campaign& k, const farm::Task& task) {
  const std::string kind = task.spec.value("kind", "");
  if (kind == "open") return std::nullopt;
  const size_t i = task.spec.at("index");
  const bool assembled = fs::exists(k.dir / k.outputs[i]);
  const bool committed = kind == "unit" && fs::exists(k.parts / part_name(i, task.spec.at("first").get<int64_t>()));
  if (!assembled && !committed) return std::nullopt;
  return farm::TaskResult{task.id, true, {{"recovered", true}}, "", -1, 0, true};
}

int run_units(Context& ctx, Campaign& k, const CampaignFlags& flags) {
  auto& world = *ctx.world;
  const auto start = Clock::now();
  std::map<size_t, std::vector<int64_t>> firsts;
  farm::FarmPlan plan;
  std::unique_ptr<Claims> claims;
  std::string journal;
  if (world.rank() == 0) {
    plan = plan_units(k, firsts);
    claims = std::make_unique<Claims>(k.dir / "claims", job_name(), k.c.infer.lease_s);
    journal = (k.dir / ("journal." + claims->job() + ".jsonl")).string();
    add_other_journals(k, journal, flags.retry_failed, plan);
    // What killed writers left half-written (another host's: two leases after its last write).
    for (const fs::path& d : {k.parts, k.dir}) campaign_files::remove_stale_temps(d, 2 * k.c.infer.lease_s);
    plan.claim = [&](const farm::Task& task) {
      return !finished_elsewhere(k, task) && claims->claim(task.id);
    };
    plan.done_elsewhere = [&](const farm::Task& task) { return finished_elsewhere(k, task); };
    plan.tick = [&] { claims->renew(); };
  }
  std::map<size_t, size_t> units_done;
  plan.on_result = [&](const farm::TaskResult& r) -> std::vector<farm::Task> {
    if (claims && !r.replayed) claims->release(r.id);
    const auto colon = r.id.find(':');
    if (!r.ok || r.id.rfind("assemble:", 0) == 0 || r.id.substr(colon + 1) == "open") return {};
    const size_t i = std::stoul(r.id.substr(0, colon));
    if (++units_done[i] != firsts[i].size()) return {};
    return {{"assemble:" + std::to_string(i), {{"kind", "assemble"}, {"index", i}, {"firsts", firsts[i]}}}};
  };
  std::map<std::string, std::unique_ptr<RowReader>> readers;
  auto work = [&](const farm::Task& task, collectives::Backend&) -> json {
    const std::string kind = task.spec.at("kind");
    if (kind == "unit") return run_unit(k, task, readers);
    if (kind == "assemble") return assemble(k, task);
    RowReader probe(k.c, task.spec.at("file"), k.copies);  // "open": throws the file's reason, or it opens now
    return {{"opened", true}};
  };
  farm::FarmOptions options;
  options.name = "infer";
  options.journal = world.broadcast_string(journal);  // rank 0's name (the coordinator is the only writer)
  options.retry_failed = flags.retry_failed;
  const farm::FarmReport report = farm::run_farm(ctx.world, plan, work, options);
  json service;
  if (k.service) {
    k.service->finish();  // every worker's DONE lets the servers end
    service = k.service->report(world, *k.model, k.c.runtime.collective_timeout_s);
  }
  if (report.interrupted) return kExitPreempted;
  if (world.rank() != 0) return 0;

  json summary = {{"inputs", k.inputs.size()}, {"seconds", since(start)}, {"task", k.task},
                  {"checkpoint", k.checkpoint}, {"checkpoint_sha256", k.digest},
                  {"journals", json::array({options.journal})}, {"via", k.c.infer.via}};
  if (!service.is_null()) summary["service"] = service;
  return campaign_files::write_summary(k.dir, report, std::move(summary));
}

// The campaign's inputs and directories from its config (no file touched).
Campaign describe_campaign(const TrainConfig& config) {
  Campaign k;
  k.c = with_model_defaults(config);
  TrainConfig& c = k.c;
  try {
    k.inputs = io::expand_files(c.infer.inputs);
  } catch (const IoError& e) {
    HPCML_THROW(ConfigError, "config error: key 'infer.inputs': ", e.message());
  }
  HPCML_CHECK_AS(ConfigError, !k.inputs.empty(), "config error: key 'infer.inputs': expected files or glob patterns, "
                 "found none");
  k.outputs = output_names(k.inputs);
  k.dir = c.infer.output_dir.empty() ? fs::path(c.run.dir) / "infer" : fs::path(c.infer.output_dir);
  k.parts = k.dir / "parts";
  // The model is built from the first input's fields (it defines the input shapes).
  c.data.name = "hdf5";
  c.data.files = {k.inputs.front()};
  c.data.validation_files.clear();
  return k;
}

// A density model (nsf-gw): the flow, sized by the first input's strain; the reader
// takes only the strain; the true parameters are copied when present ([auto]).
void load_flow(Campaign& k, const std::string& checkpoint) {
  TrainConfig& c = k.c;
  HPCML_CHECK_AS(ConfigError, c.infer.task == "auto", "config error: key 'infer.task': model ", c.model.name,
                 " is a density model (its campaign writes posterior samples): expected auto, found ", c.infer.task);
  const std::string strain_field = flow_field(c, "strain"), theta_field = flow_field(c, "theta");
  c.data.inputs = {{"strain", strain_field}};
  std::unique_ptr<RowReader> reader;
  try {
    reader = std::make_unique<RowReader>(c, k.inputs.front(), std::vector<std::string>{});
  } catch (const IoError& e) {
    HPCML_THROW(ConfigError, "config error: key 'data.inputs.strain': model ", c.model.name, " reads the strain of "
                "the first input: ", e.message());
  }
  const RowReader& first = *reader;
  const auto strain = first.field_dims(strain_field);
  HPCML_CHECK_AS(ConfigError, strain.size() == 2, "config error: key 'data.inputs.strain': expected a (rows, T) "
                 "field '", strain_field, "' in ", k.inputs.front(), ", found ", strain.size(), " axes");
  auto flow = make_flow_model(c, 5, strain[1]);
  load_checkpoint_weights(checkpoint, *flow);
  k.flow = flow.get();
  k.model = std::move(flow);
  k.task = "density";
  k.schema = "hpcml.gw.posterior";
  k.values = {"samples", "log_q", "log_weights", "weights", "ess", "efficiency", "log_evidence"};
  for (const auto& f : c.infer.copy_fields) {
    if (f != "auto") k.copies.push_back(f);
    else if (first.has_field(theta_field)) k.copies.push_back(theta_field);
  }
  // A unit's draws are held until its part is written: samples, log q, log weights and weights.
  limits::check_fits_in_memory(2.0 * static_cast<double>(c.infer.unit_rows) * c.infer.samples * (5 * 8 + 8 + 8 + 8),
                               "a campaign unit's posterior draws", "infer.unit_rows x infer.samples");
}

void choose_copies(Campaign& k);
// The model with `checkpoint`'s weights, the task and the copied fields (collective).
void load_model(Context& ctx, Campaign& k, const std::string& checkpoint) {
  TrainConfig& c = k.c;
  k.checkpoint = checkpoint;
  if (density_task(c)) {
    HPCML_CHECK_AS(ConfigError, ctx.device.device.is_cpu(), "key 'runtime.device': a campaign of density model ",
                   c.model.name, " (posterior sampling) runs on the CPU today, found ", ctx.device.device.str(),
                   "; classifiers and regressors run on a GPU (docs/gpu.md); set runtime.device: cpu");
    load_flow(k, checkpoint);
    k.digest = parameters_digest(k.model->named_parameters());
    k.model_name = k.model->name();
    return;
  }
  Setup setup = set_up(c, ctx);
  c = setup.config;
  k.model = std::move(setup.model);
  load_checkpoint_weights(checkpoint, *k.model);
  if (c.infer.via != "service") k.device = ctx.device.device;  // served: the servers compute
  k.model->to(k.device);
  k.digest = parameters_digest(k.model->named_parameters());
  k.task = c.infer.task != "auto" ? c.infer.task : (setup.feed->regression() ? "regression" : "classification");
  k.values = {k.task == "classification" ? "scores" : "prediction"};
  k.model_name = k.model->name();
  choose_copies(k);
}

// A caller's model (CampaignModel) instead of a checkpoint's (collective).
void load_given(Context& ctx, Campaign& k, const CampaignModelMaker& maker) {
  CampaignModel m = maker(ctx, k.c);
  k.c = std::move(m.config);
  k.checkpoint = m.checkpoint;
  k.digest = m.digest;
  k.task = m.task;
  k.values = m.values;
  k.model_name = m.name;
  k.forward = std::move(m.forward);
  k.device = ctx.device.device;
  choose_copies(k);
}

// Copied fields: [auto] is the target when the first input has it.
void choose_copies(Campaign& k) {
  const TrainConfig& c = k.c;
  RowReader first(c, k.inputs.front(), {});
  for (const auto& f : c.infer.copy_fields) {
    if (f == "auto") {
      if (!c.data.target.empty() && first.has_field(c.data.target)) k.copies.push_back(c.data.target);
    } else {
      k.copies.push_back(f);
    }
  }
}

}  // namespace

ForwardTiming time_in_memory_forward(Context& ctx, const TrainConfig& config) {
  auto& world = *ctx.world;
  Campaign k = describe_campaign(config);
  const std::string checkpoint = k.c.infer.checkpoint.empty() ? agreed_newest_checkpoint(world, k.c.run.dir)
                                                              : k.c.infer.checkpoint;
  HPCML_CHECK_AS(ConfigError, !checkpoint.empty(), "config error: key 'infer.checkpoint': no checkpoint given and "
                 "none in '", k.c.run.dir, "/checkpoints' (run.dir)");
  load_model(ctx, k, checkpoint);
  HPCML_CHECK_AS(ConfigError, k.flow == nullptr, "bench infer: key 'model.name': expected a classifier or regressor, "
                 "found the density model ", k.c.model.name, " (its forward is not what a campaign runs)");
  // The campaign's units, dealt round-robin; every batch read first.
  std::vector<Example> batches;
  ForwardTiming t;
  int64_t next = 0;
  for (const auto& input : k.inputs) {
    RowReader r(k.c, input, {});
    const int64_t chunk = r.chunk_rows();
    const int64_t unit = chunk > 0 ? (k.c.infer.unit_rows + chunk - 1) / chunk * chunk : k.c.infer.unit_rows;
    for (int64_t a = 0; a < r.rows(); a += unit, ++next) {
      if (next % world.size() != world.rank()) continue;
      for (int64_t b = a; b < std::min(r.rows(), a + unit); b += k.c.infer.batch_size) {
        const int64_t n = std::min<int64_t>(k.c.infer.batch_size, std::min(r.rows(), a + unit) - b);
        batches.push_back(r.read(b, n, nullptr));
        t.rows += n;
      }
    }
  }
  at::NoGradGuard no_grad;
  k.model->set_training(false);
  world.barrier();
  const auto start = Clock::now();
  for (const auto& e : batches) {
    at::Tensor out = forward_in_precision(*k.model, e.inputs, k.c);
    out = out.reshape({out.size(0), -1});
    if (k.task == "classification") out = at::softmax(out, 1);
  }
  t.seconds = since(start);
  return t;
}

int run_campaign(Context& ctx, const TrainConfig& config, const CampaignFlags& flags, const CampaignModelMaker& maker) {
  Campaign k = describe_campaign(config);
  TrainConfig& c = k.c;
  HPCML_CHECK_AS(ConfigError, !maker || c.infer.via == "local", "config error: key 'infer.via': this campaign's "
                 "model is an ensemble's members, which run on the workers; expected local, found ", c.infer.via);
  // infer.via: service: the last ranks serve, the others are the campaign's workers.
  std::optional<ServiceRoles> roles;
  if (c.infer.via == "service") roles = plan_service(ctx, c);
  auto& world = roles ? *roles->world : *ctx.world;
  std::string checkpoint, error;
  if (world.rank() == 0) {
    try {
      checkpoint = prepare_directory(k, c, flags, static_cast<bool>(maker));
      if (roles) write_service_repository(k.dir.string(), c, checkpoint, static_cast<int>(roles->workers.size()));
    } catch (const Error& e) {
      error = e.message();
    } catch (const fs::filesystem_error& e) {
      error = std::string("infer: infer.output_dir '") + k.dir.string() + "': " + e.code().message();
    }
  }
  agree(world, error);
  checkpoint = world.broadcast_string(checkpoint);  // every rank loads the one rank 0 chose
  if (roles && roles->server) return serve_campaign(*roles, ctx, c, k.dir.string());
  Context workers = roles ? group_context(ctx, roles->group, ctx.config) : ctx;
  maker ? load_given(workers, k, maker) : load_model(workers, k, checkpoint);
  if (roles) k.service = std::make_unique<CampaignService>(*roles, c, k.dir.string());

  // Rank 0: the fingerprint, refusing a directory of another campaign.
  const json now = fingerprint(c, k.inputs, k.checkpoint, k.digest, k.task, k.copies);
  agree(*workers.world, workers.world->rank() == 0 ? campaign_files::record_fingerprint(k.dir, now, flags.retry_failed)
                                                   : "");
  return run_units(workers, k, flags);
}

}  // namespace hpcml::launch
