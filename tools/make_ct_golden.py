#!/usr/bin/env python3
"""Make an llm-compressor reference export in compressed-tensors format.

The compressed-tensors export test compares moe-quant's own output, byte for
byte, against what llm-compressor (LC) writes for the same tiny checkpoint and
the same calibration tokens. This script produces that reference: it loads a
fixture checkpoint the way an LC user would (its own dtype, on CPU), runs LC's
`oneshot` with a single `QuantizationModifier` for one preset scheme, and saves
the result with `save_pretrained(..., save_compressed=True)`.

It follows LC's own recipe for Qwen3-MoE (examples/quantization_w4a4_fp4/
qwen_30b_a3b.py):

* the model is loaded inside `llmcompressor.utils.load_context()`, so fused
  transformers-5 experts (`gate_up_proj` [E, 2I, H], `down_proj` [E, H, I]) are
  linearized into per-expert `gate_proj` / `up_proj` / `down_proj` nn.Linear
  modules, which is what the `Linear` target then quantizes;
* `moe_calibrate_all_experts=True` (LC's default, set explicitly here): during
  calibration every expert runs on every token, so expert input observers see
  all tokens, not only the routed ones; the routed mixture is unchanged;
* the router (`mlp.gate`) and `lm_head` are left unquantized.

Calibration data is the `input_ids` tensor of --ids ([rows, seq_len] int64):
one sample per row, an all-ones attention mask, no shuffling, no padding,
num_calibration_samples = rows and max_seq_length = seq_len. Schemes that need
no calibration data (weight-only or dynamic activations: FP8_DYNAMIC,
FP8_BLOCK, NVFP4A16) are given the same dataset, but LC picks its data-free
pipeline for them and never runs a forward pass; the export is byte-identical
to one made without a dataset.

What LC's calibration does (0.14.0.1, checked on the tiny fixtures): observers
see bf16 activations of an unquantized forward (errors of already-calibrated
layers are not propagated) with attention forced to "eager". With LC's
default sequential pipeline the traced Qwen3-MoE graph gets no attention mask
at run time, so its calibration attention is bidirectional (not causal); the
dense Qwen3 graph keeps its causal mask. `--pipeline basic` runs the plain
model forward instead (causal), and changes only the input_* scales.

`--kv-cache` adds LC's FP8 KV-cache recipe (examples/quantization_kv_cache):
`kv_cache_scheme` = 8-bit float, per-tensor, static, symmetric. Each
`self_attn` gets a key and a value observer ("minmax": a running average,
weight 0.01 per batch, of min and max, kept in bf16) on the post-k_norm,
post-RoPE keys and the values passed to the KV cache, [1, kv_heads, seq,
head_dim] per row; `k_scale` = max(|min|, max) / 448 in bf16, saved as
`model.layers.N.self_attn.{k,v}_scale`, bf16 [1]. Nothing else in the
checkpoint changes; config.json gains `quantization_config.kv_cache_scheme`.

Needs llmcompressor (tested with 0.14.0.1 / compressed-tensors 0.19.0 /
transformers 5.17 / torch 2.14, CPU only).

Example:
    python tools/make_ct_golden.py --fixture fixtures/qwen3_moe/hub \\
        --ids fixtures/golden/calib_ids.safetensors --scheme NVFP4 --out OUT_DIR
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys

SCHEMES = ["FP8", "FP8_DYNAMIC", "FP8_BLOCK", "NVFP4", "NVFP4A16"]
IGNORE = ["lm_head", "re:.*mlp.gate$"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixture", required=True, help="HF checkpoint directory")
    p.add_argument("--ids", required=True,
                   help="safetensors file with an int64 [rows, seq_len] tensor "
                        "(named input_ids, or its only tensor)")
    p.add_argument("--scheme", required=True, choices=SCHEMES,
                   help="compressed-tensors preset scheme name")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-calibrate-all-experts", action="store_true",
                   help="only routed tokens reach each expert during calibration")
    p.add_argument("--pipeline", default=None,
                   choices=["sequential", "basic", "datafree", "independent"],
                   help="LC calibration pipeline (default: LC's own choice)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--log-observer-dtypes", action="store_true",
                   help="print the dtypes of the tensors LC's observers saw")
    p.add_argument("--kv-cache", action="store_true",
                   help="also quantize the KV cache: FP8 (E4M3) per-tensor static "
                        "k_scale / v_scale per attention layer (LC's "
                        "examples/quantization_kv_cache recipe)")
    return p.parse_args(argv)


def load_calibration_ids(path):
    from safetensors.torch import load_file

    tensors = load_file(path)
    if "input_ids" in tensors:
        ids = tensors["input_ids"]
    elif len(tensors) == 1:
        ids = next(iter(tensors.values()))
    else:
        raise SystemExit(f"{path}: expected an 'input_ids' tensor, got {list(tensors)}")
    if ids.ndim != 2:
        raise SystemExit(f"{path}: expected [rows, seq_len], got {tuple(ids.shape)}")
    return ids.long()


def make_dataset(ids):
    from datasets import Dataset

    rows = ids.tolist()
    return Dataset.from_dict({
        "input_ids": rows,
        "attention_mask": [[1] * len(r) for r in rows],
    })


@contextlib.contextmanager
def record_observer_dtypes(counter):
    """Count (observer base_name, dtype of the observed tensor) pairs."""
    from llmcompressor.observers.base import Observer

    original = Observer.forward

    def forward(self, observed, *args, **kwargs):
        counter[(self.base_name, str(observed.dtype))] += 1
        return original(self, observed, *args, **kwargs)

    Observer.forward = forward
    try:
        yield
    finally:
        Observer.forward = original


def main(argv=None):
    args = parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.utils import load_context

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ids = load_calibration_ids(args.ids)
    num_rows, seq_len = ids.shape
    dataset = make_dataset(ids)

    # Load as a user would: the checkpoint's own dtype ("auto"), on CPU, with
    # LC's loading context (linearizes fused MoE experts; no-op for dense).
    with load_context():
        model = AutoModelForCausalLM.from_pretrained(args.fixture, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(args.fixture)
    param_dtypes = sorted({str(p.dtype) for p in model.parameters()})
    print(f"[make_ct_golden] model {type(model).__name__} params {param_dtypes}, "
          f"calibration {num_rows} x {seq_len} tokens, scheme {args.scheme}"
          f"{' + FP8 KV cache' if args.kv_cache else ''}")

    kv_cache_scheme = None
    if args.kv_cache:
        # Exactly LC's examples/quantization_kv_cache recipe. LC observes the
        # post-k_norm, post-RoPE keys and the values each attention layer hands
        # to its cache (default "minmax" observer, per-tensor) and saves
        # `*.self_attn.k_scale` / `*.self_attn.v_scale` in the model dtype.
        from compressed_tensors.quantization import QuantizationArgs

        kv_cache_scheme = QuantizationArgs(
            num_bits=8, type="float", strategy="tensor", dynamic=False,
            symmetric=True)
    recipe = QuantizationModifier(targets="Linear", scheme=args.scheme, ignore=IGNORE,
                                  kv_cache_scheme=kv_cache_scheme)

    seen = collections.Counter()
    recorder = (record_observer_dtypes(seen) if args.log_observer_dtypes
                else contextlib.nullcontext())
    with recorder:
        oneshot(
            model=model,
            recipe=recipe,
            dataset=dataset,
            num_calibration_samples=num_rows,
            max_seq_length=seq_len,
            shuffle_calibration_samples=False,
            batch_size=1,
            moe_calibrate_all_experts=not args.no_calibrate_all_experts,
            **({"pipeline": args.pipeline} if args.pipeline else {}),
        )
    if args.log_observer_dtypes:
        print("[make_ct_golden] observer calls (base_name, dtype): "
              + json.dumps({f"{k[0]}:{k[1]}": v for k, v in sorted(seen.items())}))

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)
    print(f"[make_ct_golden] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
