// The one GoogleTest main of every MPI test binary.
//
// MPI is initialised once, before RUN_ALL_TESTS. Rank 0 prints the usual
// report; other ranks print only their failures, prefixed with their rank. The
// verdict is collective: if any rank failed, every rank exits non-zero. The
// final agreement has a deadline, so a rank stuck in a test cannot hang the job.
#include <gtest/gtest.h>

#include <cstdio>

#include "core/mpi.hpp"
#include "core/watchdog.hpp"

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "%s %s:%d: failure\n%s\n", hpcml::rank_tag().c_str(),
                 result.file_name() ? result.file_name() : "?", result.line_number(), result.summary());
  }
};

}  // namespace

int main(int argc, char** argv) {
  hpcml::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (hpcml::world_rank() != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter);
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  {
    auto guard = hpcml::Watchdog::instance().arm("test verdict", "world", std::chrono::seconds(60));
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  }
  if (failed && hpcml::world_rank() == 0) std::fprintf(stderr, "at least one rank failed a test\n");
  return failed;
}
