#!/usr/bin/env python3
"""Build the MoE "zoo": one tiny, header-only description of every Mixture-of-Experts model type that
transformers knows, under fixtures/zoo/ (dev tooling, not a runtime dependency).

Regenerate (from the repository root; CPU only, a few minutes):

    python -m venv .venv-zoo && .venv-zoo/bin/pip install torch transformers==5.25.0 safetensors numpy \
        && .venv-zoo/bin/python tools/make_zoo.py            # or: tools/make_zoo.py qwen3_moe jamba ...

Written with transformers 5.25.0 and torch 2.15 (the versions are recorded in every file).

What it does:

  1. Enumerates every model type of transformers' CONFIG_MAPPING whose default config (nested sub-configs
     included) has an MoE-ish key (any key containing "expert", "moe" or "router", n_routed_experts,
     ffn_config ...). That net is wide on purpose; a type is kept only if the model built from it really
     has routed experts: a module holding the weights of >= 2 experts (rank-3 [E, ...] parameters, a list
     of >= 2 identical expert MLPs, or 2-D [E*I, H] stacks in a module declaring its expert count) with a
     router beside it.
  2. Builds a TINY config for it: hidden 64, per-expert intermediate 48, dense / shared-expert intermediate
     80, 8 routed experts, top-k 2, vocab 256, 4 attention heads / 2 kv heads / head_dim 16 where the
     config has those keys; 4 decoder layers when the family has dense-first layers, sparse steps or a
     hybrid layer pattern, else 2; vision / audio towers of 1 layer and width 32. FAMILY_OVERRIDES (below)
     adjusts families whose configs need more than the generic rules.
  3. Instantiates the class users load (AutoModelForCausalLM; the ForConditionalGeneration class of
     AutoModelForImageTextToText / multimodal LM for composite configs, since users quantize that
     checkpoint; seq2seq and token-classification classes where nothing else exists) on CPU, in bfloat16,
     seed 0, and saves it twice: save_pretrained(dir) (the hub / original layout, e.g. per-expert
     experts.{e}.gate_proj.weight) and save_pretrained(dir, save_original_format=False) (the transformers 5
     in-memory fused layout, experts.gate_up_proj [E,2I,H] / experts.down_proj [E,H,I]).
  4. Writes fixtures/zoo/<model_type>.json (sorted keys, no weight data) holding: the transformers and torch
     versions, the model class, the saved config.json object, and per layout (`hub`, plus `fused` only when
     its listing differs from hub's; `fused_same_as_hub` says which) the safetensors header listing
     {name: [dtype, shape]} of all shards merged, and `truth`, the ground truth read from the instantiated
     model's modules (never from tensor names):
       - truth.experts[]: one per experts module: its decoder stack and layer index, in-memory module path(s),
         kind (fused = rank-3 [E, ...] parameters; list = a ModuleList / ModuleDict of expert MLPs;
         stacked_2d = DBRX's [E*I, H] matrices), E, H, I and gated-or-not from the parameter shapes, the
         orientation (standard [E, out, in] or transposed [E, in, out]), the flags transformers'
         @use_experts_implementation sets (has_gate, is_concatenated (false = gate/up interleaved),
         is_transposed, has_bias, has_post_expert_norm), whether it sits inside attention (JetMoE's mixture
         of attention heads), top_k (router module attribute, else config) and where it came from, the router
         modules / tensors beside it, shared-expert modules and their gate, and `saved` (false when another
         module's tied parameters are what the checkpoint holds);
       - truth.moe_layers: the decoder layer indices of the text stack whose layer holds routed experts
         outside attention; truth.text_layers: that stack's in-memory path and length; other_moe_stacks:
         further stacks with experts (a talker, an encoder, a vision encoder);
       - truth.mixers: the token-mixing modules of each decoder layer and which kinds other than attention
         occur (mamba, linear_attention, conv); truth.attention_experts;
       - truth.multimodal_modules: the top-level vision / audio / projector modules of a composite model;
       - layouts.<layout>.truth: per experts module the checkpoint tensor names of its experts, router, shared
         experts and shared gate; the text decoder-layer prefix; the checkpoint prefix of each multimodal
         module; rank3_not_experts (conv1d kernels and the like); mixed_tensors (tensors holding parts of
         several owners, e.g. ERNIE 4.5 VL's stacked text + vision correction bias).
     And fixtures/zoo/INDEX.json: every enumerated model type with its status and MoE-ish keys:
       built      an entry was written;
       not_moe    the built model has no routed experts (the reason says what the keys are for);
       component  a sub-config (text / vision / talker part of a composite model) with no loadable model
                  class of its own: the composite entry covers it;
       failed     the tiny model could not be built (the error is recorded).

Deliberate choices:
  * No weight data is stored: tests materialize a checkpoint from the listing (__test__/helpers/zoo.mjs).
    Header listings and configs are enough for detection, and ~95 model types stay near 2 MB.
  * The per-expert intermediate size is 48 (not 32) so that H 64, I 48, 2I 96 and dense 80 are all distinct
    and gate_up [E,2I,H] can never be square; every size is a multiple of 16.
  * Values are irrelevant to the listing, so after the ground truth is read from the modules every parameter
    and buffer is overwritten with a small integer code (exact in bfloat16) naming what it belongs to; that is
    how the checkpoint names of experts, routers and shared experts are found in each layout, whatever
    renaming, splitting or stacking transformers' conversion does on save.
  * Layer placement: the tiny configs keep each config class's own placement rules. Per-layer lists of the
    full-size default (layer_types, mlp_layer_types ...) are dropped when the class derives them again for
    the smaller layer count, else cut to the first layers; DeepSeek-style first_k_dense_replace is set to 1,
    Llama4's interleave step to 2, Jamba's expert period 2 / attention period 4. The saved config.json always
    agrees with the model that was built.
  * Per-layer size overrides of full-size configs (per_layer_config) are dropped; Dots 3 Note keeps a 2-layer
    vision encoder whose second layer is MoE (its vision tower has experts of its own).
  * MTP / next-token-prediction layers are left at the config defaults; whatever transformers builds and
    saves is what the listing shows.
  * A model above MAX_PARAMS parameters (on the meta device, before it is built) means a size the generic
    overrides missed: it is reported as failed instead of being built.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
import transformers  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402
from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "fixtures" / "zoo"

# ---------------------------------------------------------------------------------------------------------------
# Tiny shapes
# ---------------------------------------------------------------------------------------------------------------
HIDDEN = 64
I_EXPERT = 48
I_DENSE = 80
N_EXPERTS = 8
TOP_K = 2
VOCAB = 256
N_HEADS = 4
N_KV_HEADS = 2
HEAD_DIM = 16
VISION_WIDTH = 32
VISION_HEADS = 2
VISION_MLP = 64
SEED = 0
MAX_PARAMS = 20_000_000  # a tiny model is far below this; above it the generic overrides missed a size

# Keys of a default config that make a model type a candidate (wide net; the built model decides).
CANDIDATE_KEY = re.compile(r"expert|moe|router|^ffn_config$|^n_routed", re.I)

# Keys that make a family show placement / hybrid structure: those get 4 decoder layers instead of 2.
PLACEMENT_KEYS = {
    "first_k_dense_replace", "decoder_sparse_step", "mlp_only_layers", "moe_layer_freq", "interleave_moe_layer_step",
    "moe_layers", "layer_types", "mlp_layer_types", "expert_layer_period", "moe_layer_start_index", "layers_block_type",
    "hybrid_override_pattern", "num_dense_layers", "attn_layer_period", "enable_moe_block", "moe_layer_interval",
}

EXPERT_COUNT_KEYS = ["num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"]
TOP_K_KEYS = ["num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_k", "top_k_experts", "moe_top_k"]
EXPERT_I_KEYS = ["moe_intermediate_size", "expert_ffn_hidden_size", "ffn_hidden_size_expert"]
SHARED_I_KEYS = [
    "shared_expert_intermediate_size", "moe_shared_expert_intermediate_size", "shared_experts_intermediate_size",
    "shared_intermediate_size", "share_expert_dim",
]
DENSE_I_KEYS = [
    "dense_intermediate_size", "intermediate_size_mlp", "first_dense_intermediate_size", "prefix_dense_intermediate_size",
    "mlp_only_intermediate_size",
]
SHARED_COUNT_KEYS = ["n_shared_experts", "num_shared_experts", "moe_num_shared_experts"]
LAYER_COUNT_KEYS = ["num_hidden_layers", "n_layers", "num_layers"]
SUB_CONFIG_KEYS = ["text_config", "vision_config", "audio_config", "thinker_config", "talker_config", "encoder_config",
                   "code2wav_config", "code_predictor_config", "sam_config", "backbone_config", "asr_config",
                   "attn_config", "ffn_config", "head_config", "vision_encoder_config", "projector_config"]

# ---------------------------------------------------------------------------------------------------------------
# Per-family adjustments: deep-merged over the generic tiny config (None deletes a generic override).
# ---------------------------------------------------------------------------------------------------------------
DOTS3_SWA = {"swa_num_attention_heads": N_HEADS, "swa_num_key_value_heads": N_HEADS, "swa_q_lora_rank": 32,
             "swa_kv_lora_rank": 32, "swa_head_dim": 32, "swa_qk_nope_head_dim": 16, "swa_v_head_dim": 16}
FAMILY_OVERRIDES: dict[str, dict] = {
    # placement worth showing in 4 layers
    "llama4": {"text_config": {"interleave_moe_layer_step": 2}},
    "llama4_text": {"interleave_moe_layer_step": 2},
    "jamba": {"expert_layer_period": 2, "expert_layer_offset": 1, "attn_layer_period": 4, "attn_layer_offset": 2},
    # DbrxAttention reads attn_config.rope_theta, which DbrxAttentionConfig does not define
    "dbrx": {"attn_config": {"rope_theta": 10000.0}},
    # configs without a default per-layer pattern (the hub configs always carry one)
    "lfm2_moe": {"layer_types": ["conv", "conv", "full_attention", "conv"], "num_dense_layers": 1},
    "deepseek_ocr2": {"text_config": {"mlp_layer_types": ["dense", "sparse", "sparse", "sparse"]}},
    # multimodal rope sections must add up to head_dim / 2 (16 / 2 here)
    "ernie4_5_vl_moe": {"text_config": {"rope_parameters": {"rope_theta": 500000.0, "rope_type": "default",
                                                            "mrope_section": [3, 3, 2]}}},
    "hy_v4_vl": {"text_config": {"rope_parameters": {"mrope_section": [4, 2, 2]}}},
    # multi-head attention only
    "glm5_next": {"text_config": {"num_key_value_heads": N_HEADS}},
    "glm5_next_text": {"num_key_value_heads": N_HEADS},
    # top-1 routing only
    "zaya": {"num_experts_per_tok": 1},
    # sliding-window MLA layers: their head_dim is qk_nope_head_dim + qk_rope_head_dim
    # Dots 3 Note's vision encoder has MoE layers of its own (dense first, then sparse): kept, 2 layers
    "dots3_note": {"text_config": {"num_key_value_heads": N_HEADS, **DOTS3_SWA},
                   "vision_config": {"num_hidden_layers": 2, "mlp_layer_types": ["dense", "sparse"],
                                     "num_local_experts": 4, "moe_intermediate_size": I_EXPERT}},
    "dots3_note_text": {"num_key_value_heads": N_HEADS, **DOTS3_SWA},
    "hy_v4_vl_text": {"rope_parameters": {"mrope_section": [4, 2, 2]}},
    # the QSA token indexer is built on every full-attention layer, so its sizes are required
    "qwen4_exp": {"text_config": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16,
                                  "indexer_budget": 64, "indexer_compress_ratio": 4}},
    "qwen4_exp_text": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 64,
                       "indexer_compress_ratio": 4},
    "qwen3_omni_moe": {"talker_config": {"text_config": {"shared_expert_intermediate_size": I_DENSE},
                                         "spatial_merge_size": 2}},
    # Gemma 4 style text configs take the full-attention layers' head_dim as a kwarg (default 512)
    "gemma4": {"text_config": {"global_head_dim": 32}},
    "gemma4_text": {"global_head_dim": 32},
    "diffusion_gemma": {"text_config": {"global_head_dim": 32}, "vision_config": {"position_embedding_size": 256}},
    # ViTPose++: part_features must stay below the hidden size
    "vitpose_backbone": {"part_features": 16},
    "vitpose": {"backbone_config": {"part_features": 16, "out_features": ["stage1"], "out_indices": [1]}},
}
# Families that are known not to be routed MoE even though their config has MoE-ish keys, with the reason
# (confirmed by building them: the check below still runs, this only words the reason).
NOT_MOE_REASONS: dict[str, str] = {
    "doge": "Doge's CDMoE: a dense gated MLP plus product-key retrieval of single-neuron 'experts' stored as rows "
            "of two nn.Embedding tables (down_embed / up_embed [E, H]); no per-expert weight matrices",
    "granite_docling": "density_router_* keys belong to the vision connector's token-density router; no experts",
    "vitpose": "ViTPose++ (pose estimation): its backbone's expert heads (a ModuleList of nn.Linear) are picked by a "
               "dataset index, not by a router; a vision model, not a language model",
    "vitpose_backbone": "ViTPose++ backbone: its expert heads (a ModuleList of nn.Linear) are picked by a dataset "
                        "index, not by a router; a vision backbone, not a language model",
}


# ---------------------------------------------------------------------------------------------------------------
# Enumeration
# ---------------------------------------------------------------------------------------------------------------
def config_dict(config) -> dict:
    return config.to_dict()


def moe_keys(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in d.items():
        if CANDIDATE_KEY.search(key):
            keys.append(prefix + key)
        if isinstance(value, dict) and key.endswith("config"):
            keys.extend(moe_keys(value, prefix + key + "."))
    return keys


def candidates() -> dict[str, list[str]]:
    found = {}
    for model_type in sorted(CONFIG_MAPPING.keys()):
        try:
            d = config_dict(CONFIG_MAPPING[model_type]())
        except Exception:  # noqa: BLE001 - a config that cannot be built with defaults has no defaults to scan
            continue
        keys = moe_keys(d)
        if keys:
            found[model_type] = sorted(keys)
    return found


# ---------------------------------------------------------------------------------------------------------------
# Tiny configs
# ---------------------------------------------------------------------------------------------------------------
DELETE = "<delete>"  # an override value that removes the key (the config class then uses its own default)
TRUNCATED = "<truncated>"  # marks the per-layer lists cut from the defaults (see prefer_derived_lists)


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if value == DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get("__replace__"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = {k: v for k, v in value.items() if k != "__replace__"} if isinstance(value, dict) else value
    return out


def sized(value, default):
    """`value`, or a list of it as long as `default` when the config holds one value per modality / group."""
    if isinstance(default, list) and all(isinstance(v, int) for v in default):
        return [value] * len(default)
    return value


def text_overrides(d: dict, layers: int, default_layers: int | None) -> dict:
    """Generic tiny overrides for a text-model (or a flat) config dict `d` of defaults."""
    o: dict = {}

    def put(key, value, when=lambda v: True):
        if key in d and when(d[key]):
            o[key] = sized(value, d[key])

    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    int_or_none = lambda v: v is None or is_int(v) or isinstance(v, list)  # noqa: E731
    has_expert_i = any(k in d for k in EXPERT_I_KEYS)
    for key in ["hidden_size", "d_model"]:
        put(key, HIDDEN, is_int)
    put("intermediate_size", I_DENSE if has_expert_i else I_EXPERT, int_or_none)
    # The MoE sizes are set even when the default is None (families whose MoE variant must be asked for).
    for key in EXPERT_I_KEYS:
        put(key, I_EXPERT, int_or_none)
    for key in EXPERT_COUNT_KEYS:
        put(key, N_EXPERTS, int_or_none)
    for key in TOP_K_KEYS:
        put(key, TOP_K, int_or_none)
    for key in SHARED_I_KEYS + DENSE_I_KEYS:
        put(key, I_DENSE, lambda v: v is not None)
    if "ffn_hidden_size" in d:  # LongCat: dense MLP size beside expert_ffn_hidden_size
        put("ffn_hidden_size", I_DENSE if has_expert_i else I_EXPERT, is_int)
    for key in ["d_ff", "encoder_ffn_dim", "decoder_ffn_dim"]:
        put(key, I_EXPERT, is_int)
    for key in ["n_group", "num_expert_group", "topk_group"]:
        put(key, 1, is_int)
    for key in SHARED_COUNT_KEYS:
        put(key, 1, lambda v: v is None or (is_int(v) and v > 0))
    for key in ["enable_moe_block", "is_moe"]:
        put(key, True)
    put("zero_expert_num", 2, is_int)
    for key in ["num_attention_heads", "n_heads", "encoder_attention_heads", "decoder_attention_heads",
                "swa_num_attention_heads", "num_heads"]:
        put(key, N_HEADS, is_int)
    for key in ["num_key_value_heads", "swa_num_key_value_heads"]:
        put(key, N_KV_HEADS, is_int)
    put("d_kv", HEAD_DIM, is_int)
    for key in ["head_dim", "swa_head_dim", "kv_channels"]:
        put(key, HEAD_DIM, int_or_none)
    # Multi-head latent attention and sparse-attention indexers
    put("q_lora_rank", 32, is_int)
    for key, value in [("kv_lora_rank", 32), ("qk_nope_head_dim", 16), ("qk_rope_head_dim", 16), ("qk_head_dim", 32),
                       ("v_head_dim", 16), ("o_lora_rank", 32), ("index_head_dim", 16), ("index_n_heads", 2),
                       ("index_num_heads", 2), ("indexer_head_dim", 16), ("indexer_n_heads", 2),
                       ("indexer_kv_heads", 1)]:
        put(key, value, lambda v: is_int(v) and v > 0)  # 0 means "none" (e.g. NoPE attention)
    # Linear attention / gated delta net
    for key, value in [("linear_num_key_heads", 2), ("linear_num_value_heads", 4), ("linear_key_head_dim", 16),
                       ("linear_value_head_dim", 16), ("linear_head_dim", 16), ("linear_num_heads", 4)]:
        put(key, value, is_int)
    # Mamba
    for key, value in [("mamba_d_state", 16), ("ssm_state_size", 16), ("mamba_n_heads", 8), ("mamba_num_heads", 8),
                       ("mamba_head_dim", 16), ("mamba_d_head", 16), ("mamba_dt_rank", 8), ("mamba_n_groups", 1),
                       ("n_groups", 1), ("mamba_chunk_size", 32), ("chunk_size", 32), ("mamba_expand", 2),
                       ("expand", 2)]:
        put(key, value, is_int)
    # sizes that bridge towers or live beside the decoder (per-layer inputs, projectors)
    for key, value in [("projector_hidden_size", HIDDEN), ("vision_hidden_size", VISION_WIDTH), ("moe_hidden_size", HIDDEN),
                       ("thinker_hidden_size", HIDDEN), ("hc_lowrank", 16), ("codebook_size", VOCAB),
                       ("vocab_size_per_layer_input", VOCAB), ("hidden_size_per_layer_input", 16)]:
        put(key, value, is_int)
    put("vocab_size", VOCAB, is_int)
    put("unpadded_vocab_size", VOCAB, is_int)
    put("max_position_embeddings", 512, is_int)
    put("sliding_window", 32, is_int)
    for key, value in [("pad_token_id", 0), ("bos_token_id", 1), ("eos_token_id", 2)]:
        put(key, value, lambda v: is_int(v) and v >= VOCAB)
    for key in LAYER_COUNT_KEYS:
        put(key, layers, is_int)
    put("first_k_dense_replace", 1, is_int)
    for key in ["encoder_layers", "decoder_layers", "num_decoder_layers"]:
        put(key, layers, is_int)
    # Per-layer lists: the first `layers` entries of the default (build_config drops them again where the config
    # class derives them itself, so that they agree with first_k_dense_replace & co.).
    for key, value in d.items():
        if is_index_list(value):
            # layer indices (Llama4 moe_layers): the ones that still exist; build_config prefers the class's own
            if any(v >= layers for v in value):
                o[key] = [v for v in value if v < layers]
                o.setdefault(TRUNCATED, []).append(key)
        elif isinstance(value, (list, str)) and default_layers and len(value) == default_layers and layers < default_layers \
                and (isinstance(value, list) or key == "hybrid_override_pattern"):
            o[key] = value[:layers]
            o.setdefault(TRUNCATED, []).append(key)
        if key == "per_layer_config" and isinstance(value, dict):
            o[key] = DELETE  # per-layer size overrides of the full-size model (derived again where a class does)
    if is_int(d.get("moe_layer_end_index")):
        o["moe_layer_end_index"] = layers - 1
    return o


def vision_overrides(d: dict) -> dict:
    o: dict = {}

    def put(key, value):
        if isinstance(d.get(key), int) and not isinstance(d.get(key), bool):
            o[key] = value

    default_layers = next((d[k] for k in ["depth", "num_hidden_layers", "num_layers", "encoder_layers"] if isinstance(d.get(k), int)), None)
    for key in ["depth", "num_hidden_layers", "num_layers", "encoder_layers", "n_layers"]:
        put(key, 1)
    for key in ["hidden_size", "embed_dim", "width", "d_model"]:
        put(key, VISION_WIDTH)
    for key in ["intermediate_size", "mlp_dim", "encoder_ffn_dim"]:
        put(key, VISION_MLP)
    for key in ["num_heads", "num_attention_heads", "encoder_attention_heads", "n_heads"]:
        put(key, VISION_HEADS)
    put("num_key_value_heads", VISION_HEADS)
    put("head_dim", 16)
    for key in ["out_hidden_size", "output_dim", "text_hidden_size", "projection_dim", "output_size", "adapter_out_dim"]:
        put(key, HIDDEN)
    put("adapter_in_dim", VISION_WIDTH)
    put("adapter_input_size", VISION_WIDTH)
    put("vocab_size", VOCAB)
    put("codebook_size", VOCAB)
    if isinstance(d.get("blank_token_id"), int) and d["blank_token_id"] >= VOCAB:
        o["blank_token_id"] = VOCAB - 1
    for key in ["decoder_dim", "downsample_hidden_size", "audio_hidden_size", "output_channels"]:
        put(key, VISION_WIDTH)
    for key in ["projection_intermediate_size", "projection_hidden_dim", "projector_input_dim", "projector_output_dim",
                "vision_output_dim", "projector_hidden_size"]:
        put(key, HIDDEN)
    if isinstance(d.get("downsample_channels"), list) and len(d["downsample_channels"]) == 2:
        o["downsample_channels"] = [VISION_WIDTH, HIDDEN]
    if isinstance(d.get("deepstack_visual_indexes"), list):
        o["deepstack_visual_indexes"] = [0]
    if "fullatt_block_indexes" in d:
        o["fullatt_block_indexes"] = [0]
    for key, value in d.items():
        if is_sub_config(key, value):
            o[key] = deep_merge(strip_meta(value), vision_overrides(value))  # nested towers (SAM / CLIP / ...)
        if isinstance(value, list) and default_layers and len(value) == default_layers and default_layers > 1:
            o[key] = value[:1]
        if key == "per_layer_config" and isinstance(value, dict):
            o[key] = DELETE
    return o


def is_sub_config(key: str, value) -> bool:
    return isinstance(value, dict) and key != "per_layer_config" and (key in SUB_CONFIG_KEYS or key.endswith("_config"))


def is_index_list(value) -> bool:
    """A list of layer indices (strictly increasing integers), as opposed to one entry per layer."""
    return (isinstance(value, list) and len(value) > 1 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and all(a < b for a, b in zip(value, value[1:])))


def default_layer_count(d: dict) -> int | None:
    count = next((d[k] for k in LAYER_COUNT_KEYS if isinstance(d.get(k), int)), None)
    if count is None:  # NemotronH style: the layer count is the length of the block pattern
        count = next((len(d[k]) for k in ("layers_block_type", "hybrid_override_pattern") if isinstance(d.get(k), (list, str))), None)
    return count


def layer_count(d: dict) -> int:
    text = d.get("text_config") if isinstance(d.get("text_config"), dict) else d
    keys = set(text) | set(d)
    return 4 if keys & PLACEMENT_KEYS else 2


def strip_meta(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("transformers_version", "_name_or_path", "architectures",
                                                    "id2label", "label2id", "dtype")}


def tiny_config_kwargs(model_type: str, defaults: dict, nested: bool = False) -> dict:
    """Keyword arguments of the tiny config. Top level: the overrides only (the config class derives the rest
    for the new sizes); sub-configs: their whole default dict with the overrides (so that values the outer
    config's defaults put there survive)."""
    layers = layer_count(defaults)
    flat = {k: v for k, v in defaults.items() if not is_sub_config(k, v)}
    kwargs: dict = text_overrides(flat, layers, default_layer_count(flat))
    for key, value in defaults.items():
        if not is_sub_config(key, value):
            continue
        if key in ("text_config", "ffn_config", "attn_config"):
            sub = text_overrides(value, layers, default_layer_count(value))
        elif key in ("thinker_config", "talker_config"):
            sub = tiny_config_kwargs(value.get("model_type", ""), value, nested=True)
        else:
            sub = vision_overrides(value)
        kwargs[key] = deep_merge(strip_meta(value), sub)
    if nested:
        kwargs = deep_merge(strip_meta(defaults), kwargs)
    # DBRX keeps the MoE sizes inside ffn_config
    if model_type == "dbrx":
        kwargs["ffn_config"].update({"ffn_hidden_size": I_EXPERT, "moe_num_experts": N_EXPERTS, "moe_top_k": TOP_K,
                                     "hidden_size": HIDDEN})
        kwargs["attn_config"].update({"kv_n_heads": N_KV_HEADS})
    return deep_merge(kwargs, FAMILY_OVERRIDES.get(model_type, {}))


def strip_markers(value):
    if isinstance(value, dict):
        return {k: strip_markers(v) for k, v in value.items()
                if k not in ("__replace__", TRUNCATED) and not (isinstance(v, str) and v == DELETE)}
    return value


def truncated_paths(kwargs: dict, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix + (key,) for key in kwargs.get(TRUNCATED, [])]
    for key, value in kwargs.items():
        if isinstance(value, dict):
            paths.extend(truncated_paths(value, prefix + (key,)))
    return paths


def prefer_derived_lists(cls, kwargs: dict, family: dict) -> dict:
    """Drops each per-layer list cut from the defaults when the config class derives a list of the same length
    itself (it then agrees with the config's other placement keys); keeps the cut list otherwise."""
    for path in truncated_paths(kwargs):
        node = family
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            continue  # set by the family overrides
        trial = copy.deepcopy(kwargs)
        parent = trial
        for key in path[:-1]:
            parent = parent[key]
        cut = parent.pop(path[-1])
        expected = None if is_index_list(cut) else len(cut)
        try:
            config = cls(**strip_markers(trial))
        except Exception:  # noqa: BLE001 - the class needs the list: keep the cut one
            continue
        value = config
        for key in path:
            value = getattr(value, key, None)
        if isinstance(value, (list, tuple)) and (expected is None or len(value) == expected):
            kwargs = trial
    return kwargs


def build_config(model_type: str):
    cls = CONFIG_MAPPING[model_type]
    defaults = config_dict(cls())
    kwargs = tiny_config_kwargs(model_type, defaults)
    kwargs = strip_markers(prefer_derived_lists(cls, kwargs, FAMILY_OVERRIDES.get(model_type, {})))
    return cls(**kwargs), kwargs


# ---------------------------------------------------------------------------------------------------------------
# Model class
# ---------------------------------------------------------------------------------------------------------------
COMPOSITE_ORDER = ["MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
                   "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"]
FLAT_ORDER = ["MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
              "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
              "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_BACKBONE_MAPPING_NAMES",
              "MODEL_FOR_KEYPOINT_DETECTION_MAPPING_NAMES", "MODEL_FOR_POSE_ESTIMATION_MAPPING_NAMES"]


def is_composite(config) -> bool:
    return any(getattr(config, key, None) is not None for key in ("text_config", "thinker_config"))


def model_class(model_type: str, config):
    order = COMPOSITE_ORDER if is_composite(config) else FLAT_ORDER
    for mapping in order:
        names = getattr(modeling_auto, mapping)
        if model_type in names:
            name = names[model_type]
            name = name[0] if isinstance(name, (list, tuple)) else name
            return getattr(transformers, name), mapping.replace("_MAPPING_NAMES", "")
    return None, None


# ---------------------------------------------------------------------------------------------------------------
# Ground truth from modules
# ---------------------------------------------------------------------------------------------------------------
def direct_params(module) -> dict:
    return dict(module.named_parameters(recurse=False))


def is_conv(module) -> bool:
    return isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))


def fused_expert_count(module) -> int | None:
    """E when the module's own parameters include rank-3 tensors [E, a, b] that share E >= 2."""
    if is_conv(module):
        return None
    rank3 = [p for p in direct_params(module).values() if p.dim() == 3]
    if not rank3:
        return None
    counts = {p.shape[0] for p in rank3}
    if len(counts) != 1:
        return None
    (count,) = counts
    return count if count >= 2 else None


def stacked_expert_count(module) -> int | None:
    """E when an experts module (declaring its expert count) keeps every expert's matrix stacked in 2-D
    [E * I, H] parameters (DBRX)."""
    count = next((getattr(module, a) for a in ("num_experts", "moe_num_experts", "num_local_experts", "n_experts")
                  if isinstance(getattr(module, a, None), int)), None)
    params = list(module.parameters())
    if not count or count < 2 or not params:
        return None
    if all(p.dim() == 2 and p.shape[0] % count == 0 and p.shape[0] > count for p in params):
        return count
    return None


def expert_list_count(module) -> int | None:
    """E when the module is a ModuleList / ModuleDict of >= 2 structurally identical expert MLPs."""
    named = [(n, c) for n, c in module.named_children() if list(c.parameters())]  # not dropouts & co.
    children = [c for _, c in named]
    if not isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
        names = [n for n, _ in named]
        if not all(re.fullmatch(r"(expert_?)?\d+", n) for n in names):
            return None
    if len(children) < 2:
        return None
    shapes = [tuple((n, tuple(p.shape)) for n, p in c.named_parameters()) for c in children]
    if not shapes[0] or any(s != shapes[0] for s in shapes):
        return None
    if not any(isinstance(m, torch.nn.Linear) for m in children[0].modules()):
        return None
    return len(children)


def looks_like_experts(name: str, module) -> bool:
    last = name.rsplit(".", 1)[-1].lower()
    cls = type(module).__name__.lower()
    return ("expert" in last or "expert" in cls or last in {"input_linear", "output_linear"}) and "shared" not in last


def find_layer_stacks(model) -> list[tuple[str, torch.nn.ModuleList]]:
    stacks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and re.search(r"(^|\.)(layers|blocks|block|layer|h|decoder_layers)$", name):
            stacks.append((name, module))
    return stacks


def layer_of(name: str, stacks) -> tuple[str, int] | None:
    best = None
    for stack_name, _ in stacks:
        prefix = stack_name + "."
        if name.startswith(prefix):
            index = name[len(prefix):].split(".", 1)[0]
            if index.isdigit() and (best is None or len(stack_name) < len(best[0])):
                best = (stack_name, int(index))
    return best


def in_attention(model, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        sub = model.get_submodule(".".join(parts[:i]))
        if "attention" in type(sub).__name__.lower() or parts[i - 1] in ("self_attn", "self_attention", "attention"):
            return True
    return False


def split_dims(params: dict[str, torch.Tensor], hidden_candidates: set[int]):
    """(E, H, I, gated, orientation) from the rank-3 parameters of a fused experts module."""
    rank3 = {n: p for n, p in params.items() if p.dim() == 3}
    down = [n for n in rank3 if re.search(r"down|output|w2|wo\b|fc2", n)]
    up = [n for n in rank3 if n not in down]
    E = next(iter(rank3.values())).shape[0]
    if len(down) != 1 or len(up) != 1:
        return E, None, None, None, None
    d = rank3[down[0]].shape[1:]
    u = rank3[up[0]].shape[1:]
    # standard: up [E, k*I, H], down [E, H, I]; transposed: up [E, H, k*I], down [E, I, H] (k = 2 when gated)
    options = []
    for orientation, (h_up, x_up), (h_down, i_down) in [("standard", (u[1], u[0]), (d[0], d[1])),
                                                          ("transposed", (u[0], u[1]), (d[1], d[0]))]:
        if h_up == h_down and (x_up == i_down or x_up == 2 * i_down):
            options.append((E, h_up, i_down, x_up == 2 * i_down, orientation))
    preferred = [o for o in options if o[1] in hidden_candidates] or options
    if preferred:
        return preferred[0]
    return E, None, None, None, None


def list_dims(module):
    first = next(c for c in module.children() if list(c.parameters()))
    linears = {n: m for n, m in first.named_modules() if isinstance(m, torch.nn.Linear)}
    down = [n for n in linears if re.search(r"down|w2|wo|fc2|output", n)]
    count = expert_list_count(module)
    if len(down) != 1:
        return count, None, None, None, "list"
    d = linears[down[0]]
    others = [m for n, m in linears.items() if n != down[0]]
    gated = len(others) >= 2 or any(m.out_features == 2 * d.in_features for m in others)
    return count, d.out_features, d.in_features, gated, "list"


def router_top_k(block, config_text) -> tuple[int | None, str]:
    for module in [block, *block.children()]:
        for attr in ["top_k", "num_experts_per_tok", "k", "moe_topk", "topk", "num_experts_per_token"]:
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value, f"module {type(module).__name__}.{attr}"
    for key in TOP_K_KEYS:
        value = getattr(config_text, key, None)
        if isinstance(value, int):
            return value, f"config {key}"
    for module in block.modules():
        m = re.search(r"Top(\d)", type(module).__name__)
        if m:
            return int(m.group(1)), f"router class {type(module).__name__}"
    return None, "none"


def text_config_of(config):
    if getattr(config, "thinker_config", None) is not None:
        return config.thinker_config.text_config
    return getattr(config, "text_config", None) or config


# Flags transformers' @use_experts_implementation puts on fused experts modules (gate/up concatenated or
# interleaved, [E, in, out] instead of [E, out, in], biases, ungated experts, a norm after each expert).
IMPLEMENTATION_FLAGS = ("has_gate", "is_concatenated", "is_transposed", "has_bias", "has_post_expert_norm")


def analyse(model, config) -> dict:
    """Ground truth from the model's modules."""
    text_cfg = text_config_of(config)
    hidden = getattr(text_cfg, "hidden_size", None) or getattr(text_cfg, "d_model", None)
    hidden_candidates = {hidden} | {getattr(text_cfg, k) for k in ("moe_latent_size",) if getattr(text_cfg, k, None)}
    stacks = find_layer_stacks(model)
    experts = []
    claimed: set[str] = set()
    for name, module in model.named_modules():
        if not name or any(name.startswith(c + ".") for c in claimed):
            continue
        if not looks_like_experts(name, module):
            continue
        E = fused_expert_count(module)
        kind = "fused"
        if E is None:
            E = expert_list_count(module)
            kind = "list"
        if E is None:
            E = stacked_expert_count(module)
            kind = "stacked_2d"
        if E is None:
            continue
        claimed.add(name)
        where = layer_of(name, stacks)
        params = {n: p for n, p in module.named_parameters()}
        if kind == "fused":
            E, H, I, gated, orientation = split_dims(direct_params(module), hidden_candidates)
        elif kind == "stacked_2d":
            shapes = [p.shape for p in module.parameters()]
            H = shapes[0][1] if all(s[1] == shapes[0][1] for s in shapes) else None
            I = shapes[0][0] // E if all(s[0] == shapes[0][0] for s in shapes) else None
            gated, orientation = len(shapes) == 3, "stacked_2d"
        else:
            E, H, I, gated, orientation = list_dims(module)
        parent_name = name.rsplit(".", 1)[0] if "." in name else ""
        block = model.get_submodule(parent_name) if parent_name else model
        implementation = {attr: getattr(module, attr) for attr in IMPLEMENTATION_FLAGS
                          if isinstance(getattr(module, attr, None), bool)}
        experts.append({
            "module": name, "class": type(module).__name__, "kind": kind, "experts": E, "hidden": H,
            "implementation": implementation,
            "intermediate": I, "gated": gated, "orientation": orientation,
            "params": {n: list(p.shape) for n, p in sorted(params.items())},
            "layer_stack": where[0] if where else None, "layer": where[1] if where else None,
            "in_attention": in_attention(model, name), "block": parent_name, "block_class": type(block).__name__,
        })
    # JetMoE-style pairs (input_linear + output_linear as sibling modules of one block) are one experts module.
    merged: list[dict] = []
    by_block: dict[str, list[dict]] = {}
    for info in experts:
        by_block.setdefault(info["block"], []).append(info)
    for info in experts:
        group = by_block[info["block"]]
        if len(group) == 1 or info["kind"] != "fused":
            info["modules"] = [info["module"]]
            merged.append(info)
            continue
        if info is not group[0]:
            continue
        params = {}
        for part in group:
            leaf = part["module"].rsplit(".", 1)[-1]
            params.update({f"{leaf}.{n}": p for n, p in direct_params(model.get_submodule(part["module"])).items()})
        E, H, I, gated, orientation = split_dims(params, hidden_candidates)
        combined = dict(info)
        combined.update({"module": info["block"], "modules": [part["module"] for part in group],
                         "class": "+".join(sorted({part["class"] for part in group})), "experts": E, "hidden": H,
                         "intermediate": I, "gated": gated, "orientation": orientation,
                         "params": {n: list(p.shape) for n, p in sorted(params.items())}})
        merged.append(combined)
    return {"experts": merged, "stacks": [(n, len(m)) for n, m in stacks], "hidden": hidden}


def block_roles(model, info: dict, config) -> dict:
    """Router / shared-expert modules beside one experts module (children of its block)."""
    block = model.get_submodule(info["block"]) if info["block"] else model
    expert_modules = set(info["modules"])
    E = info["experts"]
    router, shared, shared_gate, other = [], [], [], []
    for child_name, child in block.named_children():
        full = f"{info['block']}.{child_name}" if info["block"] else child_name
        if full in expert_modules or (looks_like_experts(full, child) and (fused_expert_count(child) or expert_list_count(child))):
            continue
        lower = child_name.lower()
        has_e_rows = any(p.dim() >= 1 and p.shape[0] in (E,) for p in child.parameters()) or any(
            b.dim() == 1 and b.shape[0] == E for b in child.buffers())
        if "shared" in lower:
            out_one = [p for n, p in child.named_parameters() if n.endswith("weight") and p.dim() == 2 and p.shape[0] == 1]
            (shared_gate if ("gate" in lower and out_one) else shared).append(full)
        elif re.search(r"gate|router|routing|classifier", lower) or (has_e_rows and not list(child.children())):
            router.append(full)
        else:
            other.append(full)
    if not shared and not shared_gate and "." in info["block"]:
        # ERNIE 4.5 VL: the shared experts sit beside the text / vision MoE blocks, one level up
        outer_name = info["block"].rsplit(".", 1)[0]
        for child_name, child in model.get_submodule(outer_name).named_children():
            if "shared" in child_name.lower() and list(child.parameters()):
                shared.append(f"{outer_name}.{child_name}")
    direct = [f"{info['block']}.{n}" if info["block"] else n for n, _ in block.named_parameters(recurse=False)]
    direct += [f"{info['block']}.{n}" if info["block"] else n for n, _ in block.named_buffers(recurse=False)]
    if info["layer_stack"] and re.fullmatch(re.escape(info["layer_stack"]) + r"\.\d+", info["block"]):
        # Experts directly in the decoder layer (Gemma 4): only a child named router / gate routes; the layer's
        # own tensors and its other gates (per-layer input gates ...) are not the router.
        router = [r for r in router if re.fullmatch(r"router|gate", r.rsplit(".", 1)[-1])]
        direct = []
    text_cfg = text_config_of(config)
    top_k, source = router_top_k(block, text_cfg)
    return {"router_modules": router, "block_tensors": direct, "shared_modules": shared, "shared_gates": shared_gate,
            "other_modules": other, "top_k": top_k, "top_k_source": source}


MIXER_KINDS = [
    ("mamba", re.compile(r"mamba|mixer|ssm", re.I)),
    ("linear_attention", re.compile(r"deltanet|delta|linearattention|lightning|kda|linear_attn|gla", re.I)),
    ("conv", re.compile(r"conv", re.I)),
    ("attention", re.compile(r"attention|attn", re.I)),
]


def mixers(layers: torch.nn.ModuleList) -> dict:
    per_layer = {}
    kinds = set()
    for index, layer in enumerate(layers):
        found = {}
        for child_name, child in layer.named_children():
            cls = type(child).__name__
            if re.search(r"norm", cls, re.I) or not list(child.parameters()):
                continue
            if re.search(r"mlp|moe|ffn|feed_forward|expert", child_name, re.I) or re.search(
                    r"(MLP|MoE|Moe|MoeBlock|Experts?|FeedForward)$", cls):
                continue
            for kind, pattern in MIXER_KINDS:
                if pattern.search(cls) or pattern.search(child_name):
                    if kind == "attention" and re.search(r"linear", cls + child_name, re.I):
                        kind = "linear_attention"
                    found[child_name] = f"{kind}:{cls}"
                    kinds.add(kind)
                    break
        per_layer[str(index)] = found
    return {"per_layer": per_layer, "kinds": sorted(kinds), "non_attention": sorted(kinds - {"attention"})}


# ---------------------------------------------------------------------------------------------------------------
# Tagging: every parameter gets a code naming its owner, read back from the written files
# ---------------------------------------------------------------------------------------------------------------
def taggable(t: torch.Tensor) -> bool:
    return t.numel() > 0 and t.dtype != torch.bool and (t.is_floating_point() or not t.is_complex())


def tag_model(model, experts: list[dict], roles: list[dict], text_stack: str, mm_modules: list[str]) -> dict[int, tuple]:
    codes: dict[int, tuple] = {}
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.fill_(0)
        for _, b in model.named_buffers():
            if taggable(b):
                b.fill_(0)

        def fill(module_name: str, code: int, what: tuple, tensor_names: list[str] | None = None):
            codes[code] = what
            if tensor_names is not None:
                for tname in tensor_names:
                    owner, _, leaf = tname.rpartition(".")
                    mod = model.get_submodule(owner) if owner else model
                    t = getattr(mod, leaf)
                    if isinstance(t, torch.Tensor) and taggable(t):
                        t.fill_(code)
                return
            mod = model.get_submodule(module_name)
            for p in mod.parameters():
                p.fill_(code)
            for b in mod.buffers():
                if taggable(b):
                    b.fill_(code)

        for index, m in enumerate(mm_modules):
            fill(m, 200 + index, ("multimodal", m))
        if text_stack:
            stack = model.get_submodule(text_stack)
            for index in range(len(stack)):
                fill(f"{text_stack}.{index}", 120 + index, ("layer", index))
        for k, (info, role) in enumerate(zip(experts, roles)):
            base = 1 + 4 * k
            for r in role["router_modules"]:
                fill(r, base + 1, ("router", k))
            if role["block_tensors"]:
                fill("", base + 1, ("router", k), role["block_tensors"])
            for s in role["shared_modules"]:
                fill(s, base + 2, ("shared", k))
            for s in role["shared_gates"]:
                fill(s, base + 3, ("shared_gate", k))
            for module_name in info["modules"]:
                fill(module_name, base, ("experts", k))
    return codes


def read_listing(directory: Path) -> tuple[dict, dict]:
    """({name: [dtype, shape]}, {name: code or None}) over every safetensors file of a saved model."""
    listing, tags = {}, {}
    for file in sorted(directory.glob("*.safetensors")):
        raw = file.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            listing[name] = [meta["dtype"], meta["shape"]]
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if t.numel() == 0 or t.dtype == torch.bool:
                    tags[name] = None
                    continue
                values = torch.unique(t.double())
                tags[name] = int(values[0].item()) if values.numel() == 1 and float(values[0]).is_integer() else None
    return listing, tags


def layer_prefix(names: list[str], index: int) -> str | None:
    prefixes = set()
    for name in names:
        m = re.match(rf"^(.*?\.)?{index}\.", name)
        if m:
            prefixes.add(m.group(1) or "")
    return sorted(prefixes, key=len)[0] if prefixes else None


def checkpoint_prefix(names: list[str], relative: list[str]) -> str | None:
    """The checkpoint prefix of a module: names minus the module-relative parameter names they end with."""
    counts: dict[str, int] = {}
    for name in names:
        for rel in relative:
            if name == rel or name.endswith("." + rel):
                prefix = name[: len(name) - len(rel)].rstrip(".")
                counts[prefix] = counts.get(prefix, 0) + 1
                break
    return max(sorted(counts), key=lambda p: counts[p]) if counts else None


def layout_truth(listing: dict, tags: dict, codes: dict, experts: list[dict], relative: dict, text_stack: str) -> dict:
    by_code: dict[int, list[str]] = {}
    untagged = []
    for name, code in tags.items():
        if code is None:
            untagged.append(name)
        elif code != 0:
            by_code.setdefault(code, []).append(name)
    per_experts = []
    for k, info in enumerate(experts):
        base = 1 + 4 * k
        per_experts.append({
            "layer": info["layer"], "module": info["module"],
            "experts": sorted(by_code.get(base, [])), "router": sorted(by_code.get(base + 1, [])),
            "shared": sorted(by_code.get(base + 2, [])), "shared_gate": sorted(by_code.get(base + 3, [])),
        })
    layer_names: dict[int, list[str]] = {}
    multimodal: dict[str, str] = {}
    for code, what in codes.items():
        if what[0] == "layer":
            layer_names[what[1]] = by_code.get(code, [])
        if what[0] == "multimodal":
            names = by_code.get(code, [])
            multimodal[what[1]] = checkpoint_prefix(names, relative.get(what[1], [])) if names else None
    prefixes = set()
    for index, names in layer_names.items():
        all_names = names + [n for e, info in zip(per_experts, experts) if e["layer"] == index and info["layer_stack"] == text_stack
                             for n in e["experts"] + e["router"] + e["shared"] + e["shared_gate"]]
        p = layer_prefix(all_names, index)
        if p is not None:
            prefixes.add(p)
    expert_names = {n for e in per_experts for n in e["experts"]}
    rank3 = sorted(n for n, (_, shape) in listing.items() if len(shape) == 3 and n not in expert_names)
    return {
        "experts": per_experts,
        "text_layer_prefix": sorted(prefixes)[0] if len(prefixes) == 1 else sorted(prefixes),
        "multimodal_prefixes": multimodal,
        "rank3_not_experts": rank3,
        "mixed_tensors": sorted(untagged),
    }


# ---------------------------------------------------------------------------------------------------------------
# One model type
# ---------------------------------------------------------------------------------------------------------------
def multimodal_modules(model, text_stack: str) -> list[str]:
    """Top-level modules of a composite model that are not the text model (vision / audio towers, projectors)."""
    base_name = ""
    for candidate in ["model", "thinker.model", "thinker"]:
        try:
            model.get_submodule(candidate)
            base_name = candidate
            break
        except AttributeError:
            continue
    base = model.get_submodule(base_name) if base_name else model
    out = []
    text_root = text_stack.rsplit(".", 1)[0] if text_stack else ""
    for name, child in base.named_children():
        full = f"{base_name}.{name}" if base_name else name
        if not list(child.parameters()):
            continue
        if text_root == full or text_root.startswith(full + "."):
            continue
        if name in ("embed_tokens", "norm", "lm_head", "rotary_emb", "wte", "ln_f", "final_layernorm"):
            continue
        if re.search(r"vision|visual|image|audio|speech|projector|merger|vit|sam|encoder|mm_|adapter|patch|tower|resampler|connector", name, re.I):
            out.append(full)
    # Parts of the wrapper beside its base model (Qwen3-Omni's talker and code2wav)
    root = base_name.split(".", 1)[0] if base_name else ""
    for name, child in model.named_children():
        if name in (root, "lm_head") or not list(child.parameters()) or (text_root and text_root.startswith(name + ".")):
            continue
        if re.search(r"talker|wav|vision|visual|audio|speech|projector|tower|encoder", name, re.I):
            out.append(name)
    return out


NOT_TEXT = re.compile(r"vision|visual|audio|talker|code_predictor|vit\b|image|encoder", re.I)


def choose_text_stack(experts: list[dict], stacks: dict[str, int]) -> str:
    """The decoder stack of the text model: the stack holding routed MLP experts that is not a vision / audio /
    talker tower (the longest one when several remain)."""
    names = {e["layer_stack"] for e in experts if e["layer_stack"] and not e["in_attention"]}
    names = names or {e["layer_stack"] for e in experts if e["layer_stack"]}
    text = {n for n in names if not NOT_TEXT.search(n)} or names
    return sorted(text, key=lambda n: (-stacks.get(n, 0), len(n), n))[0] if text else ""


def has_model_class(model_type: str) -> bool:
    return any(model_type in getattr(modeling_auto, mapping) for mapping in set(COMPOSITE_ORDER + FLAT_ORDER))


def build_one(model_type: str, workdir: Path) -> tuple[str, dict]:
    if not has_model_class(model_type):
        return "component", {"reason": "no loadable model class of its own (no causal-LM, image-text-to-text, "
                                       "multimodal, seq2seq, token-classification, backbone or pose auto mapping): "
                                       "a sub-config of a composite model"}
    config, kwargs = build_config(model_type)
    cls, mapping = model_class(model_type, config)
    if cls is None:
        return "component", {"reason": "no loadable model class of its own (no causal-LM, image-text-to-text, "
                                       "multimodal, seq2seq, token-classification or backbone auto mapping)"}
    with torch.device("meta"):
        probe = cls._from_config(copy.deepcopy(config), dtype=torch.bfloat16)
    total = sum(p.numel() for p in probe.parameters())
    if total > MAX_PARAMS:
        big = sorted(((n, sum(p.numel() for p in m.parameters())) for n, m in probe.named_children()), key=lambda x: -x[1])
        raise RuntimeError(f"tiny config still has {total} parameters (largest: {big[:3]}); the overrides miss a size")
    del probe
    torch.manual_seed(SEED)
    model = cls._from_config(config, dtype=torch.bfloat16)
    model.eval()
    found = analyse(model, config)
    experts = found["experts"]
    if not experts:
        return "not_moe", {"reason": NOT_MOE_REASONS.get(model_type, "the built model has no module holding >= 2 experts' weights"),
                           "model_class": cls.__name__}
    roles = [block_roles(model, info, config) for info in experts]
    routed = [r for r in roles if r["router_modules"] or r["block_tensors"]]
    if not routed:
        return "not_moe", {"reason": NOT_MOE_REASONS.get(model_type, "expert modules without a router beside them"),
                           "model_class": cls.__name__, "experts": [e["module"] for e in experts]}
    text_stack = choose_text_stack(experts, dict(found["stacks"]))
    stack = model.get_submodule(text_stack) if text_stack else None
    mm = multimodal_modules(model, text_stack) if is_composite(config) else []
    truth = {
        "text_layers": {"module": text_stack, "count": len(stack) if stack is not None else None},
        "moe_layers": sorted({e["layer"] for e in experts if e["layer_stack"] == text_stack and not e["in_attention"]}),
        "other_moe_stacks": sorted({e["layer_stack"] for e in experts if e["layer_stack"] != text_stack and e["layer_stack"]}),
        "attention_experts": any(e["in_attention"] for e in experts),
        "mixers": mixers(stack) if stack is not None else None,
        "multimodal_modules": {m: type(model.get_submodule(m)).__name__ for m in mm},
        "experts": [],
    }
    for info, role in zip(experts, roles):
        entry = dict(info)
        entry.update({"router_modules": role["router_modules"], "router_block_tensors": role["block_tensors"],
                      "shared_modules": role["shared_modules"], "shared_gates": role["shared_gates"],
                      "other_block_modules": role["other_modules"], "top_k": role["top_k"],
                      "top_k_source": role["top_k_source"]})
        truth["experts"].append(entry)
    relative = {m: sorted((n for n, _ in model.get_submodule(m).named_parameters()), key=len, reverse=True) for m in mm}
    codes = tag_model(model, experts, roles, text_stack, mm)
    layouts = {}
    for layout, original in [("hub", True), ("fused", False)]:
        out = workdir / f"{model_type}-{layout}"
        if out.exists():
            shutil.rmtree(out)
        model.save_pretrained(out, save_original_format=original, max_shard_size="10GB")
        listing, tags = read_listing(out)
        saved_config = json.loads((out / "config.json").read_text())
        layouts[layout] = {"tensors": listing, "truth": layout_truth(listing, tags, codes, experts, relative, text_stack),
                           "config": saved_config}
        shutil.rmtree(out)
    for k, info in enumerate(truth["experts"]):
        # Experts whose parameters another module shares (tied) are saved under that module's names only.
        info["saved"] = any(layouts[name]["truth"]["experts"][k]["experts"] for name in layouts)
    entry = {
        "model_type": model_type,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "model_class": cls.__name__,
        "auto_mapping": mapping,
        "config": layouts["hub"]["config"],
        "truth": truth,
        "layouts": {"hub": {"tensors": layouts["hub"]["tensors"], "truth": layouts["hub"]["truth"]}},
    }
    same = layouts["hub"]["tensors"] == layouts["fused"]["tensors"]
    entry["fused_same_as_hub"] = same
    if not same:
        entry["layouts"]["fused"] = {"tensors": layouts["fused"]["tensors"], "truth": layouts["fused"]["truth"]}
    if layouts["fused"]["config"] != layouts["hub"]["config"]:
        entry["layouts"]["fused"]["config"] = layouts["fused"]["config"]
    return "built", entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_types", nargs="*", help="only these model types (default: every candidate)")
    parser.add_argument("--list", action="store_true", help="only print the candidates and their MoE-ish keys")
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = candidates()
    if args.list:
        for model_type, keys in found.items():
            print(model_type, " ".join(keys))
        return 0
    ZOO.mkdir(parents=True, exist_ok=True)
    index_path = ZOO / "INDEX.json"
    index = json.loads(index_path.read_text()) if index_path.exists() and args.model_types else {}
    todo = args.model_types or list(found)
    with tempfile.TemporaryDirectory(prefix="moe-zoo-") as tmp:
        for model_type in todo:
            try:
                status, entry = build_one(model_type, Path(tmp))
            except Exception as error:  # noqa: BLE001 - recorded in INDEX.json
                message = " ".join(str(error).split())
                status, entry = "failed", {"reason": f"{type(error).__name__}: {message[:400]}"}
                if os.environ.get("ZOO_DEBUG"):
                    traceback.print_exc()
            target = ZOO / f"{model_type}.json"
            if status == "built":
                target.write_text(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
                index[model_type] = {"status": "built", "model_class": entry["model_class"],
                                     "moe_layers": entry["truth"]["moe_layers"],
                                     "layouts": sorted(entry["layouts"])}
            else:
                if target.exists():
                    target.unlink()
                index[model_type] = {"status": status, **entry}
            index[model_type]["moe_keys"] = found.get(model_type, [])
            print(f"{model_type:36s} {status:10s} {entry.get('reason', entry.get('model_class', ''))}", flush=True)
    index_path.write_text(json.dumps(dict(sorted(index.items())), sort_keys=True, indent=1) + "\n")
    counts: dict[str, int] = {}
    for value in index.values():
        counts[value["status"]] = counts.get(value["status"], 0) + 1
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
