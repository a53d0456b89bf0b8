// `hpcml serve`: inference as a service inside one MPI job (docs/serving.md).
#include <glob.h>

#include <filesystem>
#include <iostream>

#include "core/config.hpp"
#include "core/files.hpp"
#include "launch/cli/command.hpp"
#include "launch/serve/driver.hpp"

namespace hpcml::launch::cli {

void add_serve_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "serve", "Inference as a service inside this job: server ranks load the models of serve.repository and batch "
               "requests dynamically; client ranks run an event loop (HDF5 or synthetic events, CPU work, several "
               "events in flight) that offloads each model call. Roles: het group, MPMD app context or serve.servers. "
               "See docs/serving.md");
  add_common_options(sub, common, /*config_argument=*/true);
  auto reference = std::make_shared<bool>(false);
  sub->add_flag("--reference", *reference, "Print the serve config keys (Markdown) and exit");
  auto config = std::make_shared<serve::ServeConfig>();
  sub->callback([&selected, &common, config, reference] {
    common.needs_mpi = !*reference;
    common.parser = [config, reference](const config::Document& environment, const config::Document& file) {
      auto run = read_layers(environment, file, *config);
      // Checked here, where every rank agrees and one prints, rather than in run_serve.
      const std::string& repository = config->serve.repository;
      if (!*reference) {
        HPCML_CHECK_AS(ConfigError, !repository.empty() && std::filesystem::is_directory(repository),
                       "config error: key 'serve.repository': expected a model repository directory, found '",
                       repository, "'");
        // The metrics file never replaces an input (a data file, the config).
        if (!config->serve.client.metrics.empty()) {
          std::vector<std::string> inputs;
          for (const auto& pattern : config->serve.client.files) {  // what matches now; none is checked later
            glob_t found{};
            if (::glob(pattern.c_str(), 0, nullptr, &found) == 0) {
              for (size_t i = 0; i < found.gl_pathc; ++i) inputs.emplace_back(found.gl_pathv[i]);
            }
            globfree(&found);
          }
          inputs.push_back(file.source);
          check_output_path(config->serve.client.metrics, inputs, "key 'serve.client.metrics'");
        }
      }
      return run;
    };
    selected = [config, reference](Context& c) {
      if (*reference) {
        if (c.env.rank == 0) {
          auto rows = config::reference<serve::ServeConfig>();
          rows.erase(std::remove_if(rows.begin(), rows.end(),
                                    [](const config::KeyDoc& r) { return r.key.rfind("serve", 0) != 0; }),
                     rows.end());
          std::cout << config::reference_markdown(rows);
        }
        return 0;
      }
      return serve::run_serve(c, *config);
    };
  });
}

}  // namespace hpcml::launch::cli
