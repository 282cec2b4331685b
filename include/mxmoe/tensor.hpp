// A small owning host tensor: dtype, shape and a byte buffer. Row-major, contiguous.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "mxmoe/dtype.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;

  Tensor() = default;
  Tensor(DType d, std::vector<int64_t> s) : dtype(d), shape(std::move(s)) {
    data.resize(size_t(numel()) * size_t(dtype_size(d)));
  }

  int64_t numel() const {
    int64_t n = 1;
    for (auto v : shape) n *= v;
    return n;
  }
  int64_t nbytes() const { return int64_t(data.size()); }
  // Last dimension (1 for a scalar) and the product of the others: the row view every op uses.
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }

  template <class T>
  T* ptr() { return reinterpret_cast<T*>(data.data()); }
  template <class T>
  const T* ptr() const { return reinterpret_cast<const T*>(data.data()); }
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace mxmoe
