#include "launch/infer/claims.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string content_of(const std::string& job, long counter) { return job + " " + std::to_string(counter) + "\n"; }

bool write_all(int fd, const std::string& text) {
  return ::pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()) &&
         ::ftruncate(fd, static_cast<off_t>(text.size())) == 0;
}

}  // namespace

Claims::Claims(fs::path dir, std::string job, double lease_s)
    : dir_(std::move(dir)), job_(std::move(job)), lease_s_(lease_s) {
  fs::create_directories(dir_);
}

Claims::~Claims() {
  for (auto& [id, held] : held_) ::close(held.fd);
}

fs::path Claims::path_of(const std::string& id) const {
  std::string name = id;
  for (char& c : name)
    if (c == ':' || c == '/') c = '_';
  return dir_ / (name + ".claim");
}

bool Claims::create(const std::string& id) {
  const fs::path path = path_of(id);
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    HPCML_CHECK_AS(IoError, errno == EEXIST, "campaign: cannot create claim '", path.string(), "': ",
                   std::strerror(errno));
    return false;
  }
  HPCML_CHECK_AS(IoError, write_all(fd, content_of(job_, 0)), "campaign: cannot write claim '", path.string(),
                 "': ", std::strerror(errno));
  held_[id] = Held{fd, 0};
  seen_.erase(id);
  return true;
}

bool Claims::claim(const std::string& id) {
  if (held_.count(id)) return true;
  if (create(id)) return true;
  const fs::path path = path_of(id);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return create(id);  // released meanwhile
  auto& seen = seen_[id];
  const auto now = Clock::now();
  if (seen.content != text.str() || seen.since == Clock::time_point{}) {
    seen.content = text.str();
    seen.since = now;
    return false;
  }
  if (std::chrono::duration<double>(now - seen.since).count() < lease_s_) return false;
  // Expired: rename it away (one taker wins), then create ours.
  const fs::path expired = path.string() + ".expired." + job_;
  if (::rename(path.c_str(), expired.c_str()) != 0) return false;
  ::unlink(expired.c_str());
  std::fprintf(stderr, "hpcml: infer: took over the claim of unit %s from '%s' (no heartbeat for %.0f s)\n",
               id.c_str(), seen.content.substr(0, seen.content.find(' ')).c_str(), lease_s_);
  return create(id);
}

void Claims::renew() {
  for (auto& [id, held] : held_) {
    ++held.counter;
    write_all(held.fd, content_of(job_, held.counter));  // a lost claim's inode takes it harmlessly
  }
}

void Claims::release(const std::string& id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  struct stat mine{}, there{};
  const fs::path path = path_of(id);
  if (::fstat(it->second.fd, &mine) == 0 && ::stat(path.c_str(), &there) == 0 && mine.st_ino == there.st_ino &&
      mine.st_dev == there.st_dev)
    ::unlink(path.c_str());
  ::close(it->second.fd);
  held_.erase(it);
}

}  // namespace hpcml::launch
