"""Writes the synthetic checkpoint of the race on the GPU machine: the tensors listed by prepare.mjs
(tensors.json, hub names) with seeded random bf16 weights (normal, std 0.02; norms 1), sharded at
5 GB with an index, plus config.json; and the calibration ids both tools use.

    python3 make_checkpoint.py PLANS_DIR OUT_DIR SAMPLES SEQ_LEN

The weights are drawn on the GPU when there is one (the race's checkpoints), else on the CPU (other values, the
same distribution).
"""
import json
import os
import sys
import time

import torch
from safetensors.torch import save_file


def main() -> None:
    plans, out, samples, seq_len = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(out, exist_ok=True)
    tensors = json.load(open(os.path.join(plans, "tensors.json")))
    config = json.load(open(os.path.join(plans, "config.json")))
    started = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(1234)
    shard, shard_bytes, shards, weight_map = {}, 0, [], {}

    def flush() -> None:
        nonlocal shard, shard_bytes
        if shard:
            name = f"shard-{len(shards)}"
            save_file(shard, os.path.join(out, name), metadata={"format": "pt"})
            shards.append((name, list(shard)))
            shard, shard_bytes = {}, 0

    for name, shape in tensors:
        if name.endswith("norm.weight"):
            value = torch.ones(shape, dtype=torch.bfloat16)
        else:
            value = (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()
        size = value.numel() * 2
        if shard_bytes + size > 5_000_000_000:
            flush()
        shard[name] = value
        shard_bytes += size
    flush()
    total = 0
    for k, (tmp, names) in enumerate(shards):
        final = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        os.rename(os.path.join(out, tmp), os.path.join(out, final))
        for n in names:
            weight_map[n] = final
    total = sum(torch.tensor(s).prod().item() * 2 for _, s in tensors)
    json.dump({"metadata": {"total_size": int(total)}, "weight_map": weight_map}, open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=2)
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    ids = torch.randint(0, config["vocab_size"], (samples, seq_len), generator=torch.Generator().manual_seed(42))
    json.dump(ids.tolist(), open(os.path.join(out, "calib_ids.json"), "w"))
    print(json.dumps({"checkpoint_bytes": int(total), "shards": len(shards), "seconds": time.time() - started}))


if __name__ == "__main__":
    main()
