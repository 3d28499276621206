#!/usr/bin/env python3
"""Build the golden NVIDIA ModelOpt exports under fixtures/golden/ (dev tooling, not a runtime dependency).

Our quantizer must write what ModelOpt's `export_hf_checkpoint` writes. This script runs ModelOpt itself on the
tiny fixtures (fixtures/<model_type>/<layout>/, written by tools/make_fixtures.py) and keeps its output as the oracle.

Regenerate (from the repository root; CPU only, about a minute, deterministic):

    python -m venv .venv-tools && .venv-tools/bin/pip install torch transformers==5.17.* nvidia-modelopt==0.47.0 \
        safetensors numpy && .venv-tools/bin/python tools/make_golden.py

Versions used for the committed files: torch 2.15, transformers 5.17.0, nvidia-modelopt 0.47.0 (recorded in every
amax.json). The script deletes and rewrites fixtures/golden/.

What it writes
--------------
fixtures/golden/calib_ids.safetensors
    `input_ids` int64 [4, 32], torch.Generator seeded with CALIB_SEED, values in [0, 256). Calibration is ONE forward
    of the model on this batch: 4 sequences of 32 tokens, no padding, no attention mask (causal only), no KV cache.

fixtures/golden/<model_type>_<layout>/<fp8|nvfp4>/     for each CASES x FORMATS entry
    model.safetensors (+ model.safetensors.index.json if ModelOpt shards), config.json, hf_quant_config.json:
        exactly the files export_hf_checkpoint wrote, minus generation_config.json (tokenizer files are not written
        by the export in the first place).
    amax.json: what the calibration recorded, read right after mtq.quantize and before the export touches anything:
        "quantizers": every TensorQuantizer of the model by module name: enabled flag and amax (float, exact f32
            value; null when none was recorded). transformers 5 holds experts fused (`<experts>.gate_up_proj` [E,2I,H],
            `<experts>.down_proj` [E,H,I]) and ModelOpt 0.47 wraps that module (`_QuantFusedExperts`) with ONE input
            quantizer per projection shared by all experts (`<experts>.gate_up_proj_input_quantizer`,
            `<experts>.down_proj_input_quantizer`) and one weight quantizer per expert
            (`<experts>.gate_up_proj_weight_quantizers.<e>` covering gate AND up together,
            `<experts>.down_proj_weight_quantizers.<e>`).
        "expert_tokens": per fused experts module, the routed (token, expert) pairs each expert received.
        "export_dtype", "calibration", versions.

fixtures/golden/<model_type>_<layout>/<w4a16_nvfp4|fp8_pc_pt>/    for each WEIGHT_ONLY_CASES x WEIGHT_ONLY_FORMATS entry
    The weight-only formats (ModelOpt W4A16_NVFP4_CFG, FP8_PER_CHANNEL_PER_TOKEN_CFG), same files. Also made for
    families moe-quant has no forward for (gpt_oss, llama4_text: experts fused on the hub, which ModelOpt exports
    fused). `python tools/make_golden.py --weight-only` rewrites only these; the numpy self-check below covers
    the calibrated formats only.

fixtures/golden/<model_type>_<layout>/fp8_pb_wo/    for each TILED_CASES entry (`--tiled` rewrites only these)
    ModelOpt's FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG (E4M3 weights, one scale per 128×128 tile), same files; and
    fixtures/golden/tiled_qwen3_moe/<source|fp8_pb_wo>/, a checkpoint of several tiles a weight and its export.
fixtures/golden/mx_<case>/<source|mxfp8|mxfp4>/    for each MX_CASES entry (`--mx` rewrites only these)
    ModelOpt's MXFP8_DEFAULT_CFG and MXFP4_DEFAULT_CFG exports of `source`, a copy of a fixture with every quantized input dimension a
    multiple of 32 (see MX_CASES), same files.
fixtures/golden/mixed_<case>/    for each MIXED_CASES entry (`--mixed` rewrites only these)
    MIXED_PRECISION exports: a moe-quant recipe (recipe.json, rules of module globs and formats) and ModelOpt's
    export with the quant_cfg that means the same, same files.
fixtures/golden/zoo_<model_type>_<layout>/<w4a16_nvfp4|fp8_pc_pt>/    `--zoo`, for each ZOO_CASES entry
    The weight-only formats on a zoo checkpoint (fixtures/zoo/, materialized by tools/zoo-materialize.mjs): Qwen3.5-MoE,
    a vision-language wrapper with Gated DeltaNet layers and gated shared experts; Nemotron-H; Kimi-Linear, whose
    zoo checkpoint has Kimi Delta Attention layers only. ModelOpt's forward loop is one random batch without a cache
    (nothing exported depends on it). The config.json ModelOpt writes is re-saved by the transformers that loads it
    (fields added by that version): compare its quantization_config. `--zoo <model_type> ...` rewrites only those
    model types'.

fixtures/golden/<gpt_oss|llama4_text>_hub/<fp8|nvfp4>/    `--stacked` rewrites only these
    The calibrated formats on the two families whose experts are stacked on the hub and exported stacked.

fixtures/golden/families_<model_type>_<layout>/<fp8|nvfp4>/    `--families [model_type ...]` rewrites only these
    The calibrated formats on fixtures/families/ checkpoints (FAMILY_CASES), made with the transformers those
    fixtures were made with (5.25; the other goldens use 5.17). `--families <model_type> ...` rewrites only those
    model types'.

fixtures/golden/<qwen2_moe|olmoe|granitemoe>_hub/<fp8|nvfp4>/    `--more` rewrites only these
    The calibrated formats on three more families of fixtures/ (MORE_CASES).

fixtures/golden/dense_<model_type>/<fp8|nvfp4>/    `--dense` rewrites only these
    The calibrated formats on the dense checkpoints of fixtures/dense/ (Llama, Qwen3, Mistral; transformers 5.25).

fixtures/golden/<qwen3_moe_hub_f32|deepseek_v3_hub>/<format>_kv_<fp8|fp8_cast>/    `--kv-cache` rewrites these (KV_CASES)
    The KV cache as hf_ptq.py quantizes it: the format's config merged with hf_ptq's `--kv_cache_qformat` preset
    (`mtq.update_quant_cfg_with_kv_cache_quant` with `KV_QUANT_CFG_CHOICES[...]`). `fp8` calibrates max |k| and |v|
    as the attention function receives them and exports `<attention>.k_proj.k_scale` / `v_proj.v_scale` (amax / 448);
    `fp8_cast` (hf_ptq's default) pins the amax and exports no scale tensor; both write kv_cache_quant_algo "FP8".
    amax.json records `kv_cache_qformat` and the k/v_bmm quantizers' amax beside the others.

fixtures/golden/kv_scales.json    `--kv-cache` (fixtures/ cases, transformers 5.17), `--kv-cache --families`
    (fixtures/families/ and fixtures/dense/, transformers 5.25)
    Per calibrated fixture, the k_scale / v_scale tensors ModelOpt exports with FP8 and the calibrated fp8 KV preset,
    and its kv_cache_quant_algo (null where it puts no quantizer on the attention: LongCat-Flash).

fixtures/golden/glm4_moe_hub/<nvfp4_experts|nvfp4_mlp>/
    ModelOpt's NVFP4_EXPERTS_ONLY_CFG and NVFP4_MLP_ONLY_CFG presets (moe-quant's
    `scope: 'experts'` and `scope: 'mlp'`), calibrated on calib_ids like the others.

fixtures/golden/qwen3_moe_hub_f32_fewtokens/<fp8|nvfp4>/
    Same as above for qwen3_moe/hub_f32, calibrated on only calib_ids[0, :2] (one sequence of 2 tokens), so that
    several experts get no calibration token: shows what ModelOpt exports for them.

Precision choice (read this before comparing numbers)
-----------------------------------------------------
A real user loads a bf16 checkpoint in bf16, calibrates and exports bf16. Our calibration forward is f32, so:
  1. the model is loaded in float32 (dtype=torch.float32, experts_implementation="eager") and calibrated in f32;
     the bf16 source weights are exact in f32, so weight amaxes are the same as in bf16; activation amaxes are f32
     activations (the only deliberate difference from a bf16 run);
  2. after calibration, every parameter and buffer of the model EXCEPT the quantizers' own state is cast back to the
     dtype transformers gives it when a user loads the checkpoint with dtype="auto" (a second "twin" load decides,
     tensor by tensor: bf16 for the bf16 fixtures, but e.g. GLM4-MoE's e_score_correction_bias stays f32, as in a
     real bf16 load), and config.dtype is set back to the source dtype;
  3. export_hf_checkpoint(model, dtype=<source dtype>, export_dir=...).
Passing only export_hf_checkpoint(dtype=torch.bfloat16) to an f32 model is NOT enough: the dtype argument is only
applied to the quantized weights; unquantized tensors (embeddings, norms, routers, lm_head) stay F32 and config.json
says "float32". Casting the whole model (model.to(bf16)) is also wrong: it would round the quantizers' f32 amax
buffers (and so every input_scale) to bf16.
Consequence for the math (ModelOpt 0.47, see the report / SPEC section 4): the quantized weights are computed from
the weight in its SOURCE dtype. FP8: `weight / weight_scale` is a bf16 tensor divided by a 0-d f32 tensor, which
torch evaluates as f32 division rounded to bf16, then cast to e4m3 (two roundings). NVFP4: the divisor
`f32(weight_scale) * weight_scale_2` is an [N, K/16, 1] f32 tensor, so the division promotes to f32 (one rounding)
whatever the weight dtype. Scales are always f32 computations on the amax.
Checked (transformers 5.17, ModelOpt 0.47): running the plain user flow (load dtype="auto", calibrate in bf16 on the
same ids, export) on mixtral/hub and glm4_moe/hub gives files identical to these in every tensor (names, dtypes,
quantized bytes, weight scales, unquantized tensors) and in config.json / hf_quant_config.json, except the
input_scale values, which come from bf16 instead of f32 activations.

Self-check: after writing, the script recomputes every quantized weight and scale of every export in numpy from the
source fixture weights and amax.json (rules in the comment above verify_export) and exits 1 unless all are
bit-identical to what ModelOpt wrote.

Everything runs single-threaded (torch.set_num_threads(1)); no randomness besides the seeded calibration ids.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
GOLDEN = FIXTURES / "golden"

CALIB_SEED = 20240607
CALIB_SHAPE = (4, 32)
VOCAB = 256

# (model_type, layout) of fixtures/<model_type>/<layout>/
CASES = [
    ("qwen3_moe", "hub_f32"),
    ("qwen3_moe", "fused"),
    ("mixtral", "hub"),
    ("glm4_moe", "hub"),
    ("deepseek_v3", "hub"),
]
FORMATS = ["fp8", "nvfp4"]
# Weight-only formats: ModelOpt still runs the forward loop (its weight quantizers record their amax), but nothing
# the export writes depends on the calibration data. Also made for families whose forward moe-quant lacks.
WEIGHT_ONLY_FORMATS = ["w4a16_nvfp4", "fp8_pc_pt"]
# Scopes (ModelOpt's *_experts_only / *_mlp_only presets), on a family with a dense layer and shared experts:
# golden directory name -> (format as moe-quant names it, ModelOpt config).
SCOPE_FIXTURE = ("glm4_moe", "hub")
SCOPE_FORMATS = {
    "nvfp4_experts": "NVFP4_EXPERTS_ONLY_CFG",
    "nvfp4_mlp": "NVFP4_MLP_ONLY_CFG",
}
WEIGHT_ONLY_CASES = CASES + [("gpt_oss", "hub"), ("llama4_text", "hub"), ("qwen2_moe", "fused")]
# Calibrated formats on the families whose experts are stacked on the hub (exported stacked by ModelOpt).
STACKED_CASES = [("gpt_oss", "hub"), ("llama4_text", "hub")]
# Extra case: too few calibration tokens, some experts never routed to.
FEWTOKENS_CASE = ("qwen3_moe", "hub_f32")
FEWTOKENS_SLICE = (slice(0, 1), slice(0, 2))  # calib_ids[0:1, 0:2]

KEEP_FILES = ("config.json", "hf_quant_config.json")


def calib_ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(CALIB_SEED)
    return torch.randint(0, VOCAB, CALIB_SHAPE, generator=g, dtype=torch.int64)


def load(fixture: Path, dtype, auto_class: str = "AutoModelForCausalLM"):
    import transformers

    model = getattr(transformers, auto_class).from_pretrained(fixture, dtype=dtype, experts_implementation="eager")
    model.eval()
    return model


def quant_cfg(fmt: str, kv: str | None = None):
    """ModelOpt's config for moe-quant's format `fmt`; with `kv`, merged with hf_ptq's KV cache preset of that name
    (`--kv_cache_qformat`), as hf_ptq.py merges them."""
    import modelopt.torch.quantization as mtq

    if fmt in SCOPE_FORMATS:
        cfg = getattr(mtq, SCOPE_FORMATS[fmt])
    else:
        cfg = {
            "fp8": mtq.FP8_DEFAULT_CFG,
            "nvfp4": mtq.NVFP4_DEFAULT_CFG,
            "w4a16_nvfp4": mtq.W4A16_NVFP4_CFG,
            "fp8_pc_pt": mtq.FP8_PER_CHANNEL_PER_TOKEN_CFG,
            "fp8_pb_wo": mtq.FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG,
            "mxfp8": mtq.MXFP8_DEFAULT_CFG,
            "mxfp4": mtq.MXFP4_DEFAULT_CFG,
        }[fmt]
    if kv is None:
        return cfg
    from modelopt.recipe.presets import KV_QUANT_CFG_CHOICES

    return mtq.update_quant_cfg_with_kv_cache_quant(cfg, KV_QUANT_CFG_CHOICES[kv]["quant_cfg"])


def amax_value(q):
    a = getattr(q, "_amax", None)
    if a is None:
        return None
    a = a.detach().to(torch.float32).cpu()
    return float(a) if a.numel() == 1 else {"shape": list(a.shape), "values": [float(x) for x in a.flatten()]}


def record_quantizers(model) -> tuple[dict, dict]:
    from modelopt.torch.quantization.nn import TensorQuantizer

    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, TensorQuantizer):
            out[name] = {"enabled": bool(mod.is_enabled), "amax": amax_value(mod)}
    # Group states ModelOpt 0.47 attaches to q/k/v and gate/up sibling groups (max of the members' weight amax).
    # Only static NVFP4 quantizers read them; the default (dynamic) configs do not, and the export recomputes the
    # group max itself (see the report). Recorded for completeness.
    shared = {n: float(b.float()) for n, b in model.named_buffers() if "_shared_quant_states" in n and b is not None}
    return out, shared


def install_token_counters(model) -> tuple[dict, list]:
    """Count routed (token, expert) pairs per fused experts module (its forward gets top_k_index)."""
    counts: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if hasattr(mod, "gate_up_proj") and hasattr(mod, "num_experts") and isinstance(
            getattr(mod, "gate_up_proj"), torch.nn.Parameter
        ):
            counts[name] = torch.zeros(mod.num_experts, dtype=torch.int64)

            def hook(m, args, kwargs, name=name):
                idx = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
                if idx is not None:  # Llama4's experts get every token, without a routing index
                    counts[name] += torch.bincount(idx.reshape(-1), minlength=counts[name].numel())

            handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
    return counts, handles


def cast_like_twin(model, twin) -> torch.dtype:
    """Cast every non-quantizer parameter/buffer of `model` to the dtype the same tensor has in `twin`."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    ref = {n: t.dtype for n, t in twin.named_parameters(remove_duplicate=False)}  # tied weights under both names
    ref.update({n: t.dtype for n, t in twin.named_buffers()})
    # Quantizer state (amax buffers, ModelOpt's shared group states) must keep its f32 values.
    skip = [n + "." for n, m in model.named_modules() if isinstance(m, TensorQuantizer) or n.endswith("_shared_quant_states")]
    for mname, mod in model.named_modules():
        if any((mname + ".").startswith(p) for p in skip):
            continue
        tensors = [(n, t, True) for n, t in mod.named_parameters(recurse=False)]
        tensors += [(n, t, False) for n, t in mod.named_buffers(recurse=False) if t is not None]
        for tname, t, is_param in tensors:
            full = f"{mname}.{tname}" if mname else tname
            if full not in ref:
                raise RuntimeError(f"{full}: not in the dtype='auto' twin, cannot choose its export dtype")
            if t.dtype == ref[full]:
                continue
            if is_param:
                t.data = t.data.to(ref[full])
            else:
                setattr(mod, tname, t.to(ref[full]))
    model.config.dtype = twin.config.dtype
    # A multimodal wrapper's sub-configs (text_config, vision_config, audio_config) carry their own dtype.
    for key in ("text_config", "vision_config", "audio_config"):
        sub, twin_sub = getattr(model.config, key, None), getattr(twin.config, key, None)
        if sub is not None and twin_sub is not None:
            sub.dtype = twin_sub.dtype
    return twin.config.dtype


def run_case(fixture: Path, fmt: str, ids: torch.Tensor, out_dir: Path, calib_note: str,
             auto_class: str = "AutoModelForCausalLM", kv: str | None = None, config: dict | None = None) -> None:
    import modelopt
    import transformers
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint

    model = load(fixture, torch.float32, auto_class)
    counts, handles = install_token_counters(model)

    def forward_loop(m):
        with torch.no_grad():
            m(input_ids=ids, use_cache=False)

    model = mtq.quantize(model, config or quant_cfg(fmt, kv), forward_loop)
    for h in handles:
        h.remove()
    quantizers, shared_states = record_quantizers(model)

    twin = load(fixture, "auto", auto_class)
    export_dtype = cast_like_twin(model, twin)
    del twin

    with tempfile.TemporaryDirectory() as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_hf_checkpoint(model, dtype=export_dtype, export_dir=tmp)
        written = sorted(p.name for p in Path(tmp).iterdir())
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in written:
            if name.endswith(".safetensors") or name.endswith(".safetensors.index.json") or name in KEEP_FILES:
                shutil.copyfile(Path(tmp) / name, out_dir / name)

    info = {
        "fixture": str(fixture.relative_to(ROOT)),
        "format": fmt,
        **({"kv_cache_qformat": kv} if kv else {}),
        "modelopt_version": modelopt.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "calibration": calib_note,
        "calibration_dtype": "float32",
        "export_dtype": str(export_dtype).replace("torch.", ""),
        "files_written_by_export": written,
        "expert_tokens": {k: v.tolist() for k, v in counts.items()},
        "shared_states": shared_states,
        "quantizers": quantizers,
    }
    (out_dir / "amax.json").write_text(compact_json(info))


def compact_json(obj: dict) -> str:
    """Top-level keys one per line, nested dicts one entry per line, leaves compact."""
    lines = ["{"]
    items = list(obj.items())
    for i, (k, v) in enumerate(items):
        end = "," if i + 1 < len(items) else ""
        if isinstance(v, dict) and v:
            lines.append(f" {json.dumps(k)}: {{")
            sub = list(v.items())
            for j, (k2, v2) in enumerate(sub):
                lines.append(f"  {json.dumps(k2)}: {json.dumps(v2)}" + ("," if j + 1 < len(sub) else ""))
            lines.append(" }" + end)
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"

# ---------------------------------------------------------------------------------------------------------------
# Self-check: recompute every quantized tensor and scale of every export in numpy from the SOURCE fixture weights and
# the amax in amax.json, with the rules below, and require bit-identity. These rules are the spec our Rust code
# follows (written out in the report; SPEC section 4):
#   FP8:   ws = f32(a_w) / f32(448)  (f32 division); y = f32(W) / ws in f32, then rounded to bf16 (RNE) if the source
#          weight is bf16; byte = e4m3(y): RNE, |y| in (448, 464) -> 448 (never reached below 464), sign bit kept for
#          negative values that round to 0 (0x80).  is = f32(a_in) / f32(448).
#   NVFP4: ws2 = f32(a_w) / f32(2688) (one f32 division, NOT /6 then /448); per 16-block along the input dim:
#          s = f32(bamax) / f32(f32(6) * ws2) (product rounded to f32 first); s = 1 where s == 0;
#          ws = e4m3(clamp(s, 2^-9, 448)); y = f32(W) / f32(f32(ws) * ws2) in f32 (whatever the source dtype);
#          code = e2m1 RNE index (saturating at 6) | 8 if y < 0 (also when it rounds to 0: "-0" = 0x8);
#          byte = code[2j] | code[2j+1] << 4.  is = f32(a_in) / f32(2688).
#   amax used: a_w of a routed expert's gate AND up = its fused gate_up weight quantizer; down = its own.
#          a_in of every routed expert = the experts module's shared input quantizer (one per projection type).
#          NVFP4 only: q/k/v (and gate/up of dense MLPs / shared experts) use the MAX over the group of a_w and a_in.
# ---------------------------------------------------------------------------------------------------------------
import re  # noqa: E402

import numpy as np  # noqa: E402

_C = np.arange(127)
_E, _M = (_C >> 3) & 0xF, _C & 7
E4M3_POS = np.where(_E == 0, _M * 2.0**-9, (1 + _M / 8.0) * 2.0 ** (_E - 7))  # codes 0x00..0x7E, increasing
E2M1_POS = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def _bf16_rne(x):
    b = _f32(x).view(np.uint32).astype(np.uint64)
    return (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


def _rne_index(table, a):
    """Index of the nearest table entry to a (a >= 0, table increasing), ties to the even index; saturating."""
    idx = np.clip(np.searchsorted(table, a, side="left"), 1, len(table) - 1)
    lo, hi = table[idx - 1], table[idx]
    mid = (lo + hi) / 2
    pick = np.where(a < mid, idx - 1, np.where(a > mid, idx, np.where((idx - 1) % 2 == 0, idx - 1, idx)))
    return np.where(a >= table[-1], len(table) - 1, pick)


def e4m3_bytes(x):
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    assert np.all(a < 464), "would be NaN in torch"
    return (_rne_index(E4M3_POS, a) | (np.signbit(x).astype(np.int64) << 7)).astype(np.uint8)


def e4m3_values(b):
    v = E4M3_POS[b & 0x7F].astype(np.float32)
    return np.where(b & 0x80, -v, v)


def e2m1_codes(y):
    y = np.asarray(y, dtype=np.float64)
    return (_rne_index(E2M1_POS, np.abs(y)) | ((y < 0).astype(np.int64) << 3)).astype(np.uint8)


def _source_weights(fixture: Path) -> dict:
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(fixture.glob("model*.safetensors")):
        sd.update(load_file(f))
    return sd


def _source_weight(sd: dict, module: str) -> torch.Tensor:
    if module + ".weight" in sd:
        return sd[module + ".weight"]
    m = re.fullmatch(r"(.*\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)", module)  # fused source
    e = int(m.group(2))
    if m.group(3) == "down_proj":
        return sd[m.group(1) + ".down_proj"][e]
    gate_up = sd[m.group(1) + ".gate_up_proj"][e]
    half = gate_up.shape[0] // 2
    return gate_up[:half] if m.group(3) == "gate_proj" else gate_up[half:]


def _quantizer_names(module: str) -> tuple[str, str]:
    m = re.fullmatch(r"(.*)\.experts\.(\d+)\.(\w+)", module)
    if m:  # in memory: one fused experts module (Mixtral's block is `mlp` in memory, `block_sparse_moe` on disk)
        experts = m.group(1).replace(".block_sparse_moe", ".mlp") + ".experts"
        proj = "down_proj" if m.group(3) in ("down_proj", "w2") else "gate_up_proj"
        return f"{experts}.{proj}_weight_quantizers.{m.group(2)}", f"{experts}.{proj}_input_quantizer"
    return module + ".weight_quantizer", module + ".input_quantizer"


def _nvfp4_group(module: str, modules: set) -> list[str]:
    if ".experts." in module:
        return [module]
    parent, leaf = module.rsplit(".", 1)
    # Linears that read one input share weight_scale_2 (MLA: the query and key/value down-projections).
    for group in (("q_proj", "k_proj", "v_proj"), ("q_a_proj", "kv_a_proj_with_mqa"), ("gate_proj", "up_proj")):
        if leaf in group:
            return [f"{parent}.{x}" for x in group if f"{parent}.{x}" in modules]
    return [module]


def verify_export(out_dir: Path, fixture: Path) -> dict:
    from safetensors.torch import load_file

    info = json.loads((out_dir / "amax.json").read_text())
    fmt = info["format"]
    amax = {k: v["amax"] for k, v in info["quantizers"].items()}
    out = {}
    for f in sorted(out_dir.glob("*.safetensors")):
        out.update(load_file(f))
    sd = _source_weights(fixture)
    modules = {k[: -len(".weight_scale")] for k in out if k.endswith(".weight_scale")}
    n_bytes = bad_bytes = bad_scales = 0
    for module in sorted(modules):
        w = _source_weight(sd, module)
        wf = w.float().numpy()
        names = [_quantizer_names(m) for m in (_nvfp4_group(module, modules) if fmt == "nvfp4" else [module])]
        a_w = max(_f32(amax[wq]) for wq, _ in names)
        a_in = max(_f32(amax[iq]) for _, iq in names)
        scales = {}
        if fmt == "fp8":
            ws = _f32(a_w / _f32(448))
            y = _f32(wf / ws)
            if w.dtype == torch.bfloat16:
                y = _bf16_rne(y)
            q = e4m3_bytes(y)
            got = out[module + ".weight"].view(torch.uint8).numpy()
            scales = {"weight_scale": ws, "input_scale": _f32(a_in / _f32(448))}
        else:
            ws2 = _f32(a_w / _f32(2688))
            n, k = wf.shape
            blocks = wf.reshape(n, k // 16, 16)
            s = _f32(np.abs(blocks).max(-1) / _f32(_f32(6) * ws2))
            s = np.clip(np.where(s == 0, _f32(1), s), _f32(2.0**-9), _f32(448))
            ws = e4m3_bytes(s)
            y = _f32(blocks / _f32(e4m3_values(ws) * ws2)[..., None]).reshape(n, k)
            codes = e2m1_codes(y)
            q = codes[:, 0::2] | (codes[:, 1::2] << 4)
            got = out[module + ".weight"].numpy()
            bad_scales += int(not np.array_equal(out[module + ".weight_scale"].view(torch.uint8).numpy(), ws))
            scales = {"weight_scale_2": ws2, "input_scale": _f32(a_in / _f32(2688))}
        for name, val in scales.items():
            t = out[f"{module}.{name}"]
            bad_scales += int(t.dtype != torch.float32 or t.dim() != 0 or t.numpy().view(np.uint32) != val.view(np.uint32))
        n_bytes += q.size
        bad_bytes += int((q != got).sum())
    # KV cache scales: `<attention>.k_proj.k_scale` = f32(amax of `<attention>.k_bmm_quantizer`) / f32(448), whatever
    # the format (these fixtures' attention modules have the same names in memory and on disk).
    kv = {k: v for k, v in out.items() if k.endswith((".k_proj.k_scale", ".v_proj.v_scale"))}
    for name, t in kv.items():
        attention, proj = name.rsplit(".", 2)[0], name.rsplit(".", 1)[1][0]
        val = _f32(_f32(amax[f"{attention}.{proj}_bmm_quantizer"]) / _f32(448))
        bad_scales += int(t.dtype != torch.float32 or t.dim() != 0 or t.numpy().view(np.uint32) != val.view(np.uint32))
    return {"linears": len(modules), "bytes": n_bytes, "bad_bytes": bad_bytes, "bad_scales": bad_scales, "kv_scales": len(kv)}


# Zoo checkpoints (fixtures/zoo/, materialized by tools/zoo-materialize.mjs exactly as the tests do) of families
# moe-quant has no forward for, loaded with the class users load them with: weight-only goldens.
ZOO_CASES = [
    ("qwen3_5_moe", "hub", "AutoModelForImageTextToText"),
    ("nemotron_h", "hub", "AutoModelForCausalLM"),
    ("kimi_linear", "hub", "AutoModelForCausalLM"),
]
# config.json values the zoo's transformers saved in a form the golden's older transformers rejects (its strict
# config classes want floats where 5.25 wrote an int); nothing exported depends on them.
ZOO_CONFIG_FIXES = {"nemotron_h": {"time_step_limit": [0.0, float("inf")]}}


def make_zoo_goldens(only: list[str]) -> None:
    """`--zoo`: ModelOpt's weight-only exports of materialized zoo checkpoints (random values, no tokenizer); with
    model types after it, of those only."""
    import subprocess
    import transformers
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint

    ids = torch.randint(0, 200, (1, 16), generator=torch.Generator().manual_seed(CALIB_SEED))
    for model_type, layout, auto_class in ZOO_CASES:
        if only and model_type not in only:
            continue
        with tempfile.TemporaryDirectory() as src:
            subprocess.run(["node", str(ROOT / "tools" / "zoo-materialize.mjs"), model_type, layout, src], check=True)
            if model_type in ZOO_CONFIG_FIXES:
                config = json.loads((Path(src) / "config.json").read_text())
                config.update(ZOO_CONFIG_FIXES[model_type])
                (Path(src) / "config.json").write_text(json.dumps(config, indent=2))
            for fmt in WEIGHT_ONLY_FORMATS:
                model = getattr(transformers, auto_class).from_pretrained(src, dtype=torch.bfloat16)
                mtq.quantize(model, quant_cfg(fmt), lambda m: m(input_ids=ids, use_cache=False))
                out = GOLDEN / f"zoo_{model_type}_{layout}" / fmt
                if out.exists():
                    shutil.rmtree(out)
                out.mkdir(parents=True)
                print(f"== zoo {model_type}/{layout} {fmt} -> {out.relative_to(ROOT)}", flush=True)
                with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export_hf_checkpoint(model, dtype=torch.bfloat16, export_dir=tmp)
                    for name in sorted(p.name for p in Path(tmp).iterdir()):
                        if name.endswith(".safetensors") or name.endswith(".safetensors.index.json") or name in KEEP_FILES:
                            shutil.copyfile(Path(tmp) / name, out / name)


# fp8_pb_wo (ModelOpt FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG) on the fixtures whose experts are written one by one (ModelOpt
# does not write stacked experts in it). `--tiled` rewrites only these.
TILED_CASES = [case for case in WEIGHT_ONLY_CASES if case not in STACKED_CASES]


def make_tiled_source(dst: Path) -> Path:
    """A Qwen3-MoE checkpoint whose weights span several 128×128 tiles, partial ones included (the fixtures' are
    single tiles): hidden 320 (2.5 tiles), q/o [320, 320], k/v [160, 320], 4 experts of I = 256 (the width ModelOpt
    tiles on each projection's own rows), one layer, random bf16 (std 0.02, seeded); layer 0's first expert has an
    all-zero gate tile, o_proj a tile 40× larger, q_proj a tile of bf16-subnormal values."""
    import transformers

    torch.manual_seed(1234)
    config = transformers.Qwen3MoeConfig(
        vocab_size=VOCAB, hidden_size=320, intermediate_size=640, moe_intermediate_size=256, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, head_dim=80, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=256, tie_word_embeddings=False, dtype="bfloat16", bos_token_id=0, eos_token_id=0,
        pad_token_id=None,
    )
    model = transformers.Qwen3MoeForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            if parameter.dim() >= 2:
                parameter.copy_((torch.randn(parameter.shape) * 0.02).to(parameter.dtype))
        model.model.layers[0].mlp.experts.gate_up_proj[0, :128, :128] = 0
        attention = model.model.layers[0].self_attn
        attention.o_proj.weight[128:256, 128:256] *= 40
        corner = attention.q_proj.weight[256:, 256:]
        corner.copy_((torch.randn(corner.shape) * 1e-38).to(torch.bfloat16))
    if dst.exists():
        shutil.rmtree(dst)
    model.save_pretrained(dst)
    return dst


def make_tiled(ids: torch.Tensor) -> None:
    """The fp8_pb_wo goldens (`--tiled`): the fixtures', and those of a checkpoint of several tiles a weight
    (fixtures/golden/tiled_qwen3_moe/<source|fp8_pb_wo>/)."""
    source = make_tiled_source(GOLDEN / "tiled_qwen3_moe" / "source")
    out = GOLDEN / "tiled_qwen3_moe" / "fp8_pb_wo"
    if out.exists():
        shutil.rmtree(out)
    print(f"== {source.relative_to(ROOT)} fp8_pb_wo -> {out.relative_to(ROOT)}", flush=True)
    run_case(source, "fp8_pb_wo", ids, out, "calib_ids.safetensors input_ids [4, 32]")
    for model_type, layout in TILED_CASES:
        out = GOLDEN / f"{model_type}_{layout}" / "fp8_pb_wo"
        if out.exists():
            shutil.rmtree(out)
        print(f"== {model_type}/{layout} fp8_pb_wo -> {out.relative_to(ROOT)}", flush=True)
        run_case(FIXTURES / model_type / layout, "fp8_pb_wo", ids, out, "calib_ids.safetensors input_ids [4, 32]")


# MXFP8 (ModelOpt MXFP8_DEFAULT_CFG): ModelOpt's export asserts that every quantized input dimension is a multiple
# of 32, which the fixtures' experts (I = 48) are not, so each case is a copy of a fixture with its expert widths
# raised (config key: old → new), the tensors of changed shape redrawn (seeded, bf16) and the others kept, and blocks
# of edge cases written into layer 0's q_proj and first expert's down projection. `--mx` rewrites these:
# fixtures/golden/mx_<case>/source/ (the copy) and fixtures/golden/mx_<case>/mxfp8/ (ModelOpt's export of it).
MX_CASES = {
    "qwen3_moe_hub": ("qwen3_moe/hub", {"moe_intermediate_size": (48, 64)}),
    "mixtral_hub": ("mixtral/hub", {"intermediate_size": (48, 64)}),
    "qwen2_moe_fused": ("qwen2_moe/fused", {"moe_intermediate_size": (48, 64), "shared_expert_intermediate_size": (80, 96)}),
}


def mx_edge_blocks(weight: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A 2-D bf16 weight with its first rows' first 32 columns replaced by edge cases for MX scales: all zero, only
    -0, an amax of exactly 448·2^-12, one bf16 step above and below it, E4M3 subnormals, a bf16-subnormal amax, huge
    values near the bf16 maximum, many exponents in one block, and a wide range."""
    w = weight.clone().float()
    rows = []
    base = lambda scale: torch.randn(32, generator=gen) * scale  # noqa: E731
    rows.append(torch.zeros(32))
    rows.append(torch.cat([torch.tensor([-0.0]), torch.zeros(31)]))
    for position, value in ((3, 1.75 * 2**-4), (5, -(1.75 + 2**-7) * 2**-4), (7, (1.75 - 2**-7) * 2**-4)):
        block = base(0.01)
        block[position] = value
        rows.append(block)
    block = base(1.0)
    block[0] = 2.0**-6
    block[1:] = block[1:] * 2**-20
    rows.append(block)
    rows.append(base(1e-38))
    rows.append(base(1e30))
    rows.append(base(3e38).clamp(-3.3e38, 3.3e38))
    rows.append(torch.tensor([(-1) ** i * (1 + i / 64.0) * 2.0 ** (i % 9 - 4) for i in range(32)]))
    rows.append(torch.linspace(-1, 1, 32) * 448 * 2**-3)
    block = base(0.03)
    block[::2] = block[::2] * 1e-3
    rows.append(block)
    for r, values in enumerate(rows):
        w[r, :32] = values
    return w.to(torch.bfloat16)


def make_mx_source(name: str) -> Path:
    """The copy of MX_CASES[name]'s fixture (see MX_CASES) under fixtures/golden/mx_<name>/source/."""
    from safetensors.torch import load_file, save_file

    fixture, changes = MX_CASES[name]
    gen = torch.Generator().manual_seed(1234)
    src, dst = FIXTURES / fixture, GOLDEN / f"mx_{name}" / "source"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    config = json.loads((src / "config.json").read_text())
    widths = {}
    for key, (old, new) in changes.items():
        assert config[key] == old, (key, config[key])
        config[key] = new
        widths[old] = new
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in src.iterdir():
        if f.name not in ("config.json", "model.safetensors", "reference.safetensors"):
            shutil.copyfile(f, dst / f.name)
    tensors = {}
    for key, tensor in load_file(src / "model.safetensors").items():
        shape = [widths.get(x, x) for x in tensor.shape]
        if "gate_up_proj" in key:  # [E, 2I, H]
            shape[1] = 2 * widths.get(tensor.shape[1] // 2, tensor.shape[1] // 2)
        if shape != list(tensor.shape):
            tensor = (torch.randn(shape, generator=gen) * 0.03).to(torch.bfloat16)
        tensors[key] = tensor.contiguous()
    for key in list(tensors):
        if "layers.0." not in key:
            continue
        if key.endswith(("experts.0.down_proj.weight", "experts.0.w2.weight", "self_attn.q_proj.weight")):
            tensors[key] = mx_edge_blocks(tensors[key], gen)
        if key.endswith("experts.down_proj"):  # fused [E, H, I]
            stacked = tensors[key].clone()
            stacked[0] = mx_edge_blocks(stacked[0], gen)
            tensors[key] = stacked
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def make_mx(ids: torch.Tensor) -> None:
    """The MXFP8 and MXFP4 goldens and their sources (`--mx`)."""
    for name in MX_CASES:
        source = make_mx_source(name)
        for fmt in ("mxfp8", "mxfp4"):
            out = GOLDEN / f"mx_{name}" / fmt
            if out.exists():
                shutil.rmtree(out)
            print(f"== {source.relative_to(ROOT)} {fmt} -> {out.relative_to(ROOT)}", flush=True)
            run_case(source, fmt, ids, out, "calib_ids.safetensors input_ids [4, 32] (ModelOpt runs no forward for MX formats)")


# Mixed precision (`--mixed` rewrites only these): moe-quant recipes, as (fixture model type, layout, rules), each
# rule (module glob, format) and the last matching rule winning. ModelOpt is given the quant_cfg that means the same
# (`mixed_quant_cfg`); its export goes to fixtures/golden/mixed_<case>/ with the recipe beside it (recipe.json).
MIXED_CASES = {
    "nvfp4_experts_fp8_attention": ("qwen3_moe", "hub", [("*.mlp.experts", "nvfp4"), ("*.self_attn.*", "fp8")]),
    "w4a16_experts_fp8_shared_fp8pb_attention": (
        "qwen2_moe",
        "hub",
        [("*.mlp.experts", "w4a16_nvfp4"), ("*.mlp.shared_expert.*", "fp8"), ("*.self_attn.*", "fp8_pb_wo")],
    ),
}


def mixed_quant_cfg(rules: list[tuple[str, str]]) -> dict:
    """ModelOpt's quant_cfg for a recipe: everything off, then per rule its format's weight and input quantizer
    settings on the quantizers of the modules the glob names, then the modules every ModelOpt preset leaves
    unquantized (routers, lm_head ...), as the presets order them."""
    entries = [{"quantizer_name": "*", "enable": False}]
    for glob, fmt in rules:
        for entry in quant_cfg(fmt)["quant_cfg"]:
            if entry["quantizer_name"] in ("*weight_quantizer", "*input_quantizer"):
                entries.append({**entry, "quantizer_name": glob.rstrip("*") + entry["quantizer_name"]})
    preset = quant_cfg(rules[0][1])["quant_cfg"]
    entries += [e for e in preset if e.get("enable") is False and e["quantizer_name"] != "*"]
    return {"quant_cfg": entries, "algorithm": "max"}


def make_mixed(ids: torch.Tensor) -> None:
    """The mixed-precision goldens (`--mixed`)."""
    for name, (model_type, layout, rules) in MIXED_CASES.items():
        out = GOLDEN / f"mixed_{name}"
        if out.exists():
            shutil.rmtree(out)
        print(f"== {model_type}/{layout} mixed {name} -> {out.relative_to(ROOT)}", flush=True)
        run_case(FIXTURES / model_type / layout, "mixed", ids, out, "calib_ids.safetensors input_ids [4, 32]",
                 config=mixed_quant_cfg(rules))
        recipe = {"rules": [{"modules": glob, "format": fmt} for glob, fmt in rules]}
        (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")


def make_weight_only(ids: torch.Tensor) -> None:
    """The weight-only and scope goldens (`--weight-only` rewrites only these, leaving the others as they are)."""
    cases = [(*SCOPE_FIXTURE, fmt) for fmt in SCOPE_FORMATS]
    cases += [(model_type, layout, fmt) for model_type, layout in WEIGHT_ONLY_CASES for fmt in WEIGHT_ONLY_FORMATS]
    for model_type, layout, fmt in cases:
        out = GOLDEN / f"{model_type}_{layout}" / fmt
        if out.exists():
            shutil.rmtree(out)
        print(f"== {model_type}/{layout} {fmt} -> {out.relative_to(ROOT)}", flush=True)
        run_case(FIXTURES / model_type / layout, fmt, ids, out, "calib_ids.safetensors input_ids [4, 32]")


# Calibrated formats on fixtures/families/ (made with transformers 5.25 by tools/make_family_fixtures.py):
# (family directory, layout, transformers auto class[, formats when not all of FORMATS]). `--families` rewrites only
# these, and needs the transformers those fixtures were made with.
FAMILY_CASES = [
    ("qwen3_vl_moe", "hub_transposed", "AutoModelForImageTextToText"),
    ("glm4v_moe", "hub", "AutoModelForImageTextToText"),
    ("dots1", "hub", "AutoModelForCausalLM"),
    ("minimax_m2", "hub", "AutoModelForCausalLM"),
    ("deepseek_v2", "hub", "AutoModelForCausalLM"),
    ("ernie4_5_moe", "hub", "AutoModelForCausalLM"),
    ("hunyuan_v1_moe", "hub", "AutoModelForCausalLM"),
    ("flex_olmo", "hub", "AutoModelForCausalLM"),
    ("granitemoeshared", "hub", "AutoModelForCausalLM"),
    ("phimoe", "hub", "AutoModelForCausalLM"),
    ("qwen3_next", "hub", "AutoModelForCausalLM"),
    ("qwen3_5_moe_text", "hub", "AutoModelForCausalLM"),
    ("granitemoehybrid", "hub", "AutoModelForCausalLM"),
    ("nemotron_h", "hub", "AutoModelForCausalLM"),
    ("deepseek_v32", "hub", "AutoModelForCausalLM"),
    ("glm_moe_dsa", "hub", "AutoModelForCausalLM"),
    # FP8 only: ModelOpt cannot export the fixture's NVFP4 (its dt_proj [128, 4] has an input dimension that is not
    # a multiple of 16, and ModelOpt stops there; moe-quant refuses it too, unless told to keep such linears).
    ("jamba", "hub", "AutoModelForCausalLM", ("fp8",)),
    ("lfm2_moe", "hub", "AutoModelForCausalLM"),
    ("minimax", "hub", "AutoModelForCausalLM"),
    ("longcat_flash", "hub", "AutoModelForCausalLM"),
    ("sarvam_mla", "hub", "AutoModelForCausalLM"),
    ("solar_open", "hub", "AutoModelForCausalLM"),
    ("glm4_moe_lite", "hub", "AutoModelForCausalLM"),
    ("hy_v3", "hub", "AutoModelForCausalLM"),
    ("kimi_k25", "fused", "AutoModelForImageTextToText"),
    ("qwen3_omni_moe_thinker", "fused", "AutoModelForImageTextToText"),
    ("exaone_moe", "hub", "AutoModelForCausalLM"),
    ("flint", "hub", "AutoModelForCausalLM"),
    ("granitemoe_swa", "hub", "AutoModelForCausalLM"),
    ("deepseek_ocr2", "hub", "AutoModelForImageTextToText"),
    ("unlimited_ocr", "hub", "AutoModelForImageTextToText"),
    ("param2moe", "fused", "AutoModelForCausalLM"),
    ("sarvam_moe", "fused", "AutoModelForCausalLM"),
    ("param2moe", "hub", "AutoModelForCausalLM"),
    ("sarvam_moe", "hub", "AutoModelForCausalLM"),
    ("gemma4_text", "hub", "AutoModelForCausalLM"),
    ("gemma4", "hub", "AutoModelForImageTextToText"),
    ("kimi_linear", "hub", "AutoModelForCausalLM"),
]


def make_families(ids: torch.Tensor, only: set[str]) -> None:
    """The calibrated goldens of FAMILY_CASES (of the model types `only`, when given), in
    fixtures/golden/families_<model_type>_<layout>/<format>/."""
    for model_type, layout, auto_class, *formats in FAMILY_CASES:
        if only and model_type not in only:
            continue
        for fmt in formats[0] if formats else FORMATS:
            out = GOLDEN / f"families_{model_type}_{layout}" / fmt
            if out.exists():
                shutil.rmtree(out)
            print(f"== families/{model_type}/{layout} {fmt} -> {out.relative_to(ROOT)}", flush=True)
            run_case(FIXTURES / "families" / model_type / layout, fmt, ids, out,
                     "calib_ids.safetensors input_ids [4, 32]", auto_class)


# Calibrated formats on the dense checkpoints of fixtures/dense/ (tools/make_dense_fixtures.py, transformers 5.25):
# `--dense` rewrites only these, in fixtures/golden/dense_<model_type>/<format>/.
DENSE_CASES = ["llama", "qwen3", "mistral"]


def make_dense(ids: torch.Tensor) -> None:
    for model_type in DENSE_CASES:
        for fmt in FORMATS:
            out = GOLDEN / f"dense_{model_type}" / fmt
            if out.exists():
                shutil.rmtree(out)
            print(f"== dense/{model_type} {fmt} -> {out.relative_to(ROOT)}", flush=True)
            run_case(FIXTURES / "dense" / model_type, fmt, ids, out, "calib_ids.safetensors input_ids [4, 32]")


# More calibrated cases on fixtures/ (made with transformers 5.17, like CASES): `--more` rewrites only these.
MORE_CASES = [("qwen2_moe", "hub"), ("olmoe", "hub"), ("granitemoe", "hub")]


def make_more(ids: torch.Tensor) -> None:
    for model_type, layout in MORE_CASES:
        for fmt in FORMATS:
            out = GOLDEN / f"{model_type}_{layout}" / fmt
            if out.exists():
                shutil.rmtree(out)
            print(f"== {model_type}/{layout} {fmt} -> {out.relative_to(ROOT)}", flush=True)
            run_case(FIXTURES / model_type / layout, fmt, ids, out, "calib_ids.safetensors input_ids [4, 32]")


def make_stacked(ids: torch.Tensor) -> None:
    """The calibrated goldens of STACKED_CASES (`--stacked` rewrites only these)."""
    for model_type, layout in STACKED_CASES:
        for fmt in FORMATS:
            out = GOLDEN / f"{model_type}_{layout}" / fmt
            if out.exists():
                shutil.rmtree(out)
            print(f"== {model_type}/{layout} {fmt} -> {out.relative_to(ROOT)}", flush=True)
            run_case(FIXTURES / model_type / layout, fmt, ids, out, "calib_ids.safetensors input_ids [4, 32]")


# KV cache goldens (`--kv-cache`, with the transformers of fixtures/, 5.17): hf_ptq's KV cache presets
# (`--kv_cache_qformat`) merged with the formats, on Qwen3-MoE (grouped-query attention, k after its norm and rope) and
# DeepSeek-V3 (MLA), in fixtures/golden/<model_type>_<layout>/<format>_kv_<preset>/; fp8_cast writes no scale tensor.
KV_CASES = [
    ("qwen3_moe", "hub_f32", "fp8", "fp8"),
    ("qwen3_moe", "hub_f32", "nvfp4", "fp8"),
    ("qwen3_moe", "hub_f32", "fp8", "fp8_cast"),
    ("qwen3_moe", "hub_f32", "w4a16_nvfp4", "fp8_cast"),
    ("deepseek_v3", "hub", "fp8", "fp8"),
    ("deepseek_v3", "hub", "nvfp4", "fp8"),
]
# fixtures/golden/kv_scales.json: per calibrated fixture, the k_scale and v_scale tensors ModelOpt exports (FP8 with
# the calibrated fp8 preset) and its kv_cache_quant_algo. `--kv-cache` writes the fixtures/ cases (transformers 5.17),
# `--kv-cache --families` the fixtures/families/ and fixtures/dense/ ones (5.25); each keeps the other's entries.
KV_SCALES = GOLDEN / "kv_scales.json"


def kv_scales_of(fixture: Path, ids: torch.Tensor, auto_class: str) -> dict:
    """ModelOpt's KV cache scales of one fixture: FP8 with the calibrated KV preset, exported as run_case exports."""
    import transformers
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint
    from safetensors.torch import load_file

    model = mtq.quantize(load(fixture, torch.float32, auto_class), quant_cfg("fp8", "fp8"),
                         lambda m: m(input_ids=ids, use_cache=False))
    twin = load(fixture, "auto", auto_class)
    export_dtype = cast_like_twin(model, twin)
    with tempfile.TemporaryDirectory() as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_hf_checkpoint(model, dtype=export_dtype, export_dir=tmp)
        tensors = {}
        for f in sorted(Path(tmp).glob("*.safetensors")):
            tensors.update(load_file(f))
        algo = json.loads((Path(tmp) / "hf_quant_config.json").read_text())["quantization"]["kv_cache_quant_algo"]
    scales = {k: float(v) for k, v in sorted(tensors.items()) if k.endswith((".k_proj.k_scale", ".v_proj.v_scale"))}
    return {"transformers_version": transformers.__version__, "kv_cache_quant_algo": algo, "scales": scales}


def make_kv_cache(ids: torch.Tensor, families: bool) -> int:
    import modelopt

    if families:
        fixtures = [(FIXTURES / "families" / c[0] / c[1], c[2]) for c in FAMILY_CASES]
        fixtures += [(FIXTURES / "dense" / m, "AutoModelForCausalLM") for m in DENSE_CASES]
    else:
        fixtures = [(FIXTURES / m / l, "AutoModelForCausalLM") for m, l in CASES + STACKED_CASES + MORE_CASES]
        failed = False
        for model_type, layout, fmt, kv in KV_CASES:
            out = GOLDEN / f"{model_type}_{layout}" / f"{fmt}_kv_{kv}"
            if out.exists():
                shutil.rmtree(out)
            print(f"== {model_type}/{layout} {fmt} + KV cache {kv} -> {out.relative_to(ROOT)}", flush=True)
            run_case(FIXTURES / model_type / layout, fmt, ids, out, "calib_ids.safetensors input_ids [4, 32]", kv=kv)
            if fmt in FORMATS:
                r = verify_export(out, FIXTURES / model_type / layout)
                failed |= bool(r["bad_bytes"] or r["bad_scales"])
                print(f"check {out.relative_to(GOLDEN)}: {r}")
        if failed:
            print("numpy reference does NOT reproduce ModelOpt's export bit for bit", file=sys.stderr)
            return 1
    table = json.loads(KV_SCALES.read_text()) if KV_SCALES.exists() else {}
    for fixture, auto_class in fixtures:
        name = str(fixture.relative_to(FIXTURES))
        print(f"== KV cache scales of {name}", flush=True)
        table[name] = kv_scales_of(fixture, ids, auto_class)
    table = {"modelopt_version": modelopt.__version__, **{k: v for k, v in sorted(table.items()) if k != "modelopt_version"}}
    KV_SCALES.write_text(compact_json(table))
    return 0


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if "--kv-cache" in sys.argv[1:]:
        return make_kv_cache(calib_ids(), "--families" in sys.argv[1:])
    if "--mixed" in sys.argv[1:]:
        make_mixed(calib_ids())
        return 0
    if "--mx" in sys.argv[1:]:
        make_mx(calib_ids())
        return 0
    if "--tiled" in sys.argv[1:]:
        make_tiled(calib_ids())
        return 0
    if "--weight-only" in sys.argv[1:]:
        make_weight_only(calib_ids())
        return 0
    if "--stacked" in sys.argv[1:]:
        make_stacked(calib_ids())
        return 0
    if "--families" in sys.argv[1:]:
        # `--families longcat_flash …` rewrites only those model types' goldens.
        make_families(calib_ids(), {a for a in sys.argv[1:] if not a.startswith("--")})
        return 0
    if "--dense" in sys.argv[1:]:
        make_dense(calib_ids())
        return 0
    if "--more" in sys.argv[1:]:
        make_more(calib_ids())
        return 0
    if "--zoo" in sys.argv[1:]:
        make_zoo_goldens([a for a in sys.argv[1:] if not a.startswith("--")])
        return 0
    from safetensors.torch import save_file

    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    GOLDEN.mkdir(parents=True)
    ids = calib_ids()
    save_file({"input_ids": ids}, str(GOLDEN / "calib_ids.safetensors"))
    (GOLDEN / "calib_ids.safetensors").chmod(0o644)

    for model_type, layout in CASES:
        for fmt in FORMATS:
            out = GOLDEN / f"{model_type}_{layout}" / fmt
            print(f"== {model_type}/{layout} {fmt} -> {out.relative_to(ROOT)}", flush=True)
            run_case(FIXTURES / model_type / layout, fmt, ids, out, "calib_ids.safetensors input_ids [4, 32]")

    few = ids[FEWTOKENS_SLICE].contiguous()
    model_type, layout = FEWTOKENS_CASE
    for fmt in FORMATS:
        out = GOLDEN / f"{model_type}_{layout}_fewtokens" / fmt
        print(f"== {model_type}/{layout} {fmt} (2 calibration tokens) -> {out.relative_to(ROOT)}", flush=True)
        run_case(FIXTURES / model_type / layout, fmt, few, out,
                 f"calib_ids.safetensors input_ids[0:1, 0:2] = {few.tolist()} (2 tokens)")

    make_weight_only(ids)
    make_stacked(ids)
    make_more(ids)
    # The numpy self-check below covers the calibrated formats.
    failed = False
    for d in sorted(p.parent for p in GOLDEN.rglob("amax.json") if p.parent.name in FORMATS):
        fixture = ROOT / json.loads((d / "amax.json").read_text())["fixture"]
        r = verify_export(d, fixture)
        failed |= bool(r["bad_bytes"] or r["bad_scales"])
        print(f"check {d.relative_to(GOLDEN)}: {r}")
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    print(f"fixtures/golden: {total} bytes")
    if failed:
        print("numpy reference does NOT reproduce ModelOpt's export bit for bit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
