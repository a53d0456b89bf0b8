// A job in which the last rank never joins a collective.
//
//   deadline_probe <timeout_s> <sync|async|barrier|reducer|recv|recv-async|send|send-async>
//
// Every rank but the last calls a collective with the given deadline; the last
// rank sleeps far longer. `reducer`: every rank builds a GradientReducer (shared-
// memory transport), and every rank but the last runs a step's backward, whose
// reduction then waits for the last rank's gradients. recv, recv-async: every rank
// but the last waits for a message from the last rank (tag 9); send, send-async: every
// rank but the last sends it 64 MiB (tag 9, past any eager limit), which it never
// receives (send-async: waiting on the send's Work). Expected: the watchdog (sync, barrier) or Work::wait
// (async) prints the deadline line and the job ends with exit code 86 shortly
// after the deadline. tests/cli/test_deadline.py checks exactly that.
#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "collectives/collectives.hpp"
#include "core/mpi.hpp"

int main(int argc, char** argv) {
  hpcml::MpiSession mpi(&argc, &argv);
  if (argc != 3) {
    std::fprintf(stderr, "usage: deadline_probe <timeout_s> <sync|async|barrier|reducer|recv|recv-async|send|send-async>\n");
    return 2;
  }
  const double timeout_s = std::atof(argv[1]);
  const std::string mode = argv[2];
  hpcml::collectives::BackendOptions options;
  options.timeout = std::chrono::milliseconds(static_cast<long>(timeout_s * 1000));
  auto world = hpcml::collectives::make_backend("mpi", options);
  at::Tensor weight = at::ones({256}).requires_grad_(true);
  std::unique_ptr<hpcml::collectives::GradientReducer> reducer;
  if (mode == "reducer") {
    hpcml::collectives::ReducerOptions shm;
    shm.transport = hpcml::collectives::Transport::kSharedMemory;
    reducer = std::make_unique<hpcml::collectives::GradientReducer>(
        std::vector<hpcml::collectives::NamedTensor>{{"weight", weight}}, std::vector<hpcml::collectives::NamedTensor>{},
        world, shm);
  }
  world->barrier()->wait();  // everyone is up; the clock starts now

  if (world->rank() == world->size() - 1) {
    std::this_thread::sleep_for(std::chrono::seconds(120));  // skips the collective
    return 0;
  }
  at::Tensor t = at::ones({1 << 16});
  if (mode == "sync") {
    world->allreduce(t);
  } else if (mode == "async") {
    hpcml::collectives::AllreduceOptions async;
    async.async = true;
    auto work = world->allreduce(t, async);
    work->wait();
  } else if (mode == "recv" || mode == "recv-async") {
    hpcml::collectives::P2POptions p2p;
    p2p.async = mode == "recv-async";
    int value = 0;
    world->recv(&value, sizeof value, world->size() - 1, 9, nullptr, p2p)->wait();
  } else if (mode == "send" || mode == "send-async") {
    std::vector<char> big(64u << 20);
    hpcml::collectives::P2POptions p2p;
    p2p.async = mode == "send-async";
    world->send(big.data(), big.size(), world->size() - 1, 9, p2p)->wait();
  } else if (mode == "reducer") {
    reducer->backward((weight * t.narrow(0, 0, 256)).sum());
  } else {
    world->barrier();
  }
  std::fprintf(stderr, "deadline_probe: collective completed, which it must not\n");
  return 3;
}
