#include "launch/train/run_dir.hpp"

#include <ATen/ATen.h>

#include <cstring>
#include <fstream>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "core/trace.hpp"
#include "hpcml/build_config.hpp"
#include "models/model.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;

namespace {

void write_atomically(const fs::path& path, const std::string& text) { write_file_atomically(path.string(), text); }

// The metrics lines up to `step` (a resumed run continues after its checkpoint's step).
void truncate_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_object() && row.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_atomically(path, kept);
}

}  // namespace

std::string refuse_occupied_run_dir(const TrainConfig& c, int rank) {
  const fs::path run_dir = c.run.dir;
  const std::string occupant =
      rank == 0 && c.run.resume != "auto"
          ? describe_run(run_dir, {"config.yaml", "metrics.jsonl", "summary.json", "trace.json"}, "checkpoints")
          : std::string();
  HPCML_CHECK_AS(ConfigError, occupant.empty() || c.run.overwrite, "config error: key 'run.dir': '", run_dir.string(),
                 "' holds another run (", occupant, "); continue it with --resume, choose another run.dir, or pass "
                 "--overwrite (run.overwrite: true) to move it aside");
  return occupant;
}

void prepare_run_dir(const TrainConfig& c, const std::string& occupant, const std::string& config_yaml,
                     const ResumePoint& start) {
  const fs::path run_dir = c.run.dir;
  if (!occupant.empty()) {
    const fs::path aside = moved_aside_name(run_dir);
    fs::rename(run_dir, aside);
    HPCML_LOG_WARN("run.dir {} held another run ({}): moved it to {}", run_dir.string(), occupant, aside.string());
  }
  fs::create_directories(checkpoint_dir(c.run.dir));
  write_atomically(run_dir / "config.yaml", config_yaml);
  if (start.resumed) {
    truncate_metrics(run_dir / "metrics.jsonl", start.step);
  } else {
    write_atomically(run_dir / "metrics.jsonl", "");
  }
}

void write_trace(collectives::Backend& world, const fs::path& run_dir) {
  const auto mine = trace::to_json_events(world.rank());
  at::Tensor bytes = at::empty({static_cast<int64_t>(mine.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  const auto all = world.allgather_varying(bytes);
  if (world.rank() == 0) {
    std::string json = "[\n";
    for (size_t r = 0; r < all.size(); ++r) {
      json += (r ? ",\n" : "") + std::string(static_cast<const char*>(all[r].data_ptr()), all[r].numel());
    }
    write_atomically(run_dir / "trace.json", json + "\n]\n");
  }
}

void write_summary(const Context& ctx, const fs::path& run_dir, int64_t total_steps, models::Model& model,
                   const std::string& digest, const nlohmann::json& last_validation) {
  nlohmann::json summary = {{"steps", total_steps},
                            {"ranks", ctx.world->size()},
                            {"threads", ctx.threads.intra_op},
                            {"model", model.name()},
                            {"parameters", models::parameter_count(model)},
                            {"parameters_sha256", digest},
                            {"hpcml_version", HPCML_VERSION},
                            {"git_revision", HPCML_GIT_REVISION}};
  if (!last_validation.is_null()) summary["validation"] = last_validation;
  write_atomically(run_dir / "summary.json", summary.dump(2) + "\n");
  HPCML_LOG_INFO("done: {} steps; parameters sha256 {}", total_steps, digest);
}

}  // namespace hpcml::launch
