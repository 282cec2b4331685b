// libFuzzer target: arbitrary bytes -> SafetensorsFile::from_memory. The only acceptable failure
// is mxmoe::Error; anything else (crash, sanitizer report, other exception) is a bug.
// Seeds: scripts/fuzz_seeds.sh DIR. Run: fuzz_safetensors -max_total_time=60 DIR
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "mxmoe/error.hpp"
#include "mxmoe/safetensors.hpp"

// The library archive is built without -fsanitize=fuzzer/address (CMake adds those to the fuzz
// executables only), so the parser is compiled into this target directly: libFuzzer then gets
// coverage feedback from it and ASan/UBSan check it. Its symbols, defined here, keep the linker
// from pulling the uninstrumented copy out of libmxmoe_core.a.
#include "../src/io/safetensors.cpp"  // NOLINT(bugprone-suspicious-include)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const mxmoe::SafetensorsFile f =
        mxmoe::SafetensorsFile::from_memory(std::vector<uint8_t>(data, data + size), "fuzz");
    // Touch every byte of every tensor and cross-check the lookup paths.
    uint64_t sum = 0, total = 0;
    for (const mxmoe::TensorInfo& t : f.tensors()) {
      const auto b = f.bytes(t.name);
      if (b.size() != t.end - t.begin || &f.info(t.name) != &t) std::abort();
      if (uint64_t(t.numel()) * uint64_t(mxmoe::dtype_size(t.dtype)) != b.size()) std::abort();
      for (uint8_t v : b) sum += v;
      total += b.size();
      if (b.size() <= 4096) {
        const mxmoe::Tensor copy = f.load(t.name);
        if (copy.data.size() != b.size()) std::abort();
      }
    }
    if (8 + f.header_size() + total != size) std::abort();  // tensors tile the data section exactly
    for (const auto& [k, v] : f.metadata()) sum += k.size() + v.size();
    // Re-serializing what was parsed must parse back to the same tensors.
    std::vector<mxmoe::TensorRef> refs;
    for (const mxmoe::TensorInfo& t : f.tensors()) refs.push_back({t.name, t.dtype, t.shape, f.bytes(t.name)});
    const auto image = mxmoe::serialize_safetensors(refs, f.metadata());
    const auto g = mxmoe::SafetensorsFile::from_memory(image, "fuzz-reserialized");
    if (g.tensors().size() != f.tensors().size()) std::abort();
    for (size_t i = 0; i < g.tensors().size(); ++i)
      if (g.tensors()[i].name != f.tensors()[i].name || g.tensors()[i].shape != f.tensors()[i].shape) std::abort();
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const mxmoe::Error&) {
    // Rejected input: expected.
  }
  return 0;
}
