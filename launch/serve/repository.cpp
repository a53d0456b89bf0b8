#include "launch/serve/repository.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/serialize/input-archive.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "launch/train/checkpoint.hpp"
#include "models/registry.hpp"

namespace hpcml::launch::serve {

namespace fs = std::filesystem;

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

// "float32 [15]", "float32 [-1, 4]", "float32 [4] ragged mask=mask".
InputSpec parse_input_spec(const std::string& name, const std::string& text, const std::string& where) {
  InputSpec spec;
  spec.name = name;
  const std::string what = "config error: " + where + " key 'inputs." + name + "'";
  std::istringstream in(text);
  std::string dtype;
  in >> dtype;
  spec.dtype = parse_dtype(dtype, what);
  std::string rest;
  std::getline(in, rest);
  const auto open = rest.find('['), close = rest.find(']');
  HPCML_CHECK_AS(ConfigError, open != std::string::npos && close != std::string::npos && close > open, what,
                 ": expected \"dtype [d1, d2, ...]\" (optionally \"ragged mask=NAME\"), found '", text, "'");
  std::string dims = rest.substr(open + 1, close - open - 1);
  std::replace(dims.begin(), dims.end(), ',', ' ');
  std::istringstream ds(dims);
  for (std::string d; ds >> d;) {
    try {
      size_t used = 0;
      const long long v = std::stoll(d, &used);
      HPCML_CHECK_AS(ConfigError, used == d.size() && (v >= 1 || v == -1), what, ": dimension '", d,
                     "' is not a positive integer or -1");
      spec.shape.push_back(v);
    } catch (const std::logic_error&) {
      HPCML_THROW(ConfigError, what, ": dimension '", d, "' is not an integer");
    }
  }
  std::istringstream flags(rest.substr(close + 1));
  for (std::string f; flags >> f;) {
    if (f == "ragged") {
      spec.ragged = true;
    } else if (f.rfind("mask=", 0) == 0) {
      spec.mask = f.substr(5);
    } else {
      HPCML_THROW(ConfigError, what, ": unknown flag '", f, "'; expected 'ragged' or 'mask=NAME'");
    }
  }
  HPCML_CHECK_AS(ConfigError, spec.mask.empty() || spec.ragged, what, ": mask= needs 'ragged'");
  return spec;
}

// Zoo inputs whose per-sample shape starts with -1 are ragged collections padded
// by the zoo's own feed; the server builds their "mask" input itself.
std::vector<InputSpec> zoo_inputs(const std::string& model) {
  const auto& entry = models::zoo_entry(model);
  bool has_mask = false;
  for (const auto& in : entry.inputs) has_mask |= in.name == "mask";
  std::vector<InputSpec> specs;
  for (const auto& in : entry.inputs) {
    if (in.name == "mask" && has_mask) continue;
    InputSpec s;
    s.name = in.name;
    s.dtype = DType::kFloat32;
    if (!in.shape.empty() && in.shape[0] == -1) {
      s.ragged = true;
      s.shape.assign(in.shape.begin() + 1, in.shape.end());
      if (has_mask) s.mask = "mask";
    } else {
      s.shape = in.shape;
    }
    specs.push_back(s);
  }
  return specs;
}

}  // namespace

ModelEntry read_model_entry(const std::string& dir) {
  ModelEntry e;
  e.dir = dir;
  e.name = fs::path(dir).filename().string();
  const std::string file = (fs::path(dir) / "config.yaml").string();
  config::read_into(config::load(file), e.config);
  auto& c = e.config;
  if (c.zoo_model.empty()) c.zoo_model = e.name;
  const std::string where = "'" + file + "'";
  for (int p : c.preferred_batch_sizes)
    HPCML_CHECK_AS(ConfigError, p >= 1 && p <= c.max_batch_size, "config error: ", where,
                   " key 'preferred_batch_sizes': expected sizes in [1, max_batch_size=", c.max_batch_size,
                   "], found ", p);
  std::sort(c.preferred_batch_sizes.begin(), c.preferred_batch_sizes.end());
  if (!c.inputs.empty()) {
    for (const auto& [name, text] : c.inputs) e.inputs.push_back(parse_input_spec(name, text, where));
  } else {
    HPCML_CHECK_AS(ConfigError, c.platform == "zoo", "config error: ", where,
                   " key 'inputs': a torchscript model needs its inputs listed (name: \"dtype [shape]\")");
    e.inputs = zoo_inputs(c.zoo_model);
  }
  return e;
}

std::vector<ModelEntry> read_repository(const std::string& dir) {
  HPCML_CHECK_AS(ConfigError, fs::is_directory(dir), "config error: key 'serve.repository': '", dir,
                 "' is not a directory");
  std::vector<std::string> folders;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && fs::exists(entry.path() / "config.yaml")) folders.push_back(entry.path().string());
  std::sort(folders.begin(), folders.end());
  HPCML_CHECK_AS(ConfigError, !folders.empty(), "config error: key 'serve.repository': '", dir,
                 "' has no model folder (expected <name>/config.yaml)");
  std::vector<ModelEntry> out;
  for (const auto& f : folders) out.push_back(read_model_entry(f));
  return out;
}

const ModelEntry& find_entry(const std::vector<ModelEntry>& repository, const std::string& name) {
  for (const auto& e : repository)
    if (e.name == name) return e;
  std::string names;
  for (const auto& e : repository) names += (names.empty() ? "" : ", ") + e.name;
  HPCML_THROW(RequestError, "unknown model '", name, "'; this server serves [", names, "]");
}

std::unique_ptr<models::Model> load_model(const ModelEntry& entry) {
  const auto& c = entry.config;
  std::unique_ptr<models::Model> model;
  if (c.platform == "torchscript") {
    model = models::load_torchscript((fs::path(entry.dir) / c.file).string());
  } else {
    model = models::make(c.zoo_model, static_cast<uint64_t>(c.seed));
    if (!c.checkpoint.empty()) {
      try {
        load_checkpoint_weights((fs::path(entry.dir) / c.checkpoint).string(), *model);
      } catch (const IoError& e) {
        HPCML_THROW(IoError, "serve: model '", entry.name, "': ", e.message());
      }
    }
  }
  model->set_training(false);
  // Every input the model reads must be sent by clients or be a mask the server builds.
  for (const auto& needed : model->input_names()) {
    bool found = false;
    for (const auto& s : entry.inputs) found |= s.name == needed || s.mask == needed;
    HPCML_CHECK_AS(ConfigError, found, "config error: model '", entry.name, "' (", entry.dir,
                   "/config.yaml): the model reads input '", needed, "', which 'inputs' does not list");
  }
  return model;
}

void validate_inputs(const ModelEntry& entry, const NamedInputs& inputs, std::int64_t rows) {
  for (const auto& [name, in] : inputs) {
    bool known = false;
    for (const auto& s : entry.inputs) known |= s.name == name;
    if (!known) {
      std::string names;
      for (const auto& s : entry.inputs) names += (names.empty() ? "" : ", ") + s.name;
      HPCML_THROW(RequestError, "model '", entry.name, "': unknown input '", name, "'; expected inputs [", names, "]");
    }
  }
  for (const auto& s : entry.inputs) {
    const auto it = inputs.find(s.name);
    HPCML_CHECK_AS(RequestError, it != inputs.end(), "model '", entry.name, "': input '", s.name, "' is missing");
    const Input& in = it->second;
    HPCML_CHECK_AS(RequestError, in.values.scalar_type() == to_scalar_type(s.dtype), "model '", entry.name,
                   "': input '", s.name, "' has dtype ", dtype_name(from_scalar_type(in.values.scalar_type(), s.name)),
                   "; expected ", dtype_name(s.dtype));
    HPCML_CHECK_AS(RequestError, in.ragged() == s.ragged, "model '", entry.name, "': input '", s.name, "' is ",
                   in.ragged() ? "ragged" : "fixed", "; expected ", s.ragged ? "ragged (values + offsets)" : "fixed");
    const auto sizes = in.values.sizes();
    bool ok = static_cast<size_t>(sizes.size()) == s.shape.size() + 1;
    for (size_t d = 0; ok && d < s.shape.size(); ++d) ok = s.shape[d] == -1 || s.shape[d] == sizes[d + 1];
    if (!ok) {
      std::vector<int64_t> expected{-1};
      expected.insert(expected.end(), s.shape.begin(), s.shape.end());
      HPCML_THROW(RequestError, "model '", entry.name, "': input '", s.name, "' has shape ",
                  shape_text(sizes.vec()), "; expected ", shape_text(expected), " (-1: any)");
    }
  }
  HPCML_CHECK_AS(RequestError, rows <= entry.config.max_batch_size, "model '", entry.name, "': request of ", rows,
                 " rows; max_batch_size is ", entry.config.max_batch_size);
}

models::Inputs assemble_batch(const ModelEntry& entry, const std::vector<const NamedInputs*>& parts) {
  models::Inputs out;
  for (const auto& s : entry.inputs) {
    if (!s.ragged) {
      if (parts.size() == 1) {
        out[s.name] = parts[0]->at(s.name).values;
        continue;
      }
      std::vector<at::Tensor> pieces;
      pieces.reserve(parts.size());
      for (const auto* p : parts) pieces.push_back(p->at(s.name).values);
      out[s.name] = at::cat(pieces, 0);
      continue;
    }
    // Ragged: pad to the longest row of this batch only.
    int64_t rows = 0, longest = 0;
    for (const auto* p : parts) {
      const auto& o = p->at(s.name).offsets;
      const int64_t* op = o.data_ptr<int64_t>();
      for (int64_t r = 0; r + 1 < o.numel(); ++r) longest = std::max(longest, op[r + 1] - op[r]);
      rows += o.numel() - 1;
    }
    const auto& first = parts[0]->at(s.name).values;
    std::vector<int64_t> shape{rows, longest};
    shape.insert(shape.end(), first.sizes().begin() + 1, first.sizes().end());
    at::Tensor padded = at::zeros(shape, first.options());
    at::Tensor mask = at::zeros({rows, longest}, at::kFloat);
    float* m = mask.data_ptr<float>();
    int64_t row = 0;
    for (const auto* p : parts) {
      const auto& in = p->at(s.name);
      const int64_t* op = in.offsets.data_ptr<int64_t>();
      for (int64_t r = 0; r + 1 < in.offsets.numel(); ++r, ++row) {
        const int64_t n = op[r + 1] - op[r];
        if (n == 0) continue;
        padded[row].narrow(0, 0, n).copy_(in.values.narrow(0, op[r], n));
        std::fill(m + row * longest, m + row * longest + n, 1.0f);
      }
    }
    out[s.name] = padded;
    if (!s.mask.empty()) out[s.mask] = mask;
  }
  return out;
}

at::Tensor run_local(models::Model& model, const ModelEntry& entry, const NamedInputs& inputs) {
  at::NoGradGuard no_grad;
  int64_t rows = -1;
  for (const auto& [name, in] : inputs) rows = in.rows();
  validate_inputs(entry, inputs, rows);
  return model.forward(assemble_batch(entry, {&inputs})).contiguous();
}

}  // namespace hpcml::launch::serve
