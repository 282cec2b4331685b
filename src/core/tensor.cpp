#include "mxmoe/tensor.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <new>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MXMOE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MXMOE_ASAN 1
#endif
#endif
#ifdef MXMOE_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace mxmoe {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
#ifdef MXMOE_ASAN
constexpr size_t kGap = 64;
#else
constexpr size_t kGap = 0;
#endif
}  // namespace

size_t HugeArena::footprint(size_t n) { return (n + 63) / 64 * 64 + kGap; }

HugeArena::HugeArena(size_t bytes) {
  size_ = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  if (size_ == 0) return;
#if defined(__linux__)
  // One huge page more than needed, so the usable part can start on a 2 MiB boundary (THP maps only
  // aligned 2 MiB ranges); advice that is refused leaves ordinary pages, which still work.
  map_bytes_ = size_ + kHugePage;
  void* m = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  map_ = static_cast<uint8_t*>(m);
  base_ = map_ + (kHugePage - reinterpret_cast<uintptr_t>(map_) % kHugePage) % kHugePage;
  (void)madvise(base_, size_, MADV_HUGEPAGE);
#else
  map_ = static_cast<uint8_t*>(::operator new(size_, std::align_val_t(kHugePage)));
  base_ = map_;
#endif
#ifdef MXMOE_ASAN
  ASAN_POISON_MEMORY_REGION(base_, size_);  // take() unpoisons exactly what it hands out
#endif
}

HugeArena::~HugeArena() {
  if (!map_) return;
#ifdef MXMOE_ASAN
  ASAN_UNPOISON_MEMORY_REGION(base_, size_);
#endif
#if defined(__linux__)
  munmap(map_, map_bytes_);
#else
  ::operator delete(map_, std::align_val_t(kHugePage));
#endif
}

void* HugeArena::take(size_t n) {
  const size_t at = used_;  // never past size_
  if (size_ - at < n) return nullptr;
  used_ = std::min(size_, at + footprint(n));
#ifdef MXMOE_ASAN
  ASAN_UNPOISON_MEMORY_REGION(base_ + at, n);
#endif
  return base_ + at;
}

void Tensor::move_to(const std::shared_ptr<HugeArena>& arena) {
  Bytes b{DefaultInitAllocator<uint8_t>(arena)};
  b.resize(data.size());
  if (!data.empty()) std::memcpy(b.data(), data.data(), data.size());
  data = std::move(b);
}

std::string shape_str(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace mxmoe
