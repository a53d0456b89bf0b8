#include "collectives/types.hpp"

#include <algorithm>

namespace hpcml::collectives {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kMax: return "max";
  }
  return "unknown";
}

const std::vector<ReduceOp>& all_reduce_ops() {
  static const std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax};
  return ops;
}

const std::vector<c10::ScalarType>& supported_dtypes() {
  static const std::vector<c10::ScalarType> dtypes = {c10::kFloat,    c10::kDouble, c10::kInt, c10::kLong,
                                                      c10::kBFloat16, c10::kHalf,   c10::kByte};
  return dtypes;
}

bool is_supported(c10::ScalarType dtype) {
  const auto& all = supported_dtypes();
  return std::find(all.begin(), all.end(), dtype) != all.end();
}

bool is_op_defined(ReduceOp op, c10::ScalarType dtype) {
  return op != ReduceOp::kAvg || c10::isFloatingType(dtype);
}

}  // namespace hpcml::collectives
