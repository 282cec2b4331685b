// HugeArena and pack_expert_weights: where the bytes live changes, nothing else does.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>

#include "mxmoe/moe/layer.hpp"
#include "mxmoe/tensor.hpp"
#include "test_util.hpp"

using namespace mxmoe;
using namespace mxmoe::moe;

namespace {

const SyntheticShape kShape{"pack", 96, 64, 5, 2};

// Every expert tensor of the layer, in pack order.
std::vector<const Tensor*> expert_tensors(const MoeLayer& l) {
  std::vector<const Tensor*> ts;
  auto add = [&](const ExpertLinear& w) {
    if (w.packed) ts.push_back(&w.packed->codes), ts.push_back(&w.packed->scales);
    else ts.push_back(&w.dense);
  };
  for (size_t e = 0; e < l.w13.size(); ++e) add(l.w13[e]), add(l.w2[e]);
  for (size_t i = 0; i < l.shared_w13.size(); ++i) add(l.shared_w13[i]), add(l.shared_w2[i]);
  return ts;
}

}  // namespace

TEST(HugeArena, HandsOutAlignedDisjointPiecesUntilFull) {
  HugeArena a(3000);
  EXPECT_EQ(a.capacity(), size_t(2) << 20);  // whole huge pages
  auto* p = static_cast<uint8_t*>(a.take(100));
  auto* q = static_cast<uint8_t*>(a.take(1));
  ASSERT_NE(p, nullptr);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (size_t(2) << 20), 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q) % 64, 0u);
  EXPECT_GE(q, p + 100);
  EXPECT_TRUE(a.owns(p) && a.owns(q));
  std::memset(p, 0xab, 100);  // writable
  EXPECT_EQ(a.take(a.capacity()), nullptr);
  int local = 0;
  EXPECT_FALSE(a.owns(&local));
}

TEST(HugeArena, TensorsMovedInKeepTheirBytesAndCopiesGoToTheHeap) {
  const auto arena = std::make_shared<HugeArena>(1 << 16);
  Tensor t = test::random_tensor(DType::BF16, {33, 17}, 5);
  const Tensor before = t;
  t.move_to(arena);
  EXPECT_TRUE(arena->owns(t.data.data()));
  EXPECT_EQ(t.shape, before.shape);
  ASSERT_EQ(t.data.size(), before.data.size());
  EXPECT_EQ(std::memcmp(t.data.data(), before.data.data(), t.data.size()), 0);

  Tensor copy = t;  // a deep copy, on the heap
  EXPECT_FALSE(arena->owns(copy.data.data()));
  EXPECT_EQ(std::memcmp(copy.data.data(), t.data.data(), t.data.size()), 0);
  copy.data[0] ^= 1;
  EXPECT_NE(copy.data[0], t.data[0]);

  // Growing past what the arena has left falls back to the heap.
  Tensor big = before;
  big.move_to(arena);
  big.data.resize(size_t(1) << 22);
  EXPECT_FALSE(arena->owns(big.data.data()));
  EXPECT_EQ(std::memcmp(big.data.data(), before.data.data(), before.data.size()), 0);

  Tensor moved = std::move(t);  // moves keep the arena
  EXPECT_TRUE(arena->owns(moved.data.data()));
}

TEST(PackExpertWeights, OneArenaSameBytesSameForward) {
  for (const char* scheme : {"w_nvfp4_a_nvfp4", "w_mxfp4_a16", "bf16"}) {
    const MoeLayer l = synthetic_layer(kShape, parse_moe_scheme(scheme), 9);  // packed by synthetic_layer
    const auto ts = expert_tensors(l);
    ASSERT_FALSE(ts.empty());
    const std::shared_ptr<HugeArena> arena = ts[0]->data.get_allocator().arena;
    ASSERT_NE(arena, nullptr) << scheme;
    for (const Tensor* t : ts) {
      EXPECT_TRUE(arena->owns(t->data.data())) << scheme;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data.data()) % 64, 0u) << scheme;
    }
    for (size_t i = 1; i < ts.size(); ++i) EXPECT_LT(ts[i - 1]->data.data(), ts[i]->data.data()) << "expert order";

    // A copy (heap buffers) packed again: the same bytes, and the same forward bit for bit.
    MoeLayer c = l;
    EXPECT_FALSE(arena->owns(expert_tensors(c)[0]->data.data()));
    pack_expert_weights(c);
    const auto cs = expert_tensors(c);
    const std::shared_ptr<HugeArena> carena = cs[0]->data.get_allocator().arena;
    ASSERT_NE(carena, nullptr);
    EXPECT_NE(carena, arena);
    for (size_t i = 0; i < ts.size(); ++i) {
      ASSERT_EQ(cs[i]->data.size(), ts[i]->data.size());
      EXPECT_EQ(std::memcmp(cs[i]->data.data(), ts[i]->data.data(), ts[i]->data.size()), 0);
    }
    pack_expert_weights(c);  // packed already: stays where it is
    EXPECT_EQ(expert_tensors(c)[0]->data.get_allocator().arena, carena);

    const Tensor x = test::random_tensor(DType::BF16, {7, kShape.hidden}, 3);
    MoeOptions o;
    o.backend = Backend::Cpu;
    const MoeResult a = run_moe(l, x, o), b = run_moe(c, x, o);
    EXPECT_EQ(std::memcmp(a.out.data.data(), b.out.data.data(), a.out.data.size()), 0) << scheme;
  }
}

#if defined(__SANITIZE_ADDRESS__)
// Under AddressSanitizer the arena poisons what it has not handed out, so a read past one tensor into
// the next is reported as it would be between heap buffers.
TEST(HugeArenaDeathTest, ReadPastAPieceIsReported) {
  HugeArena a(4096);
  auto* p = static_cast<volatile uint8_t*>(a.take(100));
  ASSERT_NE(a.take(100), nullptr);
  EXPECT_DEATH((void)p[100], "");
}
#endif
