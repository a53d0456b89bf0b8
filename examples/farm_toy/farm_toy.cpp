// farm_toy: the work farm (launch/farm/farm.hpp) on a toy workload.
//
// Each task sleeps for its given time on every rank of its worker, sums the ranks
// of the worker's group with an allreduce, and writes out/<id>.json atomically
// (temporary name, then rename) with its timing. A task whose spec says "fail"
// throws, which fails that task only; a task with "spawn": n adds n tasks when it
// finishes (tasks created on the fly, as ASHA's promotions are).
//
//   mpirun -n 4 ./farm_toy --ms 300,50,50,50 --out out --journal out/farm.jsonl --ranks-per-worker 2
//   ./farm_toy --ms 10,10 --out out --backend local
//
// Options: --ms D1,D2,...   task durations in milliseconds (tasks t0, t1, ...)
//          --fail I,J       tasks that fail      --spawn I:N   task I adds N tasks of 50 ms
//          --ranks-per-worker K   --dedicated-coordinator   --journal PATH   --backend mpi|local
// tests/cli/test_farm.py drives it: balance, tasks added on the fly, failures, kill and resume.
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "collectives/collectives.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/mpi.hpp"
#include "launch/farm/farm.hpp"

namespace farm = hpcml::launch::farm;
using nlohmann::json;

namespace {

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  hpcml::MpiSession mpi(&argc, &argv);
  std::string ms = "100,100", fail, spawn, out = "farm-out", journal, backend = "mpi";
  farm::FarmOptions options;
  options.name = "farm_toy";
  options.progress_s = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--ms") ms = value();
    else if (a == "--fail") fail = value();
    else if (a == "--spawn") spawn = value();
    else if (a == "--out") out = value();
    else if (a == "--journal") options.journal = value();
    else if (a == "--backend") backend = value();
    else if (a == "--ranks-per-worker") options.ranks_per_worker = std::stoi(value());
    else if (a == "--dedicated-coordinator") options.coordinator_works = false;
    else {
      std::fprintf(stderr, "farm_toy: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    hpcml::collectives::BackendOptions bo;
    bo.timeout = std::chrono::seconds(60);
    auto world = hpcml::collectives::make_backend(backend, bo);
    std::filesystem::create_directories(out);

    // The plan (read on the coordinator only): one task per duration.
    farm::FarmPlan plan;
    const auto durations = split(ms, ',');
    const auto failing = split(fail, ',');
    for (size_t i = 0; i < durations.size(); ++i) {
      json spec = {{"ms", std::stoi(durations[i])}};
      if (std::find(failing.begin(), failing.end(), std::to_string(i)) != failing.end()) spec["fail"] = true;
      if (!spawn.empty() && split(spawn, ':')[0] == std::to_string(i)) spec["spawn"] = std::stoi(split(spawn, ':')[1]);
      plan.tasks.push_back({"t" + std::to_string(i), spec});
    }
    plan.on_result = [](const farm::TaskResult& r) {
      std::vector<farm::Task> more;
      const int n = r.ok ? r.result.value("spawn", 0) : 0;
      for (int j = 0; j < n; ++j) more.push_back({r.id + ".c" + std::to_string(j), {{"ms", 50}}});
      return more;
    };

    // The task: every rank of the worker sleeps, the group agrees on a sum, the
    // group's first rank writes the result file.
    auto task = [&](const farm::Task& t, hpcml::collectives::Backend& group) -> json {
      const double start = now_s();
      std::this_thread::sleep_for(std::chrono::milliseconds(t.spec.at("ms").get<int>()));
      if (t.spec.value("fail", false)) HPCML_THROW(hpcml::Error, "task ", t.id, ": told to fail (a bad input file)");
      at::Tensor rank = at::tensor({world->rank()}, at::kLong);
      group.allreduce(rank);
      json result = {{"id", t.id},          {"start", start},      {"end", now_s()},
                     {"world_ranks_sum", rank.item<int64_t>()}, {"group_size", group.size()},
                     {"leader", world->rank()}, {"spawn", t.spec.value("spawn", 0)}};
      if (group.rank() == 0) hpcml::write_file_atomically(out + "/" + t.id + ".json", result.dump() + "\n");
      return result;
    };

    const farm::FarmReport report = farm::run_farm(world, plan, task, options);
    if (world->rank() == 0)
      std::printf("farm_toy: %d done, %d failed on %d worker(s) in %.2f s\n", report.done, report.failed,
                  report.workers, report.seconds);
    return 0;
  } catch (const hpcml::Error& e) {
    // The farm's set-up errors (layout, journal) are the same on every rank: rank 0 says it.
    if (hpcml::world_rank() == 0) std::fprintf(stderr, "%s\n", e.message().c_str());
    return 1;
  }
}
