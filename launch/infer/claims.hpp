/// @file
/// Claims on units of work shared by several jobs (one campaign directory, separate
/// mpiruns or sbatch jobs), on any POSIX file system (Lustre, GPFS, NFSv3+).
///
/// A job claims a unit by creating its claim file with O_CREAT|O_EXCL (atomic) and
/// keeps it alive by bumping a counter inside it about every second. Another job
/// treats a claim as expired when its content has not changed for `lease_s` on the
/// other job's own monotonic clock (no clocks of two nodes are compared), and takes
/// it over by renaming it away (only one rename of a file succeeds) and creating its
/// own. A claim of a job on this host whose process is gone is taken over at once. A
/// holder that lost its claim writes its counter into the renamed-away inode, never
/// into the new owner's file.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <string>

namespace hpcml::launch {

/// This machine's host name, as jobs and temporary names carry it.
std::string this_host();
/// Whether `s` reads as a process id: 1 to 9 decimal digits.
bool looks_like_pid(const std::string& s);
/// Whether `host` is this machine and `pid` names no process on it, or a zombie (killed,
/// not yet reaped): what a killed job or writer left there may be taken at once. False
/// when unsure (another host, not a pid, a live process or one of another user).
bool process_gone_from_this_host(const std::string& host, const std::string& pid);

class Claims {
 public:
  /// `dir` holds the claim files; `job` names this job in them (<host>-<pid> or
  /// slurm<id>). Not thread-safe (the farm's coordinator calls it).
  Claims(std::filesystem::path dir, std::string job, double lease_s);
  ~Claims();
  Claims(const Claims&) = delete;
  Claims& operator=(const Claims&) = delete;

  /// True when this job holds `id`'s claim now (taken, or taken over after expiry).
  bool claim(const std::string& id);
  /// Bumps the counter of every claim held.
  void renew();
  /// Removes this job's claim of `id`, if it still is this job's.
  void release(const std::string& id);
  const std::string& job() const { return job_; }

 private:
  std::filesystem::path path_of(const std::string& id) const;
  bool create(const std::string& id);
  /// Renames `holder`'s expired claim of `id` away (one taker wins), then creates ours.
  bool take_over(const std::string& id, const std::string& holder, const std::string& why);

  struct Held {
    int fd = -1;
    long counter = 0;
  };
  struct Seen {
    std::string content;
    std::chrono::steady_clock::time_point since;
  };
  std::filesystem::path dir_;
  std::string job_;
  double lease_s_;
  std::map<std::string, Held> held_;
  std::map<std::string, Seen> seen_;
};

}  // namespace hpcml::launch
