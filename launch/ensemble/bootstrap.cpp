#include "launch/ensemble/bootstrap.hpp"

#include <filesystem>
#include <random>
#include <variant>

#include "core/error.hpp"
#include "io/h5_dataset.hpp"
#include "io/layout.hpp"
#include "io/table.hpp"

namespace hpcml::launch::ensemble {

namespace fs = std::filesystem;

namespace {

// `column`'s rows at `rows`, in that order.
io::Column gather(const io::Column& column, const std::vector<int64_t>& rows) {
  io::Column out = column;
  out.shape[0] = static_cast<int64_t>(rows.size());
  const int64_t width = column.row_elements();
  std::visit(
      [&](const auto& source) {
        using Vec = std::decay_t<decltype(source)>;
        Vec picked;
        picked.reserve(rows.size() * static_cast<size_t>(width));
        for (int64_t r : rows) {
          const auto begin = source.begin() + r * width;
          picked.insert(picked.end(), begin, begin + width);
        }
        out.data = std::move(picked);
      },
      column.data);
  return out;
}

}  // namespace

uint64_t bootstrap_seed(int64_t seed, uint64_t v, int64_t k) {
  // splitmix64 over the three numbers: nearby members get unrelated streams.
  auto mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  return mix(mix(mix(static_cast<uint64_t>(seed)) ^ v) ^ static_cast<uint64_t>(k));
}

void write_bootstrap(const std::vector<std::string>& patterns, const std::string& out, uint64_t seed) {
  if (fs::exists(out)) return;
  const std::vector<std::string> files = io::expand_files(patterns);
  HPCML_CHECK_AS(ConfigError, !files.empty(), "ensemble.bootstrap: data.files names no file");
  std::vector<io::Column> columns;
  std::vector<std::string> names;
  std::string schema;
  int64_t schema_version = 1;
  for (const auto& file : files) {
    const auto info = io::layout::inspect(io::h5::File::open(file));
    HPCML_CHECK_AS(ConfigError, info.collections.empty(), "config error: key 'ensemble.bootstrap': resamples "
                   "fixed-shape fields only; expected none, found the ragged collection '",
                   info.collections.front().name, "' in ", file, " (set ensemble.bootstrap: false)");
    if (names.empty()) {
      for (const auto& f : info.fields) names.push_back(f.name);
      schema = info.schema;
      schema_version = info.schema_version;
      columns = io::read_columns(file, names);
    } else {
      auto more = io::read_columns(file, names);
      for (size_t c = 0; c < columns.size(); ++c) io::append_rows(columns[c], more[c]);
    }
  }
  const int64_t rows = columns.empty() ? 0 : columns.front().rows();
  HPCML_CHECK_AS(IoError, rows > 0, "ensemble.bootstrap: the training files ", files.front(), "... hold no rows");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, rows - 1);
  std::vector<int64_t> drawn(static_cast<size_t>(rows));
  for (auto& r : drawn) r = pick(rng);
  io::Table t;
  t.schema = schema;
  t.schema_version = static_cast<int>(schema_version);
  t.rows = rows;
  for (const auto& c : columns) t.fixed.push_back(gather(c, drawn));
  t.attributes = {{"generator", "hpcml ensemble (bootstrap resample)"}, {"bootstrap_seed", std::to_string(seed)},
                  {"bootstrap_of", files.front() + (files.size() > 1 ? " (and " + std::to_string(files.size() - 1) +
                                                                             " more)" : "")}};
  fs::create_directories(fs::path(out).parent_path());
  io::write_table(out, t);
}

}  // namespace hpcml::launch::ensemble
