// `hpcml models`: the model zoo, with each model's size, input and target.
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/files.hpp"
#include "launch/cli/command.hpp"
#include "models/registry.hpp"

namespace hpcml::launch::cli {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(B";
  for (int64_t d : shape) {
    out << ", ";
    if (d < 0) out << "P"; else out << d;
  }
  out << ")";
  return out.str();
}

// "x = inputs (B, 15)" per input, joined by "; ".
std::string inputs_text(const models::ZooEntry& e) {
  std::string text;
  for (const auto& in : e.inputs) {
    text += (text.empty() ? "" : "; ") + in.name + " = " + in.field + " " + shape_text(in.shape);
  }
  return text;
}

int run_models(Context& c, const std::string& json_path) {
  if (c.env.rank != 0) return 0;
  nlohmann::json list = nlohmann::json::array();
  std::cout << "  " << std::left << std::setw(16) << "name" << std::right << std::setw(11) << "parameters"
            << "  " << std::left << std::setw(20) << "schema" << std::setw(12) << "target" << std::setw(16) << "task"
            << "config\n";
  for (const auto& e : models::zoo()) {
    // Built on the fly, so the count is the code's, not a copy in the registry.
    const int64_t parameters = models::parameter_count(*models::make(e.name, /*seed=*/0));
    std::cout << "  " << std::left << std::setw(16) << e.name << std::right << std::setw(11) << parameters << "  "
              << std::left << std::setw(20) << e.input_schema << std::setw(12) << e.target_field << std::setw(16)
              << e.task << e.default_config << "\n"
              << "  " << std::setw(16) << "" << "  inputs: " << inputs_text(e) << "\n"
              << "  " << std::setw(16) << "" << "  " << e.description << "\n";
    nlohmann::json inputs = nlohmann::json::array();
    for (const auto& in : e.inputs) inputs.push_back({{"name", in.name}, {"field", in.field}, {"shape", in.shape}});
    list.push_back({{"name", e.name},
                    {"description", e.description},
                    {"parameters", parameters},
                    {"schema", e.input_schema},
                    {"inputs", inputs},
                    {"target", e.target_field},
                    {"task", e.task},
                    {"default_config", e.default_config}});
  }
  std::cout.flush();
  if (!json_path.empty()) write_file_atomically(json_path, nlohmann::json{{"models", list}}.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_models_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand("models", "List the model zoo: each model's trainable parameter count, input field "
                                           "and shape, target, task and default config");
  add_common_options(sub, common);
  auto json_path = std::make_shared<std::string>();
  sub->add_option("--json", *json_path, "Also write the list as JSON to this file (rank 0)");
  sub->callback([&selected, json_path] { selected = [json_path](Context& c) { return run_models(c, *json_path); }; });
}

}  // namespace hpcml::launch::cli
