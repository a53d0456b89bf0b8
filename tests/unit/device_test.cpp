// Device choice, autocast, the NCCL backend's refusals and the gradient-ready hook:
// what needs no GPU and differs between LibTorch versions, tested in every build line
// (Debian's LibTorch 1.13 and the upstream CUDA 2.11 one).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "collectives/device.hpp"
#include "collectives/grad_hook.hpp"
#include "collectives/nccl_backend.hpp"
#include "collectives/torch_compat.hpp"
#include "core/error.hpp"
#include "hpcml/build_config.hpp"
#include "launch/runtime.hpp"

namespace hpcml {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(SelectDevice, CpuAndAutoWithoutADevice) {
  EXPECT_TRUE(collectives::select_device("cpu", 3).device.is_cpu());
  if (collectives::visible_devices() == 0) {
    const auto choice = collectives::select_device("auto", 0);
    EXPECT_TRUE(choice.device.is_cpu());
    EXPECT_NE(choice.why.find("no CUDA device visible"), std::string::npos) << choice.why;
  }
}

TEST(SelectDevice, CudaWithoutADeviceIsOneLineNamingTheKey) {
  if (collectives::visible_devices() > 0) GTEST_SKIP() << "a CUDA device is visible (the gpu tier covers it)";
  const std::string e = error_of([] { collectives::select_device("cuda", 1, "runtime.device"); });
  EXPECT_NE(e.find("runtime.device"), std::string::npos) << e;
#ifdef HPCML_HAS_CUDA
  EXPECT_NE(e.find("expected a CUDA device, found none visible to local rank 1"), std::string::npos) << e;
#else
  EXPECT_NE(e.find("built without CUDA"), std::string::npos) << e;
#endif
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(SelectDevice, ASpecThatIsNoDeviceIsRefused) {
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA"}) {
    const std::string e = error_of([&] { collectives::select_device(bad, 0, "bench ddp: --device"); });
    EXPECT_NE(e.find("expected cpu, cuda, cuda:N or auto, found '" + std::string(bad) + "'"), std::string::npos)
        << bad << ": " << e;
  }
}

TEST(Nccl, CompiledExactlyWithCuda) {
#ifdef HPCML_HAS_NCCL
  EXPECT_TRUE(collectives::nccl_compiled());
#else
  EXPECT_FALSE(collectives::nccl_compiled());
  const std::string e = error_of([] { collectives::make_nccl_backend(nullptr, 0, {}); });
  EXPECT_NE(e.find("built without CUDA"), std::string::npos) << e;
#endif
}

// The reference: what autocast does, stated by its contract, not by the
// implementation: an eligible op (matmul) runs in the lower precision inside the
// scope; outside, and after nested scopes close, float32 again.
TEST(Autocast, Bf16MatmulOnTheCpuAndRestoredAfter) {
  const auto a = at::randn({8, 8}), b = at::randn({8, 8});
  EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kFloat);
  {
    compat::AutocastScope outer(c10::DeviceType::CPU, at::kBFloat16);
    EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kBFloat16);
    {
      compat::AutocastScope inner(c10::DeviceType::CPU, at::kFloat);  // fp32: no change
      EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kBFloat16);
    }
    EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kFloat);
}

TEST(Autocast, Fp16OnTheCpuNeedsLibTorch2) {
  std::string why;
  const bool ok = compat::autocast_supported(c10::DeviceType::CPU, at::kHalf, &why);
#if HPCML_TORCH_AT_LEAST(2, 0)
  EXPECT_TRUE(ok) << why;
#else
  EXPECT_FALSE(ok);
  EXPECT_NE(why.find("needs LibTorch 2.x; this build has 1.13"), std::string::npos) << why;
  const std::string e = error_of([] { compat::AutocastScope s(c10::DeviceType::CPU, at::kHalf); });
  EXPECT_NE(e.find("fp16 autocast on the CPU"), std::string::npos) << e;
#endif
  EXPECT_FALSE(compat::autocast_supported(c10::DeviceType::CPU, at::kInt, &why));
}

// The reference: the gradient autograd accumulated, read when the hook fires. Two
// hooks on one parameter both fire (2.x keeps one hook object per tensor, so this
// failed before the hooks were multiplexed), and dropping one leaves the other.
TEST(GradReadyHook, TwoOnOneParameterFireAfterAccumulationAndOneOutlivesTheOther) {
  auto w = at::ones({3}).requires_grad_(true);
  std::vector<std::string> seen;
  auto first = collectives::on_grad_ready(w, [&] { seen.push_back("first " + std::to_string(w.grad().sum().item<float>())); });
  {
    auto second = collectives::on_grad_ready(w, [&] { seen.push_back("second"); });
    (w * 2).sum().backward();
    EXPECT_EQ(seen, (std::vector<std::string>{"first 6.000000", "second"}));
  }
  seen.clear();
  (w * 2).sum().backward();  // accumulates: 4 per element
  EXPECT_EQ(seen, (std::vector<std::string>{"first 12.000000"}));
}

// The drivers that still run on the CPU refuse a GPU device in one line instead of
// silently training on the CPU (a Context is plain data: no GPU needed to test it).
TEST(RequireCpu, ADriverOnTheCpuRefusesAGpuDevice) {
  launch::Context c;
  EXPECT_NO_THROW(launch::require_cpu(c, "hpcml infer"));
  c.device.device = c10::Device(c10::kCUDA, 0);
  const std::string e = error_of([&] { launch::require_cpu(c, "hpcml infer"); });
  EXPECT_NE(e.find("key 'runtime.device': hpcml infer runs on the CPU today, found cuda:0"), std::string::npos) << e;
}

TEST(Version, MatchesTheBuildsLibTorch) {
  EXPECT_EQ(compat::libtorch_version(), std::string(HPCML_TORCH_VERSION).substr(0, compat::libtorch_version().size()));
}

}  // namespace
}  // namespace hpcml
