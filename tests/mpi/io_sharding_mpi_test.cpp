// Sharding through the whole read path at 1, 2 and 3 ranks: files written by rank 0,
// read by every rank with the chunked sampler and the prefetching loader. The
// reference is the dataset's own id column: in each epoch the ranks' shards are
// disjoint, and together they hold every id except the stated remainder.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "collectives/collectives.hpp"
#include "io/h5_dataset.hpp"
#include "io/loader.hpp"
#include "io/table.hpp"
#include "tests/support/tensor_testing.hpp"

namespace {

namespace fs = std::filesystem;
using namespace hpcml::io;

hpcml::collectives::BackendPtr world() { return hpcml::testing::test_world(); }

// Files of 211, 0, 389 and 400 rows (an empty file included): 1000 rows whose `id` is
// the row and whose ragged `items` hold (id, k) for k < id % 4.
std::string write_dataset() {
  const fs::path dir = fs::temp_directory_path() / "hpcml-sharding-test";
  if (world()->rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    int64_t first = 0;
    int index = 0;
    for (int64_t rows : {211, 0, 389, 400}) {
      Table t;
      t.schema = "hpcml.test.ids";
      t.rows = rows;
      std::vector<int64_t> id, offsets{0}, items;
      for (int64_t r = first; r < first + rows; ++r) {
        id.push_back(r);
        for (int64_t k = 0; k < r % 4; ++k) items.insert(items.end(), {r, k});
        offsets.push_back(static_cast<int64_t>(items.size()) / 2);
      }
      t.fixed.push_back({"id", {rows}, id, {""}, {}});
      t.ragged.push_back({"items", offsets, {{"values", {offsets.back(), 2}, items, {""}, {"id", "k"}}}});
      write_table((dir / ("ids-" + std::to_string(index++) + ".h5")).string(), t);
      first += rows;
    }
  }
  world()->barrier();
  return (dir / "ids-*.h5").string();
}

// This rank's ids for one epoch, in order, checked against the sampler and the items.
std::vector<int64_t> read_epoch(const H5Dataset& dataset, DistributedSampler& sampler, int64_t epoch,
                                int64_t prefetch) {
  sampler.set_epoch(epoch);
  Loader loader(dataset, sampler, {{{"items", Collation::kPacked}}, 0}, {prefetch, 60.0});
  loader.start();
  std::vector<int64_t> ids;
  for (int64_t step = 0; step < loader.steps(); ++step) {
    const Batch batch = loader.next();
    const at::Tensor id = batch.at("id");
    EXPECT_TRUE(at::equal(id, at::tensor(sampler.batch(step), at::kLong)));
    // Each event's items are its own: (id, k) for k < id % 4, in order.
    const at::Tensor values = batch.at("items/values");
    const at::Tensor offsets = batch.at("items/offsets");
    for (int64_t i = 0; i < id.size(0); ++i) {
      const int64_t r = id[i].item<int64_t>();
      const int64_t begin = offsets[i].item<int64_t>();
      EXPECT_EQ(offsets[i + 1].item<int64_t>() - begin, r % 4);
      for (int64_t k = 0; k < r % 4; ++k) {
        EXPECT_EQ(values[begin + k][0].item<int64_t>(), r);
        EXPECT_EQ(values[begin + k][1].item<int64_t>(), k);
      }
    }
    ids.insert(ids.end(), id.data_ptr<int64_t>(), id.data_ptr<int64_t>() + id.size(0));
  }
  return ids;
}

std::vector<std::vector<int64_t>> gather(const std::vector<int64_t>& mine) {
  const auto parts = world()->allgather_varying(at::tensor(mine, at::kLong));
  std::vector<std::vector<int64_t>> out;
  for (const auto& p : parts) out.emplace_back(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
  return out;
}

void check_epoch(const std::vector<std::vector<int64_t>>& shards, int64_t n, int64_t steps, int64_t batch,
                 LastBatch last) {
  std::multiset<int64_t> all;
  for (const auto& shard : shards) {
    EXPECT_EQ(static_cast<int64_t>(shard.size()), steps * batch) << "every rank takes the same number of steps";
    all.insert(shard.begin(), shard.end());
  }
  const auto world_size = static_cast<int64_t>(shards.size());
  const int64_t used = steps * batch * world_size;
  ASSERT_EQ(static_cast<int64_t>(all.size()), used);
  for (int64_t id : all) ASSERT_TRUE(id >= 0 && id < n) << id;
  if (last == LastBatch::kDrop) {
    // Disjoint: no id twice; the remainder n - used ids are left out (different ones each epoch).
    EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), all.size());
    EXPECT_LT(n - used, batch * world_size);
  } else {
    // Pad: every id at least once; the wrapped head adds fewer than one global batch.
    for (int64_t id = 0; id < n; ++id) EXPECT_GE(all.count(id), 1U) << id;
    EXPECT_LT(used - n, batch * world_size);
  }
}

TEST(Sharding, ChunkedShardsAreDisjointAndCoverTheDataset) {
  const std::string files = write_dataset();
  H5Dataset dataset({{files}, {"hpcml.test.ids", 1, {{"id"}, {"items/values"}}}});
  ASSERT_EQ(dataset.size(), 1000);
  for (LastBatch last : {LastBatch::kDrop, LastBatch::kPad}) {
    SamplerOptions o;
    o.dataset_size = dataset.size();
    o.batch_size = 9;
    o.rank = world()->rank();
    o.world_size = world()->size();
    o.seed = 42;
    o.last_batch = last;
    o.chunk_rows = 50;
    o.window = 60;
    DistributedSampler sampler(o);
    std::set<int64_t> left_out_before;
    for (int64_t epoch : {0, 1}) {
      const auto shards = gather(read_epoch(dataset, sampler, epoch, epoch == 0 ? 2 : 0));
      check_epoch(shards, 1000, sampler.steps_per_epoch(), 9, last);
      if (last == LastBatch::kDrop && world()->size() > 1) {
        std::set<int64_t> seen;
        for (const auto& s : shards) seen.insert(s.begin(), s.end());
        std::set<int64_t> left_out;
        for (int64_t id = 0; id < 1000; ++id)
          if (!seen.count(id)) left_out.insert(id);
        if (epoch == 1 && !left_out.empty()) EXPECT_NE(left_out, left_out_before) << "the remainder rotates";
        left_out_before = left_out;
      }
    }
  }
}

TEST(Sharding, SampleModeShardsAreDisjointToo) {
  const std::string files = write_dataset();
  H5Dataset dataset({{files}, {"hpcml.test.ids", 1, {{"id"}, {"items/values"}}}});
  SamplerOptions o;
  o.dataset_size = dataset.size();
  o.batch_size = 16;
  o.rank = world()->rank();
  o.world_size = world()->size();
  o.seed = 7;
  DistributedSampler sampler(o);
  check_epoch(gather(read_epoch(dataset, sampler, 3, 1)), 1000, sampler.steps_per_epoch(), 16, LastBatch::kDrop);
}

// MPI-IO, independent and collective: the same batches as the POSIX reader, read on
// the prefetch thread (collective reads from every rank in step: same window count).
TEST(Sharding, MpiIoReadsTheSameBatches) {
  const std::string files = write_dataset();
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  for (MpiIo mode : {MpiIo::kIndependent, MpiIo::kCollective}) {
    H5DatasetOptions options{{files}, {"hpcml.test.ids", 1, {{"id"}, {"items/values"}}}};
    options.mpi_io = mode;
    options.comm = comm;
    H5Dataset dataset(options);
    SamplerOptions o;
    o.dataset_size = dataset.size();
    o.batch_size = 8;
    o.rank = world()->rank();
    o.world_size = world()->size();
    o.seed = 9;
    o.chunk_rows = 64;
    o.window = 64;
    DistributedSampler sampler(o);
    // read_epoch checks every batch against the sampler and the items against their ids.
    check_epoch(gather(read_epoch(dataset, sampler, 2, -1)), 1000, sampler.steps_per_epoch(), 8, LastBatch::kDrop);
  }
  MPI_Comm_free(&comm);
}

}  // namespace
