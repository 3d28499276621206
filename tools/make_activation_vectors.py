#!/usr/bin/env python3
"""Build fixtures/vectors/activations.safetensors: the gated activations `act(gate) * up` of transformers' ACT2FN,
the oracle for crates/core/tests/activations.rs (dev tooling, not a runtime dependency).

Regenerate (from the repository root):

    python -m venv .venv-tools && .venv-tools/bin/pip install torch transformers==5.25.* safetensors \\
        && .venv-tools/bin/python tools/make_activation_vectors.py

Deterministic (fixed seed), CPU only, a second. It rewrites the one file and nothing else:

  gate, up               F32 [N]   inputs: an even grid over [-10, 10] (the tails of GELU and silu, 0, the
                                   region where tanh's approximation differs most from erf) and N(0, 3) samples
  gate.bf16, up.bf16     BF16 [N]  the same inputs rounded to bfloat16
  <name>                 F32 [N]   ACT2FN[name](gate) * up in float32
  <name>.bf16            BF16 [N]  ACT2FN[name](gate.bf16) * up.bf16 in bfloat16 (torch computes the activation in
                                   float32 and rounds it, then rounds the product)

for name in silu, gelu (exact, erf), gelu_pytorch_tanh and gelu_new (both the tanh approximation). Header metadata
`activations`: a JSON object with the names, torch's and transformers' versions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers.activations import ACT2FN

NAMES = ["silu", "gelu", "gelu_pytorch_tanh", "gelu_new"]
OUT = Path(__file__).resolve().parent.parent / "fixtures" / "vectors" / "activations.safetensors"


def main() -> None:
    torch.manual_seed(0)
    gate = torch.cat([torch.linspace(-10.0, 10.0, 401), torch.randn(623) * 3.0]).to(torch.float32)
    up = (torch.randn(gate.shape[0]) * 2.0).to(torch.float32)
    tensors = {"gate": gate, "up": up, "gate.bf16": gate.to(torch.bfloat16), "up.bf16": up.to(torch.bfloat16)}
    for name in NAMES:
        act = ACT2FN[name]
        tensors[name] = (act(gate) * up).contiguous()
        tensors[f"{name}.bf16"] = (act(tensors["gate.bf16"]) * tensors["up.bf16"]).contiguous()
    meta = {"names": NAMES, "torch": torch.__version__, "transformers": transformers.__version__}
    save_file(tensors, str(OUT), metadata={"activations": json.dumps(meta, sort_keys=True)})
    print(f"wrote {OUT} ({gate.shape[0]} values, {', '.join(NAMES)})")


if __name__ == "__main__":
    main()
