"""Compares two exported checkpoints tensor by tensor under the golden-comparison rules: same names, dtypes
and shapes; max relative difference of input scales and weight scales; fraction of identical quantized
weight bytes. Prints JSON.

    python3 compare.py OURS_DIR MODELOPT_DIR
"""
import json
import os
import sys

import torch
from safetensors import safe_open


def tensors(directory):
    files = [f for f in os.listdir(directory) if f.endswith(".safetensors")]
    out = {}
    for f in files:
        handle = safe_open(os.path.join(directory, f), framework="pt")
        for name in handle.keys():
            out[name] = (handle, name)
    return out


def main() -> None:
    ours, theirs = tensors(sys.argv[1]), tensors(sys.argv[2])
    report = {"only_ours": sorted(set(ours) - set(theirs))[:10], "only_modelopt": sorted(set(theirs) - set(ours))[:10],
              "tensors": len(theirs), "dtype_or_shape_mismatches": 0, "max_rel_input_scale": 0.0, "max_rel_weight_scale": 0.0,
              "bytes": 0, "differing_bytes": 0}
    by_kind = {}
    for name in sorted(set(ours) & set(theirs)):
        a = ours[name][0].get_tensor(name)
        b = theirs[name][0].get_tensor(name)
        if a.dtype != b.dtype or a.shape != b.shape:
            report["dtype_or_shape_mismatches"] += 1
            continue
        if a.dtype == torch.float32 and a.dim() == 0 and name.rsplit(".", 1)[-1] in ("input_scale", "weight_scale", "weight_scale_2"):
            rel = (abs(a.item() - b.item()) / abs(b.item())) if b.item() != 0 else abs(a.item())
            key = "max_rel_input_scale" if name.endswith("input_scale") else "max_rel_weight_scale"
            report[key] = max(report[key], rel)
            continue
        x = a.contiguous().view(torch.uint8).flatten()
        y = b.contiguous().view(torch.uint8).flatten()
        differing = int((x != y).sum())
        report["bytes"] += y.numel()
        report["differing_bytes"] += differing
        if differing:
            kind = name.split(".")[-2] if name.endswith(".weight") else name.split(".")[-1]
            entry = by_kind.setdefault(kind, [0, 0, name])
            entry[0] += differing
            entry[1] += y.numel()
    report["identical_fraction"] = 1 - report["differing_bytes"] / max(report["bytes"], 1)
    # Where the differing bytes are, by module kind (q_proj, gate_proj …): [differing, bytes, an example].
    report["differing_by_kind"] = by_kind
    print(json.dumps(report))


if __name__ == "__main__":
    main()
