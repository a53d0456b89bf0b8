/// @file
/// The NCCL backend: collectives on CUDA tensors, bootstrapped over another backend.
///
/// Declared in every build; defined only with HPCML_HAS_NCCL (the upstream,
/// CUDA LibTorch line). Elsewhere make_nccl_backend throws a one-line ConfigError.
#pragma once

#include "collectives/backend.hpp"

namespace hpcml::collectives {

/// True when this build has the NCCL backend.
bool nccl_compiled();

/// An NCCL communicator over the ranks of `bootstrap` (an MPI backend), one per
/// rank on CUDA device `device_index`. Collective over `bootstrap`: rank 0 makes the
/// ncclUniqueId and broadcasts it; every rank first checks that every rank has a
/// device, so a rank without one fails all of them with the same line instead of
/// hanging the others.
///
/// Tensors: CUDA tensors on this rank's device run in place on the backend's own
/// stream, ordered after the work already queued on the caller's current stream,
/// and the caller's stream then waits for the collective (so compute waits only
/// where it uses the result). CPU tensors (small control data: digests, sizes) are
/// staged through the device. Synchronous calls also wait on the host. Every wait
/// has the backend's deadline: when it passes, the communicator is aborted
/// (ncclCommAbort) and the job ends with one line naming the rank and the op.
BackendPtr make_nccl_backend(BackendPtr bootstrap, int device_index, BackendOptions options);

}  // namespace hpcml::collectives
