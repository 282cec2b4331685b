#!/usr/bin/env bash
# Writes a small seed corpus for fuzz/fuzz_safetensors into DIR (default: /tmp/fuzz-safetensors-seeds).
set -euo pipefail
dir=${1:-/tmp/fuzz-safetensors-seeds}
mkdir -p "$dir"
python3 - "$dir" <<'PY'
import json, struct, sys, os
d = sys.argv[1]
def image(header, data=b"", pad=True):
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data
DTYPES = [("BOOL", 1), ("U8", 1), ("I8", 1), ("I16", 2), ("I32", 4), ("I64", 8), ("F16", 2), ("BF16", 2),
          ("F32", 4), ("F64", 8), ("F8_E4M3", 1), ("F8_E5M2", 1), ("F8_E8M0", 1)]
def all_dtypes():
    header, off = {}, 0
    for name, size in DTYPES:
        header[name] = {"dtype": name, "shape": [2], "data_offsets": [off, off + 2 * size]}
        off += 2 * size
    return image(header, bytes(range(off)))
seeds = {
    "empty_obj": image({}),
    "meta_only": image({"__metadata__": {"format": "pt"}}),
    "one_f32": image({"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(range(16))),
    "scalar_bf16": image({"s": {"dtype": "BF16", "shape": [], "data_offsets": [0, 2]}}, b"\x80\x3f"),
    "empty_tensor": image({"e": {"dtype": "I64", "shape": [0, 3], "data_offsets": [0, 0]}, "b": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}}, b"\x00\x01\x00"),
    "all_dtypes": all_dtypes(),
    "two_tensors": image({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}, "b": {"dtype": "I16", "shape": [1, 2], "data_offsets": [4, 8]}}, bytes(8)),
    "dup_key": image(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\x00"),
    "hole": image({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"\x00\x00"),
    "short": b"\x10\x00\x00",
}
for name, data in seeds.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {d}")
PY
