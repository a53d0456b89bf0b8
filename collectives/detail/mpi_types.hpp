/// @file
/// The mapping tables from torch dtypes and ReduceOps to MPI (internal).
#pragma once

#include <c10/core/ScalarType.h>
#include <mpi.h>

#include "collectives/types.hpp"

namespace hpcml::collectives::detail {

/// The MPI datatype that carries `dtype`. bfloat16/float16 travel as MPI_UINT16_T
/// (MPI has no 16-bit float types) and reduce with the ops from mpi_op().
MPI_Datatype mpi_datatype(c10::ScalarType dtype);

/// The MPI_Op for `op` on `dtype`. kAvg maps to the sum; the caller divides.
/// For bfloat16/float16 these are user-defined ops (created on first use, after
/// MPI_Init) that widen both operands to float, combine, and round once to 16 bits.
MPI_Op mpi_op(ReduceOp op, c10::ScalarType dtype);

}  // namespace hpcml::collectives::detail
