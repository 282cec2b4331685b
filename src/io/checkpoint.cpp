// Checkpoints: a single .safetensors file, an HF sharded directory (model.safetensors.index.json),
// or a directory of *.safetensors files. Plus the sharded writer.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "mxmoe/error.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";

std::string read_text_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  MXMOE_CHECK(in, "cannot open '{}' for reading: {}", p.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  MXMOE_CHECK(!in.bad(), "error reading '{}'", p.string());
  return ss.str();
}

// A shard name from an index must stay inside the checkpoint directory.
void check_shard_name(const std::string& shard, const std::string& what, const std::string& tensor) {
  const fs::path p(shard);
  bool ok = !shard.empty() && p.is_relative() && !p.has_root_name();
  for (const auto& part : p)
    if (part == "..") ok = false;
  MXMOE_CHECK(ok, "{}: tensor '{}' maps to shard '{}', which is not a relative path inside the directory", what,
              tensor, shard);
}

}  // namespace

json read_json_file(const std::string& path) {
  return detail::parse_json_strict(read_text_file(path), fmt::format("'{}'", path), 64);
}

void write_json_file(const std::string& path, const json& j) {
  const std::string text = j.dump(2) + "\n";
  detail::write_file_atomic(path, {std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size())});
}

void write_sharded_index(const std::string& dir, const std::map<std::string, std::string>& weight_map,
                         uint64_t total_size) {
  write_json_file((fs::path(dir) / kIndexName).string(),
                  {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}});
}

Checkpoint Checkpoint::open(const std::string& path_or_dir) {
  std::error_code ec;
  const fs::path root(path_or_dir);
  const fs::file_status st = fs::status(root, ec);
  MXMOE_CHECK(!ec && fs::exists(st), "checkpoint '{}': no such file or directory", path_or_dir);

  Checkpoint ck;
  if (!fs::is_directory(st)) {
    ck.files_.push_back(SafetensorsFile::open(path_or_dir));
    ck.dir_ = root.has_parent_path() ? root.parent_path().string() : std::string(".");
    for (const TensorInfo& t : ck.files_[0].tensors()) ck.where_.emplace(t.name, 0);
    return ck;
  }

  ck.dir_ = path_or_dir;
  const fs::path index_path = root / kIndexName;
  if (fs::exists(index_path, ec)) {
    const std::string what = fmt::format("checkpoint index '{}'", index_path.string());
    const json index = detail::parse_json_strict(read_text_file(index_path), what, 32);
    MXMOE_CHECK(index.is_object(), "{}: not a JSON object", what);
    MXMOE_CHECK(index.contains("weight_map"), "{}: missing 'weight_map'", what);
    const json& wm = index["weight_map"];
    MXMOE_CHECK(wm.is_object(), "{}: 'weight_map' must be an object of tensor name -> shard file, got {}", what,
                wm.type_name());
    if (index.contains("metadata"))
      MXMOE_CHECK(index["metadata"].is_object(), "{}: 'metadata' must be an object, got {}", what,
                  index["metadata"].type_name());

    // shard file -> tensors the index puts there (shards in name order, i.e. 00001, 00002, ...).
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& [tensor, shard] : wm.items()) {
      MXMOE_CHECK(shard.is_string(), "{}: weight_map['{}'] must be a shard file name, got {}", what, tensor,
                  shard.type_name());
      const std::string s = shard.get<std::string>();
      check_shard_name(s, what, tensor);
      by_shard[s].push_back(tensor);
    }
    for (const auto& [shard, listed] : by_shard) {
      const fs::path sp = root / shard;
      MXMOE_CHECK(fs::is_regular_file(sp, ec), "{}: shard '{}' (holding tensor '{}') does not exist", what,
                  sp.string(), listed.front());
      SafetensorsFile f = SafetensorsFile::open(sp.string());
      const std::set<std::string> want(listed.begin(), listed.end());
      for (const std::string& t : listed)
        MXMOE_CHECK(f.contains(t), "{}: tensor '{}' is mapped to shard '{}' but that shard does not contain it",
                    what, t, sp.string());
      for (const TensorInfo& t : f.tensors())
        MXMOE_CHECK(want.count(t.name), "{}: shard '{}' holds tensor '{}' which the weight_map does not map to it",
                    what, sp.string(), t.name);
      const size_t idx = ck.files_.size();
      for (const std::string& t : listed) ck.where_.emplace(t, idx);
      ck.files_.push_back(std::move(f));
    }
    return ck;
  }

  std::vector<fs::path> found;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.path().extension() == ".safetensors" && e.is_regular_file()) found.push_back(e.path());
  MXMOE_CHECK(!ec, "checkpoint '{}': cannot list directory: {}", path_or_dir, ec.message());
  MXMOE_CHECK(!found.empty(), "checkpoint '{}': directory holds neither {} nor any *.safetensors file",
              path_or_dir, kIndexName);
  std::sort(found.begin(), found.end());
  for (const fs::path& p : found) {
    SafetensorsFile f = SafetensorsFile::open(p.string());
    const size_t idx = ck.files_.size();
    for (const TensorInfo& t : f.tensors()) {
      auto [it, inserted] = ck.where_.emplace(t.name, idx);
      MXMOE_CHECK(inserted, "checkpoint '{}': tensor '{}' appears in both '{}' and '{}'", path_or_dir, t.name,
                  ck.files_[it->second].path(), p.string());
    }
    ck.files_.push_back(std::move(f));
  }
  return ck;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, idx] : where_) out.push_back(name);
  return out;
}

const SafetensorsFile& Checkpoint::file_for(const std::string& name) const {
  auto it = where_.find(name);
  MXMOE_CHECK(it != where_.end(), "checkpoint '{}': no tensor named '{}' ({} tensors in {} file(s))", dir_, name,
              where_.size(), files_.size());
  return files_[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const { return file_for(name).info(name); }
std::span<const uint8_t> Checkpoint::bytes(const std::string& name) const { return file_for(name).bytes(name); }
Tensor Checkpoint::load(const std::string& name) const { return file_for(name).load(name); }
const std::string& Checkpoint::file_of(const std::string& name) const { return file_for(name).path(); }

std::vector<std::string> write_sharded(const std::string& dir, const std::vector<TensorRef>& tensors,
                                       uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  MXMOE_CHECK(max_shard_bytes > 0, "write_sharded '{}': max_shard_bytes must be positive", dir);
  std::set<std::string> seen;
  for (const TensorRef& t : tensors)
    MXMOE_CHECK(seen.insert(t.name).second, "write_sharded '{}': duplicate tensor name '{}'", dir, t.name);

  // Greedy, order-preserving split; a tensor larger than the limit gets a shard of its own.
  std::vector<std::vector<TensorRef>> shards(1);
  uint64_t cur = 0, total = 0;
  for (const TensorRef& t : tensors) {
    const uint64_t n = t.data.size();
    if (!shards.back().empty() && cur + n > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(t);
    cur += n;
    total += n;
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  MXMOE_CHECK(!ec, "write_sharded: cannot create directory '{}': {}", dir, ec.message());

  const size_t count = shards.size();
  std::vector<std::string> names;
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < count; ++i) {
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, count);
    write_safetensors((fs::path(dir) / file).string(), shards[i], metadata);
    for (const TensorRef& t : shards[i]) weight_map[t.name] = file;
    names.push_back(file);
  }
  write_sharded_index(dir, weight_map, total);
  return names;
}

}  // namespace mxmoe
