/// @file
/// Stop requests from the batch system (SIGUSR1, SIGTERM).
///
/// The handler only sets a flag. The Trainer checks it at every step boundary;
/// the decision to stop is agreed across ranks (one allreduce), so all ranks stop
/// at the same step, checkpoint, and exit with kExitPreempted.
#pragma once

namespace hpcml {

/// Installs the handlers for SIGUSR1 and SIGTERM (idempotent).
void install_stop_handlers();
/// The signal received (SIGUSR1 or SIGTERM), or 0.
int stop_signal();

}  // namespace hpcml
