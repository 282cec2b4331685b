// A small owning host tensor: dtype, shape and a byte buffer. Row-major, contiguous.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "mxmoe/dtype.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe {

// An allocator whose resize() leaves new bytes uninitialized: a kernel that writes every output byte
// should not pay for a single-threaded zero fill first (and its threads then touch the pages first).
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using Bytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  Bytes data;

  Tensor() = default;
  // Zero-filled.
  Tensor(DType d, std::vector<int64_t> s) : dtype(d), shape(std::move(s)) {
    data.resize(size_t(numel()) * size_t(dtype_size(d)), uint8_t(0));
  }
  // Contents undefined: for outputs a kernel writes completely.
  static Tensor uninitialized(DType d, std::vector<int64_t> s) {
    Tensor t;
    t.dtype = d, t.shape = std::move(s);
    t.data.resize(size_t(t.numel()) * size_t(dtype_size(d)));
    return t;
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
