/// @file
/// Memory that every rank of a communicator maps, when all of them share one node.
#pragma once

#include <cstddef>
#include <string>

namespace hpcml::collectives {

/// One POSIX shared-memory segment, mapped by every rank of a communicator
/// (Backend::map_node_shared). The segment's name is unlinked as soon as every rank
/// has mapped it, so a job that dies leaves nothing in /dev/shm; the memory goes
/// when the last rank unmaps it. Unmapping is local (no collective), so a rank may
/// drop its mapping while others still use theirs.
class NodeSharedMemory {
 public:
  NodeSharedMemory(void* base, size_t bytes) : base_(base), bytes_(bytes) {}
  ~NodeSharedMemory();
  NodeSharedMemory(const NodeSharedMemory&) = delete;
  NodeSharedMemory& operator=(const NodeSharedMemory&) = delete;

  /// Zero-filled at creation; the same bytes at a different address on each rank.
  void* base() const { return base_; }
  size_t bytes() const { return bytes_; }

 private:
  void* base_;
  size_t bytes_;
};

namespace detail {
/// Creates and maps a new zeroed segment of `bytes`, named into `name` (at least 64
/// chars); the pages are reserved now, so a full /dev/shm is an error here rather
/// than a SIGBUS later. nullptr with `error` set on failure (nothing left behind).
void* create_shared(char* name, size_t bytes, std::string* error);
/// Maps the segment `name` made by create_shared. nullptr with `error` set on failure.
void* open_shared(const char* name, size_t bytes, std::string* error);
}  // namespace detail

}  // namespace hpcml::collectives
