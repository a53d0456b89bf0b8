/// @file
/// Upper bounds on sizes that users type: config keys and command-line options.
///
/// A size enters as a number a person wrote, so a typo (an extra zero, a unit
/// mix-up) must be a one-line config error, not a 40 GB allocation or an endless
/// generator. Two kinds of bound:
/// - hard caps per kind of size (below), documented in docs/troubleshooting.md;
///   far above what any model or data set of this build uses;
/// - a memory check for what is allocated in one piece from several sizes
///   (a synthetic data set, an MLP's parameters and optimizer state, a benchmark
///   message): the estimate must fit in half of this node's memory.
#pragma once

#include <cstdint>
#include <string>

namespace hpcml::limits {

inline constexpr int kMaxWidth = 1 << 16;             ///< a layer's width, a basis, a context size
inline constexpr int kMaxFeatures = 1 << 20;          ///< input features of the synthetic data set
inline constexpr int kMaxDepth = 256;                 ///< layers, coupling steps
inline constexpr int kMaxBins = 1024;                 ///< spline bins
inline constexpr int kMaxClasses = 1 << 20;           ///< classes of a classifier
inline constexpr int kMaxRows = 1 << 30;              ///< rows of a synthetic data set, a chunk or window
inline constexpr int kMaxBatch = 1 << 20;             ///< samples per rank per step
inline constexpr int kMaxMembers = 4096;              ///< members of a pack (train.pack)
inline constexpr int64_t kMaxDraws = 1'000'000;       ///< posterior draws per event
inline constexpr int64_t kMaxFiles = 100'000;         ///< files one datagen call writes
inline constexpr uint64_t kMaxMessageBytes = 8ull << 30;  ///< one benchmark message (8 GiB)

/// This node's memory for the process in bytes: the physical memory, or the
/// cgroup (v2 memory.max, v1 limit_in_bytes) limit when lower.
uint64_t node_memory_bytes();

/// Throws hpcml::ConfigError when `bytes` (an estimate of what `what` allocates)
/// exceeds half of node_memory_bytes(). `keys` names the keys or options that set
/// the size, e.g. "data.samples x data.features".
void check_fits_in_memory(double bytes, const std::string& what, const std::string& keys);

/// "1.5 GiB", "640 MiB", "12 KiB", "100 B".
std::string format_bytes(double bytes);

}  // namespace hpcml::limits
