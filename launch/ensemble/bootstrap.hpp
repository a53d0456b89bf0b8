/// @file
/// Bootstrap resamples of training files for ensemble members (internal to launch/ensemble).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hpcml::launch::ensemble {

/// Writes `out` (atomically; nothing when it exists already): a bootstrap resample of the rows
/// of `files` (glob patterns expanded, rows in file order): as many rows as they hold together,
/// each drawn uniformly with replacement by a std::mt19937_64 seeded with `seed`, in hpcml's
/// layout with the first file's schema and every fixed-shape root field. Holds the files' rows
/// in memory. Deterministic: the same files and seed give the same file.
/// @throws ConfigError for files with ragged collections (not resampled), IoError for a file
///         that cannot be read, or fields that differ between the files.
void write_bootstrap(const std::vector<std::string>& files, const std::string& out, uint64_t seed);

/// The bootstrap seed of member `k` of variation number `v`: a mix of (seed, v, k).
uint64_t bootstrap_seed(int64_t seed, uint64_t v, int64_t k);

}  // namespace hpcml::launch::ensemble
