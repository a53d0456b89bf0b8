#include "launch/infer/campaign_files.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "launch/infer/claims.hpp"

namespace hpcml::launch::campaign_files {

namespace fs = std::filesystem;
using nlohmann::json;

// One predictions file per input: <stem>.predictions.h5; inputs that share a file
// name get -<k>, k their position in the input list (docs/campaigns.md).
std::vector<std::string> output_names(const std::vector<std::string>& inputs) {
  std::map<std::string, int> count;
  for (const auto& in : inputs) ++count[fs::path(in).stem().string()];
  std::vector<std::string> out;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const std::string stem = fs::path(inputs[k]).stem().string();
    out.push_back(stem + (count[stem] > 1 ? "-" + std::to_string(k) : std::string()) + ".predictions.h5");
  }
  return out;
}

// What makes two runs the same campaign.
json fingerprint(const TrainConfig& c, const std::vector<std::string>& inputs, const std::string& checkpoint,
                 const std::string& digest, const std::string& task, const std::vector<std::string>& copies) {
  json files = json::array();
  for (const auto& in : inputs) {
    struct stat st{};
    ::stat(in.c_str(), &st);
    files.push_back({{"path", fs::absolute(in).string()}, {"bytes", static_cast<int64_t>(st.st_size)},
                     {"mtime_ns", static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec}});
  }
  json inputs_map = json::object();
  for (const auto& [name, field] : c.data.inputs) inputs_map[name] = field;
  return {{"checkpoint", checkpoint}, {"checkpoint_sha256", digest},
          {"model", config::to_yaml(c.model)}, {"data_inputs", inputs_map},
          {"batch_size", c.infer.batch_size}, {"unit_rows", c.infer.unit_rows}, {"task", task}, {"via", c.infer.via},
          {"copy_fields", copies}, {"inputs", files}};
}

// "" when `now` continues `before`, else what changed, for the refusal.
std::string changes(const json& before, const json& now, bool ignore_input_changes) {
  std::vector<std::string> what;
  if (before.value("checkpoint_sha256", "") != now["checkpoint_sha256"])
    what.push_back("the checkpoint's parameters (sha256 " + before.value("checkpoint_sha256", "").substr(0, 12) +
                   " -> " + now["checkpoint_sha256"].get<std::string>().substr(0, 12) + ")");
  for (const char* key : {"model", "data_inputs", "batch_size", "unit_rows", "task", "copy_fields", "via"})
    if (before.value(key, json()) != now[key]) what.push_back(std::string("the key(s) of ") + key);
  const auto& a = before.value("inputs", json::array());
  const auto& b = now["inputs"];
  if (a.size() != b.size()) {
    what.push_back("the input list (" + std::to_string(a.size()) + " -> " + std::to_string(b.size()) + " files)");
  } else {
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i] == b[i]) continue;
      if (ignore_input_changes && a[i]["path"] == b[i]["path"]) continue;
      what.push_back("input '" + b[i]["path"].get<std::string>() +
                     (a[i]["path"] != b[i]["path"] ? "' (was '" + a[i]["path"].get<std::string>() + "')"
                                                   : "' (size or modification time)"));
      break;
    }
  }
  std::string out;
  for (const auto& w : what) out += (out.empty() ? "" : ", ") + w;
  return out;
}

fs::path temp_name(const fs::path& path) {
  return path.string() + ".tmp." + this_host() + "." + std::to_string(::getpid());
}

size_t remove_stale_temps(const fs::path& dir, double stale_s) {
  const std::string here = this_host();
  size_t removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.find(".tmp.");
    if (at == std::string::npos || !entry.is_regular_file(ec)) continue;
    std::string writer = name.substr(at + 5);  // <host>.<pid>, perhaps with io's ".tmp" on top
    if (writer.size() > 4 && writer.compare(writer.size() - 4, 4, ".tmp") == 0) writer.resize(writer.size() - 4);
    const size_t dot = writer.rfind('.');
    if (dot == std::string::npos || !looks_like_pid(writer.substr(dot + 1))) continue;
    bool stale;
    if (writer.substr(0, dot) == here) {
      stale = process_gone_from_this_host(here, writer.substr(dot + 1));
    } else {
      const auto age = fs::file_time_type::clock::now() - entry.last_write_time(ec);
      stale = !ec && std::chrono::duration<double>(age).count() > stale_s;
    }
    if (stale && fs::remove(entry.path(), ec)) ++removed;
  }
  return removed;
}

// Writes `text` to a temporary name of this process, fsyncs it, then: `once`: link()s
// it to `path`, returning false when `path` exists already (another job wrote it
// first); else renames it over `path`. Several jobs may do this at once.
bool publish(const fs::path& path, const std::string& text, bool once) {
  const fs::path tmp = temp_name(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    HPCML_CHECK_AS(IoError, out.good(), "campaign: cannot write '", tmp.string(), "': ", std::strerror(errno));
  }
  fsync_file(tmp.string());
  if (once) {
    const bool made = ::link(tmp.c_str(), path.c_str()) == 0;
    const int error = errno;
    ::unlink(tmp.c_str());
    HPCML_CHECK_AS(IoError, made || error == EEXIST, "campaign: cannot create '", path.string(), "': ",
                   std::strerror(error));
    fsync_file(path.parent_path().string());
    return made;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    HPCML_THROW(IoError, "campaign: cannot write '", path.string(), "': ", std::strerror(error));
  }
  fsync_file(path.parent_path().string());
  return true;
}


std::string record_fingerprint(const fs::path& dir, const json& now, bool retry_failed) {
  const fs::path record = dir / "campaign.json";
  try {
    fs::create_directories(dir / "parts");
    if (publish(record, now.dump(1) + "\n", /*once=*/true)) return "";
    std::ifstream in(record);
    const std::string changed = changes(json::parse(in, nullptr, false), now, retry_failed);
    if (changed.empty()) return "";
    return "infer: '" + dir.string() + "' holds another campaign: " + changed + " changed; rerun with --new to start "
           "a new campaign there (the old one is moved aside), or choose another infer.output_dir";
  } catch (const Error& e) {
    return e.message();
  } catch (const fs::filesystem_error& e) {
    return "infer: infer.output_dir '" + dir.string() + "': " + e.code().message();
  }
}

int write_summary(const fs::path& dir, const farm::FarmReport& report, json summary) {
  int64_t rows = 0;
  double read_s = 0, compute_s = 0, write_s = 0;
  json failures = json::array(), per_worker = json::object(), files = json::array();
  for (const auto& r : report.results) {
    if (!r.ok) {
      failures.push_back({{"task", r.id}, {"error", r.error}});
      continue;
    }
    const bool assembly = r.id.rfind("assemble:", 0) == 0;
    if (assembly) files.push_back(r.result.value("output", ""));
    if (r.result.contains("rows") && r.id.find(':') != std::string::npos && !assembly) {
      const int64_t n = r.result.value("rows", int64_t{0});
      rows += n;
      read_s += r.result.value("read_s", 0.0);
      compute_s += r.result.value("compute_s", 0.0);
      write_s += r.result.value("write_s", 0.0);
      if (!r.replayed) per_worker[std::to_string(r.worker)] = per_worker.value(std::to_string(r.worker), int64_t{0}) + n;
    }
  }
  summary["files_written"] = files.size();
  summary["rows_this_run"] = per_worker;
  summary["rows"] = rows;
  summary["failures"] = failures;
  summary["split_s"] = {{"read", read_s}, {"compute", compute_s}, {"write", write_s}};
  publish(dir / "summary.json", summary.dump(1) + "\n", /*once=*/false);  // the last job's, whole
  std::printf("infer: %zu of %zu files written, %lld rows, %zu failure(s), %.1f s; %s\n", files.size(),
              summary.value("inputs", size_t{0}), static_cast<long long>(rows), failures.size(),
              summary.value("seconds", 0.0), (dir / "summary.json").c_str());
  std::fflush(stdout);
  return failures.empty() ? 0 : 1;
}

void test_hook_delay(const std::string& unit_id) {
  static const char* slow = std::getenv("HPCML_TEST_CAMPAIGN_SLOW");
  if (slow == nullptr) return;
  const std::string spec(slow);
  const auto colon = spec.rfind(':');
  if (colon == std::string::npos) return;
  const std::string which = spec.substr(0, colon);
  if (which == "*" || which == unit_id)
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(spec.c_str() + colon + 1)));
}

void test_hook_after_commit() {
  static const char* after = std::getenv("HPCML_TEST_CAMPAIGN_KILL_AFTER");
  static int commits = 0;
  if (after != nullptr && ++commits == std::atoi(after)) ::raise(SIGKILL);
}

}  // namespace hpcml::launch::campaign_files
