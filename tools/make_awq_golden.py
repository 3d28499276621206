#!/usr/bin/env python3
"""Build the AWQ goldens under fixtures/golden/awq_<case>/ with NVIDIA ModelOpt (dev tooling, not a runtime
dependency).

ModelOpt's AWQ formats (INT4_AWQ_CFG → quant_algo W4A16_AWQ, W4A8_AWQ_BETA_CFG → W4A8_AWQ, NVFP4_AWQ_LITE_CFG →
NVFP4_AWQ): the INT4 ones pack blocks of 128 along the input dimension and refuse any linear whose input dimension is
not a multiple of 128, so the fixtures of fixtures/ (hidden 64) cannot be exported; this script makes its own source
checkpoints. On a machine without CUDA, NVFP4_AWQ's search runs on a CPU stand-in for ModelOpt's GPU-only kernel
(emulate_nvfp4_search_on_cpu).

Regenerate (from the repository root; CPU only, a few seconds, deterministic on one machine):

    python -m venv .venv-tools && .venv-tools/bin/pip install torch transformers==5.17.* nvidia-modelopt==0.47.0 \
        safetensors && .venv-tools/bin/python tools/make_awq_golden.py

What it writes, per case (CASES):
fixtures/golden/awq_<case>/source/
    A tiny random bf16 checkpoint (seed 1234; every input dimension a multiple of 128, see CASES).
    For the MoE case, ModelOpt runs on per-expert modules (see MOE_FORMATS), INT4 only.
fixtures/golden/awq_<case>/<int4_awq|w4a8_awq|nvfp4_awq>/
    model.safetensors, config.json, hf_quant_config.json: what export_hf_checkpoint wrote.
    awq.json: per linear, the statistics ModelOpt's search kept (`algorithm: {method: awq_lite, debug: true}`):
        "act_scale" (the mean over forward calls of each call's per-channel mean |x|, f32), "weight_scale" (the
        per-channel mean over rows of |w| / block max), "loss" (per alpha, summed over calls), "best_alpha",
        "best_scale" (the smoothing s of the best alpha, f32), and for W4A8 and NVFP4_AWQ "channel_amax" (the
        per-channel max |x| the input quantizer recorded, from which its input scale is made after smoothing).

Calibration is the user flow in bf16: the model loaded in bf16, ONE forward on fixtures/golden/calib_ids.safetensors
([4, 32]), export in bf16. ModelOpt's search depends on bf16 GEMMs whose roundings change with the CPU's instruction
set, so its losses (and on close calls its best alpha) are only reproducible on a like machine; everything AWQ
derives from act_scale and best_alpha is exact arithmetic, which is what moe-quant's tests compare byte for byte.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "fixtures" / "golden"
FORMATS = {"int4_awq": "INT4_AWQ_CFG", "w4a8_awq": "W4A8_AWQ_BETA_CFG", "nvfp4_awq": "NVFP4_AWQ_LITE_CFG"}
CASES = {
    # Dense Qwen3: q 4×64, k/v 2×64 (GQA), MLP 384; two layers.
    "qwen3": dict(kind="qwen3", hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    # The same without GQA (as many key/value heads as query heads): NVFP4_AWQ folds o_proj's smoothing into v_proj.
    "qwen3_mha": dict(kind="qwen3", hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, head_dim=64),
    # Qwen2-MoE: 8 experts of 128 (top 2) and a sigmoid-gated shared expert of 256; q/k/v biases; one layer.
    "qwen2_moe": dict(kind="qwen2_moe", hidden_size=256, intermediate_size=384, moe_intermediate_size=128,
                      shared_expert_intermediate_size=256, num_experts=8, num_experts_per_tok=2, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2),
    # Qwen3-MoE: 8 experts of 128 (top 2); two layers.
    "qwen3_moe": dict(kind="qwen3_moe", hidden_size=256, intermediate_size=384, moe_intermediate_size=128,
                      num_experts=8, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=64),
}
# ModelOpt 0.47 runs AWQ on linears only. transformers 5 holds routed experts fused (3-D parameters), which it does not
# search and cannot export in these formats (its export fails), so the MoE case runs it on the experts as transformers
# 4 held them, one MLP module per expert (sequential_experts below): each expert's projections are searched alone, on
# the tokens routed to it, and the export averages each projection's pre_quant_scale over the experts. W4A8_AWQ does not
# export with per-expert modules either (its FP8 weight stage rejects the per-expert amax), so the MoE case is INT4 only.
MOE_FORMATS = ["int4_awq", "nvfp4_awq"]
# The case without GQA exists for NVFP4_AWQ's o_proj → v_proj fold.
CASE_FORMATS = {"qwen3_mha": ["nvfp4_awq"]}


def make_source(case: str, spec: dict, dst: Path) -> None:
    import transformers

    torch.manual_seed(1234)
    spec = dict(spec)
    kind = spec.pop("kind")
    configs = {"qwen3": transformers.Qwen3Config, "qwen3_moe": transformers.Qwen3MoeConfig,
               "qwen2_moe": transformers.Qwen2MoeConfig}
    config = configs[kind](
        vocab_size=256, max_position_embeddings=256, tie_word_embeddings=False, dtype="bfloat16",
        bos_token_id=0, eos_token_id=0, pad_token_id=None, **spec)
    models = {"qwen3": transformers.Qwen3ForCausalLM, "qwen3_moe": transformers.Qwen3MoeForCausalLM,
              "qwen2_moe": transformers.Qwen2MoeForCausalLM}
    model = models[kind](config)
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_((torch.randn(p.shape) * 0.02).to(p.dtype))
            elif "norm" in name:
                p.copy_((1 + 0.1 * torch.randn(p.shape)).to(p.dtype))
    if dst.exists():
        shutil.rmtree(dst)
    model.save_pretrained(dst)
    (dst / "generation_config.json").unlink(missing_ok=True)


SEQUENTIAL_BLOCKS: dict = {}


def sequential_experts(model) -> None:
    """Replaces each fused MoE block by one holding an MLP module per expert, with the same router, shared expert
    (Qwen2-MoE's, gated by a sigmoid) and weights. The block's input is flattened first, as transformers does."""
    import torch.nn as nn
    import torch.nn.functional as F
    import transformers.models.qwen2_moe.modeling_qwen2_moe as qwen2_moe
    import transformers.models.qwen3_moe.modeling_qwen3_moe as qwen3_moe

    kind = model.config.model_type
    mlp = qwen2_moe.Qwen2MoeMLP if kind == "qwen2_moe" else qwen3_moe.Qwen3MoeMLP
    if kind in SEQUENTIAL_BLOCKS:
        block = SEQUENTIAL_BLOCKS[kind]
        for layer in model.model.layers:
            layer.mlp = block(model.config, layer.mlp).to(torch.bfloat16)
        return

    # ModelOpt's export knows a MoE block by its class name (ending in SparseMoeBlock, naming the family); it
    # registers one quantized class per name, so each model type's block class is made once.
    class SequentialMoeSparseMoeBlock(nn.Module):
        def __init__(self, config, fused):
            super().__init__()
            self.gate = fused.gate
            self.shared_expert = getattr(fused, "shared_expert", None)
            self.shared_expert_gate = getattr(fused, "shared_expert_gate", None)
            count, inter = config.num_experts, config.moe_intermediate_size
            self.experts = nn.ModuleList([mlp(config, intermediate_size=inter) for _ in range(count)])
            with torch.no_grad():
                for e, expert in enumerate(self.experts):
                    expert.gate_proj.weight.copy_(fused.experts.gate_up_proj[e, :inter])
                    expert.up_proj.weight.copy_(fused.experts.gate_up_proj[e, inter:])
                    expert.down_proj.weight.copy_(fused.experts.down_proj[e])
            self.count = count

        def forward(self, hidden_states):
            batch, seq, hidden = hidden_states.shape
            flat = hidden_states.view(-1, hidden)
            _, weights, chosen = self.gate(flat)
            out = torch.zeros_like(flat)
            mask = F.one_hot(chosen, num_classes=self.count).permute(2, 1, 0)
            for e in range(self.count):
                slot, token = torch.where(mask[e])
                y = self.experts[e](flat[token]) * weights[token, slot, None]
                out.index_add_(0, token, y.to(flat.dtype))
            if self.shared_expert is not None:
                out = out + F.sigmoid(self.shared_expert_gate(flat)) * self.shared_expert(flat)
            return out.reshape(batch, seq, hidden)

    # Its expert linears' names (gate/up/down, or w1/w3/w2) are read from the family in that name too.
    name = {"qwen2_moe": "SequentialQwen2MoeSparseMoeBlock", "qwen3_moe": "SequentialQwen3MoeSparseMoeBlock"}[kind]
    SequentialMoeSparseMoeBlock.__name__ = SequentialMoeSparseMoeBlock.__qualname__ = name
    SEQUENTIAL_BLOCKS[kind] = SequentialMoeSparseMoeBlock
    for layer in model.model.layers:
        layer.mlp = SequentialMoeSparseMoeBlock(model.config, layer.mlp).to(torch.bfloat16)


def emulate_nvfp4_search_on_cpu() -> None:
    """ModelOpt 0.47 fake-quantizes NVFP4 during its AWQ search with a triton kernel (GPU only: on the CPU it stops
    with "amax must be a CUDA tensor for dynamic block quantization"). This stands in for it on the CPU, as that kernel
    computes: a global scale amax / (6·448), per block of 16 the scale min(block max / (6·global), 448) rounded to E4M3
    times the global scale (1 where under 1e-5), and each |x| / scale rounded to E2M1 (ties at .25, 1.25, 2.5 and 5
    down, at .75, 1.75 and 3.5 up). Only the search's choice of alpha depends on it: the exported tensors follow from
    the statistics awq.json keeps, by ModelOpt's own export."""
    import modelopt.torch.quantization.nn.modules.tensor_quantizer as tensor_quantizer

    original = tensor_quantizer.dynamic_block_quant

    def fake_nvfp4(x, global_amax, block):
        shape, dtype = x.shape, x.dtype
        t = x.reshape(-1, shape[-1]).float()
        t = t.view(t.shape[0], t.shape[1] // block, block)
        scale_2 = global_amax.float().amax() / (6.0 * 448.0)
        scale_2 = torch.where(scale_2 > 0, scale_2, torch.tensor(1e-12))
        block_max = t.abs().amax(-1, keepdim=True)
        scale = torch.minimum(block_max / (6.0 * scale_2), torch.tensor(448.0)).to(torch.float8_e4m3fn).float() * scale_2
        scale = torch.where(scale >= 1e-5, scale, torch.ones_like(scale))
        a = t.abs() / scale
        steps = [(0.25, True, 0.0), (0.75, False, 0.5), (1.25, True, 1.0), (1.75, False, 1.5), (2.5, True, 2.0),
                 (3.5, False, 3.0), (5.0, True, 4.0)]
        q = torch.full_like(a, 6.0)
        for bound, inclusive, value in reversed(steps):
            q = torch.where(a <= bound if inclusive else a < bound, value, q)
        y = torch.where(t >= 0, q * scale, -q * scale)
        return y.view(shape).to(dtype)

    def dynamic_block_quant(inputs, block_size, amax, bias, num_bits, scale_bits, *args, **kwargs):
        if num_bits == (2, 1) and scale_bits == (4, 3) and not inputs.is_cuda:
            return fake_nvfp4(inputs, amax, block_size)
        return original(inputs, block_size, amax, bias, num_bits, scale_bits, *args, **kwargs)

    tensor_quantizer.dynamic_block_quant = dynamic_block_quant


def floats(t: torch.Tensor) -> list[float]:
    return [float(x) for x in t.detach().float().flatten()]


def run(source: Path, fmt: str, ids: torch.Tensor, out: Path) -> None:
    import modelopt
    import modelopt.torch.quantization as mtq
    import transformers
    from modelopt.torch.export import export_hf_checkpoint

    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).eval()
    if getattr(model.config, "num_experts", None):
        sequential_experts(model)
    cfg = dict(getattr(mtq, FORMATS[fmt]))
    algorithm = cfg["algorithm"]
    algorithm = {"method": algorithm} if isinstance(algorithm, str) else dict(algorithm)
    cfg["algorithm"] = {**algorithm, "debug": True}

    def forward_loop(m):
        with torch.no_grad():
            m(input_ids=ids, use_cache=False)

    model = mtq.quantize(model, cfg, forward_loop)
    stats = {}
    for name, module in model.named_modules():
        helper = getattr(module, "awq_lite", None)
        if helper is None:
            continue
        entry = {
            "enabled": bool(helper.is_enabled),
            "act_scale": floats(helper.act_scale) if torch.is_tensor(helper.act_scale) else None,
            "weight_scale": floats(helper.weight_scale),
            "best_scale": None if helper.best_scale is None else floats(helper.best_scale),
            "loss": {f"{k:.1f}": float(v) for k, v in helper.loss.items()},
            "best_alpha": None if helper.best_alpha is None else float(helper.best_alpha),
            "calls": int(helper.num_cache_steps),
        }
        smoothing = getattr(module.input_quantizer, "_amax_for_smoothing", None)
        if smoothing is not None:
            entry["channel_amax"] = floats(smoothing)
        stats[name] = entry
    if out.exists():
        shutil.rmtree(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_hf_checkpoint(model, dtype=torch.bfloat16, export_dir=out)
    (out / "generation_config.json").unlink(missing_ok=True)
    record = {
        "format": FORMATS[fmt],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "modelopt": modelopt.__version__},
        "calibration": "one bf16 forward of fixtures/golden/calib_ids.safetensors [4, 32]",
        "modules": stats,
    }
    (out / "awq.json").write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    if not torch.cuda.is_available():
        emulate_nvfp4_search_on_cpu()
    ids = load_file(GOLDEN / "calib_ids.safetensors")["input_ids"]
    for case, spec in CASES.items():
        root = GOLDEN / f"awq_{case}"
        make_source(case, spec, root / "source")
        for fmt in CASE_FORMATS.get(case) or (MOE_FORMATS if "num_experts" in spec else FORMATS):
            run(root / "source", fmt, ids, root / fmt)
            print(f"awq_{case}/{fmt}: written")


if __name__ == "__main__":
    main()
