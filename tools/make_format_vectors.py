#!/usr/bin/env python3
"""Build fixtures/vectors/fp8.safetensors and fixtures/vectors/nvfp4.safetensors: NVIDIA ModelOpt's own FP8 and
NVFP4 weight quantization of hand-chosen and random weights, the oracle for crates/core/tests/formats_vectors.rs
(dev tooling, not a runtime dependency).

Regenerate (from the repository root):

    python -m venv .venv-tools && .venv-tools/bin/pip install torch nvidia-modelopt==0.47.0 safetensors \
        && .venv-tools/bin/python tools/make_format_vectors.py

Deterministic (fixed seeds), CPU only, a few seconds. It rewrites the two files and nothing else.

The oracle is the code path that writes ModelOpt's unified HF checkpoints: each case builds a one-layer model,
runs `mtq.quantize` with FP8_DEFAULT_CFG or NVFP4_DEFAULT_CFG, overwrites the weight quantizer's amax with the
amax under test (callers share one amax over gate/up or q/k/v, so it may exceed the weight's own max, or be
smaller to exercise saturation) and calls `unified_export_hf._export_quantized_weight`, the function
`export_hf_checkpoint` calls per linear. Its registered `weight`, `weight_scale`, `weight_scale_2` are the
expected bytes. As a second check the script recomputes every case through the lower-level helpers
(`NVFP4QTensor.get_weights_scaling_factor` / `NVFP4QTensor.quantize`, `export.quant_utils.to_quantized_weight`) and
requires identical bytes.

One deliberate difference from raw ModelOpt, in the cases whose name starts with `zeros`: a weight amax of 0 (an
all-zero weight) makes ModelOpt's export write NaN scales and garbage codes (FP8: weight_scale 0, every byte
0xFF; NVFP4: weight_scale_2 0, weight_scale 0xFF, every code 0x77). moe-quant replaces a zero amax by the
quantizer's maxbound (448 for FP8, 6 for NVFP4), the rule ModelOpt itself applies to activation amaxes in
`TensorQuantizer._sanitize_export_amax`; these cases store `amax` = 0 (what moe-quant is given) and were
produced by ModelOpt with `modelopt_amax` (the substituted value). The script checks that raw ModelOpt indeed
gives NaN there, so a ModelOpt fix would be noticed.

The vectors are checked to be discriminating: the script also runs plausible wrong implementations (FP8: no
bf16 rounding of W / scale for bf16 weights, the scale rounded to bf16, W * (1/scale); NVFP4: block scale from
amax/448 instead of f32(6 * weight_scale_2), W * (1/divisor), a bf16 rounding of W / divisor, E2M1 ties away from
zero, no sign bit on codes rounded to zero) and requires each to disagree with ModelOpt on some case. The
`near_miss_*` cases exist for that: values placed on E4M3 / E2M1 midpoints, and kept only where a variant errs.

File layout (every case `<c>`):
  <c>.input            F32 or BF16 [N, K]   the weight
  <c>.amax             F32 0-d              the per-tensor weight amax moe-quant is given (a bf16 value for bf16
                                            weights: ModelOpt keeps a bf16 model's amaxes in bf16)
  <c>.modelopt_amax    F32 0-d              the amax ModelOpt was given (equal to <c>.amax except zeros*)
  <c>.weight           F8_E4M3 [N, K] (fp8) or U8 [N, K/2] (nvfp4)
  <c>.weight_scale     F32 0-d (fp8) or F8_E4M3 [N, K/16] (nvfp4)
  <c>.weight_scale_2   F32 0-d (nvfp4 only)
  input_scale.amax     F32 [M]              activation amaxes (0, NaN and infinities included)
  input_scale.expected F32 [M]              ModelOpt's exported input_scale for each
Header metadata: generator, torch and modelopt versions, the case list.
"""

import contextlib
import io
import json
import math
import struct
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

import modelopt  # noqa: E402
import modelopt.torch.quantization as mtq  # noqa: E402
from modelopt.torch.export.quant_utils import to_quantized_weight  # noqa: E402
from modelopt.torch.export.unified_export_hf import _export_quantized_weight  # noqa: E402
from modelopt.torch.export.quant_utils import get_activation_scaling_factor  # noqa: E402
from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor  # noqa: E402
from safetensors import safe_open  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "vectors"

E4M3_MAX = 448.0
E2M1_MAX = 6.0
BLOCK = 16


# ---------------------------------------------------------------------------------------------------------------
# ModelOpt oracle
# ---------------------------------------------------------------------------------------------------------------


def quantized_linear(fmt: str, weight: torch.Tensor, weight_amax: float, input_amax: float = 1.0):
    """A QuantLinear holding `weight`, calibrated by ModelOpt, then given the amaxes under test."""
    n, k = weight.shape
    cfg = mtq.FP8_DEFAULT_CFG if fmt == "fp8" else mtq.NVFP4_DEFAULT_CFG
    model = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)).to(weight.dtype)
    with torch.no_grad():
        model[0].weight.copy_(weight)
    with contextlib.redirect_stdout(io.StringIO()):
        mtq.quantize(model, cfg, lambda m: m(torch.ones(1, k, dtype=weight.dtype)))
    linear = model[0]
    linear.weight_quantizer.amax = torch.tensor(weight_amax, dtype=torch.float32)
    linear.input_quantizer.amax = torch.tensor(input_amax, dtype=torch.float32)
    return linear


def export_linear(fmt: str, weight: torch.Tensor, amax: float) -> dict[str, torch.Tensor]:
    """What export_hf_checkpoint writes for this linear (weight, weight_scale, weight_scale_2)."""
    linear = quantized_linear(fmt, weight, amax)
    with torch.no_grad():
        _export_quantized_weight(linear, weight.dtype)
    out = {"weight": linear.weight.detach().clone(), "weight_scale": linear.weight_scale.detach().clone()}
    if fmt == "nvfp4":
        out["weight_scale_2"] = linear.weight_scale_2.detach().clone()
    return out


def helpers(fmt: str, weight: torch.Tensor, amax: float) -> dict[str, torch.Tensor]:
    """The same through ModelOpt's lower-level helpers, as a cross-check of export_linear."""
    if fmt == "fp8":
        scale = torch.tensor(amax, dtype=torch.float32) / E4M3_MAX
        return {"weight": to_quantized_weight(weight, scale, "fp8"), "weight_scale": scale}
    scale_2 = torch.tensor(amax, dtype=torch.float32) / (E2M1_MAX * E4M3_MAX)
    scale, _ = NVFP4QTensor.get_weights_scaling_factor(weight, BLOCK, scale_2)
    packed = NVFP4QTensor.quantize(weight, BLOCK, scale, scale_2)[0]._quantized_data
    return {"weight": packed, "weight_scale": scale, "weight_scale_2": scale_2}


def raw_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.uint8: "U8", torch.float8_e4m3fn: "F8_E4M3"}


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' own writer orders the metadata map at random; this one writes the same bytes every run."""
    header: dict = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = raw_bytes(tensors[name])
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensors[name].dtype], "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    with safe_open(str(path), "pt") as check:
        assert check.metadata() == metadata and set(check.keys()) == set(tensors)
        for name in tensors:
            assert same(check.get_tensor(name), tensors[name]), name


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and raw_bytes(a) == raw_bytes(b)


def maxbound(fmt: str) -> float:
    return E4M3_MAX if fmt == "fp8" else E2M1_MAX


def oracle(fmt: str, name: str, weight: torch.Tensor, amax: float) -> dict[str, torch.Tensor]:
    modelopt_amax = amax if amax > 0 else maxbound(fmt)
    if amax == 0:
        raw = export_linear(fmt, weight, 0.0)
        first = raw["weight_scale"].view(torch.uint8).flatten()[0] if fmt == "nvfp4" else raw["weight"].view(
            torch.uint8).flatten()[0]
        assert int(first) & 0x7F == 0x7F, f"{name}: ModelOpt no longer writes NaN for a zero amax; revisit"
    exported = export_linear(fmt, weight, modelopt_amax)
    checked = helpers(fmt, weight, modelopt_amax)
    for key, value in exported.items():
        assert same(value, checked[key]), f"{fmt} {name}: export and helpers disagree on {key}"
    out = {f"{name}.input": weight.contiguous().clone(),
           f"{name}.amax": torch.tensor(amax, dtype=torch.float32),
           f"{name}.modelopt_amax": torch.tensor(modelopt_amax, dtype=torch.float32)}
    for key, value in exported.items():
        out[f"{name}.{key}"] = value.contiguous()
    if fmt == "fp8":
        assert exported["weight"].dtype == torch.float8_e4m3fn and exported["weight_scale"].dim() == 0
    else:
        n, k = weight.shape
        assert exported["weight"].dtype == torch.uint8 and tuple(exported["weight"].shape) == (n, k // 2)
        assert exported["weight_scale"].dtype == torch.float8_e4m3fn
        assert tuple(exported["weight_scale"].shape) == (n, k // BLOCK)
        assert exported["weight_scale_2"].dim() == 0
    return out


def input_scales(fmt: str) -> dict[str, torch.Tensor]:
    amaxes = [0.0, 1e-45, 1e-40, 1.1754944e-38, 1e-3, 0.37, 1.0, 3.0, 6.0, 448.0, 2688.0, 12345.678, 3.3e38,
              float("inf"), float("nan")]
    rng = torch.Generator().manual_seed(7)
    amaxes += (torch.rand(17, generator=rng) * torch.logspace(-4, 4, 17)).tolist()
    linear = quantized_linear(fmt, torch.ones(1, 16), 1.0)
    accepted, expected = [], []
    for a in amaxes:
        linear.input_quantizer.amax = torch.tensor(a, dtype=torch.float32)
        try:
            expected.append(get_activation_scaling_factor(linear).squeeze().item())
        except AssertionError:
            # NVFP4: amax / 2688 underflows to 0 and ModelOpt refuses ("scaling factor not positive").
            print(f"  {fmt} input_scale: ModelOpt refuses amax {a!r}; left out")
            continue
        accepted.append(a)
    return {"input_scale.amax": torch.tensor(accepted, dtype=torch.float32),
            "input_scale.expected": torch.tensor(expected, dtype=torch.float32)}


# ---------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------


def e4m3_positive_values() -> list[float]:
    """Every finite non-negative E4M3 value, in code order (0x00 … 0x7E)."""
    return torch.arange(0, 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn).float().tolist()


def e4m3_midpoints() -> list[float]:
    v = e4m3_positive_values()
    return [(a + b) / 2 for a, b in zip(v, v[1:])]


def random_weight(rng: torch.Generator, n: int, k: int) -> torch.Tensor:
    """Normal values whose magnitude varies by block of 16 over ~6 decades, plus a few outliers."""
    w = torch.randn(n, k, generator=rng)
    block_scale = torch.exp(torch.empty(n, k // BLOCK).uniform_(-7.0, 1.0, generator=rng))
    w = w * block_scale.repeat_interleave(BLOCK, dim=1) * 0.05
    outliers = torch.randint(0, n * k, (max(1, n * k // 500),), generator=rng)
    w.view(-1)[outliers] *= 20.0
    return w


def amax_of(w: torch.Tensor) -> float:
    return w.float().abs().max().item()


def pad_rows(values: list[float], k: int) -> torch.Tensor:
    rows = math.ceil(len(values) / k)
    values = values + [0.0] * (rows * k - len(values))
    return torch.tensor(values, dtype=torch.float32).view(rows, k)


def fp8_cases(rng: torch.Generator) -> list[tuple[str, torch.Tensor, float]]:
    cases = []
    zeros = torch.zeros(2, 32)
    zeros[1, ::2] = -0.0
    cases.append(("zeros_f32", zeros, 0.0))
    cases.append(("zeros_bf16", zeros.bfloat16(), 0.0))

    # One all-zero block between non-zero ones (FP8 has no blocks, but the same weight is in nvfp4's file).
    w = random_weight(rng, 3, 48)
    w[:, 16:32] = 0.0
    w[1, 16:32:3] = -0.0
    cases.append(("zero_block_f32", w, amax_of(w)))

    # amax 448 makes the scale exactly 1, so W/scale = W: every E4M3 value, every midpoint (ties to even),
    # midpoints nudged by one f32 ulp either way, and the subnormal range down to 2^-12, with both signs.
    exact = e4m3_positive_values()
    mids = e4m3_midpoints()
    nudged = [math.nextafter(m, 0.0) for m in mids] + [math.nextafter(m, math.inf) for m in mids]
    subnormal = [i * 2.0 ** -12 for i in range(0, 40)]
    values = exact + mids + nudged + subnormal
    values = values + [-v for v in values] + [-0.0, 448.0, -448.0]
    t = pad_rows(values, 64)
    cases.append(("ties_f32", t, 448.0))
    # bf16 holds every E4M3 value and midpoint exactly (the nudged ones round back onto them).
    cases.append(("ties_bf16", t.bfloat16(), 448.0))

    # Subnormal E4M3 outputs with a non-trivial scale: amax 3.5 puts |W| < 3.5/448·2^-6 into the subnormal range.
    sub = torch.rand(4, 32, generator=rng) * (3.5 / 448.0 * 2.0 ** -5) * torch.sign(torch.randn(4, 32, generator=rng))
    sub[0, 0] = 3.5
    cases.append(("subnormal_f32", sub, 3.5))
    cases.append(("subnormal_bf16", sub.bfloat16(), amax_of(sub.bfloat16())))

    # Saturation: the amax given is smaller than the weight's own max (values beyond ±448 after scaling).
    w = random_weight(rng, 4, 32)
    cases.append(("saturate_f32", w, amax_of(w) * 0.37))
    cases.append(("saturate_bf16", w.bfloat16(), amax_of(w.bfloat16()) * 0.37))

    w = torch.tensor([[-0.0, 0.0, -1e-30, 1e-30, -1.0, 1.0] + [-0.0] * 26])
    cases.append(("negzero_f32", w, 1.0))
    cases.append(("negzero_bf16", w.bfloat16(), 1.0))

    w = random_weight(rng, 3, 32)
    cases.append(("small_3x32_f32", w, amax_of(w)))
    cases.append(("small_3x32_bf16", w.bfloat16(), amax_of(w.bfloat16())))

    # A shared (gate/up) amax larger than this weight's own.
    w = random_weight(rng, 16, 64)
    cases.append(("shared_amax_f32", w, amax_of(w) * 1.37))
    cases.append(("shared_amax_bf16", w.bfloat16(), amax_of(w.bfloat16()) * 1.37))

    w = random_weight(rng, 64, 128)
    cases.append(("random_64x128_f32", w, amax_of(w)))
    wb = random_weight(rng, 64, 128).bfloat16()
    cases.append(("random_64x128_bf16", wb, amax_of(wb)))
    cases.append(fp8_near_miss_case(rng))
    return cases


def nvfp4_cases(rng: torch.Generator) -> list[tuple[str, torch.Tensor, float]]:
    cases = []
    zeros = torch.zeros(2, 32)
    zeros[1, ::2] = -0.0
    cases.append(("zeros_f32", zeros, 0.0))
    cases.append(("zeros_bf16", zeros.bfloat16(), 0.0))

    w = random_weight(rng, 3, 48)
    w[:, 16:32] = 0.0
    w[1, 16:32:3] = -0.0
    cases.append(("zero_block_f32", w, amax_of(w)))
    cases.append(("zero_block_bf16", w.bfloat16(), amax_of(w.bfloat16())))

    # amax 2688 makes weight_scale_2 exactly 1; a block holding ±6 gets the block scale 1, so y = W and the
    # values hit the E2M1 grid, its midpoints (ties to even), one ulp either side, and negative zero / tiny
    # negatives (ModelOpt sets the sign bit for any value < 0, so -0.1 becomes code 0x8 and -0.0 code 0x0).
    grid = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    nudged = [math.nextafter(t, 0.0) for t in ties] + [math.nextafter(t, math.inf) for t in ties]
    pool = grid + ties + nudged + [7.0, 100.0, 0.1, 1e-30]
    pool = pool + [-v for v in pool] + [-0.0]
    blocks = []
    for start in range(0, len(pool), 15):
        chunk = pool[start:start + 15]
        chunk = chunk + [0.0] * (15 - len(chunk))
        blocks.append([6.0] + chunk)
    if len(blocks) % 2:
        blocks.append([0.0] * BLOCK)
    t = torch.tensor(blocks, dtype=torch.float32).view(-1, 32)
    cases.append(("ties_e2m1_f32", t, 2688.0))
    cases.append(("ties_e2m1_bf16", t.bfloat16(), 2688.0))

    # Block scales on E4M3 midpoints (ties to even) and on the subnormal range: with weight_scale_2 = 1 a block
    # whose amax is 6·m gets s = m exactly. Also s below 2^-9 (clamped up) and above 448 (clamped down).
    mids = e4m3_midpoints()
    targets = mids[:24] + mids[60:70] + mids[-6:] + [2.0 ** -10, 2.0 ** -12, 1e-20, 500.0, 448.0]
    rows = []
    for i, s in enumerate(targets):
        block = (torch.rand(BLOCK, generator=rng) * 2 - 1) * (6.0 * s)
        block[i % BLOCK] = 6.0 * s * (1 if i % 2 else -1)
        rows.append(block)
    while len(rows) % 2:
        rows.append(torch.zeros(BLOCK))
    t = torch.stack(rows).view(-1, 32)
    cases.append(("ties_e4m3_scale_f32", t, 2688.0))

    # Subnormal block scales from a realistic amax: blocks far smaller than the tensor's amax.
    w = torch.randn(4, 64, generator=rng)
    w[:, 16:] *= torch.tensor([1e-3, 3e-4, 5e-5])[None, :].repeat_interleave(BLOCK, dim=1)
    cases.append(("subnormal_f32", w, amax_of(w)))
    cases.append(("subnormal_bf16", w.bfloat16(), amax_of(w.bfloat16())))

    w = random_weight(rng, 4, 32)
    cases.append(("saturate_f32", w, amax_of(w) * 0.37))
    cases.append(("saturate_bf16", w.bfloat16(), amax_of(w.bfloat16()) * 0.37))
    # So small an amax that some block scales exceed 448 and are clamped.
    cases.append(("saturate_hard_f32", w, amax_of(w) * 1e-3))

    w = torch.tensor([[-0.0, 0.0, -1e-30, 1e-30, -1.0, 1.0] + [-0.0] * 26])
    cases.append(("negzero_f32", w, 1.0))
    cases.append(("negzero_bf16", w.bfloat16(), 1.0))

    w = random_weight(rng, 3, 32)
    cases.append(("small_3x32_f32", w, amax_of(w)))
    cases.append(("small_3x32_bf16", w.bfloat16(), amax_of(w.bfloat16())))

    w = random_weight(rng, 16, 64)
    cases.append(("shared_amax_f32", w, amax_of(w) * 1.37))
    cases.append(("shared_amax_bf16", w.bfloat16(), amax_of(w.bfloat16()) * 1.37))

    w = random_weight(rng, 64, 128)
    cases.append(("random_64x128_f32", w, amax_of(w)))
    wb = random_weight(rng, 64, 128).bfloat16()
    cases.append(("random_64x128_bf16", wb, amax_of(wb)))
    cases.append(nvfp4_near_miss_case(rng, torch.float32))
    cases.append(nvfp4_near_miss_case(rng, torch.bfloat16))
    return cases


# ---------------------------------------------------------------------------------------------------------------
# Near misses: plausible wrong implementations the vectors must tell apart from ModelOpt
# ---------------------------------------------------------------------------------------------------------------


def fp8_variant(variant: str, w: torch.Tensor, amax: float) -> torch.Tensor:
    scale = torch.tensor(amax, dtype=torch.float32) / E4M3_MAX
    if variant == "f32_division_for_bf16":  # SPEC 4.1's rule ignored: no bf16 rounding of W / scale
        q = w.float() / scale
    elif variant == "bf16_scale":  # the scale rounded to bf16 before dividing
        q = w / scale.to(w.dtype)
    elif variant == "reciprocal":  # W * (1 / scale) instead of a true division
        q = (w.float() * (1.0 / scale)).to(w.dtype)
    else:
        raise ValueError(variant)
    return q.to(torch.float8_e4m3fn)


def e2m1_codes(y: torch.Tensor, variant: str = "") -> torch.Tensor:
    if variant == "ties_away":  # round half away from zero instead of half to even
        index = torch.searchsorted(NVFP4QTensor.get_e2m1_bounds("cpu"), y.abs(), right=True).to(torch.uint8)
        codes = ((y < 0).to(torch.uint8) << 3) + index
    else:
        codes = NVFP4QTensor._cast_fp4(y.clone())
    if variant == "no_sign_on_zero":  # -0.1 → code 0x0 instead of ModelOpt's 0x8
        codes = torch.where(codes & 7 == 0, torch.zeros_like(codes), codes)
    return codes


def nvfp4_variant(variant: str, w: torch.Tensor, amax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed weight, weight_scale) by a hand-written NVFP4 with one deliberate change (none for "")."""
    n, k = w.shape
    blocks = w.float().view(n, k // BLOCK, BLOCK)
    scale_2 = torch.tensor(amax, dtype=torch.float32) / (E2M1_MAX * E4M3_MAX)
    if variant == "amax_over_448":  # s = block_amax / (amax / 448) instead of block_amax / f32(6 · scale_2)
        s = blocks.abs().amax(-1) / (torch.tensor(amax, dtype=torch.float32) / E4M3_MAX)
    else:
        s = blocks.abs().amax(-1) / (E2M1_MAX * scale_2)
    s[s == 0] = 1.0
    scale = s.clamp(min=2.0 ** -9, max=E4M3_MAX).to(torch.float8_e4m3fn)
    divisor = (scale.float() * scale_2).unsqueeze(-1)
    if variant == "reciprocal":
        y = blocks * (1.0 / divisor)
    elif variant == "bf16_division":  # FP8's rule (divide in the weight's dtype) wrongly applied to NVFP4
        y = (blocks / divisor).to(w.dtype).float() if w.dtype == torch.bfloat16 else blocks / divisor
    else:
        y = blocks / divisor
    codes = e2m1_codes(y.view(n, k), variant)
    return (codes[:, 1::2] << 4) | codes[:, 0::2], scale


FP8_VARIANTS = ["f32_division_for_bf16", "bf16_scale", "reciprocal"]
NVFP4_VARIANTS = ["amax_over_448", "reciprocal", "bf16_division", "ties_away", "no_sign_on_zero"]


def nvfp4_differs(variant: str, w: torch.Tensor, amax: float, expected: torch.Tensor) -> torch.Tensor:
    """Per row: whether the variant's packed bytes differ from `expected`."""
    packed, _ = nvfp4_variant(variant, w, amax)
    return (packed != expected).any(dim=1)


def f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def near_miss_amax(rng: torch.Generator) -> float:
    """An amax for which f32(6 · f32(amax / 2688)) != f32(amax / 448), so the two block-scale divisors differ."""
    while True:
        amax = f32(float(torch.rand(1, generator=rng)) * 4 + 0.5)
        t = torch.tensor(amax, dtype=torch.float32)
        if float(E2M1_MAX * (t / (E2M1_MAX * E4M3_MAX))) != float(t / E4M3_MAX):
            return amax


def fp8_near_miss_case(rng: torch.Generator) -> tuple[str, torch.Tensor, float]:
    """Values a few f32 ulps around scale · (E4M3 midpoint), kept where W * (1/scale) and W / scale round apart."""
    for _ in range(100):
        amax = near_miss_amax(rng)
        scale = torch.tensor(amax, dtype=torch.float32) / E4M3_MAX
        mids = torch.tensor(e4m3_midpoints()[8:], dtype=torch.float32)
        centre = mids * scale
        candidates = torch.cat([centre, torch.nextafter(centre, centre * 0), torch.nextafter(centre, centre * 2)])
        expected = (candidates / scale).to(torch.float8_e4m3fn).view(torch.uint8)
        wrong = (candidates * (1.0 / scale)).to(torch.float8_e4m3fn).view(torch.uint8)
        picked = candidates[expected != wrong][:62]
        if picked.numel() >= 16:
            break
    else:
        raise AssertionError("no FP8 near misses found")
    signs = torch.where(torch.rand(picked.numel(), generator=rng) < 0.5, -1.0, 1.0)
    values = torch.cat([torch.tensor([amax, -amax]), picked * signs])
    values = torch.cat([values, torch.zeros((-values.numel()) % 32)])
    return ("near_miss_f32", values.view(-1, 32), amax)


def nvfp4_near_miss_case(rng: torch.Generator, dtype: torch.dtype) -> tuple[str, torch.Tensor, float]:
    """Rows kept from a random pool because at least one near-miss variant gets them wrong: block amaxes that put
    s on an E4M3 midpoint, and elements at divisor · (E2M1 tie) ± an ulp."""
    amax = f32(float(torch.tensor(near_miss_amax(rng), dtype=dtype).float()))
    scale_2 = torch.tensor(amax, dtype=torch.float32) / (E2M1_MAX * E4M3_MAX)
    mids = torch.tensor(e4m3_midpoints()[4:100], dtype=torch.float32)
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    rows, blocks_per_row = 512, 4
    n_blocks = rows * blocks_per_row
    m = mids[torch.randint(0, mids.numel(), (n_blocks,), generator=rng)]
    block_amax = (m * (E2M1_MAX * scale_2)).to(dtype).float()
    scale = (block_amax / (E2M1_MAX * scale_2)).clamp(min=2.0 ** -9, max=E4M3_MAX).to(torch.float8_e4m3fn)
    divisor = scale.float() * scale_2
    t = ties[torch.randint(0, ties.numel(), (n_blocks, BLOCK), generator=rng)]
    blocks = (t * divisor[:, None]).to(dtype).float()
    nudge = torch.randint(-1, 2, (n_blocks, BLOCK), generator=rng)
    blocks = torch.where(nudge < 0, torch.nextafter(blocks, torch.zeros_like(blocks)), blocks)
    blocks = torch.where(nudge > 0, torch.nextafter(blocks, blocks * 2), blocks).to(dtype).float()
    blocks = blocks * torch.where(torch.rand(n_blocks, BLOCK, generator=rng) < 0.5, -1.0, 1.0)
    blocks[:, 0] = block_amax
    w = blocks.view(rows, blocks_per_row * BLOCK).to(dtype)
    w[0, 0] = amax
    expected, _ = nvfp4_variant("", w, amax)
    keep = torch.zeros(rows, dtype=torch.bool)
    required = ["bf16_division"] if dtype == torch.bfloat16 else ["amax_over_448", "reciprocal"]
    for variant in ["amax_over_448", "reciprocal", "bf16_division"]:
        differs = nvfp4_differs(variant, w, amax, expected)
        assert differs.any() or variant not in required, f"no NVFP4 near misses for {variant}"
        keep[torch.nonzero(differs).flatten()[:4]] = True
    keep[0] = True
    suffix = "bf16" if dtype == torch.bfloat16 else "f32"
    return (f"near_miss_{suffix}", w[keep].contiguous(), amax)


def check_variants_are_caught(fmt: str, tensors: dict[str, torch.Tensor], cases) -> None:
    """Each near-miss variant must disagree with ModelOpt on at least one case, so the Rust test would catch it."""
    variants = FP8_VARIANTS if fmt == "fp8" else NVFP4_VARIANTS
    for variant in variants:
        caught = []
        for name, _, _ in cases:
            w = tensors[f"{name}.input"]
            amax = float(tensors[f"{name}.modelopt_amax"])
            if fmt == "fp8":
                wrong = fp8_variant(variant, w, amax).view(torch.uint8)
            else:
                wrong, _ = nvfp4_variant(variant, w, amax)
            if not torch.equal(wrong, tensors[f"{name}.weight"].view(torch.uint8)):
                caught.append(name)
        assert caught, f"{fmt}: no case tells the variant {variant!r} from ModelOpt"
        print(f"  {fmt} near miss {variant!r} caught by {len(caught)} cases ({', '.join(caught[:4])}, ...)")
    if fmt == "nvfp4":
        # The hand-written NVFP4 without changes must equal ModelOpt everywhere (it is the variants' baseline).
        for name, _, _ in cases:
            packed, scale = nvfp4_variant("", tensors[f"{name}.input"], float(tensors[f"{name}.modelopt_amax"]))
            assert torch.equal(packed, tensors[f"{name}.weight"]), name
            assert same(scale, tensors[f"{name}.weight_scale"]), name


def build(fmt: str, cases) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, weight, amax in cases:
        # ModelOpt keeps amax in the model's dtype (a bf16 model's quantizers hold bf16 amaxes, exact for a
        # weight's max |W|), so an amax under test is first rounded to the weight's dtype.
        amax = float(torch.tensor(amax, dtype=weight.dtype).float())
        tensors.update(oracle(fmt, name, weight, amax))
    tensors.update(input_scales(fmt))
    check_variants_are_caught(fmt, tensors, cases)
    metadata = {
        "generator": "tools/make_format_vectors.py",
        "torch": torch.__version__,
        "modelopt": modelopt.__version__,
        "format": fmt,
        "cases": ",".join(name for name, _, _ in cases),
    }
    path = OUT / f"{fmt}.safetensors"
    save_safetensors(tensors, path, metadata)
    print(f"{path.relative_to(ROOT)}: {len(cases)} cases, {path.stat().st_size} bytes")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    build("fp8", fp8_cases(torch.Generator().manual_seed(1234)))
    build("nvfp4", nvfp4_cases(torch.Generator().manual_seed(5678)))


if __name__ == "__main__":
    main()
