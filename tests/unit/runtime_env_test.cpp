// RuntimeEnv from launcher variables: which launcher, which rank, and rejection
// of malformed values. (The MPI cross-check runs in the cli tests under mpirun.)
#include "core/runtime_env.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

#include "core/error.hpp"

namespace {

class RuntimeEnvTest : public ::testing::Test {
 protected:
  void SetUp() override { clear(); }
  void TearDown() override { clear(); }
  static void clear() {
    for (const char* name : {"SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                             "SLURM_NODEID", "SLURMD_NODENAME", "SLURM_HET_SIZE", "SLURM_NTASKS_HET_GROUP_0", "SLURM_NTASKS_HET_GROUP_1",
                             "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                             "OMPI_COMM_WORLD_LOCAL_SIZE"}) {
      unsetenv(name);
    }
  }
};

TEST_F(RuntimeEnvTest, NoLauncher) {
  const auto env = hpcml::RuntimeEnv::from_environment();
  EXPECT_EQ(env.launcher, hpcml::Launcher::kNone);
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.size, 1);
  EXPECT_FALSE(env.job_id.has_value());
}

TEST_F(RuntimeEnvTest, Mpirun) {
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
  const auto env = hpcml::RuntimeEnv::from_environment();
  EXPECT_EQ(env.launcher, hpcml::Launcher::kMpirun);
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 2);
}

TEST_F(RuntimeEnvTest, SrunStepWithHetGroup) {
  setenv("SLURM_JOB_ID", "1234", 1);
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_PROCID", "2", 1);
  setenv("SLURM_NTASKS", "3", 1);
  setenv("SLURM_LOCALID", "0", 1);
  setenv("SLURM_NODEID", "1", 1);
  setenv("SLURMD_NODENAME", "gpu1", 1);
  // As Slurm 22.05 sets them in `srun --het-group=0,1` over a cpu -n 2 and a gpu -n 1 component.
  setenv("SLURM_HET_SIZE", "2", 1);
  setenv("SLURM_NTASKS_HET_GROUP_0", "2", 1);
  setenv("SLURM_NTASKS_HET_GROUP_1", "1", 1);
  const auto env = hpcml::RuntimeEnv::from_environment();
  EXPECT_EQ(env.launcher, hpcml::Launcher::kSrun);
  EXPECT_EQ(env.rank, 2);
  EXPECT_EQ(env.size, 3);
  EXPECT_EQ(env.node_index, 1);
  EXPECT_EQ(env.node_name, "gpu1");
  EXPECT_EQ(env.job_id, "1234");
  EXPECT_EQ(env.het_size, 2);
  EXPECT_EQ(env.het_group, 1);
  setenv("SLURM_PROCID", "1", 1);
  EXPECT_EQ(hpcml::RuntimeEnv::from_environment().het_group, 0);
}

TEST_F(RuntimeEnvTest, BatchShellWithoutStepIsNotSrun) {
  setenv("SLURM_JOB_ID", "1234", 1);
  setenv("SLURM_PROCID", "0", 1);
  EXPECT_EQ(hpcml::RuntimeEnv::from_environment().launcher, hpcml::Launcher::kNone);
}

TEST_F(RuntimeEnvTest, MalformedValuesNameTheVariable) {
  setenv("OMPI_COMM_WORLD_RANK", "two", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  try {
    hpcml::RuntimeEnv::from_environment();
    FAIL() << "no error for OMPI_COMM_WORLD_RANK=two";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_EQ(e.message(), "environment variable OMPI_COMM_WORLD_RANK: expected an integer, found 'two'");
  }
  setenv("OMPI_COMM_WORLD_RANK", "4", 1);
  try {
    hpcml::RuntimeEnv::from_environment();
    FAIL() << "no error for rank 4 of 4";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_EQ(e.message(), "environment variable OMPI_COMM_WORLD_RANK: expected a value in [0, 4), found 4");
  }
}

}  // namespace
