// hpcml serve at 3 ranks: clients 0 and 1, server 2. The role plan and the batch
// policy (pure functions), the protocol, and whole serving sessions: served
// results equal local inference, batching, every robustness case, clean shutdown.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "collectives/factory.hpp"
#include "core/mpi.hpp"
#include "launch/serve/batcher.hpp"
#include "launch/serve/client.hpp"
#include "launch/serve/fill.hpp"
#include "launch/serve/protocol.hpp"
#include "launch/serve/repository.hpp"
#include "launch/serve/roles.hpp"
#include "launch/serve/server.hpp"
#include "models/registry.hpp"
#include "tests/support/tensor_testing.hpp"

namespace fs = std::filesystem;
namespace serve = hpcml::launch::serve;
using std::chrono::microseconds;

namespace {

// ---- pure functions ---------------------------------------------------------------

TEST(ServeRoles, CountPutsServersLast) {
  serve::RoleOptions o;
  o.servers = 2;
  const auto plan = serve::plan_roles(std::vector<serve::RankFacts>(5), o);
  EXPECT_EQ(plan.source, "count");
  EXPECT_EQ(plan.clients, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(plan.servers, (std::vector<int>{3, 4}));
}

TEST(ServeRoles, RatioRoundsAndKeepsAClient) {
  serve::RoleOptions o;
  o.server_ratio = 0.25;
  EXPECT_EQ(serve::plan_roles(std::vector<serve::RankFacts>(8), o).servers, (std::vector<int>{6, 7}));
  o.server_ratio = 0.01;
  EXPECT_EQ(serve::plan_roles(std::vector<serve::RankFacts>(8), o).servers, (std::vector<int>{7}));
  o.server_ratio = 1.0;
  EXPECT_THROW(serve::plan_roles(std::vector<serve::RankFacts>(2), o), hpcml::ConfigError);
}

TEST(ServeRoles, MpmdLastAppContextServes) {
  std::vector<serve::RankFacts> facts{{-1, 0}, {-1, 0}, {-1, 1}, {-1, 1}};
  const auto plan = serve::plan_roles(facts, {});
  EXPECT_EQ(plan.source, "mpmd");
  EXPECT_EQ(plan.servers, (std::vector<int>{2, 3}));
  serve::RoleOptions count;
  count.mode = "count";
  EXPECT_EQ(serve::plan_roles(facts, count).servers, (std::vector<int>{3}));
}

TEST(ServeRoles, HetGroupWinsOverAppContext) {
  std::vector<serve::RankFacts> facts{{0, 0}, {1, 0}, {0, 0}};
  const auto plan = serve::plan_roles(facts, {});
  EXPECT_EQ(plan.source, "het job");
  EXPECT_EQ(plan.servers, (std::vector<int>{1}));
  EXPECT_EQ(plan.clients, (std::vector<int>{0, 2}));
}

TEST(ServeRoles, BadCountsNameTheKey) {
  serve::RoleOptions o;
  o.servers = 3;
  try {
    serve::plan_roles(std::vector<serve::RankFacts>(3), o);
    FAIL() << "expected a ConfigError";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_NE(e.message().find("serve.servers"), std::string::npos) << e.message();
  }
  EXPECT_THROW(serve::plan_roles(std::vector<serve::RankFacts>(1), {}), hpcml::ConfigError);
}

TEST(ServeBatcher, Policy) {
  serve::BatchPolicy p;
  p.max_batch_size = 64;
  p.max_delay = microseconds(1000);
  // Waits for the delay, then takes all that fits.
  auto d = serve::decide_batch(p, {16, 16}, microseconds(10));
  EXPECT_EQ(d.take, 0u);
  EXPECT_EQ(d.wait, microseconds(990));
  EXPECT_EQ(serve::decide_batch(p, {16, 16}, microseconds(1000)).take, 2u);
  // Full: the next request would not fit.
  EXPECT_EQ(serve::decide_batch(p, {32, 16, 32}, microseconds(0)).take, 2u);
  EXPECT_EQ(serve::decide_batch(p, {32, 32}, microseconds(0)).take, 2u);
  // A preferred size runs at once (the largest reachable prefix).
  p.preferred = {16, 48};
  EXPECT_EQ(serve::decide_batch(p, {16, 16, 16, 8}, microseconds(0)).take, 3u);
  // Batch-1 serving.
  p.dynamic = false;
  EXPECT_EQ(serve::decide_batch(p, {16, 16, 16}, microseconds(0)).take, 1u);
}

TEST(ServeProtocol, RoundTrip) {
  serve::NamedInputs in;
  in["x"] = {at::arange(30, at::kFloat).reshape({2, 15}), at::Tensor()};
  in["p"] = {at::ones({5, 4}, at::kFloat), at::tensor({0, 2, 5}, at::kLong)};
  auto bytes = std::make_shared<std::vector<char>>(serve::pack_request(42, "facile", in));
  EXPECT_EQ(serve::peek_request_id(bytes->data(), bytes->size()), 42u);
  const serve::Request r = serve::parse_request(bytes);
  EXPECT_EQ(r.model, "facile");
  EXPECT_EQ(r.rows, 2);
  EXPECT_TRUE(hpcml::testing::tensor_equal(r.inputs.at("x").values, in["x"].values));
  EXPECT_TRUE(hpcml::testing::tensor_equal(r.inputs.at("p").offsets, in["p"].offsets));
  // Truncated messages are refused with a message, never read past the end.
  auto cut = std::make_shared<std::vector<char>>(bytes->begin(), bytes->begin() + 40);
  EXPECT_THROW(serve::parse_request(cut), serve::RequestError);
  serve::ServerTiming t;
  t.batch_rows = 7;
  const auto reply_bytes = serve::pack_reply(42, t, at::ones({2, 1}));
  const auto reply = serve::parse_reply(reply_bytes.data(), reply_bytes.size());
  EXPECT_TRUE(reply.ok);
  EXPECT_EQ(reply.timing.batch_rows, 7);
  const auto err_bytes = serve::pack_error_reply(42, "no such model");
  EXPECT_EQ(serve::parse_reply(err_bytes.data(), err_bytes.size()).error, "no such model");
}

// The sizes that fill the device, from a throughput curve (worked by hand).
TEST(ServeFill, FillingSizesFromTheCurve) {
  using P = serve::BatchPoint;
  // best 960 rows/s; 90% of it is 864: first reached at 16 rows.
  const std::vector<P> curve = {{8, 600}, {1, 100}, {2, 190}, {4, 350}, {16, 880}, {32, 950}, {64, 960}, {100, 955}};
  EXPECT_EQ(serve::filling_sizes(curve), (std::vector<int>{16, 32, 64, 100}));
  EXPECT_EQ(serve::filling_sizes(curve, 0.5), (std::vector<int>{8, 16, 32, 64, 100}));
  EXPECT_EQ(serve::filling_sizes({{1, 100}, {2, 95}, {4, 50}}), (std::vector<int>{1, 2, 4}));  // full at 1 row
  EXPECT_EQ(serve::filling_sizes({}), std::vector<int>{});
}

TEST(ServeFill, WhenTheServerMeasures) {
  serve::ModelConfig c;
  const c10::Device cpu(c10::kCPU), gpu(c10::kCUDA, 0);
  EXPECT_FALSE(serve::measures_batch_sizes(c, cpu));  // auto: on a GPU only
  EXPECT_TRUE(serve::measures_batch_sizes(c, gpu));
  c.measure_batch_sizes = "yes";
  EXPECT_TRUE(serve::measures_batch_sizes(c, cpu));
  c.preferred_batch_sizes = {32};  // given sizes win
  EXPECT_FALSE(serve::measures_batch_sizes(c, gpu));
  c.preferred_batch_sizes.clear();
  c.dynamic_batching = false;  // batch-1 serving has no sizes to prefer
  EXPECT_FALSE(serve::measures_batch_sizes(c, cpu));
  c.dynamic_batching = true;
  c.measure_batch_sizes = "no";
  EXPECT_FALSE(serve::measures_batch_sizes(c, gpu));
}

// ---- sessions on 3 ranks -----------------------------------------------------------

constexpr int kServer = 2;

// A model repository of this rank (every rank writes its own copy).
std::string make_repository(const std::string& tag, const std::map<std::string, std::string>& configs) {
  const fs::path dir = fs::temp_directory_path() /
                       ("hpcml-serve-test-" + std::to_string(::getpid()) + "-" + tag);
  fs::remove_all(dir);
  for (const auto& [name, text] : configs) {
    fs::create_directories(dir / name);
    std::ofstream(dir / name / "config.yaml") << text;
  }
  return dir.string();
}

// The world's MPI backend and the service's communicator (a duplicate: world ranks).
struct Session {
  hpcml::collectives::BackendPtr world = hpcml::collectives::make_backend("mpi");
  hpcml::collectives::BackendPtr comm = world->dup("serve");
  int rank = hpcml::world_rank();
  ~Session() { world->barrier(); }
  // Receives and drops whatever is still addressed to this rank (heartbeats).
  void drain(double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      if (auto m = comm->improbe()) {
        comm->recv_prefix(*m, nullptr, 0);
        continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
};

bool skip_unless_three() { return hpcml::world_size() != 3; }

const char* kFacile = "platform: zoo\nseed: 3\nmax_batch_size: 256\n";

void served_equals_local(const std::string& compute) {
  const std::string repo = make_repository(
      "equal", {{"facile", kFacile},
                {"deepcalo", "platform: zoo\nseed: 4\nmax_batch_size: 20\nmax_queue_delay_us: 2000\n"},
                {"particlenet-lite", "platform: zoo\nseed: 5\nmax_batch_size: 64\nmax_queue_delay_us: 5000\n"}});
  Session s;
  if (s.rank == kServer) {
    serve::ServerOptions o;
    o.repository = repo;
    o.compute = compute;
    const auto report = serve::run_server(s.comm, {0, 1}, o);
    EXPECT_GT(report.requests, 0);
    EXPECT_TRUE(report.vanished_clients.empty());
    return;
  }
  const auto entries = serve::read_repository(repo);
  serve::ClientOptions options;
  options.progress_thread = s.rank == 0;  // rank 1 drives its client's progress itself
  serve::Client client(s.comm, {kServer}, options);
  for (const std::string name : {"facile", "deepcalo", "particlenet-lite"}) {
    const auto& entry = serve::find_entry(entries, name);
    auto local_model = serve::load_model(entry);
    const int rows = name == "facile" ? 16 : name == "deepcalo" ? 5 : 8;
    std::vector<serve::NamedInputs> events;
    for (int e = 0; e < 6; ++e) {
      auto x = hpcml::models::example_inputs(name, rows, /*seed=*/100 * s.rank + e);
      serve::NamedInputs in;
      if (name == "particlenet-lite") {  // ragged: items + offsets, no padding
        const at::Tensor m = x.at("mask").to(at::kBool);
        at::Tensor offsets = at::zeros({rows + 1}, at::kLong);
        offsets.narrow(0, 1, rows).copy_(m.sum(1).to(at::kLong).cumsum(0));
        in["particles"] = {x.at("particles").index({m}).contiguous(), offsets};
      } else {
        in = serve::fixed_inputs(x);
      }
      events.push_back(in);
    }
    std::vector<std::future<serve::InferResult>> futures;
    for (const auto& in : events) futures.push_back(client.infer_async(name, in));  // all in flight: batched
    for (size_t e = 0; e < events.size(); ++e) {
      const serve::InferResult r = client.wait(futures[e]);
      EXPECT_EQ(r.server, kServer);
      const at::Tensor local = serve::run_local(*local_model, entry, events[e]);
      EXPECT_TRUE(hpcml::testing::tensor_near(r.output, local, 1e-5, 1e-6)) << name << " event " << e;
    }
  }
  client.finish();
}

TEST(ServeSession, ServedEqualsLocalInference) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  served_equals_local("threads");
}

// The receiver thread runs the batches itself (what `auto` picks on one core).
TEST(ServeSession, ServedEqualsLocalInferenceInline) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  served_equals_local("inline");
}

void preferred_size_and_queue_delay(const std::string& compute) {
  const int delay_us = 300000;
  const std::string repo = make_repository(
      "batch", {{"facile", std::string(kFacile) + "preferred_batch_sizes: [64]\nmax_queue_delay_us: " +
                               std::to_string(delay_us) + "\n"}});
  Session s;
  if (s.rank == kServer) {
    serve::ServerOptions o;
    o.repository = repo;
    o.compute = compute;
    const auto report = serve::run_server(s.comm, {0, 1}, o);
    const auto& h = report.batch_rows_histogram.at("facile");
    EXPECT_EQ(h.at(64), 1);
    EXPECT_EQ(h.at(16), 1);
    return;
  }
  serve::Client client(s.comm, {kServer});
  if (s.rank == 0) {
    const auto x = hpcml::models::example_inputs("facile", 16, 1);
    std::vector<std::future<serve::InferResult>> four;
    for (int i = 0; i < 4; ++i) four.push_back(client.infer_async("facile", x));
    for (auto& f : four) {
      const auto r = f.get();
      EXPECT_EQ(r.timing.batch_rows, 64);  // the preferred size, formed before the delay
      EXPECT_LT(r.timing.queue_us, delay_us / 2);
    }
    const auto lone = client.infer_async("facile", x).get();
    EXPECT_EQ(lone.timing.batch_rows, 16);
    EXPECT_GE(lone.timing.queue_us, 0.95 * delay_us);  // waited for company...
    EXPECT_LT(lone.timing.queue_us, delay_us + 200000);  // ...but not much longer
  }
  client.finish();
}

// Expects `f` to throw a ServeError whose message holds every one of `words`.
TEST(ServeSession, PreferredSizeRunsAtOnceAndQueueDelayIsRespected) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  preferred_size_and_queue_delay("threads");
}

TEST(ServeSession, PreferredSizeRunsAtOnceAndQueueDelayIsRespectedInline) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  preferred_size_and_queue_delay("inline");
}

void expect_serve_error(const std::function<void()>& f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "expected a ServeError containing '" << words.front() << "'";
  } catch (const serve::ServeError& e) {
    for (const auto& w : words) EXPECT_NE(e.message().find(w), std::string::npos) << e.message();
  }
}

TEST(ServeSession, BadRequestsGetErrorRepliesAndTheServerGoesOn) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  const std::string repo = make_repository("bad", {{"facile", kFacile}});
  Session s;
  if (s.rank == kServer) {
    serve::ServerOptions o;
    o.repository = repo;
    o.max_request_bytes = 64 << 10;
    const auto report = serve::run_server(s.comm, {0, 1}, o);
    EXPECT_EQ(report.error_replies, 2 * 6);
    return;
  }
  serve::Client client(s.comm, {kServer});
  const auto x = hpcml::models::example_inputs("facile", 16, 2);
  const std::string server = "server rank 2";
  expect_serve_error([&] { client.infer("nosuch", serve::fixed_inputs(x)); }, {server, "unknown model 'nosuch'", "facile"});
  expect_serve_error([&] { client.infer("facile", serve::fixed_inputs({{"x", x.at("x").to(at::kDouble)}})); },
                     {server, "input 'x'", "float64", "expected float32"});
  expect_serve_error([&] { client.infer("facile", serve::fixed_inputs({{"x", at::zeros({16, 14})}})); },
                     {server, "input 'x'", "[16, 14]", "[-1, 15]"});
  expect_serve_error([&] { client.infer("facile", serve::fixed_inputs({{"y", x.at("x")}})); },
                     {server, "unknown input 'y'"});
  expect_serve_error([&] { client.infer("facile", serve::fixed_inputs({{"x", at::zeros({300, 15})}})); },
                     {server, "300 rows", "max_batch_size"});
  expect_serve_error([&] { client.infer("facile", serve::fixed_inputs({{"x", at::zeros({20000, 15})}})); },
                     {server, "exceeds serve.max_request_bytes"});
  // Still serving, this client and the other.
  const auto ok = client.infer("facile", serve::fixed_inputs(x));
  EXPECT_EQ(ok.output.size(0), 16);
  client.finish();
}

TEST(ServeSession, ServerDropsTheWorkOfAVanishedClient) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  const std::string repo = make_repository(
      "vanish", {{"facile", kFacile}, {"held", std::string(kFacile) + "zoo_model: facile\nmax_queue_delay_us: 3000000\n"}});
  Session s;
  if (s.rank == kServer) {
    serve::ServerOptions o;
    o.repository = repo;
    o.client_timeout_s = 0.5;
    o.heartbeat_s = 0.1;
    const auto report = serve::run_server(s.comm, {0, 1}, o);
    EXPECT_EQ(report.vanished_clients, std::vector<int>{1});
    EXPECT_EQ(report.dropped, 1);
    return;
  }
  if (s.rank == 1) {
    // A client that sends one request, then goes silent: no heartbeat, no DONE.
    const auto bytes = serve::pack_request(1, "held", serve::fixed_inputs(hpcml::models::example_inputs("facile", 4, 1)));
    s.comm->send(bytes.data(), bytes.size(), kServer, serve::kTagRequest);
    s.drain(2.0);
    return;
  }
  serve::ClientOptions o;
  o.heartbeat_s = 0.1;
  serve::Client client(s.comm, {kServer}, o);
  // Keeps talking for longer than the server's client timeout.
  for (int i = 0; i < 8; ++i) {
    const auto r = client.infer("facile", serve::fixed_inputs(hpcml::models::example_inputs("facile", 256, i)));
    EXPECT_EQ(r.server, kServer);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  client.finish();
}

TEST(ServeSession, ClientFallsBackOrNamesTheSilentServer) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  const std::string repo = make_repository("silent", {{"facile", kFacile}});
  Session s;
  if (s.rank == kServer) {
    s.drain(2.5);  // takes the requests and never answers
    return;
  }
  serve::ClientOptions o;
  o.server_timeout_s = 0.5;
  o.heartbeat_s = 0.1;
  o.fallback = s.rank == 1;
  o.progress_thread = s.rank == 1;  // rank 0's timeout comes from its own wait()
  o.repository = repo;
  serve::Client client(s.comm, {kServer}, o);
  const auto x = serve::fixed_inputs(hpcml::models::example_inputs("facile", 16, 3));
  if (s.rank == 0) {
    expect_serve_error([&] { client.infer("facile", x); }, {"server rank 2", "serve.server_timeout_s"});
    // Once dead, the server is not asked again: immediate failure, still naming it.
    expect_serve_error([&] { client.infer("facile", x); }, {"no live server", "2"});
  } else {
    const auto r = client.infer("facile", x);
    EXPECT_EQ(r.server, -1);
    const auto entries = serve::read_repository(repo);
    auto model = serve::load_model(entries.front());
    EXPECT_TRUE(hpcml::testing::tensor_near(r.output, serve::run_local(*model, entries.front(), x), 1e-5, 1e-6));
    EXPECT_EQ(client.stats().fallbacks, 1);
  }
  client.finish();
}

TEST(ServeSession, AStalledServersRequestsAreReroutedAndItsLateRepliesDropped) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  const std::string repo = make_repository("stall", {{"facile", kFacile}});
  Session s;
  constexpr int kStalled = 1;
  if (s.rank == kServer) {
    serve::ServerOptions o;
    o.repository = repo;
    const auto report = serve::run_server(s.comm, {0}, o);
    EXPECT_GT(report.requests, 0);
    return;
  }
  if (s.rank == kStalled) {
    // Takes requests and says nothing for 1.5 s, then answers each with zeros (a
    // wrong answer the client must never deliver: it re-sent them and took the
    // other server's), then waits for DONE.
    std::vector<std::uint64_t> held;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    bool done = false;
    while (std::chrono::steady_clock::now() < until || !done) {
      if (auto m = s.comm->improbe()) {
        auto bytes = std::make_shared<std::vector<char>>(m->bytes);
        s.comm->recv(*m, bytes->data(), bytes->size());
        if (m->tag == serve::kTagRequest) held.push_back(serve::parse_request(bytes).id);
        done |= m->tag == serve::kTagDone;
        continue;
      }
      if (std::chrono::steady_clock::now() >= until) {
        for (auto id : held) {
          const auto reply = serve::pack_reply(id, {}, at::zeros({16, 1}));
          s.comm->send(reply.data(), reply.size(), 0, serve::kTagReply);
        }
        held.clear();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return;
  }
  serve::ClientOptions o;
  o.server_timeout_s = 0.5;
  o.heartbeat_s = 0.1;
  o.retry_s = 60;
  serve::Client client(s.comm, {kStalled, kServer}, o);
  const auto entries = serve::read_repository(repo);
  auto model = serve::load_model(entries.front());
  std::vector<serve::NamedInputs> inputs;
  std::vector<std::future<serve::InferResult>> futures;
  for (int i = 0; i < 8; ++i) {
    inputs.push_back(serve::fixed_inputs(hpcml::models::example_inputs("facile", 16, 10 + i)));
    futures.push_back(client.infer_async("facile", inputs.back()));
  }
  for (int i = 0; i < 8; ++i) {
    const auto r = client.wait(futures[static_cast<size_t>(i)]);
    EXPECT_EQ(r.server, kServer);
    EXPECT_TRUE(hpcml::testing::tensor_near(r.output, serve::run_local(*model, entries.front(), inputs[i]), 1e-5, 1e-6));
  }
  auto stats = client.stats();
  EXPECT_EQ(stats.dead_servers, std::vector<int>{kStalled});
  EXPECT_GE(stats.rerouted, 1);
  EXPECT_EQ(stats.replies, 8);
  // The stalled server's late answers arrive and are dropped by request id.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (client.stats().duplicates < stats.rerouted && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stats = client.stats();
  EXPECT_EQ(stats.duplicates, stats.rerouted);
  EXPECT_EQ(stats.replies, 8);
  EXPECT_EQ(stats.fallbacks, 0);
  client.finish();
}

TEST(ServeSession, CleanShutdownWithoutRequests) {
  if (skip_unless_three()) GTEST_SKIP() << "needs 3 ranks";
  const std::string repo = make_repository("idle", {{"facile", kFacile}});
  Session s;
  if (s.rank == kServer) {
    serve::ServerOptions o;
    o.repository = repo;
    const auto start = std::chrono::steady_clock::now();
    const auto report = serve::run_server(s.comm, {0, 1}, o);
    EXPECT_EQ(report.requests, 0);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
    return;
  }
  serve::Client client(s.comm, {kServer});
  client.finish();
  client.finish();  // idempotent
}

}  // namespace
