// The data layer on one process: tables written and read back through hyperslabs,
// ragged collation, the chunked sampler's shards, the prefetching loader, and every
// kind of bad input. References are computed here from the generating arrays.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "collectives/torch_compat.hpp"
#include "core/error.hpp"
#include "io/h5_dataset.hpp"
#include "io/hdf5.hpp"
#include "io/layout.hpp"
#include "io/loader.hpp"
#include "io/predictions.hpp"
#include "io/table.hpp"

namespace {

namespace fs = std::filesystem;
using hpcml::IoError;
using namespace hpcml::io;
using hpcml::io::layout::Expectation;

// Rows of a test table, kept to compare against what the reader returns.
struct Reference {
  std::vector<int64_t> id;
  std::vector<float> x;                  // 3 per row
  std::vector<int64_t> counts;           // hits per row
  std::vector<std::vector<float>> hits;  // 2 values per hit
};

Table make_table(int64_t first_row, int64_t rows, uint64_t seed, Reference& ref) {
  std::mt19937_64 gen(seed);
  Table t;
  t.schema = "hpcml.test";
  t.schema_version = 2;
  t.rows = rows;
  std::vector<int64_t> id;
  std::vector<float> x;
  std::vector<int64_t> offsets{0};
  std::vector<float> values;
  std::vector<int64_t> pid;
  for (int64_t r = 0; r < rows; ++r) {
    id.push_back(first_row + r);
    for (int k = 0; k < 3; ++k) x.push_back(static_cast<float>(first_row + r) + 0.25F * static_cast<float>(k));
    const auto count = static_cast<int64_t>(gen() % 6);  // includes empty events
    std::vector<float> event;
    for (int64_t h = 0; h < count; ++h) {
      event.push_back(static_cast<float>(first_row + r) * 10.F + static_cast<float>(h));
      event.push_back(-static_cast<float>(h));
      pid.push_back((first_row + r) * 100 + h);
    }
    values.insert(values.end(), event.begin(), event.end());
    offsets.push_back(offsets.back() + count);
    ref.id.push_back(first_row + r);
    ref.x.insert(ref.x.end(), x.end() - 3, x.end());
    ref.counts.push_back(count);
    ref.hits.push_back(event);
  }
  t.fixed.push_back({"id", {rows}, id, {""}, {}});
  t.fixed.push_back({"x", {rows, 3}, x, {"mm"}, {"a", "b", "c"}});
  const int64_t items = offsets.back();
  t.ragged.push_back({"hits", offsets, {{"values", {items, 2}, values, {"mm", "ns"}, {"r", "t"}},
                                        {"pid", {items}, pid, {""}, {}}}});
  t.meta.push_back({"geometry", {2}, std::vector<double>{1.5, 2.5}, {"m"}, {}});
  return t;
}

Expectation expect_all() {
  Expectation e;
  e.schema = "hpcml.test";
  e.schema_version = 2;
  e.fields = {{"id", layout::ElementKind::kInteger, 0},
              {"x", layout::ElementKind::kFloat, 1},
              {"hits/values", layout::ElementKind::kFloat, 1},
              {"hits/pid", layout::ElementKind::kInteger, 0}};
  return e;
}

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hpcml-io-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Three files of 37, 50 and 13 rows: 100 rows in all.
  std::vector<std::string> write_files() {
    const int64_t sizes[] = {37, 50, 13};
    int64_t first = 0;
    std::vector<std::string> paths;
    for (int f = 0; f < 3; ++f) {
      paths.push_back(path("part-" + std::to_string(f) + ".h5"));
      write_table(paths.back(), make_table(first, sizes[f], 100 + f, ref_));
      first += sizes[f];
    }
    return paths;
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
  Reference ref_;
};

// What a block must hold for `rows` (ascending), from the reference arrays.
void expect_block_matches(const Block& block, const std::vector<int64_t>& rows, const Reference& ref) {
  ASSERT_EQ(block.rows, rows);
  const auto n = static_cast<int64_t>(rows.size());
  const at::Tensor id = block.fixed.at("id");
  const at::Tensor x = block.fixed.at("x");
  ASSERT_EQ(id.scalar_type(), at::kLong);
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{n, 3}));
  const auto& hits = block.ragged.at("hits");
  const int64_t* offsets = hits.offsets.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const auto r = static_cast<size_t>(rows[static_cast<size_t>(i)]);
    EXPECT_EQ(id[i].item<int64_t>(), ref.id[r]);
    for (int k = 0; k < 3; ++k) EXPECT_EQ(x[i][k].item<float>(), ref.x[r * 3 + k]);
    ASSERT_EQ(offsets[i + 1] - offsets[i], ref.counts[r]) << "row " << r;
    for (int64_t h = 0; h < ref.counts[r]; ++h) {
      EXPECT_EQ(hits.items.at("values")[offsets[i] + h][0].item<float>(), ref.hits[r][static_cast<size_t>(2 * h)]);
      EXPECT_EQ(hits.items.at("values")[offsets[i] + h][1].item<float>(), ref.hits[r][static_cast<size_t>(2 * h + 1)]);
      EXPECT_EQ(hits.items.at("pid")[offsets[i] + h].item<int64_t>(), static_cast<int64_t>(r) * 100 + h);
    }
  }
}

TEST_F(DataTest, ReadsAnyRowsAcrossFilesByHyperslab) {
  write_files();
  H5Dataset dataset({{path("part-*.h5")}, expect_all()});
  ASSERT_EQ(dataset.size(), 100);
  ASSERT_EQ(dataset.files().size(), 3U);
  EXPECT_EQ(dataset.files()[1].schema, "hpcml.test");
  EXPECT_EQ(dataset.locate(37), (std::pair<size_t, int64_t>{1, 0}));
  // Scattered rows, duplicates and rows on both sides of file boundaries.
  const std::vector<int64_t> asked{99, 0, 36, 37, 38, 86, 87, 5, 5, 60};
  const Block block = dataset.read(asked);
  expect_block_matches(block, {0, 5, 36, 37, 38, 60, 86, 87, 99}, ref_);
  // Every row, in one read.
  std::vector<int64_t> all(100);
  std::iota(all.begin(), all.end(), 0);
  expect_block_matches(dataset.read(all), all, ref_);
}

TEST_F(DataTest, SelectReordersRowsAndTheirItems) {
  write_files();
  H5Dataset dataset({{path("part-*.h5")}, expect_all()});
  const Block block = dataset.read({3, 4, 5, 6, 7});
  const Block picked = block.select({4, 0, 2});
  expect_block_matches(picked, {7, 3, 5}, ref_);
}

TEST_F(DataTest, CollatesPaddedWithMaskAndPackedWithBatchIndex) {
  write_files();
  H5Dataset dataset({{path("part-*.h5")}, expect_all()});
  const std::vector<int64_t> rows{10, 11, 12, 13, 14, 15};
  const Block block = dataset.read(rows);
  int64_t longest = 0, total = 0;
  for (int64_t r : rows) longest = std::max(longest, ref_.counts[r]), total += ref_.counts[r];

  const Batch padded = collate(block, {});
  const at::Tensor values = padded.at("hits/values");
  const at::Tensor mask = padded.at("hits/mask");
  ASSERT_EQ(values.sizes(), (std::vector<int64_t>{6, longest, 2}));
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{6, longest}));
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t count = ref_.counts[rows[i]];
    for (int64_t p = 0; p < longest; ++p) {
      EXPECT_EQ(mask[i][p].item<bool>(), p < count);
      const float expected = p < count ? ref_.hits[rows[i]][static_cast<size_t>(2 * p)] : 0.F;
      EXPECT_EQ(values[i][p][0].item<float>(), expected);
    }
  }
  EXPECT_TRUE(at::equal(padded.at("rows"), at::tensor(rows, at::kLong)));

  // pad_to truncates longer events to their first items.
  const Batch truncated = collate(block, {{}, 2});
  EXPECT_EQ(truncated.at("hits/values").size(1), 2);
  EXPECT_EQ(truncated.at("hits/mask").sum().item<int64_t>(),
            [&] { int64_t s = 0; for (int64_t r : rows) s += std::min<int64_t>(2, ref_.counts[r]); return s; }());

  const Batch packed = collate(block, {{{"hits", Collation::kPacked}}, 0});
  ASSERT_EQ(packed.at("hits/values").size(0), total);
  const at::Tensor batch_index = packed.at("hits/batch");
  const at::Tensor offsets = packed.at("hits/offsets");
  ASSERT_EQ(offsets.size(0), 7);
  int64_t item = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(offsets[static_cast<int64_t>(i)].item<int64_t>(), item);
    for (int64_t h = 0; h < ref_.counts[rows[i]]; ++h, ++item) {
      EXPECT_EQ(batch_index[item].item<int64_t>(), static_cast<int64_t>(i));
      EXPECT_EQ(packed.at("hits/pid")[item].item<int64_t>(), rows[i] * 100 + h);
    }
  }
}

// Every (world size, remainder policy): rank shards are disjoint within an epoch,
// their union is the dataset less the stated remainder (drop) or plus the wrapped
// head (pad), ranks agree on the step count, and windows read whole chunks.
TEST(ChunkedSampler, ShardsAreDisjointAndCoverTheDatasetUpToTheRemainder) {
  for (int world : {1, 2, 3}) {
    for (LastBatch last : {LastBatch::kDrop, LastBatch::kPad}) {
      const int64_t n = 1000, b = 7, chunk = 64, window = 50;
      std::vector<int64_t> seen;
      for (int rank = 0; rank < world; ++rank) {
        SamplerOptions o;
        o.dataset_size = n;
        o.batch_size = b;
        o.rank = rank;
        o.world_size = world;
        o.seed = 11;
        o.last_batch = last;
        o.chunk_rows = chunk;
        o.window = window;
        DistributedSampler sampler(o);
        sampler.set_epoch(3);
        const int64_t global = b * world;
        const int64_t steps = last == LastBatch::kDrop ? n / global : (n + global - 1) / global;
        ASSERT_EQ(sampler.steps_per_epoch(), steps);
        ASSERT_EQ(sampler.steps_per_window(), 8);  // ceil(50 / 7): whole batches per window
        std::vector<int64_t> from_windows;
        for (int64_t w = 0; w * sampler.steps_per_window() < steps; ++w) {
          const auto rows = sampler.window_rows(w);
          // A window is a run of the chunk sequence: at most window/chunk + 2 contiguous pieces.
          int64_t pieces = 1;
          for (size_t i = 1; i < rows.size(); ++i) pieces += rows[i] != rows[i - 1] + 1;
          EXPECT_LE(pieces, 56 / chunk + 2 + 1);
          from_windows.insert(from_windows.end(), rows.begin(), rows.end());
        }
        std::vector<int64_t> from_batches;
        for (int64_t s = 0; s < steps; ++s) {
          const auto batch = sampler.batch(s);
          ASSERT_EQ(static_cast<int64_t>(batch.size()), b);
          from_batches.insert(from_batches.end(), batch.begin(), batch.end());
        }
        std::sort(from_windows.begin(), from_windows.end());
        auto sorted_batches = from_batches;
        std::sort(sorted_batches.begin(), sorted_batches.end());
        EXPECT_EQ(sorted_batches, from_windows);
        seen.insert(seen.end(), from_batches.begin(), from_batches.end());
      }
      const int64_t global = b * world;
      const int64_t used = (last == LastBatch::kDrop ? n / global : (n + global - 1) / global) * global;
      ASSERT_EQ(static_cast<int64_t>(seen.size()), used);
      std::multiset<int64_t> counts(seen.begin(), seen.end());
      if (last == LastBatch::kDrop) {
        EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size()) << "world " << world;
      } else {
        for (int64_t r = 0; r < n; ++r) EXPECT_GE(counts.count(r), 1U) << "row " << r << " world " << world;
        EXPECT_LE(static_cast<int64_t>(seen.size()) - n, b * world - 1);
      }
    }
  }
}

TEST(ChunkedSampler, EpochsReorderAndSeedsAgree) {
  SamplerOptions o;
  o.dataset_size = 500;
  o.batch_size = 10;
  o.chunk_rows = 32;
  o.window = 100;
  o.seed = 5;
  DistributedSampler a(o), b(o);
  a.set_epoch(1);
  b.set_epoch(1);
  EXPECT_EQ(a.batch(3), b.batch(3));
  b.set_epoch(2);
  EXPECT_NE(a.batch(3), b.batch(3));
  o.shuffle = false;
  DistributedSampler sequential(o);
  EXPECT_EQ(sequential.batch(1), (std::vector<int64_t>{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}));
}

TEST_F(DataTest, LoaderWithPrefetchGivesTheSamplersBatches) {
  write_files();
  H5Dataset dataset({{path("part-*.h5")}, expect_all()});
  SamplerOptions o;
  o.dataset_size = dataset.size();
  o.batch_size = 8;
  o.chunk_rows = 16;
  o.window = 24;
  o.seed = 3;
  DistributedSampler sampler(o);
  sampler.set_epoch(1);
  for (int64_t prefetch : {0, 1, 3}) {
    Loader loader(dataset, sampler, {}, {prefetch, 30.0});
    loader.start(2);  // resume mid-epoch
    for (int64_t step = 2; step < sampler.steps_per_epoch(); ++step) {
      const Batch batch = loader.next();
      const auto expected = sampler.batch(step);
      EXPECT_TRUE(at::equal(batch.at("rows"), at::tensor(expected, at::kLong))) << "prefetch " << prefetch;
      EXPECT_TRUE(at::equal(batch.at("id"), at::tensor(expected, at::kLong)));
      for (size_t i = 0; i < expected.size(); ++i) {
        EXPECT_EQ(batch.at("hits/mask")[static_cast<int64_t>(i)].sum().item<int64_t>(), ref_.counts[expected[i]]);
      }
    }
    EXPECT_THROW(loader.next(), IoError);
  }
}

// ---- bad input: one line naming the file, the dataset, expected vs found ----

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const hpcml::Error& e) {
    return e.message();
  }
  return "no error";
}

void overwrite_offsets(const std::string& file, const std::vector<std::pair<int64_t, int64_t>>& changes) {
  hpcml::io::h5::Lock lock(hpcml::io::h5::library_mutex());
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, "hits/offsets", H5P_DEFAULT);
  const hid_t space = H5Dget_space(d);
  std::vector<int64_t> all(static_cast<size_t>(H5Sget_simple_extent_npoints(space)));
  H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, all.data());
  for (const auto& [index, value] : changes) all[static_cast<size_t>(index)] = value;
  H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, all.data());
  H5Sclose(space);
  H5Dclose(d);
  H5Fclose(f);
}

TEST_F(DataTest, MissingFileAndGlobWithoutMatch) {
  const auto m = error_of([&] { H5Dataset({{path("absent.h5")}, expect_all()}); });
  EXPECT_NE(m.find("absent.h5': not found"), std::string::npos) << m;
  const auto g = error_of([&] { H5Dataset({{path("none-*.h5")}, expect_all()}); });
  EXPECT_NE(g.find("none-*.h5' matches no file"), std::string::npos) << g;
}

TEST_F(DataTest, MissingDatasetWrongDtypeWrongRank) {
  write_files();
  auto e = expect_all();
  e.fields.push_back({"energy", layout::ElementKind::kFloat, 0});
  auto m = error_of([&] { H5Dataset({{path("part-0.h5")}, e}); });
  EXPECT_NE(m.find("part-0.h5': dataset 'energy' not found"), std::string::npos) << m;
  EXPECT_NE(m.find("has: hits/pid, hits/values, id, x"), std::string::npos) << m;

  e = expect_all();
  e.fields[0].kind = layout::ElementKind::kFloat;  // id is int64
  m = error_of([&] { H5Dataset({{path("part-0.h5")}, e}); });
  EXPECT_NE(m.find("dataset 'id': expected a floating-point type, found int64 (37,)"), std::string::npos) << m;

  e = expect_all();
  e.fields[1].item_rank = 2;  // x is (rows, 3)
  m = error_of([&] { H5Dataset({{path("part-0.h5")}, e}); });
  EXPECT_NE(m.find("dataset 'x': expected 3 axes"), std::string::npos) << m;
  EXPECT_NE(m.find("found float32 (37, 3)"), std::string::npos) << m;
}

TEST_F(DataTest, SchemaNameAndVersionMismatch) {
  write_files();
  auto e = expect_all();
  e.schema_version = 3;
  auto m = error_of([&] { H5Dataset({{path("part-1.h5")}, e}); });
  EXPECT_NE(m.find("part-1.h5': schema 'hpcml.test' version 2, expected version 3"), std::string::npos) << m;
  e = expect_all();
  e.schema = "hpcml.jets";
  m = error_of([&] { H5Dataset({{path("part-1.h5")}, e}); });
  EXPECT_NE(m.find("schema 'hpcml.test', expected 'hpcml.jets'"), std::string::npos) << m;
  // Files of one dataset must agree with each other, too.
  Reference other;
  Table t = make_table(0, 5, 1, other);
  t.schema_version = 1;
  write_table(path("old.h5"), t);
  e = expect_all();
  e.schema_version = 0;
  m = error_of([&] { H5Dataset({{path("part-0.h5"), path("old.h5")}, e}); });
  EXPECT_NE(m.find("old.h5': schema 'hpcml.test' version 1, but"), std::string::npos) << m;
}

TEST_F(DataTest, OffsetsNonMonotonicOrOutOfRange) {
  write_files();
  const std::string file = path("part-0.h5");
  // offsets[10] drops below offsets[9]: found when rows 8..11 are read.
  overwrite_offsets(file, {{10, -5}});
  H5Dataset bad({{file}, expect_all()});
  auto m = error_of([&] { bad.read({8, 9, 10, 11}); });
  EXPECT_NE(m.find("part-0.h5' dataset 'hits/offsets'"), std::string::npos) << m;
  EXPECT_NE(m.find("offsets[10] = -5 < offsets[9]"), std::string::npos) << m;

  write_files();
  overwrite_offsets(file, {{20, 1000000}});
  H5Dataset far({{file}, expect_all()});
  m = error_of([&] { far.read({19}); });
  EXPECT_NE(m.find("offsets[20] = 1000000 out of range [0, "), std::string::npos) << m;

  // The last offset must equal the item count; offsets[0] must be 0.
  write_files();
  overwrite_offsets(file, {{37, 3}});
  m = error_of([&] { H5Dataset({{file}, expect_all()}); });
  EXPECT_NE(m.find("': expected 3 items (offsets[37]), found "), std::string::npos) << m;
  write_files();
  overwrite_offsets(file, {{0, 1}});
  m = error_of([&] { H5Dataset({{file}, expect_all()}); });
  EXPECT_NE(m.find("'hits/offsets': offsets[0] = 1, expected 0"), std::string::npos) << m;
}

TEST_F(DataTest, TruncatedCorruptAndForeignFiles) {
  write_files();
  const std::string file = path("part-1.h5");
  const auto size = fs::file_size(file);
  fs::resize_file(file, size / 2);
  auto m = error_of([&] { H5Dataset({{file}, expect_all()}); });
  EXPECT_NE(m.find("part-1.h5'"), std::string::npos) << m;
  EXPECT_NE(m.find("cannot open (truncated or corrupt?)"), std::string::npos) << m;
  EXPECT_NE(m.find("truncated file: eof = "), std::string::npos) << m;  // HDF5's own words

  {
    std::ofstream garbage(path("garbage.h5"), std::ios::binary);
    for (int i = 0; i < 4096; ++i) garbage.put(static_cast<char>(i * 37));
  }
  m = error_of([&] { H5Dataset({{path("garbage.h5")}, expect_all()}); });
  EXPECT_NE(m.find("garbage.h5': not an HDF5 file (4096 bytes"), std::string::npos) << m;

  // An HDF5 file that is not in the layout.
  {
    hpcml::io::h5::File f = hpcml::io::h5::File::create(path("foreign.h5"));
    const int64_t data[2] = {1, 2};
    hpcml::io::h5::write_dataset(f.get(), "x", H5T_NATIVE_INT64, {2}, 0, data, "foreign");
    f.close();
  }
  m = error_of([&] { H5Dataset({{path("foreign.h5")}, expect_all()}); });
  EXPECT_NE(m.find("foreign.h5': not in hpcml's layout (root attribute 'hpcml_layout' missing"), std::string::npos)
      << m;
}

TEST(Table, InconsistentTablesAreRefusedBeforeWriting) {
  Reference ref;
  Table t = make_table(0, 4, 1, ref);
  t.fixed[1].shape = {4, 2};
  auto m = error_of([&] { check_table(t); });
  EXPECT_NE(m.find("column 'x' holds 12 values, its shape needs 8"), std::string::npos) << m;
  t = make_table(0, 4, 1, ref);
  t.ragged[0].offsets[2] = t.ragged[0].offsets[1] - 1;
  m = error_of([&] { check_table(t); });
  EXPECT_NE(m.find("offsets are not non-decreasing"), std::string::npos) << m;
}

}  // namespace

namespace {

TEST_F(DataTest, PredictionsCarryTheirProvenance) {
  const at::Tensor scores = at::rand({5, 2});
  const at::Tensor rows = at::arange(100, 105, at::kLong);
  Provenance p;
  p.model = "particlenet-lite";
  p.checkpoint_digest = std::string(64, 'a');
  p.config_yaml = "model:\n  name: particlenet-lite\n";
  p.input_file = "/data/jets-00003.h5";
  p.first_row = 100;
  p.rows = 5;
  write_predictions(path("pred.h5"),
                    {column_from_tensor("scores", scores, {""}, {"qcd", "top"}), column_from_tensor("row", rows)}, p);
  EXPECT_FALSE(fs::exists(path("pred.h5.tmp")));
  H5Dataset read({{path("pred.h5")}, {"hpcml.predictions", 1, {{"scores"}, {"row"}}}});
  const Block block = read.read({0, 1, 2, 3, 4});
  EXPECT_TRUE(at::equal(block.fixed.at("scores"), scores));
  EXPECT_TRUE(at::equal(block.fixed.at("row"), rows));
  EXPECT_EQ(read.files()[0].field("scores")->features, (std::vector<std::string>{"qcd", "top"}));
  const auto file = hpcml::io::h5::File::open(path("pred.h5"));
  auto attribute = [&](const char* name) { return hpcml::io::h5::read_string_attribute(file.get(), name, "pred"); };
  EXPECT_EQ(attribute("model"), "particlenet-lite");
  EXPECT_EQ(attribute("checkpoint_sha256"), p.checkpoint_digest);
  EXPECT_EQ(attribute("config"), p.config_yaml);
  EXPECT_EQ(attribute("input_file"), "/data/jets-00003.h5");
  EXPECT_EQ(attribute("input_first_row"), "100");
  EXPECT_EQ(attribute("input_rows"), "5");
  EXPECT_NE(attribute("hpcml_version").find("git"), std::string::npos);
  // CMake's Torch_VERSION in the file, against the headers' TORCH_VERSION_*.
  EXPECT_EQ(attribute("libtorch_version"), hpcml::compat::libtorch_version());
}

}  // namespace
