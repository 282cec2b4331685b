// CUDA block quantizers against mxmoe::ref, bit for bit: every scheme x scale rule x rounding x
// input dtype x output dtype, on fresh heavy-tailed random data plus special values (zeros, ties,
// NaN/Inf blocks, tiny and huge magnitudes, raw random bit patterns), with poisoned outputs, padded
// strides and misaligned pointers (the scalar path). Each check runs twice: through the host emulation
// of the kernels' code (no GPU needed) and on the device (skipped, with the reason, without one).
// The golden files of tests/quant/test_golden_qdq.cpp go through the same two paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "mxmoe/cuda.hpp"
#include "mxmoe/quant.hpp"
#include "mxmoe/safetensors.hpp"
#include "quant/cuda/quant_cuda.hpp"
#include "quant_emulation.hpp"
#include "golden_qdq_cases.hpp"
#include "test_util.hpp"

using namespace mxmoe;
namespace emu = mxmoe::cuda::test;

namespace {

constexpr uint8_t kPoison = 0xAB;

enum class Exec { Host, Device };
const char* exec_name(Exec e) { return e == Exec::Host ? "host-emulation" : "device"; }

// Skips the current test when the device path is asked for and no device is usable.
#define MXMOE_SKIP_WITHOUT_DEVICE(exec)                                                        \
  do {                                                                                         \
    std::string why_;                                                                          \
    if ((exec) == Exec::Device && !::mxmoe::cuda::cuda_available(&why_))                       \
      GTEST_SKIP() << "no usable CUDA device (" << why_ << "): device test skipped";           \
  } while (0)

// A strided 2-D byte buffer: `off` bytes of lead-in, then rows of `ld` units of `es` bytes.
struct Buf {
  std::vector<uint8_t> bytes;
  int64_t off = 0, ld = 0, es = 1;
  Buf() = default;
  Buf(int64_t rows, int64_t ld_, int64_t es_, int64_t off_) : off(off_), ld(ld_), es(es_) {
    bytes.assign(size_t(off + rows * ld * es + 16), kPoison);
  }
  uint8_t* data() { return bytes.data() + off; }
  const uint8_t* data() const { return bytes.data() + off; }
};

// Device mirror of a Buf (same lead-in, so pointer alignment matches the host's offset).
struct DevBuf {
  uint8_t* base = nullptr;
  size_t n = 0;
  int64_t off = 0;
  explicit DevBuf(const Buf& b) : n(b.bytes.size()), off(b.off) {
    // cudaMalloc is 256-byte aligned: the lead-in alone decides the alignment, as on the host.
    if (n) MXMOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&base), n));
  }
  ~DevBuf() {
    if (base) cudaFree(base);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  uint8_t* data() { return base + off; }
  void upload(const Buf& b) { MXMOE_CUDA_CHECK(cudaMemcpy(base, b.bytes.data(), n, cudaMemcpyHostToDevice)); }
  void poison() { MXMOE_CUDA_CHECK(cudaMemset(base, kPoison, n)); }
  void download(Buf& b) { MXMOE_CUDA_CHECK(cudaMemcpy(b.bytes.data(), base, n, cudaMemcpyDeviceToHost)); }
};

// Runs one op through the emulation or the device; inputs are read from, outputs written to, host Bufs
// (outputs must arrive poisoned; on the device they are poisoned again with cudaMemset).
void execute(Exec ex, emu::Op op, const QuantParams& p, DType in, DType out, int64_t rows, int64_t k, const Buf& x,
             Buf& codes, Buf& scales, Buf& y) {
  const cuda::QuantConfig cfg{p.scheme, p.rule, p.rounding, p.global_scale};
  if (ex == Exec::Host) {
    emu::emulate(op, cfg, in, out, true, rows, k, x.data(), x.ld, codes.data(), codes.ld, scales.data(), scales.ld,
                 y.data(), y.ld);
    return;
  }
  DevBuf dx(x), dc(codes), ds(scales), dy(y);
  switch (op) {
    case emu::Op::Quantize:
      dx.upload(x), dc.poison(), ds.poison();
      cuda::quantize(dx.data(), in, rows, k, x.ld, p, dc.data(), codes.ld, ds.data(), scales.ld);
      break;
    case emu::Op::Dequantize:
      dc.upload(codes), ds.upload(scales), dy.poison();
      cuda::dequantize(dc.data(), codes.ld, ds.data(), scales.ld, rows, k, p, dy.data(), out, y.ld);
      break;
    case emu::Op::Qdq:
      dx.upload(x), dy.poison();
      cuda::qdq(dx.data(), in, rows, k, x.ld, p, dy.data(), out, y.ld);
      break;
  }
  MXMOE_CUDA_CHECK(cudaGetLastError());
  MXMOE_CUDA_CHECK(cudaDeviceSynchronize());
  if (op == emu::Op::Quantize) dc.download(codes), ds.download(scales);
  else dy.download(y);
}

float elem_f32(const uint8_t* p, DType d) {
  if (d == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return d == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// Whole-buffer comparison (padding and lead-in included): bytes equal, or for float buffers the
// element is NaN in both. Reports the first few differences with their row/column.
int64_t compare(const Buf& got, const Buf& want, DType d, bool is_float, const std::string& what) {
  EXPECT_EQ(got.bytes.size(), want.bytes.size()) << what;
  int64_t bad = 0;
  const int64_t es = is_float ? dtype_size(d) : 1;
  const int64_t n = int64_t(want.bytes.size());
  for (int64_t i = 0; i + es <= n; i += es) {
    if (std::memcmp(&got.bytes[size_t(i)], &want.bytes[size_t(i)], size_t(es)) == 0) continue;
    if (is_float && std::isnan(elem_f32(&got.bytes[size_t(i)], d)) &&
        std::isnan(elem_f32(&want.bytes[size_t(i)], d)))
      continue;
    if (bad++ < 5) {
      const int64_t rel = i - want.off, row = rel >= 0 ? rel / (want.ld * es) : -1;
      const int64_t col = rel >= 0 ? (rel % (want.ld * es)) / es : rel;
      if (is_float)
        ADD_FAILURE() << what << ": row " << row << " col " << col << " got " << elem_f32(&got.bytes[size_t(i)], d)
                      << " want " << elem_f32(&want.bytes[size_t(i)], d);
      else
        ADD_FAILURE() << what << ": row " << row << " byte " << col << " got 0x" << std::hex
                      << int(got.bytes[size_t(i)]) << " want 0x" << int(want.bytes[size_t(i)]) << std::dec;
    }
  }
  if (bad > 5) ADD_FAILURE() << what << ": " << bad << " mismatches in all";
  return bad;
}

// ---- inputs -------------------------------------------------------------------------------------------

// Row kinds: 0 heavy-tailed normal, 1 raw random bit patterns, 2 exact ties of the element format,
// 3 zeros / signed zeros / tiny / huge, 4 NaN and Inf blocks, 5 blocks at random power-of-two scales.
std::vector<float> make_values(Scheme s, int64_t rows, int64_t k, uint32_t seed, DType dt) {
  const auto& st = traits(s);
  const auto& et = traits(st.element);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  std::uniform_int_distribution<uint32_t> bits32;
  // Element-format values and midpoints in element units (ties once divided by the block scale).
  std::vector<float> grid;
  const float* dec = decode_table(st.element);
  std::vector<float> pos;
  for (int c = 0; c < num_codes(st.element); ++c)
    if (std::isfinite(dec[c]) && dec[c] >= 0) pos.push_back(dec[c]);
  std::sort(pos.begin(), pos.end());
  pos.erase(std::unique(pos.begin(), pos.end()), pos.end());
  for (size_t i = 0; i < pos.size(); ++i) {
    grid.push_back(pos[i]);
    if (i + 1 < pos.size()) grid.push_back(0.5f * (pos[i] + pos[i + 1]));
  }
  std::vector<float> v(size_t(rows * k));
  for (int64_t r = 0; r < rows; ++r) {
    const int kind = int(r % 6);
    for (int64_t b = 0; b < k / st.block; ++b) {
      const int sh = int(rng() % 41) - 20;             // block scale exponent for kinds 2 and 5
      const int wide = int(rng() % 261) - 140;         // wide exponent range for kind 5
      const int special = int(rng() % 6);
      for (int64_t i = 0; i < st.block; ++i) {
        float x = 0;
        const int64_t c = b * st.block + i;
        switch (kind) {
          case 0:
            x = nd(rng);
            if (ud(rng) < 0.05f) x *= 30.f;
            break;
          case 1: {
            uint32_t u = bits32(rng);
            if (dt != DType::F32) u &= 0xffff0000u;  // keep the pattern meaningful after storage
            std::memcpy(&x, &u, 4);
            if (dt == DType::F16) x = f16_to_f32(uint16_t(u >> 16));
            break;
          }
          case 2: {
            const float m = grid[rng() % grid.size()];
            x = std::ldexp(i == 0 ? float(et.max_finite) : m, sh);
            if (rng() & 1) x = -x;
            break;
          }
          case 3: {
            const int t = int(rng() % 6);
            x = t == 0 ? 0.f : t == 1 ? -0.f : t == 2 ? std::ldexp(1.f + ud(rng), -140) : t == 3 ? 1e-45f
                : t == 4 ? std::ldexp(1.f + ud(rng), 126) : 3.4e38f;
            if (b % 3 == 0) x = (rng() & 1) ? 0.f : -0.f;  // all-zero blocks
            if (rng() & 1) x = -x;
            break;
          }
          case 4: {
            x = nd(rng);
            const bool hit = (special == 0 && i == 5) || (special == 1 && i == st.block - 1) || special == 2;
            if (hit) {
              const int t = int(rng() % 3);
              x = t == 0 ? std::nanf("") : t == 1 ? INFINITY : -INFINITY;
            }
            break;
          }
          default: x = std::ldexp(nd(rng), wide); break;
        }
        v[size_t(r * k + c)] = x;
      }
    }
  }
  return v;
}

// Stores float values into a strided Buf of dtype dt (row-major, row stride buf.ld elements).
void fill(Buf& buf, DType dt, const std::vector<float>& v, int64_t rows, int64_t k) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < k; ++c) store_from_f32(buf.data() + (r * buf.ld + c) * buf.es, dt, 0, v[size_t(r * k + c)]);
}

// The float32 values the quantizers see: the stored inputs read back.
std::vector<float> read_back(const Buf& buf, DType dt, int64_t rows, int64_t k) {
  std::vector<float> f(size_t(rows * k));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < k; ++c) f[size_t(r * k + c)] = load_as_f32(buf.data() + (r * buf.ld + c) * buf.es, dt, 0);
  return f;
}

struct Layout {
  bool aligned;
  int64_t xoff(DType d) const { return aligned ? 0 : dtype_size(d); }
  int64_t ld(int64_t k) const { return aligned ? k + 16 : k + 3; }
  int64_t ldc(int64_t rb) const { return aligned ? rb + 16 : rb + 5; }
  int64_t lds(int64_t nb) const { return aligned ? nb + 3 : nb + 1; }
  int64_t off8() const { return aligned ? 0 : 1; }
};

std::string case_name(const QuantParams& p, DType in, DType out, const Layout& L, int64_t rows, int64_t k) {
  std::string s = std::string(traits(p.scheme).name);
  if (traits(p.scheme).tensor_scale) {
    s += " gs=" + std::to_string(p.global_scale);
  } else {
    s += " " + std::string(scale_rule_name(p.rule)) + " " + std::string(rounding_name(p.rounding));
  }
  return s + " " + std::string(dtype_name(in)) + "->" + std::string(dtype_name(out)) +
         (L.aligned ? " aligned" : " misaligned") + " [" + std::to_string(rows) + "x" + std::to_string(k) + "]";
}

// One full check of quantize, dequantize (of the reference codes) and qdq for one configuration.
void check_config(Exec ex, const QuantParams& p, DType in, const std::vector<DType>& outs, const Layout& L,
                  int64_t rows, int64_t k, uint32_t seed) {
  const auto& st = traits(p.scheme);
  const int64_t rb = packed_row_bytes(p.scheme, k), nb = k / st.block;
  Buf x(rows, L.ld(k), dtype_size(in), L.xoff(in));
  fill(x, in, make_values(p.scheme, rows, k, seed, in), rows, k);
  const std::vector<float> xf = read_back(x, in, rows, k);

  // Reference codes and scales, laid out in the strided buffers the kernels write.
  Buf want_c(rows, L.ldc(rb), 1, L.off8()), want_s(rows, L.lds(nb), 1, L.off8());
  ref::quantize_rows(xf.data(), rows, k, k, p, want_c.data(), want_c.ld, want_s.data(), want_s.ld);
  {
    Buf got_c(rows, L.ldc(rb), 1, L.off8()), got_s(rows, L.lds(nb), 1, L.off8()), none;
    const std::string what = std::string(exec_name(ex)) + " quantize " + case_name(p, in, in, L, rows, k);
    execute(ex, emu::Op::Quantize, p, in, in, rows, k, x, got_c, got_s, none);
    compare(got_c, want_c, DType::U8, false, what + " codes");
    compare(got_s, want_s, DType::U8, false, what + " scales");
  }
  std::vector<float> deq(size_t(rows * k)), qdq(size_t(rows * k));
  ref::dequantize_rows(want_c.data(), want_c.ld, want_s.data(), want_s.ld, rows, k, p, deq.data(), k);
  ref::qdq_rows(xf.data(), rows, k, k, p, qdq.data(), k);
  for (DType out : outs) {
    Buf want_y(rows, L.ld(k), dtype_size(out), L.xoff(out));
    fill(want_y, out, deq, rows, k);
    {
      Buf got_y(rows, L.ld(k), dtype_size(out), L.xoff(out)), none;
      execute(ex, emu::Op::Dequantize, p, in, out, rows, k, none, want_c, want_s, got_y);
      compare(got_y, want_y, out, true,
              std::string(exec_name(ex)) + " dequantize " + case_name(p, in, out, L, rows, k));
    }
    fill(want_y, out, qdq, rows, k);
    {
      Buf got_y(rows, L.ld(k), dtype_size(out), L.xoff(out)), c, s;
      execute(ex, emu::Op::Qdq, p, in, out, rows, k, x, c, s, got_y);
      compare(got_y, want_y, out, true, std::string(exec_name(ex)) + " qdq " + case_name(p, in, out, L, rows, k));
    }
  }
}

// Dequantize of arbitrary bytes: every code (NaN/Inf codes included) and every scale byte.
void check_random_codes(Exec ex, const QuantParams& p, DType out, const Layout& L, uint32_t seed) {
  const auto& st = traits(p.scheme);
  const int64_t rows = 19, k = 4 * st.block, rb = packed_row_bytes(p.scheme, k), nb = k / st.block;
  std::mt19937 rng(seed);
  Buf c(rows, L.ldc(rb), 1, L.off8()), s(rows, L.lds(nb), 1, L.off8());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < rb; ++i) c.data()[r * c.ld + i] = uint8_t(rng());
    for (int64_t i = 0; i < nb; ++i) s.data()[r * s.ld + i] = uint8_t(r * nb + i);  // covers 0..255 over rows
  }
  std::vector<float> deq(size_t(rows * k));
  ref::dequantize_rows(c.data(), c.ld, s.data(), s.ld, rows, k, p, deq.data(), k);
  Buf want(rows, L.ld(k), dtype_size(out), L.xoff(out)), got(rows, L.ld(k), dtype_size(out), L.xoff(out)), none;
  fill(want, out, deq, rows, k);
  execute(ex, emu::Op::Dequantize, p, out, out, rows, k, none, c, s, got);
  compare(got, want, out, true,
          std::string(exec_name(ex)) + " dequantize(random bytes) " + case_name(p, out, out, L, rows, k));
}

const DType kDTypes[] = {DType::F32, DType::BF16, DType::F16};
const ScaleRule kRules[] = {ScaleRule::Floor, ScaleRule::Even, ScaleRule::RCeil, ScaleRule::Ceil};
const Rounding kRoundings[] = {Rounding::RNE, Rounding::Away};

struct Param {
  Scheme scheme;
  Exec exec;
};

class QuantCuda : public ::testing::TestWithParam<Param> {};

TEST_P(QuantCuda, MatchesRefBitForBit) {
  const auto [scheme, ex] = GetParam();
  MXMOE_SKIP_WITHOUT_DEVICE(ex);
  const auto& st = traits(scheme);
  uint32_t seed = 1000 + 17 * uint32_t(scheme) + (ex == Exec::Device ? 7 : 0);
  const std::vector<DType> all_outs(std::begin(kDTypes), std::end(kDTypes));
  // Two shapes: several CTAs with a partial last one, and one block per row.
  const std::pair<int64_t, int64_t> shapes[] = {{26, 256}, {7, st.block}};
  // MXMOE_TEST_QUICK (set under compute-sanitizer): every kernel instantiation, fewer value configs.
  const bool quick = std::getenv("MXMOE_TEST_QUICK") != nullptr;
  int config = 0;
  const int per_group = st.tensor_scale ? 5 : 8;  // configs per (layout, shape, input dtype)
  auto keep = [&] {  // quick: one config per group, a different one in each group
    const int c = config++;
    return !quick || c % per_group == (c / per_group) % per_group;
  };
  for (const Layout L : {Layout{true}, Layout{false}}) {
    for (const auto& [rows, k] : shapes) {
      for (DType in : kDTypes) {
        if (st.tensor_scale) {
          for (float gs : {0.0f, 1.0f, 0.37f, 3e5f, 1e-3f}) {
            if (!keep()) continue;
            QuantParams p{scheme};
            p.global_scale = gs;
            if (gs == 0.0f) {  // the 448*6/amax convention over the data's finite values
              float amax = 0;
              for (float v : make_values(scheme, rows, k, seed, in))
                if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
              p.global_scale = nvfp4_default_global_scale(amax);
            }
            check_config(ex, p, in, all_outs, L, rows, k, seed++);
          }
        } else {
          for (ScaleRule rule : kRules)
            for (Rounding rnd : kRoundings)
              if (keep()) check_config(ex, QuantParams{scheme, rule, rnd}, in, all_outs, L, rows, k, seed++);
        }
      }
    }
    for (DType out : kDTypes) {
      QuantParams p{scheme, ScaleRule::Floor, Rounding::RNE, 0.75f};
      check_random_codes(ex, p, out, L, seed++);
    }
  }
}

std::vector<Param> all_params() {
  std::vector<Param> v;
  for (Exec ex : {Exec::Host, Exec::Device})
    for (int s = 0; s < kNumSchemes; ++s) v.push_back({Scheme(s), ex});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, QuantCuda, ::testing::ValuesIn(all_params()),
                         [](const ::testing::TestParamInfo<Param>& i) {
                           return std::string(i.param.exec == Exec::Device ? "Device_" : "HostEmulation_") +
                                  std::string(traits(i.param.scheme).name);
                         });

// In place (y == x) on the device, and a larger tensor with many CTAs.
TEST(QuantCudaDevice, InPlaceAndLargeQdq) {
  MXMOE_SKIP_WITHOUT_DEVICE(Exec::Device);
  for (Scheme s : {Scheme::NVFP4, Scheme::MXFP4, Scheme::MXFP6_E3M2, Scheme::MXINT8}) {
    const int64_t rows = 1000, k = 1024;
    QuantParams p{s, ScaleRule::RCeil, Rounding::Away, 2.5f};
    const Tensor x = mxmoe::test::random_tensor(DType::BF16, {rows, k}, 99 + uint32_t(s));
    std::vector<float> xf(size_t(rows * k)), yf(size_t(rows * k));
    to_f32(x.data.data(), DType::BF16, rows * k, xf.data());
    ref::qdq_rows(xf.data(), rows, k, k, p, yf.data(), k);
    Tensor want(DType::BF16, {rows, k});
    from_f32(yf.data(), rows * k, DType::BF16, want.data.data());
    void* d = nullptr;
    MXMOE_CUDA_CHECK(cudaMalloc(&d, size_t(x.nbytes())));
    MXMOE_CUDA_CHECK(cudaMemcpy(d, x.data.data(), size_t(x.nbytes()), cudaMemcpyHostToDevice));
    cudaStream_t stream;
    MXMOE_CUDA_CHECK(cudaStreamCreate(&stream));
    cuda::qdq(d, DType::BF16, rows, k, k, p, d, DType::BF16, k, stream);
    MXMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
    MXMOE_CUDA_CHECK(cudaStreamDestroy(stream));
    Tensor got(DType::BF16, {rows, k});
    MXMOE_CUDA_CHECK(cudaMemcpy(got.data.data(), d, size_t(got.nbytes()), cudaMemcpyDeviceToHost));
    MXMOE_CUDA_CHECK(cudaFree(d));
    EXPECT_EQ(mxmoe::test::count_bit_mismatches(got, want, std::string(traits(s).name) + " in-place"), 0);
  }
}

// The kernels' element codecs (host build of codec.cuh) against the reference codecs.
TEST(QuantCudaCodec, EncodeDecodeMatchRef) {
  for (Encoding e : {Encoding::E2M1, Encoding::E2M3, Encoding::E3M2, Encoding::E4M3, Encoding::E5M2,
                     Encoding::UE4M3, Encoding::INT8})
    for (Rounding r : kRoundings) {
      uint32_t first = 0;
      EXPECT_EQ(emu::codec_mismatches(e, r, &first), 0)
          << traits(e).name << " " << rounding_name(r) << ": first mismatch at input bits 0x" << std::hex << first;
    }
}

// The API layer rejects bad shapes before touching the device (runs without a GPU).
TEST(QuantCudaApi, RejectsBadArguments) {
  uint8_t dummy[64] = {};
  const QuantParams mx{Scheme::MXFP4};
  EXPECT_THROW(cuda::quantize(dummy, DType::F32, 1, 48, 48, mx, dummy, 24, dummy, 1), Error);  // k % 32
  EXPECT_THROW(cuda::quantize(dummy, DType::I8, 1, 32, 32, mx, dummy, 16, dummy, 1), Error);   // dtype
  EXPECT_THROW(cuda::quantize(dummy, DType::F32, 1, 32, 16, mx, dummy, 16, dummy, 1), Error);  // ldx < k
  EXPECT_THROW(cuda::quantize(dummy, DType::F32, 1, 32, 32, mx, dummy, 15, dummy, 1), Error);  // ldc
  EXPECT_THROW(cuda::dequantize(dummy, 16, dummy, 0, 1, 32, mx, dummy, DType::F32, 32), Error);  // lds
  EXPECT_THROW(cuda::dequantize(dummy, 16, dummy, 1, 1, 32, mx, dummy, DType::F64, 32), Error);  // out dtype
  EXPECT_THROW(cuda::qdq(nullptr, DType::F32, 1, 32, 32, mx, dummy, DType::F32, 32), Error);     // null
  EXPECT_THROW(cuda::qdq(dummy, DType::F32, 1, 32, 32, mx, dummy, DType::BF16, 32), Error);      // in place
  QuantParams nv{Scheme::NVFP4};
  nv.global_scale = 0.0f;
  EXPECT_THROW(cuda::qdq(dummy, DType::F32, 1, 16, 16, nv, dummy + 32, DType::F32, 16), Error);  // gs
  try {
    cuda::qdq(dummy, DType::F32, 1, 48, 48, mx, dummy, DType::F32, 48);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of the mxfp4 block size 32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("quant_api.cpp:"), std::string::npos) << e.what();
  }
  // Empty tensors are no-ops (no launch, no device needed).
  EXPECT_NO_THROW(cuda::qdq(nullptr, DType::F32, 0, 32, 32, mx, nullptr, DType::F32, 32));
}

TEST(QuantCudaApi, CudaCheckThrowsWithLocation) {
  try {
    MXMOE_CUDA_CHECK(cudaErrorInvalidValue);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cudaErrorInvalidValue"), std::string::npos) << m;
    EXPECT_NE(m.find("test_quant_cuda.cpp:"), std::string::npos) << m;
  }
}

// ---- golden files through the CUDA path -------------------------------------------------------------


// qdq of a whole tensor (rows along the last dimension), output in x's dtype.
Tensor qdq_via(Exec ex, const Tensor& x, const QuantParams& p) {
  const int64_t rows = x.rows(), k = x.cols();
  const int64_t es = dtype_size(x.dtype);
  Buf in(rows, k, es, 0), out(rows, k, es, 0), c, s;
  std::memcpy(in.data(), x.data.data(), size_t(x.nbytes()));
  execute(ex, emu::Op::Qdq, p, x.dtype, x.dtype, rows, k, in, c, s, out);
  Tensor y(x.dtype, x.shape);
  std::memcpy(y.data.data(), out.data(), size_t(y.nbytes()));
  return y;
}

class GoldenQdqCuda : public ::testing::TestWithParam<Exec> {};

TEST_P(GoldenQdqCuda, Nvfp4MatchesVllmTorchPath) {
  const Exec ex = GetParam();
  MXMOE_SKIP_WITHOUT_DEVICE(ex);
  MXMOE_SKIP_WITHOUT_SHARED(path, "golden/nvfp4_qdq.safetensors");
  auto f = SafetensorsFile::open(path);
  int n = 0;
  for (const auto& c : mxmoe::test::golden_cases(f)) {
    const std::string name = c["name"];
    const Tensor x = f.load(name + ".x");
    QuantParams p{Scheme::NVFP4};
    p.global_scale = f.load(name + ".global_scale").ptr<float>()[0];
    EXPECT_EQ(mxmoe::test::count_bit_mismatches(qdq_via(ex, x, p), f.load(name + ".y_cpu"), name + " y"), 0);
    // Codes and block scales through the quantize kernel decode to vLLM's values.
    const int64_t rows = x.rows(), k = x.cols();
    Buf in(rows, k, dtype_size(x.dtype), 0), codes(rows, k / 2, 1, 0), scales(rows, k / 16, 1, 0), none;
    std::memcpy(in.data(), x.data.data(), size_t(x.nbytes()));
    execute(ex, emu::Op::Quantize, p, x.dtype, x.dtype, rows, k, in, codes, scales, none);
    Tensor vals(DType::F32, x.shape), sv(DType::F32, {rows, k / 16});
    std::vector<uint8_t> unpacked(size_t(x.numel()));
    unpack_codes(codes.data(), x.numel(), 4, unpacked.data());
    for (int64_t i = 0; i < x.numel(); ++i) vals.ptr<float>()[i] = decode(Encoding::E2M1, unpacked[size_t(i)]);
    for (int64_t i = 0; i < rows * (k / 16); ++i) sv.ptr<float>()[i] = decode(Encoding::UE4M3, scales.data()[i]);
    const Tensor want_scales = f.load(name + ".block_scales");
    sv.shape = want_scales.shape;
    EXPECT_EQ(mxmoe::test::count_bit_mismatches(vals, f.load(name + ".fp4_values"), name + " fp4_values"), 0);
    EXPECT_EQ(mxmoe::test::count_bit_mismatches(sv, want_scales, name + " block_scales"), 0);
    ++n;
  }
  EXPECT_GE(n, 20) << "expected the full case list";
}

TEST_P(GoldenQdqCuda, MxFloorMatchesMicroxcaling) {
  const Exec ex = GetParam();
  MXMOE_SKIP_WITHOUT_DEVICE(ex);
  MXMOE_SKIP_WITHOUT_SHARED(path, "golden/mx_floor_qdq.safetensors");
  EXPECT_EQ(mxmoe::test::check_mx_floor_golden(path, [&](const Tensor& x, const QuantParams& p) { return qdq_via(ex, x, p); }),
            36);
}

TEST_P(GoldenQdqCuda, Mxfp4EvenMatchesQuarkReference) {
  const Exec ex = GetParam();
  MXMOE_SKIP_WITHOUT_DEVICE(ex);
  MXMOE_SKIP_WITHOUT_SHARED(path, "golden/mxfp4_even_qdq.safetensors");
  EXPECT_EQ(
      mxmoe::test::check_mxfp4_even_golden(path, [&](const Tensor& x, const QuantParams& p) { return qdq_via(ex, x, p); }),
      6);
}

INSTANTIATE_TEST_SUITE_P(All, GoldenQdqCuda, ::testing::Values(Exec::Host, Exec::Device),
                         [](const ::testing::TestParamInfo<Exec>& i) {
                           return std::string(i.param == Exec::Host ? "HostEmulation" : "Device");
                         });

}  // namespace
