// Trains several configs at once, one per rank group of a farm (launch/farm):
//
//   mpirun -n 4 group_train <ranks_per_group> [--journal J] a.yaml b.yaml
//
// Each config trains with launch::train() on its group's communicator, exactly the
// code `hpcml train` runs on the whole job. tests/cli/test_group_train.py compares each
// group's final parameter digest with the same config trained alone, and stops both
// groups with SIGUSR1 (exit 75, a checkpoint each), then re-runs with the journal.
#include <cstdio>
#include <string>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/mpi.hpp"
#include "core/watchdog.hpp"
#include "launch/farm/farm.hpp"
#include "launch/runtime.hpp"
#include "launch/train/trainer.hpp"

namespace hl = hpcml::launch;

int main(int argc, char** argv) {
  hpcml::MpiSession mpi(&argc, &argv);
  if (argc < 3) {
    std::fprintf(stderr, "usage: group_train <ranks_per_group> <config.yaml>...\n");
    return 2;
  }
  try {
    auto load = [](const std::string& path, hl::TrainConfig& config) {
      return hl::read_layers(hpcml::config::from_string("{}", "<environment>"), hpcml::config::load(path), config);
    };
    hl::farm::FarmOptions options;
    std::vector<std::string> configs;
    for (int i = 2; i < argc; ++i) {
      if (std::string(argv[i]) == "--journal" && i + 1 < argc) options.journal = argv[++i];
      else configs.push_back(argv[i]);
    }
    hl::TrainConfig first;
    hl::Context world = hl::make_context(load(configs.at(0), first));
    hl::farm::FarmPlan plan;
    for (size_t i = 0; i < configs.size(); ++i) plan.tasks.push_back({"config" + std::to_string(i), {{"config", configs[i]}}});
    options.ranks_per_worker = std::stoi(argv[1]);
    options.name = "group_train";
    auto train_one = [&](const hl::farm::Task& task, hpcml::collectives::Backend& group) -> nlohmann::json {
      hl::TrainConfig config;
      const hl::RunConfig run = load(task.spec.at("config").get<std::string>(), config);
      hl::Context context = hl::group_context(world, group.shared_from_this(), run);
      const int rc = hl::train(context, config);
      if (rc == hpcml::kExitPreempted) HPCML_THROW(hl::farm::TaskInterrupted, "stopped by a signal");
      HPCML_CHECK(rc == 0, "train returned ", rc);
      return {{"run_dir", config.run.dir}};
    };
    const auto report = hl::farm::run_farm(world.world, plan, train_one, options);
    if (world.world->rank() == 0) std::printf("group_train: %d trained, %d failed\n", report.done, report.failed);
    if (report.interrupted) return hpcml::kExitPreempted;
    return report.failed == 0 ? 0 : 1;
  } catch (const hpcml::Error& e) {
    std::fprintf(stderr, "%s\n", e.message().c_str());
    return 1;
  }
}
