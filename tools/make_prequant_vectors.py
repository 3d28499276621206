#!/usr/bin/env python3
"""Build the fixtures of checkpoints stored pre-quantized (GPT-OSS' MXFP4 experts, FP8 with block scales
`weight_scale_inv`), with what transformers itself makes of them: the oracle for crates/core/tests/prequant.rs and
__test__/prequantized.spec.mjs (dev tooling, not a runtime dependency).

Regenerate (from the repository root):

    python -m venv .venv-tools && .venv-tools/bin/pip install torch transformers==5.25.* accelerate safetensors \
        && .venv-tools/bin/python tools/make_prequant_vectors.py

Deterministic (fixed seeds), CPU only, a few seconds. It rewrites the files below and nothing else.

1. fixtures/vectors/prequant.safetensors: small inputs and transformers' own dequantization of them.
   mxfp4.<case>.blocks    U8 [E, R, G, 16]   packed E2M1 codes, as GPT-OSS' `*_blocks`
   mxfp4.<case>.scales    U8 [E, R, G]       E8M0 exponents, as `*_scales`
   mxfp4.<case>.expected  [E, G*32, R]       `integrations.mxfp4.convert_moe_packed_tensors(blocks, scales,
                                             dtype=...)`, the function `Mxfp4Dequantize` (dequantize=True) calls
   fp8.<case>.weight      F8_E4M3 [N, K]
   fp8.<case>.scale_inv   F32 or U8 (E8M0) [ceil(N/bn), ceil(K/bk)]
   fp8.<case>.expected    [N, K]             see "FP8 oracle" below
   Header metadata: one key, `prequant`, a JSON object (one key, as safetensors writes several in any order):
   `{"cases": {"<case>": {"dtype": "bfloat16" | "float16" | "float32", "block": [bn, bk] (FP8 only)}},
   "torch": ..., "transformers": ...}`.

2. fixtures/prequant/gpt_oss_mxfp4/: a tiny GPT-OSS (the config of fixtures/gpt_oss/hub with H = I = 32 and 4
   experts, since MXFP4 needs multiples of 32 and fixtures/gpt_oss/hub has I = 48) whose experts are stored as
   OpenAI ships them: `gate_up_proj_blocks` U8 [E, 2I, H/32, 16] + `gate_up_proj_scales` U8 [E, 2I, H/32], the same
   for down_proj, config.json's quantization_config `{"quant_method": "mxfp4", ...}`. The bf16 experts of a random
   init are quantized to MXFP4 here (OCP rule: shared exponent floor(log2(amax)) - 2, nearest E2M1, saturating).
   `dequantized.safetensors` holds what `from_pretrained(..., quantization_config=Mxfp4Config(dequantize=True))`
   loads for them: `gate_up_proj` bf16 [E, H, 2I], `down_proj` bf16 [E, I, H] per layer. The script checks that every
   other tensor transformers loads equals the stored one. `reference.safetensors`: `input_ids` int64 [2, 12] and the
   f32 `logits` of that model (eager attention, loaded in float32).

3. fixtures/prequant/deepseek_v3_fp8/: a tiny DeepSeek-V3 (the config of fixtures/deepseek_v3/hub, smaller:
   H = 32, 2 heads, dense intermediate 256 so that the dense MLP has two 128-blocks along N or K, 8 experts of
   I = 16) whose decoder linears are FP8 E4M3 with 128x128 block scales `weight_scale_inv` (amax / 448 per block,
   as DeepSeek ships them), config.json's quantization_config `{"quant_method": "fp8", "weight_block_size":
   [128, 128], ...}`; embeddings, lm_head, norms, router gates and e_score_correction_bias stay as stored.
   `dequantized.json` lists every tensor transformers loads (`FineGrainedFP8Config(dequantize=True)`), under the
   on-disk names (the fused experts split back into `experts.{e}.{gate,up,down}_proj.weight`), with dtype, shape
   and the sha256 of its bytes.

What transformers does, and so what moe-quant reproduces:
  * MXFP4: value = LUT[nibble] * 2^(scale - 127) computed by `torch.ldexp` in the target dtype, which is exact
    and rounds once (overflow to inf: scale 255 gives inf for |code| >= 1, and 0 stays a signed 0, not NaN).
    The LUT is E2M1 with the sign in bit 3 (nibble 8 is -0.0); the low nibble of a byte is the even element.
    The [.., G, 32] values are flattened to [.., H] then dims 1 and 2 are swapped: [E, R, H] -> [E, H, R].
  * FP8 oracle: `Fp8Dequantize._dequantize_one` multiplies in float32 (weight and scale both cast to f32) and
    casts the product to the parameter's dtype (bf16 here): two roundings, f32 then bf16. It derives the block
    from the scale grid (rows // scale_rows), which equals the configured block only when every dimension is a
    multiple of it (or smaller than one block); on other shapes it raises (DeepSeek-V3's kv_a_proj_with_mqa,
    [576, 7168] with a [5, 56] grid) or, when the grid divides the shape, silently uses other blocks ([136, 144]
    with a [2, 2] grid gets 68x72 blocks). The format's blocks are the configured ones with a partial last block
    (DeepSeek's own weight_dequant, and transformers' FP8 matmul and `_dequantize_fp8_weight`), so for the
    `partial` case the expected output is `_dequantize_fp8_weight(w, s, [128, 128], float32).to(bfloat16)`: the
    same precision, the format's blocks. The script checks that both functions agree on every other case and
    that `_dequantize_one` differs on `partial` (so a fix in transformers would be noticed).
"""

import hashlib
import json
import math
import shutil
import struct
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, FineGrainedFP8Config, Mxfp4Config  # noqa: E402
from transformers.integrations.finegrained_fp8 import Fp8Dequantize, _dequantize_fp8_weight  # noqa: E402
from transformers.integrations.mxfp4 import convert_moe_packed_tensors  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
VECTORS = FIXTURES / "vectors" / "prequant.safetensors"
GPT_OSS = FIXTURES / "prequant" / "gpt_oss_mxfp4"
DEEPSEEK = FIXTURES / "prequant" / "deepseek_v3_fp8"

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[a.element_size()]
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


# ---------------------------------------------------------------------------------------------------------------
# MXFP4 vectors
# ---------------------------------------------------------------------------------------------------------------


def mxfp4_cases(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor, str]]:
    cases = {}
    # Every E8M0 byte (one per block), each block holding all 16 low and all 16 high nibbles.
    j = torch.arange(16)
    rows, groups = 16, 16
    blocks = torch.empty(1, rows, groups, 16, dtype=torch.uint8)
    for r in range(rows):
        for g in range(groups):
            low = (j + r + g) % 16
            high = (j * 7 + 3 * r + g) % 16
            blocks[0, r, g] = (low | (high << 4)).to(torch.uint8)
    scales = torch.arange(256, dtype=torch.int32).reshape(1, rows, groups).to(torch.uint8)
    cases["every_scale"] = (blocks, scales, "bfloat16")
    # Random codes with realistic exponents (GPT-OSS' lie around 2^-10 .. 2^3), non-square, several experts.
    blocks = torch.randint(0, 256, (3, 24, 2, 16), generator=gen, dtype=torch.int32).to(torch.uint8)
    scales = torch.randint(112, 131, (3, 24, 2), generator=gen, dtype=torch.int32).to(torch.uint8)
    cases["random"] = (blocks, scales, "bfloat16")
    # Other parameter dtypes: the same ldexp in float16 (overflow, subnormals, flush to zero) and float32.
    blocks = torch.randint(0, 256, (2, 8, 1, 16), generator=gen, dtype=torch.int32).to(torch.uint8)
    scales = torch.tensor([0, 1, 100, 102, 103, 110, 126, 127, 128, 134, 141, 142, 143, 144, 254, 255], dtype=torch.int32)
    scales = scales.reshape(2, 8, 1).to(torch.uint8)
    cases["float16"] = (blocks, scales, "float16")
    cases["float32"] = (blocks.clone(), scales.clone(), "float32")
    return cases


# ---------------------------------------------------------------------------------------------------------------
# FP8 vectors
# ---------------------------------------------------------------------------------------------------------------


def fp8_codes(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Random E4M3 bytes without NaN (0x7F / 0xFF)."""
    codes = torch.randint(0, 254, (n, k), generator=gen, dtype=torch.int32)
    codes = torch.where(codes >= 0x7F, codes + 1, codes)
    return codes.to(torch.uint8).view(torch.float8_e4m3fn)


def fp8_cases(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[int], str]]:
    cases = {}
    # Partial blocks in both dimensions (136 = 128 + 8, 144 = 128 + 16), f32 scales as DeepSeek stores them.
    weight = fp8_codes(136, 144, gen)
    scale = (torch.rand(2, 2, generator=gen) * 0.01 + 1e-4).float()
    cases["partial"] = (weight, scale, [128, 128], "bfloat16")
    # Every dimension a multiple of a non-square block, several blocks each way.
    weight = fp8_codes(48, 96, gen)
    scale = (torch.rand(3, 3, generator=gen) * 0.02).float()
    cases["grid"] = (weight, scale, [16, 32], "bfloat16")
    # Every byte, NaN included, with scales that overflow, underflow to subnormals and round on ties.
    weight = torch.arange(256, dtype=torch.int32).repeat(8).reshape(32, 64).to(torch.uint8).view(torch.float8_e4m3fn)
    scale = torch.tensor(
        [[1.0, 1e38, 3e-39, 1.0 + 2.0**-9], [2.0**-20, 0.7, 1.0 + 3 * 2.0**-9, 123.456]], dtype=torch.float32
    )
    cases["edges"] = (weight, scale, [16, 16], "bfloat16")
    # E8M0 scales stored as U8 (2^(byte - 127)), as ue8m0 checkpoints ship them.
    weight = fp8_codes(64, 32, gen)
    scale = torch.tensor([[0], [118], [127], [254]], dtype=torch.int32).reshape(4, 1).to(torch.uint8)
    cases["e8m0"] = (weight, scale, [16, 32], "bfloat16")
    # Other parameter dtypes.
    weight = fp8_codes(32, 32, gen)
    scale = torch.tensor([[3e-5, 0.013], [70.0, 1.0 / 3.0]], dtype=torch.float32)
    cases["float16"] = (weight, scale, [16, 16], "float16")
    cases["float32"] = (weight.clone(), scale.clone(), [16, 16], "float32")
    return cases


def fp8_expected(weight, scale, block, dtype) -> torch.Tensor:
    n, k = weight.shape
    load_path = None
    try:
        load_path = Fp8Dequantize(None)._dequantize_one(weight, scale, output_dtype=dtype)
    except ValueError:
        pass
    if scale.dtype == torch.uint8:
        # `_dequantize_fp8_weight` would multiply by the raw bytes; only the load path reads E8M0.
        assert load_path is not None
        return load_path
    blocks_right = n % block[0] == 0 and k % block[1] == 0
    formatted = _dequantize_fp8_weight(weight, scale, block, torch.float32).to(dtype)
    if blocks_right:
        assert load_path is not None and same_bits(load_path, formatted), "transformers' two dequantizations disagree"
    else:
        assert load_path is None or not same_bits(load_path, formatted), "transformers now uses the format's blocks"
    return formatted


def write_vectors() -> None:
    gen = torch.Generator().manual_seed(20250117)
    tensors: dict[str, torch.Tensor] = {}
    cases: dict[str, dict] = {}
    for case, (blocks, scales, dtype) in mxfp4_cases(gen).items():
        out = convert_moe_packed_tensors(blocks, scales, dtype=DTYPES[dtype])
        name = f"mxfp4.{case}"
        tensors[f"{name}.blocks"], tensors[f"{name}.scales"], tensors[f"{name}.expected"] = blocks, scales, out
        cases[name] = {"dtype": dtype}
    for case, (weight, scale, block, dtype) in fp8_cases(gen).items():
        name = f"fp8.{case}"
        tensors[f"{name}.weight"], tensors[f"{name}.scale_inv"] = weight, scale
        tensors[f"{name}.expected"] = fp8_expected(weight, scale, block, DTYPES[dtype])
        cases[name] = {"dtype": dtype, "block": block}
    about = {"cases": cases, "torch": torch.__version__, "transformers": transformers.__version__}
    meta = {"prequant": json.dumps(about, sort_keys=True)}
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, VECTORS, metadata=meta)


# ---------------------------------------------------------------------------------------------------------------
# Tiny checkpoints
# ---------------------------------------------------------------------------------------------------------------


def to_mxfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., K] (K a multiple of 32) to blocks U8 [..., K/32, 16] and E8M0 scales U8 [..., K/32]."""
    x = w.float().reshape(*w.shape[:-1], w.shape[-1] // 32, 32)
    amax = x.abs().amax(-1)
    exponent = torch.where(amax > 0, torch.floor(torch.log2(amax)) - 2, torch.full_like(amax, -127)).clamp(-127, 127)
    scaled = x / torch.exp2(exponent)[..., None]
    index = (scaled.abs().clamp(max=6.0)[..., None] - E2M1).abs().argmin(-1)
    codes = (index | ((scaled < 0).to(torch.int64) << 3)).to(torch.uint8)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks.contiguous(), (exponent + 127).to(torch.uint8)


def to_fp8_blocks(w: torch.Tensor, block: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] to E4M3 and one f32 scale (amax / 448) per block, partial last blocks included."""
    n, k = w.shape
    rows, cols = math.ceil(n / block[0]), math.ceil(k / block[1])
    scale = torch.empty(rows, cols, dtype=torch.float32)
    out = torch.empty(n, k, dtype=torch.float8_e4m3fn)
    for i in range(rows):
        for j in range(cols):
            part = w[i * block[0] : (i + 1) * block[0], j * block[1] : (j + 1) * block[1]].float()
            s = part.abs().amax().clamp(min=1e-12) / 448.0
            scale[i, j] = s
            out[i * block[0] : (i + 1) * block[0], j * block[1] : (j + 1) * block[1]] = (part / s).clamp(-448, 448).to(
                torch.float8_e4m3fn
            )
    return out, scale


def fresh_dir(d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


def build(config: dict, seed: int):
    """A randomly initialised bf16 model of `config` (a config.json dict)."""
    cfg = transformers.AutoConfig.for_model(**config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    return model.eval()


def write_config(d: Path, config: dict) -> None:
    (d / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def check_kept(loaded: dict, stored: dict, skip) -> None:
    for name, value in loaded.items():
        if skip(name):
            continue
        assert name in stored, f"{name} is loaded but not stored"
        assert same_bits(value, stored[name].to(value.dtype)), f"{name}: transformers changed a kept tensor"


def write_gpt_oss() -> None:
    config = json.loads((FIXTURES / "gpt_oss" / "hub" / "config.json").read_text())
    config.update(hidden_size=32, intermediate_size=32, num_local_experts=4, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, vocab_size=64)
    config.pop("transformers_version", None)
    model = build(config, seed=7)
    stored = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(8)
    for name in list(stored):
        if name.endswith(("gate_up_proj", "down_proj")):
            # Spread the weights so that the blocks get different exponents.
            weight = stored.pop(name).float() * torch.exp2(torch.randint(-3, 4, (1,), generator=gen).float())
            blocks, scales = to_mxfp4(weight.transpose(1, 2))
            stored[f"{name}_blocks"], stored[f"{name}_scales"] = blocks, scales
        elif name.endswith("_bias"):
            stored[name] = (torch.randn(stored[name].shape, generator=gen) * 0.02).to(torch.bfloat16)
    stored.pop("lm_head.weight", None) if config.get("tie_word_embeddings") else None
    fresh_dir(GPT_OSS)
    config["quantization_config"] = {
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
        "quant_method": "mxfp4",
    }
    write_config(GPT_OSS, config)
    save_file({k: v.contiguous() for k, v in stored.items()}, GPT_OSS / "model.safetensors", metadata={"format": "pt"})

    loaded = AutoModelForCausalLM.from_pretrained(GPT_OSS, quantization_config=Mxfp4Config(dequantize=True)).state_dict()
    expected = {}
    for name, value in loaded.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            direct = convert_moe_packed_tensors(stored[f"{name}_blocks"], stored[f"{name}_scales"], dtype=torch.bfloat16)
            assert value.dtype == torch.bfloat16 and same_bits(value, direct), f"{name}: the load path differs"
            expected[name] = value.contiguous()
    assert len(expected) == 2 * config["num_hidden_layers"], sorted(expected)
    check_kept(loaded, stored, lambda n: n in expected)
    save_file(expected, GPT_OSS / "dequantized.safetensors", metadata={"transformers": transformers.__version__})

    # The forward of the model as transformers loads it (experts dequantized), in f32 with eager attention.
    model = AutoModelForCausalLM.from_pretrained(GPT_OSS, dtype=torch.float32, attn_implementation="eager",
                                                 quantization_config=Mxfp4Config(dequantize=True))
    ids = torch.randint(0, config["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().contiguous()
    save_file({"input_ids": ids, "logits": logits}, GPT_OSS / "reference.safetensors",
              metadata={"transformers": transformers.__version__})


def write_deepseek() -> None:
    config = json.loads((FIXTURES / "deepseek_v3" / "hub" / "config.json").read_text())
    config.update(hidden_size=32, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=16, kv_lora_rank=16,
                  qk_nope_head_dim=8, qk_rope_head_dim=8, qk_head_dim=16, head_dim=8, v_head_dim=8,
                  intermediate_size=256, moe_intermediate_size=16, vocab_size=32)
    config.pop("transformers_version", None)
    block = [128, 128]
    model = build(config, seed=11)
    hub = {}
    # transformers 5 keeps the routed experts fused in memory; the hub stores them per expert.
    for name, value in model.state_dict().items():
        value = value.detach().clone()
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix, inter = name[: -len("gate_up_proj")], value.shape[1] // 2
            for e in range(value.shape[0]):
                hub[f"{prefix}{e}.gate_proj.weight"] = value[e, :inter].clone()
                hub[f"{prefix}{e}.up_proj.weight"] = value[e, inter:].clone()
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(value.shape[0]):
                hub[f"{prefix}{e}.down_proj.weight"] = value[e].clone()
        else:
            hub[name] = value
    gen = torch.Generator().manual_seed(12)
    stored = {}
    for name, value in hub.items():
        if name.endswith("e_score_correction_bias"):
            stored[name] = (torch.randn(value.shape, generator=gen) * 0.1).float()
        elif name.startswith("model.layers.") and name.endswith("proj.weight") or name.endswith("proj_with_mqa.weight"):
            weight, scale = to_fp8_blocks(value, block)
            stored[name], stored[f"{name}_scale_inv"] = weight, scale
        else:
            stored[name] = value
    fresh_dir(DEEPSEEK)
    config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                     "weight_block_size": block}
    write_config(DEEPSEEK, config)
    save_file({k: v.contiguous() for k, v in stored.items()}, DEEPSEEK / "model.safetensors", metadata={"format": "pt"})

    fp8 = FineGrainedFP8Config(weight_block_size=block, dequantize=True)
    loaded = AutoModelForCausalLM.from_pretrained(DEEPSEEK, quantization_config=fp8).state_dict()
    on_disk = {}
    for name, value in loaded.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix, inter = name[: -len("gate_up_proj")], value.shape[1] // 2
            for e in range(value.shape[0]):
                on_disk[f"{prefix}{e}.gate_proj.weight"] = value[e, :inter]
                on_disk[f"{prefix}{e}.up_proj.weight"] = value[e, inter:]
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(value.shape[0]):
                on_disk[f"{prefix}{e}.down_proj.weight"] = value[e]
        else:
            on_disk[name] = value
    assert set(on_disk) == {n for n in stored if not n.endswith("_scale_inv")}, set(on_disk) ^ set(stored)
    listing = {}
    for name, value in sorted(on_disk.items()):
        value = value.contiguous()
        if f"{name}_scale_inv" in stored:
            ours = _dequantize_fp8_weight(stored[name], stored[f"{name}_scale_inv"], block, torch.float32).to(value.dtype)
            assert same_bits(value, ours), f"{name}: transformers' load differs from the format's blocks"
        else:
            assert same_bits(value, stored[name].to(value.dtype)), f"{name}: transformers changed a kept tensor"
        dtype = {torch.bfloat16: "BF16", torch.float32: "F32"}[value.dtype]
        listing[name] = {"dtype": dtype, "shape": list(value.shape), "sha256": hashlib.sha256(tensor_bytes(value)).hexdigest()}
    (DEEPSEEK / "dequantized.json").write_text(
        json.dumps({"transformers": transformers.__version__, "tensors": listing}, indent=1, sort_keys=True) + "\n"
    )


def tensor_bytes(value: torch.Tensor) -> bytes:
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[value.element_size()]
    return value.contiguous().view(view).numpy().tobytes()


def main() -> None:
    torch.set_num_threads(1)
    write_vectors()
    write_gpt_oss()
    write_deepseek()
    total = sum(p.stat().st_size for p in [VECTORS, *GPT_OSS.iterdir(), *DEEPSEEK.iterdir()])
    print(f"wrote {VECTORS.relative_to(ROOT)}, {GPT_OSS.relative_to(ROOT)}, {DEEPSEEK.relative_to(ROOT)}: {total} bytes")


if __name__ == "__main__":
    main()
