// hello_ranks: the smallest program on hpcml's collective layer.
//
// Every rank contributes its rank number; an allreduce sums them, and each rank
// checks the sum against n(n-1)/2. Run it with
//
//   mpirun -n 2 ./hello_ranks            # backend mpi (the default)
//   ./hello_ranks --backend local        # one process, no MPI launcher
#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "collectives/collectives.hpp"  // Backend, make_backend, options
#include "core/mpi.hpp"                 // MpiSession: owns MPI_Init/MPI_Finalize

int main(int argc, char** argv) {
  // 1. MPI comes up once per process, with MPI_THREAD_MULTIPLE.
  hpcml::MpiSession mpi(&argc, &argv);

  // 2. The backend is chosen by name (data, not #ifdefs).
  std::string backend = "mpi";
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--backend") == 0) backend = argv[i + 1];

  try {
    // Every collective gets this deadline: a rank that never arrives ends the job
    // with one clear line instead of hanging it.
    hpcml::collectives::BackendOptions options;
    options.timeout = std::chrono::seconds(30);
    auto world = hpcml::collectives::make_backend(backend, options);

    // 3. A collective: in place, on a CPU tensor; wait() returns when it is done.
    at::Tensor value = at::full({1}, static_cast<int64_t>(world->rank()), at::kLong);
    world->allreduce(value)->wait();

    const int64_t n = world->size();
    const int64_t expected = n * (n - 1) / 2;
    std::printf("rank %d of %d: sum of ranks = %lld (expected %lld)\n", world->rank(), world->size(),
                static_cast<long long>(value.item<int64_t>()), static_cast<long long>(expected));
    return value.item<int64_t>() == expected ? 0 : 1;
  } catch (const hpcml::Error& e) {
    // Errors name the rank, the operation and what was expected.
    std::fprintf(stderr, "hello_ranks: %s\n", e.what());
    return 1;
  }
}
