// `hpcml config`: validate a config and print it resolved, or print the key reference.
#include <iostream>

#include "core/config.hpp"
#include "launch/cli/command.hpp"

namespace hpcml::launch::cli {

void add_config_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "config", "Check a config (file and --set overrides) and print it resolved, with every default filled in; "
                "errors name the key, the value found and what is accepted");
  add_common_options(sub, common);
  auto reference = std::make_shared<bool>(false);
  sub->add_flag("--reference", *reference, "Print every key with its type, default, accepted values and meaning "
                                           "(Markdown; the source of docs/config-reference.md)");
  sub->callback([&selected, reference] {
    selected = [reference](Context& c) {
      if (c.env.rank != 0) return 0;
      if (*reference) {
        std::cout << config::reference_markdown(config::reference<RunConfig>());
      } else {
        std::cout << config::to_yaml(c.config);
      }
      return 0;
    };
  });
}

}  // namespace hpcml::launch::cli
