// A user's own event loop offloading its model calls to hpcml serve's servers.
//
//   mpirun -n 3 serve_client --repository configs/serve-models [--events 200] [--in-flight 4]
//
// The last rank serves the repository's models; every other rank runs the loop
// below: per event, some CPU work of its own, then an asynchronous FACILE call,
// keeping a few events in flight (SONIC's ExternalWork pattern). Results come back
// as futures; a server that stops answering shows up as a ServeError naming it,
// or, with --fallback, as a local computation. The service talks over a
// collectives::Backend (the world's MPI backend, duplicated): no MPI call here.
#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <string>
#include <vector>

#include "collectives/factory.hpp"  // make_backend
#include "core/mpi.hpp"               // MpiSession, world_rank, world_size
#include "launch/serve/client.hpp"
#include "launch/serve/server.hpp"
#include "models/registry.hpp"

namespace serve = hpcml::launch::serve;

int main(int argc, char** argv) {
  hpcml::MpiSession mpi(&argc, &argv);
  std::string repository = "configs/serve-models";
  int events = 200, in_flight = 4;
  bool fallback = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repository" && i + 1 < argc) repository = argv[++i];
    else if (a == "--events" && i + 1 < argc) events = std::atoi(argv[++i]);
    else if (a == "--in-flight" && i + 1 < argc) in_flight = std::atoi(argv[++i]);
    else if (a == "--fallback") fallback = true;
  }
  const int rank = hpcml::world_rank(), size = hpcml::world_size();
  if (size < 2) {
    std::fprintf(stderr, "serve_client: run with at least 2 ranks (clients, then one server)\n");
    return 2;
  }
  // One communicator for the service, the same on every rank: the world's MPI
  // backend, duplicated so that no other traffic mixes with the service's.
  const hpcml::collectives::BackendPtr world = hpcml::collectives::make_backend("mpi");
  const hpcml::collectives::BackendPtr comm = world->dup("serve");
  const int server = size - 1;
  std::vector<int> clients;
  for (int r = 0; r < server; ++r) clients.push_back(r);

  int status = 0;
  if (rank == server) {
    serve::ServerOptions options;
    options.repository = repository;
    const serve::ServerReport report = serve::run_server(comm, clients, options);  // until every client is done
    std::printf("server rank %d: %lld requests\n", rank, static_cast<long long>(report.requests));
  } else {
    serve::ClientOptions options;
    options.fallback = fallback;
    options.repository = repository;  // for the local fallback
    serve::Client client(comm, {server}, options);
    std::deque<std::future<serve::InferResult>> window;
    double energy = 0;
    auto collect = [&] {
      const serve::InferResult r = window.front().get();  // throws ServeError on failure
      window.pop_front();
      energy += r.output.sum().item<double>();
    };
    for (int e = rank; e < events; e += server) {
      // ... this event's own reconstruction would run here ...
      const auto region = hpcml::models::example_inputs("facile", /*batch=*/16, /*seed=*/e);  // 16 channels
      window.push_back(client.infer_async("facile", region));
      if (static_cast<int>(window.size()) >= in_flight) collect();
    }
    while (!window.empty()) collect();
    client.finish();  // DONE to the servers
    const auto stats = client.stats();
    std::printf("client rank %d: %lld replies, %lld local fallbacks, summed energy %.3f\n", rank,
                static_cast<long long>(stats.replies), static_cast<long long>(stats.fallbacks), energy);
  }
  return status;
}
