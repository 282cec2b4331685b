// Strict safetensors reader/writer and sharded checkpoints.
#include "mxmoe/safetensors.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>

namespace mxmoe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A unique scratch directory, removed on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            fmt::format("mxmoe_st_{}_{}_{:08x}", ::getpid(), counter++, rd());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed * 31 + i * 7 + (i >> 8));
  return v;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A raw file image: 8-byte length (n_override or header size), header text, data_bytes of data.
std::vector<uint8_t> raw(const std::string& header, size_t data_bytes, std::optional<uint64_t> n_override = {}) {
  const uint64_t n = n_override.value_or(header.size());
  std::vector<uint8_t> out;
  for (int i = 0; i < 8; ++i) out.push_back(uint8_t(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  const auto data = pattern(data_bytes, 3);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Parses `bytes` from memory and from a file; both must fail with a message containing `reason`
// (and the file's path for the on-disk one). Returns the on-disk message.
std::string expect_reject(const std::vector<uint8_t>& bytes, const std::string& reason) {
  std::string msg;
  try {
    SafetensorsFile::from_memory(bytes, "mem.safetensors");
    ADD_FAILURE() << "from_memory accepted a file that should fail with: " << reason;
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(reason));
    EXPECT_THAT(e.what(), HasSubstr("mem.safetensors"));
  }
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_bytes(path, bytes);
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << "open accepted a file that should fail with: " << reason;
  } catch (const Error& e) {
    msg = e.what();
    EXPECT_THAT(msg, HasSubstr(reason));
    EXPECT_THAT(msg, HasSubstr(path));
  }
  return msg;
}

TEST(SafetensorsTest, RoundTripEveryDtypeScalarAndEmpty) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint8_t seed = 1;
  for (const auto& tr : kDTypes) {
    const std::string n(tr.name);
    for (auto [suffix, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
             {"mat", {3, 5}}, {"scalar", {}}, {"empty", {0, 4}}, {"cube", {2, 1, 3}}}) {
      Tensor t(tr.dtype, shape);
      { auto v = pattern(t.data.size(), seed++); t.data.assign(v.begin(), v.end()); }
      tensors.emplace_back(n + "." + suffix, std::move(t));
    }
  }
  const std::string path = dir.file("all.safetensors");
  write_safetensors(path, tensors);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  EXPECT_EQ(f.file_size(), fs::file_size(path));
  uint64_t prev_end = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    SCOPED_TRACE(name);
    ASSERT_TRUE(f.contains(name));
    const TensorInfo& info = f.info(name);
    EXPECT_EQ(info.dtype, t.dtype);
    EXPECT_EQ(info.shape, t.shape);
    EXPECT_EQ(info.numel(), t.numel());
    EXPECT_EQ(info.nbytes(), t.data.size());
    auto b = f.bytes(name);
    EXPECT_EQ(Bytes(b.begin(), b.end()), t.data);
    const Tensor loaded = f.load(name);
    EXPECT_EQ(loaded.dtype, t.dtype);
    EXPECT_EQ(loaded.shape, t.shape);
    EXPECT_EQ(loaded.data, t.data);
    // Written in the given order with contiguous offsets, so file order == write order.
    EXPECT_EQ(f.tensors()[i].name, name);
    EXPECT_EQ(info.begin, prev_end);
    prev_end = info.end;
  }
  EXPECT_EQ(f.info("F32.scalar").numel(), 1);
  EXPECT_EQ(f.info("F64.scalar").nbytes(), 8u);
  EXPECT_EQ(f.info("BF16.empty").nbytes(), 0u);
  EXPECT_TRUE(f.bytes("I64.empty").empty());

  // The in-memory serializer produces the same bytes and the same parse.
  std::vector<TensorRef> refs;
  for (const auto& [name, t] : tensors) refs.push_back(tensor_ref(name, t));
  const auto image = serialize_safetensors(refs);
  EXPECT_EQ(image, read_bytes(path));
  const auto g = SafetensorsFile::from_memory(image);
  EXPECT_EQ(g.tensors().size(), tensors.size());
}

TEST(SafetensorsTest, HeaderPaddedToEightAndMetadataFormatPt) {
  TempDir dir;
  for (int len = 1; len <= 9; ++len) {  // names of every length mod 8
    const std::string name(size_t(len), 'w');
    Tensor t(DType::U8, {3});
    const std::string path = dir.file(fmt::format("p{}.safetensors", len));
    write_safetensors(path, {{name, t}});
    const auto b = read_bytes(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | b[size_t(i)];
    EXPECT_EQ(n % 8, 0u);
    EXPECT_EQ(b.size(), 8 + n + 3);
    const std::string header(b.begin() + 8, b.begin() + 8 + long(n));
    EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"pt\"}", 0), 0u) << header;
    const auto f = SafetensorsFile::open(path);
    EXPECT_EQ(f.header_size(), n);
    EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  }
  // Caller metadata is kept; "format": "pt" is added when absent, a caller's format is kept.
  Tensor t(DType::F32, {2});
  write_safetensors(dir.file("m1.safetensors"), {{"x", t}}, {{"source", "test"}});
  EXPECT_EQ(SafetensorsFile::open(dir.file("m1.safetensors")).metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"source", "test"}}));
  write_safetensors(dir.file("m2.safetensors"), {{"x", t}}, {{"format", "mlx"}});
  EXPECT_EQ(SafetensorsFile::open(dir.file("m2.safetensors")).metadata().at("format"), "mlx");
}

TEST(SafetensorsTest, AcceptsValidEdgeCases) {
  // No tensors at all, no metadata.
  EXPECT_EQ(SafetensorsFile::from_memory(raw("{}", 0)).tensors().size(), 0u);
  // Trailing spaces (padding) after the JSON object.
  auto f = SafetensorsFile::from_memory(
      raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}      )", 8));
  EXPECT_EQ(f.info("a").shape, (std::vector<int64_t>{2}));
  // Several empty tensors sharing an offset, listed out of offset order.
  f = SafetensorsFile::from_memory(raw(R"({"z":{"dtype":"I16","shape":[2],"data_offsets":[0,4]},)"
                                       R"("e2":{"dtype":"BF16","shape":[0],"data_offsets":[4,4]},)"
                                       R"("e1":{"dtype":"U8","shape":[3,0],"data_offsets":[0,0]},)"
                                       R"("__metadata__":{}})",
                                       4));
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "e1");
  EXPECT_EQ(f.tensors()[1].name, "z");
  EXPECT_EQ(f.tensors()[2].name, "e2");
  EXPECT_TRUE(f.metadata().empty());
  // A zero dimension before huge ones: numel 0, no overflow.
  f = SafetensorsFile::from_memory(
      raw(R"({"a":{"dtype":"F64","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})", 0));
  EXPECT_EQ(f.info("a").numel(), 0);
}

TEST(SafetensorsTest, RejectsMalformedFiles) {
  const std::string a8 = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  // Length prefix and header framing.
  expect_reject({1, 2, 3}, "shorter than the 8-byte header length prefix");
  expect_reject({}, "shorter than the 8-byte header length prefix");
  expect_reject(raw("{" + a8 + "}", 8, 1000), "larger than the file");
  expect_reject(raw("{}", 0, 100'000'001), "exceeds the 100000000-byte limit");
  expect_reject(raw("{}", 0, ~uint64_t(0)), "exceeds the 100000000-byte limit");
  expect_reject(raw("", 0), "header is empty");
  expect_reject(raw("[1, 2]", 0), "must start with '{'");
  expect_reject(raw(" {}", 0), "must start with '{'");
  expect_reject(raw("{\"a\": ", 0), "not valid JSON");
  expect_reject(raw("{} x", 0), "not valid JSON");
  expect_reject(raw(std::string("{}\0\0\0\0\0\0", 8), 0), "not valid JSON");  // NUL padding
  expect_reject(raw("{\"\xff\xfe\":{}}", 0), "not valid JSON");  // invalid UTF-8
  expect_reject(raw("{\"a\":[[[[[[[[[[1]]]]]]]]]]}", 0), "nested deeper than");
  // Entries.
  expect_reject(raw(R"({"a":5})", 0), "tensor 'a': entry must be an object");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "tensor 'a': missing key 'data_offsets'");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8),
                "tensor 'a': unexpected key 'x'");
  expect_reject(raw(R"({"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", 8), "unknown dtype 'F17'");
  expect_reject(raw(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8), "tensor 'a'");
  expect_reject(raw(R"({"a":{"dtype":3,"shape":[2],"data_offsets":[0,8]}})", 8), "dtype must be a string");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
                "shape must be a list of non-negative integers, found -2");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8),
                "shape must be a list of non-negative integers");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
                "shape must be a list of non-negative integers");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", 8),
                "data_offsets must be two non-negative integers");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8),
                "data_offsets must be two non-negative integers");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8), "begin 8 > end 0");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "byte size mismatch");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8),
                "overflows");
  expect_reject(raw(R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})", 8),
                "overflows");
  // Layout of the data section.
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                    16),
                "hole of 4 bytes in the data section before tensor 'b'");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "hole of 4 bytes");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    12),
                "tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a'");
  expect_reject(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                    8),
                "overlaps");
  expect_reject(raw("{" + a8 + "}", 9), "1 trailing bytes after the last tensor");
  expect_reject(raw("{}", 5), "5 trailing bytes");
  expect_reject(raw("{" + a8 + "}", 7), "truncated");
  // Duplicates and metadata.
  expect_reject(raw("{" + a8 + "," + a8 + "}", 8), "duplicate key 'a'");
  expect_reject(raw(R"({"__metadata__":{"k":"v","k":"w"}})", 0), "duplicate key 'k'");
  expect_reject(raw(R"({"__metadata__":{"k":1}})", 0), "__metadata__ value for key 'k' must be a string");
  expect_reject(raw(R"({"__metadata__":["k"]})", 0), "__metadata__ must be an object");
  expect_reject(raw(R"({"__metadata__":null})", 0), "__metadata__ must be an object");
}

TEST(SafetensorsTest, LookupErrorsAndMoves) {
  TempDir dir;
  Tensor t(DType::I32, {4});
  { auto v = pattern(16, 9); t.data.assign(v.begin(), v.end()); }
  const std::string path = dir.file("one.safetensors");
  write_safetensors(path, {{"w", t}});
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_FALSE(f.contains("nope"));
  try {
    f.info("nope");
    ADD_FAILURE() << "info() of a missing tensor did not throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'nope'"));
    EXPECT_THAT(e.what(), HasSubstr(path));
  }
  EXPECT_THROW(f.bytes("nope"), Error);
  EXPECT_THROW(f.load("nope"), Error);
  // Spans stay valid when the file object is moved (the mapping moves with it).
  auto span = f.bytes("w");
  SafetensorsFile g = std::move(f);
  std::vector<SafetensorsFile> v;
  v.push_back(std::move(g));
  EXPECT_EQ(Bytes(span.begin(), span.end()), t.data);
  EXPECT_EQ(v[0].bytes("w").data(), span.data());
  // Opening a missing file or a directory.
  EXPECT_THAT([&] { SafetensorsFile::open(dir.file("missing.safetensors")); },
              ::testing::ThrowsMessage<Error>(HasSubstr("No such file or directory")));
  EXPECT_THAT([&] { SafetensorsFile::open(dir.path().string()); },
              ::testing::ThrowsMessage<Error>(HasSubstr("not a regular file")));
}

TEST(SafetensorsTest, WriterValidatesInputAndFailsCleanly) {
  TempDir dir;
  const std::vector<uint8_t> eight(8);
  const std::string path = dir.file("w.safetensors");
  auto reject = [&](const std::vector<TensorRef>& refs, const std::string& reason) {
    EXPECT_THAT([&] { write_safetensors(path, refs); }, ::testing::ThrowsMessage<Error>(HasSubstr(reason)));
    EXPECT_FALSE(fs::exists(path));
    EXPECT_FALSE(fs::exists(path + ".tmp"));
  };
  reject({{"a", DType::F32, {3}, eight}}, "needs 12 bytes but 8 were given");
  reject({{"a", DType::F32, {-2}, eight}}, "invalid shape");
  reject({{"a", DType::F32, {2}, eight}, {"a", DType::F32, {2}, eight}}, "duplicate tensor name 'a'");
  reject({{"__metadata__", DType::F32, {2}, eight}}, "reserved");
  reject({{"bad\xff", DType::F32, {2}, eight}}, "valid UTF-8");
  // An unwritable destination names the path and the errno text, and leaves nothing behind.
  const std::string nodir = dir.file("no/such/dir/x.safetensors");
  EXPECT_THAT([&] { write_safetensors(nodir, {{"a", DType::F32, {2}, eight}}); },
              ::testing::ThrowsMessage<Error>(
                  ::testing::AllOf(HasSubstr(nodir), HasSubstr("No such file or directory"))));
  // Overwriting an existing file replaces it atomically.
  write_safetensors(path, {{"a", DType::F32, {2}, eight}});
  write_safetensors(path, {{"b", DType::U8, {8}, eight}});
  const auto f = SafetensorsFile::open(path);
  EXPECT_FALSE(f.contains("a"));
  EXPECT_EQ(f.info("b").dtype, DType::U8);
}

TEST(SafetensorsTest, GoldenNvfp4File) {
  const fs::path p = fs::path(MXMOE_SHARED_DIR) / "golden" / "nvfp4_qdq.safetensors";
  if (!fs::exists(p)) GTEST_SKIP() << "golden file " << p << " not found (../shared absent)";
  const auto f = SafetensorsFile::open(p.string());
  const auto& x = f.info("normal_bf16_16x64_calibrated.x");
  EXPECT_EQ(x.dtype, DType::BF16);
  EXPECT_EQ(x.shape, (std::vector<int64_t>{16, 64}));
  EXPECT_EQ(f.bytes("normal_bf16_16x64_calibrated.x").size(), 16u * 64u * 2u);
  const auto& s = f.info("normal_bf16_16x64_calibrated.block_scales");
  EXPECT_EQ(s.dtype, DType::F32);
  EXPECT_EQ(s.shape, (std::vector<int64_t>{16, 4}));
  EXPECT_TRUE(f.metadata().count("cases"));
  const Tensor t = f.load("normal_bf16_16x64_calibrated.block_scales");
  EXPECT_EQ(t.numel(), 64);
  // Also readable as a single-file checkpoint.
  const auto ck = Checkpoint::open(p.string());
  EXPECT_EQ(ck.size(), f.size());
  EXPECT_EQ(ck.file_of("normal_bf16_16x64_calibrated.x"), p.string());
}

// ------------------------------------------------------------------------------------------------
// Checkpoints

std::vector<std::pair<std::string, Tensor>> sample_tensors(int n) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (int i = 0; i < n; ++i) {
    Tensor t(i % 2 ? DType::BF16 : DType::F32, {int64_t(i + 1), 8});
    { auto v = pattern(t.data.size(), uint8_t(i)); t.data.assign(v.begin(), v.end()); }
    out.emplace_back(fmt::format("layers.{}.weight", n - i), std::move(t));  // not in sorted order
  }
  return out;
}

std::vector<TensorRef> refs_of(const std::vector<std::pair<std::string, Tensor>>& ts) {
  std::vector<TensorRef> r;
  for (const auto& [name, t] : ts) r.push_back(tensor_ref(name, t));
  return r;
}

TEST(CheckpointTest, ShardedRoundTrip) {
  TempDir dir;
  const auto ts = sample_tensors(6);
  const std::string d = dir.file("ckpt");
  const auto shards = write_sharded(d, refs_of(ts), 200);
  ASSERT_GT(shards.size(), 1u);
  EXPECT_EQ(shards.front(), fmt::format("model-00001-of-{:05d}.safetensors", shards.size()));
  EXPECT_TRUE(fs::exists(fs::path(d) / "model.safetensors.index.json"));

  const auto ck = Checkpoint::open(d);
  EXPECT_EQ(ck.dir(), d);
  EXPECT_EQ(ck.files().size(), shards.size());
  auto names = ck.names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  ASSERT_EQ(names.size(), ts.size());
  std::set<std::string> used;
  for (const auto& [name, t] : ts) {
    ASSERT_TRUE(ck.contains(name));
    EXPECT_EQ(ck.load(name).data, t.data);
    EXPECT_EQ(ck.info(name).shape, t.shape);
    EXPECT_EQ(ck.bytes(name).size(), t.data.size());
    used.insert(fs::path(ck.file_of(name)).filename().string());
  }
  EXPECT_EQ(used.size(), shards.size());
  EXPECT_THAT([&] { ck.info("missing"); }, ::testing::ThrowsMessage<Error>(HasSubstr("'missing'")));

  // The index carries total_size.
  const std::string index = [&] {
    std::ifstream in(fs::path(d) / "model.safetensors.index.json");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }();
  size_t total = 0;
  for (const auto& [name, t] : ts) total += t.data.size();
  EXPECT_THAT(index, HasSubstr(fmt::format("\"total_size\": {}", total)));

  // One shard when everything fits; a directory of plain files works too.
  const std::string d1 = dir.file("one");
  EXPECT_EQ(write_sharded(d1, refs_of(ts), 1 << 20).size(), 1u);
  EXPECT_EQ(Checkpoint::open(d1).size(), ts.size());
}

TEST(CheckpointTest, SingleFileAndPlainDirectory) {
  TempDir dir;
  const auto ts = sample_tensors(4);
  write_safetensors(dir.file("a.safetensors"), {ts[0], ts[1]});
  write_safetensors(dir.file("b.safetensors"), {ts[2], ts[3]});
  const auto ck = Checkpoint::open(dir.path().string());
  EXPECT_EQ(ck.size(), 4u);
  EXPECT_EQ(ck.file_of(ts[2].first), dir.file("b.safetensors"));
  const auto single = Checkpoint::open(dir.file("a.safetensors"));
  EXPECT_EQ(single.size(), 2u);
  EXPECT_EQ(single.dir(), dir.path().string());

  // A tensor name in two files is an error naming both.
  write_safetensors(dir.file("c.safetensors"), {ts[0]});
  EXPECT_THAT([&] { Checkpoint::open(dir.path().string()); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(
                  HasSubstr(ts[0].first), HasSubstr("a.safetensors"), HasSubstr("c.safetensors"))));

  TempDir empty;
  EXPECT_THAT([&] { Checkpoint::open(empty.path().string()); },
              ::testing::ThrowsMessage<Error>(HasSubstr("neither")));
  EXPECT_THAT([&] { Checkpoint::open(empty.file("nothing")); },
              ::testing::ThrowsMessage<Error>(HasSubstr("no such file or directory")));
}

TEST(CheckpointTest, IndexErrors) {
  const auto ts = sample_tensors(4);
  auto setup = [&](TempDir& dir) {
    write_sharded(dir.path().string(), refs_of(ts), 50);
    return (dir.path() / "model.safetensors.index.json").string();
  };
  auto write_index = [](const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::trunc) << text;
  };
  auto reject = [](const TempDir& dir, const std::string& reason) {
    EXPECT_THAT([&] { Checkpoint::open(dir.path().string()); },
                ::testing::ThrowsMessage<Error>(HasSubstr(reason)));
  };
  {  // missing shard
    TempDir dir;
    setup(dir);
    fs::remove(dir.path() / "model-00002-of-00004.safetensors");
    reject(dir, "model-00002-of-00004.safetensors' (holding tensor");
  }
  {  // tensor listed for a shard that does not hold it
    TempDir dir;
    const auto idx = setup(dir);
    write_index(idx, R"({"weight_map":{"layers.4.weight":"model-00001-of-00004.safetensors",)"
                     R"("ghost":"model-00001-of-00004.safetensors"}})");
    reject(dir, "tensor 'ghost' is mapped to shard");
  }
  {  // shard holds a tensor the index does not map to it
    TempDir dir;
    const auto idx = setup(dir);
    write_index(idx, R"({"weight_map":{"layers.3.weight":"model-00002-of-00004.safetensors",)"
                     R"("layers.4.weight":"model-00002-of-00004.safetensors"}})");
    reject(dir, "tensor 'layers.4.weight' is mapped to shard");
    write_index(idx, R"({"weight_map":{}})");
    EXPECT_EQ(Checkpoint::open(dir.path().string()).size(), 0u);
    write_index(idx, R"({"weight_map":{"layers.3.weight":"model-00002-of-00004.safetensors"}})");
    EXPECT_EQ(Checkpoint::open(dir.path().string()).size(), 1u);
    write_index(idx, R"({"weight_map":{"layers.4.weight":"model-00001-of-00004.safetensors"}})");
    EXPECT_EQ(Checkpoint::open(dir.path().string()).size(), 1u);
    write_index(idx, R"({"weight_map":{"layers.1.weight":"model-00004-of-00004.safetensors"}})");
    EXPECT_EQ(Checkpoint::open(dir.path().string()).size(), 1u);
  }
  {  // malformed index files
    TempDir dir;
    const auto idx = setup(dir);
    write_index(idx, "[]");
    reject(dir, "not a JSON object");
    write_index(idx, "{}");
    reject(dir, "missing 'weight_map'");
    write_index(idx, R"({"weight_map":[]})");
    reject(dir, "'weight_map' must be an object");
    write_index(idx, R"({"weight_map":{"a":3}})");
    reject(dir, "weight_map['a'] must be a shard file name");
    write_index(idx, R"({"weight_map":{"a":"../x.safetensors"}})");
    reject(dir, "not a relative path inside the directory");
    write_index(idx, R"({"weight_map":{"a":"/etc/passwd"}})");
    reject(dir, "not a relative path inside the directory");
    write_index(idx, R"({"weight_map":{"a":"x","a":"y"}})");
    reject(dir, "duplicate key 'a'");
    write_index(idx, R"({"weight_map":)");
    reject(dir, "not valid JSON");
  }
  {  // a shard with an extra tensor beyond the index
    TempDir dir;
    const auto idx = setup(dir);
    write_index(idx, R"({"weight_map":{"layers.4.weight":"model-00001-of-00004.safetensors",)"
                     R"("layers.3.weight":"model-00002-of-00004.safetensors",)"
                     R"("layers.2.weight":"model-00003-of-00004.safetensors"}})");
    EXPECT_EQ(Checkpoint::open(dir.path().string()).size(), 3u);
    write_safetensors((dir.path() / "model-00003-of-00004.safetensors").string(), {ts[2], ts[0]});
    reject(dir, "which the weight_map does not map to it");
  }
}

}  // namespace
}  // namespace mxmoe
