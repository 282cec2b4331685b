#include "mxmoe/tensor.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace mxmoe {

std::string shape_str(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace mxmoe
