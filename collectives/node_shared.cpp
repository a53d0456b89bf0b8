#include "collectives/node_shared.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace hpcml::collectives {

NodeSharedMemory::~NodeSharedMemory() {
  if (base_ != nullptr) munmap(base_, bytes_);
}

namespace detail {

namespace {

void* map_fd(int fd, size_t bytes, const char* name, std::string* error) {
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    *error = std::string("mmap of shared memory segment ") + name + " (" + std::to_string(bytes) +
             " bytes) failed: " + std::strerror(errno);
    return nullptr;
  }
  return base;
}

}  // namespace

void* create_shared(char* name, size_t bytes, std::string* error) {
  static std::atomic<int> counter{0};
  std::snprintf(name, 64, "/hpcml-%d-%d", static_cast<int>(getpid()), counter++);
  const int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    *error = std::string("shm_open(") + name + ") failed: " + std::strerror(errno);
    name[0] = '\0';
    return nullptr;
  }
  // Reserve the pages now (tmpfs allocates on touch): a full /dev/shm is an error
  // here instead of a SIGBUS in the middle of a training step.
  const int rc = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  void* base = nullptr;
  if (rc != 0) {
    *error = "reserving " + std::to_string(bytes) + " bytes of shared memory in /dev/shm failed: " +
             std::strerror(rc) + " (a container's /dev/shm is often 64 MB: docker run --shm-size)";
  } else {
    base = map_fd(fd, bytes, name, error);
  }
  close(fd);
  if (base == nullptr) {
    shm_unlink(name);
    name[0] = '\0';
  }
  return base;
}

void* open_shared(const char* name, size_t bytes, std::string* error) {
  const int fd = shm_open(name, O_RDWR, 0600);
  if (fd < 0) {
    *error = std::string("shm_open(") + name + ") failed on a second rank: " + std::strerror(errno);
    return nullptr;
  }
  void* base = map_fd(fd, bytes, name, error);
  close(fd);
  return base;
}

}  // namespace detail
}  // namespace hpcml::collectives
