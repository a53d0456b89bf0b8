#include "io/h5_dataset.hpp"

#include <ATen/ATen.h>
#include <glob.h>

#include <algorithm>

#include "core/error.hpp"

namespace hpcml::io {

std::vector<std::string> expand_files(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  for (const auto& pattern : patterns) {
    if (pattern.find_first_of("*?[") == std::string::npos) {
      files.push_back(pattern);
      continue;
    }
    glob_t matches{};
    const int rc = ::glob(pattern.c_str(), 0, nullptr, &matches);
    std::vector<std::string> found;
    if (rc == 0) found.assign(matches.gl_pathv, matches.gl_pathv + matches.gl_pathc);
    globfree(&matches);
    HPCML_CHECK_AS(IoError, !found.empty(), "data files: pattern '", pattern, "' matches no file");
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  HPCML_CHECK_AS(IoError, !files.empty(), "data files: none given");
  return files;
}

namespace {

at::ScalarType tensor_type(const h5::Shape& shape) { return shape.kind == h5::Kind::kFloat ? at::kFloat : at::kLong; }
hid_t memory_type(const h5::Shape& shape) {
  return shape.kind == h5::Kind::kFloat ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64;
}

std::vector<int64_t> with_rows(int64_t rows, const h5::Shape& shape) {
  std::vector<int64_t> dims = shape.dims;
  dims[0] = rows;
  return dims;
}

// Entry `i` (first axis) of `t`, as a raw pointer.
void* row_pointer(const at::Tensor& t, int64_t i) {
  const int64_t row_bytes = t.numel() == 0 ? 0 : t.nbytes() / t.size(0);
  return static_cast<char*>(t.data_ptr()) + i * row_bytes;
}

}  // namespace

struct H5Dataset::OpenFile {
  h5::File file;
  std::map<std::string, std::pair<h5::Id, h5::Shape>> datasets;
};

H5Dataset::H5Dataset(H5DatasetOptions options) : options_(std::move(options)) {
  const auto paths = expand_files(options_.files);
  for (const auto& request : options_.expect.fields) {
    const auto slash = request.name.find('/');
    if (slash == std::string::npos)
      fixed_fields_.push_back(request.name);
    else
      ragged_fields_[request.name.substr(0, slash)].push_back(request.name.substr(slash + 1));
  }
  starts_.push_back(0);
  for (const auto& path : paths) {
    const h5::File file = h5::File::open(path);
    layout::FileInfo info = layout::inspect(file);
    layout::validate(info, options_.expect, files_.empty() ? nullptr : &files_.front());
    for (const auto& [collection, items] : ragged_fields_) {
      HPCML_CHECK_AS(IoError, info.collection(collection) != nullptr, "file '", path, "': ragged collection '",
                     collection, "' not found (a group with offsets)");
    }
    total_rows_ += info.rows;
    starts_.push_back(total_rows_);
    files_.push_back(std::move(info));
  }
}

H5Dataset::~H5Dataset() = default;

std::pair<size_t, int64_t> H5Dataset::locate(int64_t row) const {
  HPCML_CHECK_AS(IoError, row >= 0 && row < total_rows_, "dataset: row ", row, " outside [0, ", total_rows_, ")");
  const auto next = std::upper_bound(starts_.begin(), starts_.end(), row);
  const auto index = static_cast<size_t>(next - starts_.begin() - 1);
  return {index, row - starts_[index]};
}

std::shared_ptr<H5Dataset::OpenFile> H5Dataset::open(size_t index) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = open_files_.begin(); it != open_files_.end(); ++it) {
    if (it->first != index) continue;
    open_files_.splice(open_files_.begin(), open_files_, it);
    return it->second;
  }
  auto opened = std::make_shared<OpenFile>();
  opened->file = h5::File::open(files_[index].path);
  auto add = [&](const std::string& name) {
    h5::Id id = h5::open_dataset(opened->file, name);
    h5::Shape shape = h5::shape_of(id.get(), "file '" + opened->file.path() + "' dataset '" + name + "'");
    opened->datasets.emplace(name, std::make_pair(std::move(id), std::move(shape)));
  };
  for (const auto& name : fixed_fields_) add(name);
  for (const auto& [collection, items] : ragged_fields_) {
    add(collection + "/" + std::string(layout::kOffsets));
    for (const auto& item : items) add(collection + "/" + item);
  }
  open_files_.emplace_front(index, opened);
  if (open_files_.size() > std::max<size_t>(1, options_.max_open_files)) open_files_.pop_back();
  return opened;
}

Block H5Dataset::read(std::vector<int64_t> rows) const {
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  // Runs of consecutive rows in one file: one hyperslab each.
  struct Run {
    size_t file;
    int64_t local;     // first local row
    int64_t count;     // rows
    int64_t position;  // first entry in the block
  };
  std::vector<Run> runs;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto [file, local] = locate(rows[i]);
    if (!runs.empty() && runs.back().file == file && runs.back().local + runs.back().count == local) {
      ++runs.back().count;
    } else {
      runs.push_back({file, local, 1, static_cast<int64_t>(i)});
    }
  }
  Block block;
  block.rows = rows;
  const auto n = static_cast<int64_t>(rows.size());
  const layout::FileInfo& first = files_.front();

  for (const auto& name : fixed_fields_) {
    const h5::Shape& shape = first.field(name)->shape;
    at::Tensor out = at::empty(with_rows(n, shape), at::TensorOptions().dtype(tensor_type(shape)));
    for (const auto& run : runs) {
      auto file = open(run.file);
      const auto& [id, file_shape] = file->datasets.at(name);
      h5::read_rows(id.get(), file_shape, run.local, run.count, memory_type(shape), row_pointer(out, run.position),
                    "file '" + file->file.path() + "' dataset '" + name + "'");
    }
    block.fixed.emplace(name, std::move(out));
  }

  for (const auto& [collection, items] : ragged_fields_) {
    const std::string offsets_name = collection + "/" + std::string(layout::kOffsets);
    // Pass 1: each run's item range, from its slice of offsets (checked here).
    std::vector<std::pair<int64_t, int64_t>> item_ranges;
    at::Tensor local_offsets = at::empty({n + 1}, at::kLong);
    int64_t* local = local_offsets.data_ptr<int64_t>();
    local[0] = 0;
    std::vector<int64_t> slice;
    for (const auto& run : runs) {
      auto file = open(run.file);
      const auto& [id, shape] = file->datasets.at(offsets_name);
      const std::string what = "file '" + file->file.path() + "' dataset '" + offsets_name + "'";
      slice.resize(static_cast<size_t>(run.count + 1));
      h5::read_rows(id.get(), shape, run.local, run.count + 1, H5T_NATIVE_INT64, slice.data(), what);
      const int64_t total = files_[run.file].collection(collection)->last_offset;
      layout::check_offsets(slice.data(), run.count + 1, -1, total, run.local, what);
      for (int64_t i = 0; i < run.count; ++i)
        local[run.position + i + 1] = local[run.position + i] + (slice[i + 1] - slice[i]);
      item_ranges.emplace_back(slice.front(), slice.back() - slice.front());
    }
    Block::Ragged ragged;
    ragged.offsets = local_offsets;
    const int64_t total_items = local[n];
    // Pass 2: the items of each run, one hyperslab per item dataset.
    for (const auto& item : items) {
      const std::string name = collection + "/" + item;
      const h5::Shape& shape = first.field(name)->shape;
      at::Tensor out = at::empty(with_rows(total_items, shape), at::TensorOptions().dtype(tensor_type(shape)));
      for (size_t r = 0; r < runs.size(); ++r) {
        auto file = open(runs[r].file);
        const auto& [id, file_shape] = file->datasets.at(name);
        h5::read_rows(id.get(), file_shape, item_ranges[r].first, item_ranges[r].second, memory_type(shape),
                      row_pointer(out, local[runs[r].position]),
                      "file '" + file->file.path() + "' dataset '" + name + "'");
      }
      ragged.items.emplace(item, std::move(out));
    }
    block.ragged.emplace(collection, std::move(ragged));
  }
  return block;
}

Block Block::select(const std::vector<int64_t>& positions) const {
  Block out;
  const auto n = static_cast<int64_t>(positions.size());
  at::Tensor index = at::empty({n}, at::kLong);
  int64_t* p = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    HPCML_CHECK(positions[i] >= 0 && positions[i] < size(), "block: position ", positions[i], " outside ", size());
    p[i] = positions[i];
    out.rows.push_back(rows[static_cast<size_t>(positions[i])]);
  }
  for (const auto& [name, t] : fixed) out.fixed.emplace(name, t.index_select(0, index));
  for (const auto& [name, r] : ragged) {
    const int64_t* offsets = r.offsets.data_ptr<int64_t>();
    Block::Ragged selected;
    selected.offsets = at::empty({n + 1}, at::kLong);
    int64_t* o = selected.offsets.data_ptr<int64_t>();
    o[0] = 0;
    for (int64_t i = 0; i < n; ++i) o[i + 1] = o[i] + offsets[p[i] + 1] - offsets[p[i]];
    at::Tensor item_index = at::empty({o[n]}, at::kLong);
    int64_t* q = item_index.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = offsets[p[i]]; k < offsets[p[i] + 1]; ++k) *q++ = k;
    for (const auto& [item, t] : r.items) selected.items.emplace(item, t.index_select(0, item_index));
    out.ragged.emplace(name, std::move(selected));
  }
  return out;
}

int64_t Block::bytes() const {
  int64_t total = 0;
  for (const auto& [name, t] : fixed) total += static_cast<int64_t>(t.nbytes());
  for (const auto& [name, r] : ragged) {
    total += static_cast<int64_t>(r.offsets.nbytes());
    for (const auto& [item, t] : r.items) total += static_cast<int64_t>(t.nbytes());
  }
  return total;
}

}  // namespace hpcml::io
