#include "collectives/detail/mpi_types.hpp"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <mutex>

#include "core/error.hpp"
#include "core/mpi.hpp"

namespace hpcml::collectives::detail {

MPI_Datatype mpi_datatype(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return MPI_FLOAT;
    case c10::kDouble: return MPI_DOUBLE;
    case c10::kInt: return MPI_INT32_T;
    case c10::kLong: return MPI_INT64_T;
    case c10::kByte: return MPI_UINT8_T;
    case c10::kBFloat16:
    case c10::kHalf: return MPI_UINT16_T;
    default:
      HPCML_THROW(CommError, "backend mpi has no MPI datatype for dtype ", c10::toString(dtype));
  }
}

namespace {

// One user-defined reduction over 16-bit storage type T (c10::BFloat16 or c10::Half).
template <typename T, typename Combine>
void reduce16(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = T(Combine{}(static_cast<float>(a[i]), static_cast<float>(b[i])));
}
struct Add {
  float operator()(float a, float b) const { return a + b; }
};
struct Min {
  float operator()(float a, float b) const { return std::min(a, b); }
};
struct Max {
  float operator()(float a, float b) const { return std::max(a, b); }
};

struct HalfOps {
  MPI_Op bf16[3];  // sum, min, max
  MPI_Op fp16[3];
};

const HalfOps& half_ops() {
  static HalfOps ops = [] {
    HalfOps o{};
    HPCML_MPI_CHECK(MPI_Op_create(&reduce16<c10::BFloat16, Add>, /*commute=*/1, &o.bf16[0]));
    HPCML_MPI_CHECK(MPI_Op_create(&reduce16<c10::BFloat16, Min>, /*commute=*/1, &o.bf16[1]));
    HPCML_MPI_CHECK(MPI_Op_create(&reduce16<c10::BFloat16, Max>, /*commute=*/1, &o.bf16[2]));
    HPCML_MPI_CHECK(MPI_Op_create(&reduce16<c10::Half, Add>, /*commute=*/1, &o.fp16[0]));
    HPCML_MPI_CHECK(MPI_Op_create(&reduce16<c10::Half, Min>, /*commute=*/1, &o.fp16[1]));
    HPCML_MPI_CHECK(MPI_Op_create(&reduce16<c10::Half, Max>, /*commute=*/1, &o.fp16[2]));
    return o;
  }();
  return ops;
}

int op_index(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return 0;
    case ReduceOp::kMin: return 1;
    case ReduceOp::kMax: return 2;
  }
  return 0;
}

}  // namespace

MPI_Op mpi_op(ReduceOp op, c10::ScalarType dtype) {
  if (dtype == c10::kBFloat16) return half_ops().bf16[op_index(op)];
  if (dtype == c10::kHalf) return half_ops().fp16[op_index(op)];
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return MPI_SUM;
    case ReduceOp::kMin: return MPI_MIN;
    case ReduceOp::kMax: return MPI_MAX;
  }
  HPCML_THROW(CommError, "backend mpi: no MPI_Op for reduce op ", static_cast<int>(op));
}

}  // namespace hpcml::collectives::detail
