/// @file
/// Umbrella header of `hpcml serve`: inference as a service inside one MPI job
/// (docs/serving.md). Role plan, wire protocol, model repository, dynamic batcher,
/// server, client library and the `hpcml serve` driver.
#pragma once

#include "launch/serve/batcher.hpp"
#include "launch/serve/client.hpp"
#include "launch/serve/driver.hpp"
#include "launch/serve/protocol.hpp"
#include "launch/serve/repository.hpp"
#include "launch/serve/roles.hpp"
#include "launch/serve/serve_config.hpp"
#include "launch/serve/server.hpp"
