// Strict safetensors reading (mmap) and writing. Format: an 8-byte little-endian header length N,
// N bytes of UTF-8 JSON (an object: tensor name -> {dtype, shape, data_offsets}, plus an optional
// "__metadata__" string map), then the data section, which the tensors must tile exactly.
#include "mxmoe/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "mxmoe/error.hpp"

namespace mxmoe {

namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr const char* kMetadataKey = "__metadata__";

std::string errno_text(int e) { return std::strerror(e); }

// a * b into out; false on overflow (both non-negative).
bool checked_mul(int64_t a, int64_t b, int64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

// Product of dims, in order, with overflow detection: the same order mxmoe::Tensor::numel() uses,
// so a shape accepted here never overflows there.
bool checked_numel(const std::vector<int64_t>& shape, int64_t& out) {
  int64_t n = 1;
  for (int64_t d : shape)
    if (d < 0 || !checked_mul(n, d, n)) return false;
  out = n;
  return true;
}

const char* json_type(const json& j) { return j.type_name(); }

}  // namespace

// ------------------------------------------------------------------------------------------------
// detail helpers

namespace detail {

json parse_json_strict(std::string_view text, const std::string& what, int max_depth) {
  std::vector<std::unordered_set<std::string>> keys;  // one set per open object
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= max_depth) MXMOE_THROW("{}: JSON nested deeper than {} levels", what, max_depth);
        if (ev == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;
  };
  // nlohmann's lexer treats a NUL byte as the end of input, which would silently accept garbage
  // after it; NUL is never valid in JSON text (inside strings it must be escaped).
  if (const auto nul = text.find('\0'); nul != std::string_view::npos)
    MXMOE_THROW("{}: not valid JSON: NUL byte at offset {}", what, nul);
  json j;
  try {
    j = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    // nlohmann quotes the offending input verbatim; keep the message printable ASCII.
    std::string msg = e.what();
    for (char& c : msg)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    MXMOE_THROW("{}: not valid JSON: {}", what, msg);
  }
  if (!duplicate.empty()) MXMOE_THROW("{}: duplicate key '{}' in JSON object", what, duplicate);
  return j;
}

void write_file_atomic(const std::string& path, const std::vector<std::span<const uint8_t>>& chunks) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    MXMOE_THROW("cannot create '{}': {}", tmp, errno_text(e));
  }
  auto fail = [&](const char* op, int e) {
    ::close(fd);
    ::unlink(tmp.c_str());
    MXMOE_THROW("writing '{}' ({} of '{}' failed): {}", path, op, tmp, errno_text(e));
  };
  for (auto chunk : chunks) {
    const uint8_t* p = chunk.data();
    size_t left = chunk.size();
    while (left > 0) {
      ssize_t w = ::write(fd, p, left);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail("write", errno);
      }
      p += w;
      left -= size_t(w);
    }
  }
  if (::fsync(fd) != 0) fail("fsync", errno);
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    MXMOE_THROW("writing '{}' (close of '{}' failed): {}", path, tmp, errno_text(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    MXMOE_THROW("writing '{}' (rename from '{}' failed): {}", path, tmp, errno_text(e));
  }
}

}  // namespace detail

// ------------------------------------------------------------------------------------------------
// Reading

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated not to overflow
  return n;
}

struct SafetensorsFile::Region {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::vector<uint8_t> owned;  // from_memory
  void* map = nullptr;         // open(): the mmap'ed file
  size_t map_len = 0;

  Region() = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region() {
    if (map) ::munmap(map, map_len);
  }
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Region> region, std::string path)
    : region_(std::move(region)), path_(std::move(path)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

uint64_t SafetensorsFile::file_size() const { return region_ ? region_->size : 0; }

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    MXMOE_THROW("safetensors file '{}': cannot open: {}", path, errno_text(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    MXMOE_THROW("safetensors file '{}': cannot stat: {}", path, errno_text(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    MXMOE_THROW("safetensors file '{}': not a regular file", path);
  }
  auto region = std::make_unique<Region>();
  region->size = size_t(st.st_size);
  if (region->size < 8) {
    ::close(fd);
    MXMOE_THROW("safetensors file '{}': file is {} bytes, shorter than the 8-byte header length prefix",
                path, region->size);
  }
  void* p = ::mmap(nullptr, region->size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) MXMOE_THROW("safetensors file '{}': mmap of {} bytes failed: {}", path, region->size, errno_text(e));
  region->map = p;
  region->map_len = region->size;
  region->data = static_cast<const uint8_t*>(p);
  SafetensorsFile f(std::move(region), path);
  f.parse();
  return f;
}

SafetensorsFile SafetensorsFile::from_memory(std::vector<uint8_t> bytes, std::string name) {
  auto region = std::make_unique<Region>();
  region->owned = std::move(bytes);
  region->data = region->owned.data();
  region->size = region->owned.size();
  SafetensorsFile f(std::move(region), std::move(name));
  f.parse();
  return f;
}

void SafetensorsFile::parse() {
  const std::string what = fmt::format("safetensors file '{}'", path_);
  const uint8_t* base = region_->data;
  const uint64_t size = region_->size;
  MXMOE_CHECK(size >= 8, "{}: file is {} bytes, shorter than the 8-byte header length prefix", what, size);

  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  MXMOE_CHECK(n <= kSafetensorsMaxHeader, "{}: header length {} exceeds the {}-byte limit", what, n,
              kSafetensorsMaxHeader);
  MXMOE_CHECK(n <= size - 8, "{}: header length {} is larger than the file allows ({} bytes after the prefix)",
              what, n, size - 8);
  MXMOE_CHECK(n > 0, "{}: header is empty (length 0)", what);
  header_size_ = n;
  MXMOE_CHECK(base[8] == '{', "{}: header must start with '{{' (a JSON object), found byte 0x{:02x}", what,
              base[8]);

  // Valid depth: root object (0) -> entry / metadata object (1) -> shape / offsets array (2).
  const std::string_view text(reinterpret_cast<const char*>(base + 8), size_t(n));
  const json root = detail::parse_json_strict(text, what + ": header", 3);
  MXMOE_CHECK(root.is_object(), "{}: header is not a JSON object (got {})", what, json_type(root));

  std::vector<TensorInfo> infos;
  infos.reserve(root.size());
  for (const auto& [name, entry] : root.items()) {
    if (name == kMetadataKey) {
      MXMOE_CHECK(entry.is_object(), "{}: __metadata__ must be an object of string -> string, got {}", what,
                  json_type(entry));
      for (const auto& [k, v] : entry.items()) {
        MXMOE_CHECK(v.is_string(), "{}: __metadata__ value for key '{}' must be a string, got {}", what, k,
                    json_type(v));
        metadata_.emplace(k, v.get<std::string>());
      }
      continue;
    }
    const std::string tw = fmt::format("{}: tensor '{}'", what, name);
    MXMOE_CHECK(entry.is_object(), "{}: entry must be an object, got {}", tw, json_type(entry));
    for (const char* key : {"dtype", "shape", "data_offsets"})
      MXMOE_CHECK(entry.contains(key), "{}: missing key '{}'", tw, key);
    for (const auto& [k, v] : entry.items())
      MXMOE_CHECK(k == "dtype" || k == "shape" || k == "data_offsets",
                  "{}: unexpected key '{}' (allowed: dtype, shape, data_offsets)", tw, k);

    TensorInfo info;
    info.name = name;
    const json& jd = entry["dtype"];
    MXMOE_CHECK(jd.is_string(), "{}: dtype must be a string, got {}", tw, json_type(jd));
    try {
      info.dtype = parse_dtype(jd.get<std::string>());
    } catch (const Error& e) {
      MXMOE_THROW("{}: {}", tw, e.what());
    }

    const json& js = entry["shape"];
    MXMOE_CHECK(js.is_array(), "{}: shape must be a list of non-negative integers, got {}", tw, json_type(js));
    for (const json& d : js) {
      MXMOE_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()),
                  "{}: shape must be a list of non-negative integers, found {}", tw, d.dump());
      info.shape.push_back(int64_t(d.get<uint64_t>()));
    }

    const json& jo = entry["data_offsets"];
    MXMOE_CHECK(jo.is_array() && jo.size() == 2 && jo[0].is_number_unsigned() && jo[1].is_number_unsigned(),
                "{}: data_offsets must be two non-negative integers [begin, end], got {}", tw, jo.dump());
    info.begin = jo[0].get<uint64_t>();
    info.end = jo[1].get<uint64_t>();
    MXMOE_CHECK(info.begin <= info.end, "{}: data_offsets begin {} > end {}", tw, info.begin, info.end);

    int64_t numel = 0, nbytes = 0;
    MXMOE_CHECK(checked_numel(info.shape, numel) && checked_mul(numel, dtype_size(info.dtype), nbytes),
                "{}: shape {} overflows the element count", tw, shape_str(info.shape));
    MXMOE_CHECK(uint64_t(nbytes) == info.end - info.begin,
                "{}: byte size mismatch: {} {} needs {} bytes but data_offsets [{}, {}] span {}", tw,
                dtype_name(info.dtype), shape_str(info.shape), nbytes, info.begin, info.end,
                info.end - info.begin);
    infos.push_back(std::move(info));
  }

  // File order; ties (empty tensors sharing an offset) broken by name for determinism.
  std::sort(infos.begin(), infos.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : infos) {
    if (t.begin > expected)
      MXMOE_THROW("{}: hole of {} bytes in the data section before tensor '{}' (data_offsets [{}, {}]; "
                  "previous tensor ends at {})",
                  what, t.begin - expected, t.name, t.begin, t.end, expected);
    if (t.begin < expected)
      MXMOE_THROW("{}: tensor '{}' (data_offsets [{}, {}]) overlaps tensor '{}' which ends at {}", what, t.name,
                  t.begin, t.end, prev ? prev->name : std::string(), expected);
    expected = t.end;
    prev = &t;
  }
  const uint64_t data_size = size - 8 - n;
  MXMOE_CHECK(expected <= data_size,
              "{}: truncated: tensors need {} data bytes but the file holds only {} after the header", what,
              expected, data_size);
  MXMOE_CHECK(expected == data_size, "{}: {} trailing bytes after the last tensor's data (file size {}, expected {})",
              what, data_size - expected, size, 8 + n + expected);

  tensors_ = std::move(infos);
  index_.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  MXMOE_CHECK(it != index_.end(), "safetensors file '{}': no tensor named '{}' ({} tensors in file)", path_, name,
              tensors_.size());
  return tensors_[it->second];
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& t) const {
  const uint8_t* data = region_->data + 8 + header_size_;
  return {data + t.begin, size_t(t.end - t.begin)};
}

std::span<const uint8_t> SafetensorsFile::bytes(const std::string& name) const { return bytes(info(name)); }

Tensor SafetensorsFile::load(const std::string& name) const {
  const TensorInfo& t = info(name);
  Tensor out = Tensor::uninitialized(t.dtype, t.shape);  // fully overwritten below
  auto b = bytes(t);
  MXMOE_CHECK(out.data.size() == b.size(), "safetensors file '{}': tensor '{}': internal size mismatch", path_,
              name);
  if (!b.empty()) std::memcpy(out.data.data(), b.data(), b.size());
  return out;
}

// ------------------------------------------------------------------------------------------------
// Writing

TensorRef tensor_ref(std::string name, const Tensor& t) {
  return TensorRef{std::move(name), t.dtype, t.shape, std::span<const uint8_t>(t.data.data(), t.data.size())};
}

namespace {

// Validates the tensors and returns the padded header (without the 8-byte prefix).
std::string build_header(const std::vector<TensorRef>& tensors, const std::map<std::string, std::string>& metadata,
                         const std::string& what) {
  ordered_json header = ordered_json::object();
  ordered_json meta = ordered_json::object();
  if (!metadata.count("format")) meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;
  header[kMetadataKey] = std::move(meta);

  std::unordered_set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorRef& t : tensors) {
    MXMOE_CHECK(t.name != kMetadataKey, "{}: '{}' is reserved and cannot name a tensor", what, t.name);
    MXMOE_CHECK(seen.insert(t.name).second, "{}: duplicate tensor name '{}'", what, t.name);
    MXMOE_CHECK(static_cast<int>(t.dtype) < static_cast<int>(std::size(kDTypes)), "{}: tensor '{}': invalid dtype",
                what, t.name);
    int64_t numel = 0, nbytes = 0;
    MXMOE_CHECK(checked_numel(t.shape, numel) && checked_mul(numel, dtype_size(t.dtype), nbytes),
                "{}: tensor '{}': invalid shape {} (negative dim or overflow)", what, t.name, shape_str(t.shape));
    MXMOE_CHECK(uint64_t(nbytes) == t.data.size(), "{}: tensor '{}': {} {} needs {} bytes but {} were given", what,
                t.name, dtype_name(t.dtype), shape_str(t.shape), nbytes, t.data.size());
    ordered_json e = ordered_json::object();
    e["dtype"] = std::string(dtype_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + uint64_t(nbytes)};
    header[t.name] = std::move(e);
    offset += uint64_t(nbytes);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    MXMOE_THROW("{}: cannot encode header (tensor names and metadata must be valid UTF-8): {}", what, e.what());
  }
  while (text.size() % 8 != 0) text.push_back(' ');
  MXMOE_CHECK(text.size() <= kSafetensorsMaxHeader, "{}: header of {} bytes exceeds the {}-byte limit", what,
              text.size(), kSafetensorsMaxHeader);
  return text;
}

std::array<uint8_t, 8> le64(uint64_t v) {
  std::array<uint8_t, 8> b{};
  for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t(v >> (8 * i));
  return b;
}

}  // namespace

std::vector<uint8_t> serialize_safetensors(const std::vector<TensorRef>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  const std::string header = build_header(tensors, metadata, "serialize_safetensors");
  size_t total = 8 + header.size();
  for (const TensorRef& t : tensors) total += t.data.size();
  std::vector<uint8_t> out(total);
  const auto prefix = le64(header.size());
  std::memcpy(out.data(), prefix.data(), 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  size_t pos = 8 + header.size();
  for (const TensorRef& t : tensors) {
    if (!t.data.empty()) std::memcpy(out.data() + pos, t.data.data(), t.data.size());
    pos += t.data.size();
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = build_header(tensors, metadata, fmt::format("writing safetensors '{}'", path));
  const auto prefix = le64(header.size());
  std::vector<std::span<const uint8_t>> chunks;
  chunks.reserve(tensors.size() + 2);
  chunks.emplace_back(prefix.data(), prefix.size());
  chunks.emplace_back(reinterpret_cast<const uint8_t*>(header.data()), header.size());
  for (const TensorRef& t : tensors) chunks.push_back(t.data);
  detail::write_file_atomic(path, chunks);
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorRef> refs;
  refs.reserve(tensors.size());
  for (const auto& [name, t] : tensors) refs.push_back(tensor_ref(name, t));
  write_safetensors(path, refs, metadata);
}

}  // namespace mxmoe
