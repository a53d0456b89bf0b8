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
  HPCML_CHECK_AS(ConfigError, options_.mpi_io == MpiIo::kOff || options_.comm != MPI_COMM_NULL,
                 "data: MPI-IO reads need a communicator");
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
  if (options_.mpi_io != MpiIo::kOff) {
    for (size_t i = 0; i < files_.size(); ++i) mpi_files_.push_back(open(i));
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
  if (index < mpi_files_.size()) return mpi_files_[index];
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = open_files_.begin(); it != open_files_.end(); ++it) {
    if (it->first != index) continue;
    open_files_.splice(open_files_.begin(), open_files_, it);
    return it->second;
  }
  auto opened = std::make_shared<OpenFile>();
  opened->file = h5::File::open(files_[index].path, options_.mpi_io == MpiIo::kOff ? MPI_COMM_NULL : options_.comm);
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
  if (options_.mpi_io != MpiIo::kOff) return opened;  // kept in mpi_files_
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
  // The runs of each file; a collective read visits every file, even without runs.
  const bool collective = options_.mpi_io == MpiIo::kCollective;
  std::vector<std::pair<size_t, std::vector<size_t>>> by_file;
  for (size_t r = 0; r < runs.size(); ++r) {
    if (by_file.empty() || by_file.back().first != runs[r].file) by_file.push_back({runs[r].file, {}});
    by_file.back().second.push_back(r);
  }
  if (collective) {
    std::vector<std::pair<size_t, std::vector<size_t>>> all(files_.size());
    for (size_t f = 0; f < files_.size(); ++f) all[f].first = f;
    for (auto& [file, list] : by_file) all[file].second = std::move(list);
    by_file = std::move(all);
  }
  // One read of dataset `name` per file: the ranges `range(run)` of its runs, into
  // `destination(first run)` (consecutive in the output).
  auto read_per_file = [&](const std::string& name, hid_t memory_type, auto&& range, auto&& destination) {
    for (const auto& [file_index, list] : by_file) {
      auto file = open(file_index);
      const auto& [id, shape] = file->datasets.at(name);
      if (shape.dims.empty() || shape.dims[0] == 0) continue;  // no storage to read (every rank skips it)
      std::vector<h5::RowRange> ranges;
      for (size_t r : list) ranges.push_back(range(runs[r]));
      void* out = list.empty() ? nullptr : destination(runs[list.front()]);
      h5::read_row_ranges(id.get(), shape, ranges, memory_type, out, collective,
                          "file '" + file->file.path() + "' dataset '" + name + "'");
    }
  };

  Block block;
  block.rows = rows;
  const auto n = static_cast<int64_t>(rows.size());
  const layout::FileInfo& first = files_.front();

  for (const auto& name : fixed_fields_) {
    const h5::Shape& shape = first.field(name)->shape;
    at::Tensor out = at::empty(with_rows(n, shape), at::TensorOptions().dtype(tensor_type(shape)));
    read_per_file(
        name, memory_type(shape), [](const Run& run) { return h5::RowRange{run.local, run.count}; },
        [&](const Run& run) { return row_pointer(out, run.position); });
    block.fixed.emplace(name, std::move(out));
  }

  for (const auto& [collection, items] : ragged_fields_) {
    const std::string offsets_name = collection + "/" + std::string(layout::kOffsets);
    // Pass 1: each run's slice of offsets (count + 1 entries; runs of a file never
    // share an entry), checked, then turned into local offsets and item ranges.
    std::vector<int64_t> slices(runs.size() + rows.size());
    std::vector<int64_t> slice_start(runs.size());
    for (size_t r = 0, at = 0; r < runs.size(); at += static_cast<size_t>(runs[r].count) + 1, ++r)
      slice_start[r] = static_cast<int64_t>(at);
    read_per_file(
        offsets_name, H5T_NATIVE_INT64, [](const Run& run) { return h5::RowRange{run.local, run.count + 1}; },
        [&](const Run& run) { return static_cast<void*>(slices.data() + slice_start[&run - runs.data()]); });
    at::Tensor local_offsets = at::empty({n + 1}, at::kLong);
    int64_t* local = local_offsets.data_ptr<int64_t>();
    local[0] = 0;
    std::vector<h5::RowRange> item_ranges(runs.size());
    for (size_t r = 0; r < runs.size(); ++r) {
      const Run& run = runs[r];
      const int64_t* slice = slices.data() + slice_start[r];
      const int64_t total = files_[run.file].collection(collection)->last_offset;
      layout::check_offsets(slice, run.count + 1, -1, total, run.local,
                            "file '" + files_[run.file].path + "' dataset '" + offsets_name + "'");
      for (int64_t i = 0; i < run.count; ++i)
        local[run.position + i + 1] = local[run.position + i] + (slice[i + 1] - slice[i]);
      item_ranges[r] = {slice[0], slice[run.count] - slice[0]};
    }
    Block::Ragged ragged;
    ragged.offsets = local_offsets;
    const int64_t total_items = local[n];
    // Pass 2: the items of each run.
    for (const auto& item : items) {
      const std::string name = collection + "/" + item;
      const h5::Shape& shape = first.field(name)->shape;
      at::Tensor out = at::empty(with_rows(total_items, shape), at::TensorOptions().dtype(tensor_type(shape)));
      read_per_file(
          name, memory_type(shape), [&](const Run& run) { return item_ranges[&run - runs.data()]; },
          [&](const Run& run) { return row_pointer(out, local[run.position]); });
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
