// Strict safetensors reader/writer and sharded (HF-style) checkpoints. See docs/safetensors.md.
//
// Reading maps the file read-only and validates the whole header before any tensor is handed out:
// every failure is an mxmoe::Error naming the file (and tensor when relevant). Tensor bytes are
// served lazily as spans into the mapping; load() copies one tensor into an mxmoe::Tensor.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string_view>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mxmoe/dtype.hpp"
#include "mxmoe/tensor.hpp"

namespace mxmoe {

// Largest header accepted (same limit as the reference Rust implementation).
inline constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets within the data section (after 8 + header bytes)

  int64_t numel() const;  // validated at parse time not to overflow int64
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates it. Throws mxmoe::Error naming the file on any defect.
  static SafetensorsFile open(const std::string& path);
  // Parses an in-memory image of a file (takes ownership). `name` appears in error messages.
  static SafetensorsFile from_memory(std::vector<uint8_t> bytes, std::string name = "<memory>");

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Tensors in file order (ascending data offsets).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  size_t size() const { return tensors_.size(); }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Throws an Error naming the file and the tensor when absent.
  const TensorInfo& info(const std::string& name) const;
  // The tensor's bytes inside the mapping: valid as long as this object (or what it was moved into).
  std::span<const uint8_t> bytes(const std::string& name) const;
  std::span<const uint8_t> bytes(const TensorInfo& info) const;
  // A copy of the tensor.
  Tensor load(const std::string& name) const;
  // The "__metadata__" string map (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Header length N (the 8-byte prefix value) and total size of the file.
  uint64_t header_size() const { return header_size_; }
  uint64_t file_size() const;

 private:
  struct Region;
  SafetensorsFile(std::unique_ptr<Region> region, std::string path);
  void parse();

  std::unique_ptr<Region> region_;
  std::string path_;
  uint64_t header_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: its bytes are borrowed, not copied.
struct TensorRef {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> data;
};
TensorRef tensor_ref(std::string name, const Tensor& t);

// Serializes a safetensors image: header with tensors in the given order, contiguous offsets,
// "__metadata__" always present and holding "format": "pt" unless the caller sets "format",
// header padded with spaces to a multiple of 8 bytes. Throws on invalid input (bad shape, data size
// != numel * dtype size, duplicate or reserved names).
std::vector<uint8_t> serialize_safetensors(const std::vector<TensorRef>& tensors,
                                           const std::map<std::string, std::string>& metadata = {
                                               {"format", "pt"}});
// Writes `path` atomically (path + ".tmp", then rename). Errors name the path and errno text.
void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// A checkpoint: one .safetensors file, or a directory holding model.safetensors.index.json
// (HF sharded layout) or one or more *.safetensors files.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& path_or_dir);

  Checkpoint(Checkpoint&&) noexcept = default;
  Checkpoint& operator=(Checkpoint&&) noexcept = default;

  // All tensor names, sorted.
  std::vector<std::string> names() const;
  size_t size() const { return where_.size(); }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  std::span<const uint8_t> bytes(const std::string& name) const;
  Tensor load(const std::string& name) const;
  // Path of the file holding `name`.
  const std::string& file_of(const std::string& name) const;
  // The checkpoint directory (the parent directory when opened from a single file).
  const std::string& dir() const { return dir_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  Checkpoint() = default;
  const SafetensorsFile& file_for(const std::string& name) const;

  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

// Writes `tensors` (in order) into model-0000i-of-0000n.safetensors shards of at most
// max_shard_bytes tensor data each (a larger tensor gets a shard of its own) plus
// model.safetensors.index.json with metadata.total_size. Creates `dir` if needed.
// Returns the shard file names.
std::vector<std::string> write_sharded(const std::string& dir, const std::vector<TensorRef>& tensors,
                                       uint64_t max_shard_bytes,
                                       const std::map<std::string, std::string>& metadata = {
                                           {"format", "pt"}});

// model.safetensors.index.json in `dir`: weight_map (tensor name -> shard file) and metadata.total_size.
void write_sharded_index(const std::string& dir, const std::map<std::string, std::string>& weight_map,
                         uint64_t total_size);

// A JSON file of a checkpoint (config.json, hf_quant_config.json): parsed strictly (duplicate keys and
// nesting deeper than 64 levels rejected); errors name the file. Written indented, atomically.
nlohmann::json read_json_file(const std::string& path);
void write_json_file(const std::string& path, const nlohmann::json& j);

namespace detail {
// Parses JSON text, rejecting duplicate object keys and nesting deeper than max_depth; errors are
// prefixed with `what` (e.g. "safetensors file 'x'"). Shared by the file and index readers.
nlohmann::json parse_json_strict(std::string_view text, const std::string& what, int max_depth);
// Writes the concatenation of `chunks` to path + ".tmp", fsyncs it and renames it over `path`;
// the temporary is removed on failure. Errors name the path and the errno text.
void write_file_atomic(const std::string& path, const std::vector<std::span<const uint8_t>>& chunks);
}  // namespace detail

}  // namespace mxmoe
