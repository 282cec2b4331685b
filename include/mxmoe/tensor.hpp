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

// A block of memory for tensors that are read together (a layer's expert weights): one mapping, 2 MiB
// aligned and, on Linux, advised for transparent huge pages, so a one-token forward touches a few dozen
// pages instead of ~5000 separately mapped 4 KiB ones (bench/RESULTS.md, "huge-page arena": -6 to -9% at
// T = 1 on the CPU). Handed out front to back (64-byte aligned); freed when the last buffer using it goes.
class HugeArena {
 public:
  explicit HugeArena(size_t bytes);
  ~HugeArena();
  HugeArena(const HugeArena&) = delete;
  HugeArena& operator=(const HugeArena&) = delete;
  void* take(size_t n);  // nullptr when the rest is smaller than n
  bool owns(const void* p) const { return p >= base_ && p < base_ + size_; }
  size_t capacity() const { return size_; }
  // Arena bytes a piece of n bytes uses (alignment; under AddressSanitizer also a poisoned gap after it,
  // so reads past one tensor into the next are still reported).
  static size_t footprint(size_t n);

 private:
  uint8_t* map_ = nullptr;  // the whole mapping (base_ aligned inside it)
  size_t map_bytes_ = 0;
  uint8_t* base_ = nullptr;
  size_t size_ = 0, used_ = 0;
};

// An allocator whose resize() leaves new bytes uninitialized: a kernel that writes every output byte
// should not pay for a single-threaded zero fill first (and its threads then touch the pages first).
// With an arena it hands out the arena's memory (the heap once the arena is full); copies of a buffer
// go to the heap, moves keep the arena.
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  std::shared_ptr<HugeArena> arena;

  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;
  DefaultInitAllocator() = default;
  explicit DefaultInitAllocator(std::shared_ptr<HugeArena> a) noexcept : arena(std::move(a)) {}
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>& o) noexcept : arena(o.arena) {}
  DefaultInitAllocator select_on_container_copy_construction() const { return {}; }

  T* allocate(size_t n) {
    if (arena)
      if (void* p = arena->take(n * sizeof(T))) return static_cast<T*>(p);
    return std::allocator<T>::allocate(n);
  }
  void deallocate(T* p, size_t n) noexcept {
    if (!(arena && arena->owns(p))) std::allocator<T>::deallocate(p, n);
  }
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const DefaultInitAllocator<U>& o) const noexcept {
    return arena == o.arena;
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

  // Moves the bytes into `arena` (the heap if it is full); contents, dtype and shape unchanged.
  void move_to(const std::shared_ptr<HugeArena>& arena);
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace mxmoe
