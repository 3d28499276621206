#!/usr/bin/env python3
"""Writes the seed inputs of both fuzz targets into corpus/<target>/ (run.sh calls it when a corpus is empty).

Seeds are small valid files (and sharded directories in open_checkpoint's input layout, see
fuzz_targets/open_checkpoint.rs), so that the fuzzer starts from inputs that reach the deep checks."""
import json
import os
import struct
import sys

SEP = b"\n--8<--\n"
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "I16": 2, "F16": 2, "BF16": 2, "I32": 4, "F32": 4, "I64": 8, "F64": 8}


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes((i * 37 + len(name)) % 251 for i in range(n))
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def main(root):
    header = os.path.join(root, "safetensors_header")
    opened = os.path.join(root, "open_checkpoint")
    os.makedirs(header, exist_ok=True)
    os.makedirs(opened, exist_ok=True)
    singles = [
        safetensors([]),
        safetensors([("a", "F32", [2, 3])], {"format": "pt"}),
        safetensors([(f"t_{d}", d, [2, 2]) for d in SIZES]),
        safetensors([("model.layers.0.mlp.experts.gate_up_proj", "BF16", [2, 4, 3]), ("scale", "F32", []), ("empty", "U8", [0, 5])]),
        safetensors([("w", "F8_E4M3", [4, 4]), ("w_scale", "F32", [1])]),
    ]
    for i, seed in enumerate(singles):
        open(os.path.join(header, f"seed-{i}"), "wb").write(seed)
        open(os.path.join(opened, f"single-{i}"), "wb").write(b"\x00" + seed)
    shard1 = safetensors([("a", "F32", [4]), ("b", "BF16", [2, 3])])
    shard2 = safetensors([("c", "I8", [3]), ("d", "F16", [1, 2])], {"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": {"a": "1.safetensors", "b": "1.safetensors", "c": "2.safetensors", "d": "2.safetensors"}}
    open(os.path.join(opened, "sharded-0"), "wb").write(b"\x01" + json.dumps(index).encode() + SEP + shard1 + SEP + shard2)
    index1 = {"weight_map": {"a": "1.safetensors", "b": "1.safetensors"}}
    open(os.path.join(opened, "sharded-1"), "wb").write(b"\x01" + json.dumps(index1).encode() + SEP + shard1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus"))
