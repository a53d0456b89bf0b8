#include "launch/infer/claims.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <csignal>
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

std::string this_host() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

bool looks_like_pid(const std::string& s) {
  if (s.empty() || s.size() > 9) return false;  // pid_t's range; longer is not a process's name
  for (const char ch : s)
    if (!std::isdigit(static_cast<unsigned char>(ch))) return false;
  return true;
}

bool process_gone_from_this_host(const std::string& host, const std::string& pid) {
  if (host != this_host() || !looks_like_pid(pid)) return false;
  if (::kill(static_cast<pid_t>(std::stol(pid)), 0) != 0) return errno == ESRCH;
  // A killed process whose parent (a killed mpirun's, reparented) has not reaped it yet
  // still takes signals: a zombie (state Z, or X) writes and renews nothing either.
  std::ifstream stat("/proc/" + pid + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t paren = line.rfind(')');  // "pid (comm) state ...": comm may hold spaces
  return paren != std::string::npos && paren + 2 < line.size() && (line[paren + 2] == 'Z' || line[paren + 2] == 'X');
}

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
  const std::string content = text.str(), holder = content.substr(0, content.find(' '));
  // A job of this host (<host>-<pid>, rank 0's process) that is gone renews nothing.
  const size_t dash = holder.rfind('-');
  if (holder != job_ && dash != std::string::npos &&
      process_gone_from_this_host(holder.substr(0, dash), holder.substr(dash + 1)))
    return take_over(id, holder, "its process is gone from this host");
  auto& seen = seen_[id];
  const auto now = Clock::now();
  if (seen.content != content || seen.since == Clock::time_point{}) {
    seen.content = content;
    seen.since = now;
    return false;
  }
  if (std::chrono::duration<double>(now - seen.since).count() < lease_s_) return false;
  char why[64];
  std::snprintf(why, sizeof why, "no heartbeat for %.0f s", lease_s_);
  return take_over(id, holder, why);
}

bool Claims::take_over(const std::string& id, const std::string& holder, const std::string& why) {
  const fs::path path = path_of(id), expired = path.string() + ".expired." + job_;
  if (::rename(path.c_str(), expired.c_str()) != 0) return false;
  ::unlink(expired.c_str());
  std::fprintf(stderr, "hpcml: infer: took over the claim of unit %s from '%s' (%s)\n", id.c_str(), holder.c_str(),
               why.c_str());
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
