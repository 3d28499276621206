#!/usr/bin/env python3
"""Build tiny dense (no experts) decoder checkpoints with reference outputs under fixtures/dense/ (dev tooling, not
a runtime dependency): the calibration forward runs dense Llama, Qwen3 and Mistral through the blocks the MoE
families use, and these are its oracle.

Regenerate (from the repository root; CPU only, a few seconds, deterministic):

    python -m venv .venv-tools && .venv-tools/bin/pip install torch transformers==5.25.* tokenizers safetensors \
        && .venv-tools/bin/python tools/make_dense_fixtures.py

It rewrites fixtures/dense/ and nothing else. Every directory holds what tools/make_fixtures.py writes for a
fixture (config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
reference.safetensors with `input_ids` int64 [2, 12], the f32 `logits` [2, 12, 256] of transformers in float32
with eager attention, and `amax.<nn.Linear name>` the maximum |input| of every linear), and MANIFEST.json lists
them (model type, layers, intermediate size, what each one exercises).

Shapes are make_fixtures.py's: hidden 64, 4 heads, 2 KV heads, head_dim 16, vocabulary 256, 3 layers, dense
intermediate 80, bf16 weights. Norm weights (1 at init) and attention biases (0 at init) are given small random
values with a fixed seed, so that a forward ignoring them fails. What each family exercises:
  * llama: q/k/v/o biases (attention_bias), llama3 rope scaling;
  * qwen3: per-head q/k RMSNorms before the rope, head_dim set apart from hidden / heads;
  * mistral: a sliding window of 8 tokens on every layer (shorter than the 12 reference tokens).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import make_fixtures as mf  # noqa: E402

DENSE = mf.FIXTURES / "dense"
SEED = 4242
FAMILIES = [
    ("llama", dict(attention_bias=True, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 64})),
    ("qwen3", dict(head_dim=16)),
    ("mistral", dict(sliding_window=8)),
]


def build(model_type: str, extra: dict, eos_id: int) -> torch.nn.Module:
    kwargs = mf.common(eos_id)
    kwargs.update(num_hidden_layers=3, intermediate_size=mf.I_DENSE, head_dim=mf.HEAD_DIM)
    kwargs.update(extra)
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + torch.randn(param.shape, generator=g) * 0.1)
            elif name.endswith(".bias"):
                param.copy_(torch.randn(param.shape, generator=g) * 0.02)
    return model.to(torch.bfloat16)


def reference(directory: Path, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits and linear-input maxima of the saved checkpoint, loaded in float32."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()
    amax: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args):
            value = args[0].detach().abs().amax().float()
            amax[name] = torch.maximum(amax[name], value) if name in amax else value

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float().contiguous()
    for h in handles:
        h.remove()
    out = {"input_ids": input_ids.clone(), "logits": logits}
    out.update({f"amax.{name}": value.reshape(()) for name, value in sorted(amax.items())})
    return out


def main() -> int:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if DENSE.exists():
        shutil.rmtree(DENSE)
    tokenizer_json, eos_id = mf.build_tokenizer()
    input_ids = mf.make_input_ids()
    manifest = []
    for model_type, extra in FAMILIES:
        model = build(model_type, extra, eos_id)
        directory = DENSE / model_type
        model.save_pretrained(directory)
        mf.clean_dir(directory)
        (directory / "tokenizer.json").write_text(tokenizer_json)
        (directory / "tokenizer_config.json").write_text(json.dumps(mf.TOKENIZER_CONFIG, indent=2) + "\n")
        save_file(reference(directory, input_ids), str(directory / "reference.safetensors"))
        (directory / "reference.safetensors").chmod(0o644)
        manifest.append({
            "path": f"dense/{model_type}",
            "model_type": model_type,
            "num_layers": model.config.num_hidden_layers,
            "hidden": model.config.hidden_size,
            "intermediate": model.config.intermediate_size,
            "exercises": sorted(extra),
        })
        print(f"{model_type}: {directory.relative_to(mf.ROOT)}")
    info = {"generator": "tools/make_dense_fixtures.py", "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0], "fixtures": manifest}
    (DENSE / "MANIFEST.json").write_text(json.dumps(info, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
