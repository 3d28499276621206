#!/usr/bin/env python3
"""Build tiny Mixture-of-Experts test fixtures for the families tools/make_fixtures.py does not cover, under
fixtures/families/ (dev tooling, not a runtime dependency).

Regenerate (from the repository root):

    python -m venv .venv-tools && .venv-tools/bin/pip install torch transformers==5.25.* tokenizers safetensors \\
        && .venv-tools/bin/python tools/make_family_fixtures.py

The script is deterministic (all seeds fixed) and runs on CPU in a few minutes. It rewrites fixtures/families/
and nothing else; given model types (`tools/make_family_fixtures.py longcat_flash`), it rewrites only their directories
and their entries of MANIFEST.json and README.md, keeping the others' as they are. It imports tools/make_fixtures.py and reuses its tokenizer, input_ids, shapes, seeds, model
construction, seed search, hooks and checks, so that these fixtures are made exactly like the ones there.

What it produces, for each family below:

  fixtures/families/<model_type>/hub/    save_pretrained(dir): the hub / original on-disk layout
  fixtures/families/<model_type>/fused/  save_pretrained(dir, save_original_format=False): the transformers 5
                                         in-memory fused experts layout; only written when it differs from hub/

Every directory holds the same files as the directories of tools/make_fixtures.py: config.json,
generation_config.json, model.safetensors, tokenizer.json (the same 256-entry byte-level BPE), tokenizer_config.json
and reference.safetensors with input_ids int64 [2, 12] (the same ids as every fixture), logits float32 [2, 12, 256]
(transformers in float32 from the saved weights, eager attention, eager experts, one thread),
amax.<nn.Linear module>, amax.<experts module>.gate_up_input, amax.<experts module>.down_input and
tokens.<experts module> (see tools/make_fixtures.py for their exact meaning). Weights are bfloat16, except
e_score_correction_bias, which is float32 as in the hub checkpoints, and LFM2-MoE's expert_bias, a buffer
transformers declares float32.

Plus fixtures/families/MANIFEST.json (the same per-directory schema as fixtures/MANIFEST.json, `path` relative to
fixtures/, so the two `fixtures` lists can be concatenated) and fixtures/families/README.md (a summary table).

Families (model_type in transformers 5.25): qwen3_vl_moe, glm4v_moe, dots1, deepseek_v2, hunyuan_v1_moe,
ernie4_5_moe, minimax_m2, phimoe, flex_olmo, granitemoeshared, qwen3_next, qwen3_5_moe_text, jamba,
granitemoehybrid, nemotron_h, deepseek_v32, glm_moe_dsa, lfm2_moe, longcat_flash.

  fixtures/families/qwen3_vl_moe/hub_transposed/
                                         the hub/ checkpoint with its stacked experts stored transposed,
                                         gate_up_proj [E, H, 2I] / down_proj [E, I, H]: the layout of the published
                                         Qwen3-VL-MoE checkpoints. transformers 5.25 reads it (it transposes when the
                                         shapes differ from its own) but writes [E, 2I, H] / [E, H, I] in both
                                         layouts, so hub/ == fused/ there and only hub/ is kept.

Deliberate choices:
  * Shapes are those of tools/make_fixtures.py: hidden 64, 4 attention heads, 2 KV heads, head_dim 16, 8 experts of
    intermediate 48, top-k 2, dense and shared intermediate 80 (unless the family derives the shared size from the
    expert size), vocab 256, max_position_embeddings 256. Two decoder layers, three where the family has a
    dense-first-layer rule or alternating layer kinds, so that both kinds of layer appear.
  * Parameters and persistent buffers that are all zeros or all ones at init (norm weights, attention and other
    biases, e_score_correction_bias, Mamba's D and dt_bias) get small random values from a fixed seed, so that a
    forward that ignores one of them does not reproduce the logits: all-ones tensors become 1 + 0.1 * N(0, 1),
    all-zero norm weights (the zero-centred 1 + w RMSNorms of Qwen3-Next / Qwen3.5) 0.1 * N(0, 1), other all-zero
    tensors 0.02 * N(0, 1), and e_score_correction_bias and LFM2-MoE's expert_bias 0.01 * N(0, 1) (as
    tools/make_fixtures.py does for the former).
  * Vision-language wrappers (qwen3_vl_moe, glm4v_moe) are built and saved whole, with a tiny vision tower (its
    tensors are in model.safetensors), and run on text-only input_ids: the references come from the wrapper
    (...ForConditionalGeneration) and cover only the language model, whose modules are
    model.language_model.layers.*. The image/video special token ids are set to ids of the 256-entry vocabulary
    that do not occur in input_ids. Config keys of the text model are given in MANIFEST.json as paths
    (`text_config.num_experts`).
  * Hybrid families (qwen3_next, qwen3_5_moe_text, jamba, granitemoehybrid, nemotron_h, lfm2_moe) run their Mamba /
    Gated DeltaNet / short-convolution layers with transformers' PyTorch implementations (no mamba-ssm /
    causal-conv1d / fla kernels); the Mamba2 layers (granitemoehybrid, nemotron_h) have chunk size 8 so that the
    12 tokens span two chunks.
    `dense_layers` in MANIFEST.json are, as in fixtures/MANIFEST.json, the decoder layers without routed experts;
    for Nemotron-H they have no MLP at all (one mixer per layer: Mamba2, MoE or attention), so its
    dense_intermediate is null.
  * Nemotron-H's experts are ungated (up_proj [E, I, H], down_proj [E, H, I], relu2), which the schema of
    fixtures/MANIFEST.json cannot express: its in_memory_experts_layout has gate_up_proj and gate_up_concatenated
    null, up_proj, and gated: false. In reference.safetensors, amax.<experts>.gate_up_input is the max |input| of
    up_proj and amax.<experts>.down_input the max |relu2(up)|.
  * Qwen3.5-MoE is built as its text model (qwen3_5_moe_text, Qwen3_5MoeForCausalLM), saved under model.layers.*;
    the published Qwen3.5 MoE checkpoints are the vision-language wrapper (model.language_model.layers.*), whose
    language model is this one.
  * Config features are chosen so that the forward exercises them; each family's line in README.md lists them
    (router, group routing, shared experts, dense layers, q/k norms, partial rotary, sliding windows, ...).
  * Model seeds: as in tools/make_fixtures.py, the first seed from MODEL_SEED whose routers give every expert of
    every MoE layer at least one token of input_ids (model_seed in MANIFEST.json).

  * DeepSeek sparse attention (deepseek_v32, glm_moe_dsa): index_topk is 5 and 4, below the 12 tokens, so that the
    indexer's choice of keys changes the output. transformers breaks ties of the indexer's scores arbitrarily (torch
    topk), so every family with an indexer is checked to have no near tie where the top-k choice is made: the
    smallest relative gap between the score of the last key kept and that of the best key dropped must be at least
    1e-3 (printed for each directory). The indexers have 8 heads: with fewer, the ReLU of every head's score is
    often 0 for a key, and keys tie at 0. glm_moe_dsa's layer 1 is a "shared" layer (indexer_types), which
    has no indexer and reuses layer 0's keys.

Families not produced, and why: none; every family listed above builds, saves and reloads on CPU.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402  (sets the environment and logging before transformers is imported)

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer  # noqa: E402

OUT = mf.FIXTURES / "families"
GENERATOR = "tools/make_family_fixtures.py"

KNOWN_ROUTERS = ("softmax", "topk_softmax", "sigmoid")  # the kinds make_fixtures.classify_router tells apart

# Token ids of the vision wrappers' special tokens: in the vocabulary, absent from input_ids (checked).
VISION_TOKEN_IDS = [255, 254, 253, 251, 249, 248, 246]

# Tiny vision towers of the OCR wrappers (a SAM encoder and a text-style encoder of one block each).
OCR_SAM = dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, num_hidden_layers=1, output_channels=32,
               downsample_channels=[32, 64], global_attn_indexes=[2, 5, 8, 11])
OCR_VISION = dict(
    sam_config=OCR_SAM,
    encoder_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1,
                        num_key_value_heads=2, vocab_size=256),
)
UNLIMITED_OCR_VISION = dict(
    sam_config=OCR_SAM,
    encoder_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1),
)


# ---------------------------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------------------------


def rope(**extra) -> dict:
    return dict(mf.ROPE, **extra)


def gemma4_text(c: dict, activation: str) -> dict:
    """Gemma 4's MoE text model as the 26B-A4B checkpoint configures it (no per-layer embeddings, no KV sharing,
    keys as values on the full-attention layers, their own head size and KV heads), tiny: sliding and full layers
    alternate, and the soft-capping of the logits is low enough to change the tiny model's logits."""
    return dict(
        c,
        head_dim=mf.HEAD_DIM,
        global_head_dim=2 * mf.HEAD_DIM,
        num_global_key_value_heads=1,
        attention_k_eq_v=True,
        num_hidden_layers=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        sliding_window=8,  # 8 < 12 tokens
        enable_moe_block=True,
        num_experts=mf.N_EXPERTS,
        top_k_experts=mf.TOP_K,
        moe_intermediate_size=mf.I_EXPERT,
        intermediate_size=mf.I_DENSE,
        hidden_size_per_layer_input=0,
        num_kv_shared_layers=0,
        final_logit_softcapping=0.25,
        hidden_activation=activation,
        tie_word_embeddings=True,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
    )


def families(eos_id: int) -> list[dict]:
    """Each: family, model_type, kind ("causal" or "vl"), kwargs for AutoConfig.for_model, router (the kind string
    of MANIFEST.json), notes for README.md (router, attention), and the flags build_model reads (router_bias)."""
    c = mf.common(eos_id)
    t = VISION_TOKEN_IDS
    return [
        dict(
            family="Qwen3-VL-MoE",
            model_type="qwen3_vl_moe",
            kind="vl",
            kwargs=dict(
                text_config=dict(
                    c,
                    head_dim=mf.HEAD_DIM,
                    num_hidden_layers=2,
                    num_experts=mf.N_EXPERTS,
                    num_experts_per_tok=mf.TOP_K,
                    moe_intermediate_size=mf.I_EXPERT,
                    intermediate_size=mf.I_DENSE,
                    # interleaved multimodal RoPE; sections sum to head_dim / 2 (text-only: all three positions agree)
                    rope_parameters=rope(mrope_section=[4, 2, 2], mrope_interleaved=True),
                ),
                vision_config=dict(
                    depth=2,
                    hidden_size=32,
                    num_heads=2,
                    intermediate_size=64,
                    patch_size=4,
                    num_position_embeddings=16,
                    out_hidden_size=mf.HIDDEN,
                    deepstack_visual_indexes=[0],
                ),
                image_token_id=t[0],
                video_token_id=t[1],
                vision_start_token_id=t[2],
                vision_end_token_id=t[3],
                tie_word_embeddings=False,
            ),
            router="topk_softmax",
            router_notes="softmax over E, top-k, renormalised (always, no norm_topk_prob key)",
            transposed_variant=True,
            attention_notes="q/k RMSNorm per head; interleaved M-RoPE (mrope_section [4,2,2]); vision tower of 2 "
            "blocks with deepstack merger at block 0",
        ),
        dict(
            family="GLM-4.5V (GLM4V-MoE)",
            model_type="glm4v_moe",
            kind="vl",
            kwargs=dict(
                text_config=dict(
                    c,
                    head_dim=mf.HEAD_DIM,
                    num_hidden_layers=3,
                    n_routed_experts=mf.N_EXPERTS,
                    num_experts_per_tok=mf.TOP_K,
                    moe_intermediate_size=mf.I_EXPERT,
                    intermediate_size=mf.I_DENSE,
                    n_shared_experts=1,
                    n_group=2,
                    topk_group=1,
                    first_k_dense_replace=1,
                    routed_scaling_factor=2.5,
                    norm_topk_prob=True,
                    attention_bias=True,
                    # partial rotary: RoPE on half of each head (8 dims), M-RoPE sections sum to 4
                    rope_parameters=rope(mrope_section=[2, 1, 1], partial_rotary_factor=0.5),
                ),
                vision_config=dict(
                    depth=2,
                    hidden_size=32,
                    num_heads=2,
                    intermediate_size=64,
                    patch_size=4,
                    image_size=16,
                    out_hidden_size=mf.HIDDEN,
                ),
                image_token_id=t[0],
                video_token_id=t[1],
                image_start_token_id=t[2],
                image_end_token_id=t[3],
                video_start_token_id=t[4],
                video_end_token_id=t[5],
                tie_word_embeddings=False,
            ),
            router="sigmoid",
            router_notes="sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, weights "
            "renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="q/k/v bias; partial_rotary_factor 0.5 with M-RoPE (mrope_section [2,1,1]); vision tower "
            "of 2 blocks",
            router_bias=True,
        ),
        dict(
            family="dots.llm1",
            model_type="dots1",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=2,  # one shared MLP of 2 x 48
                n_group=4,
                topk_group=2,
                first_k_dense_replace=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                sliding_window=8,  # 8 < 12 tokens
                max_window_layers=2,  # -> layer 2 sliding_attention, layers 0 and 1 full_attention
            ),
            router="sigmoid",
            router_notes="sigmoid + e_score_correction_bias for the choice, n_group 4 / topk_group 2 (group score = "
            "sum of its top-2), weights renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="q/k RMSNorm per head; sliding_window 8 on layer 2 (max_window_layers 2)",
            router_bias=True,
        ),
        dict(
            family="DeepSeek-V2",
            model_type="deepseek_v2",
            kind="causal",
            kwargs=dict(
                c,
                num_key_value_heads=mf.N_HEADS,  # MLA: every head has its own K/V
                num_hidden_layers=3,
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=2,  # one shared MLP of 2 x 48
                first_k_dense_replace=1,
                topk_method="group_limited_greedy",
                n_group=4,
                topk_group=2,
                routed_scaling_factor=16.0,
                norm_topk_prob=False,
                q_lora_rank=None,  # q_proj directly (DeepSeek-V2-Lite style)
                kv_lora_rank=16,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=16,
                # YaRN as in the DeepSeek-V2 checkpoints: mscale_all_dim scales the softmax
                rope_parameters=rope(rope_type="yarn", factor=4.0, original_max_position_embeddings=64,
                                     beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707),
            ),
            router="softmax",
            router_notes="softmax over E; group_limited_greedy: n_group 4 / topk_group 2 by the max score of each "
            "group; weights not renormalised, x routed_scaling_factor 16",
            attention_notes="MLA without q LoRA (q_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj), qk_nope 16 + "
            "qk_rope 8, v_head 16; RoPE on interleaved pairs (complex form); YaRN (factor 4, original 64, "
            "mscale_all_dim 0.707 folded into the softmax scale)",
        ),
        dict(
            family="Hunyuan-A13B (HunYuan MoE V1)",
            model_type="hunyuan_v1_moe",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=2,
                num_experts=mf.N_EXPERTS,
                moe_topk=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,  # experts and the shared MLP alike
                # NTK RoPE with a fixed alpha, as the checkpoints' rope_scaling {"type": "dynamic", "alpha": ...}
                rope_parameters=rope(rope_type="dynamic", factor=1.0, alpha=1000.0),
            ),
            router="topk_softmax",
            router_notes="f32 linear `gate.wg` (an nn.Linear), softmax over E, top-k, renormalised",
            attention_notes="q/k RMSNorm per head (query_layernorm / key_layernorm, after RoPE); NTK-alpha RoPE "
            "(alpha 1000)",
        ),
        dict(
            family="ERNIE 4.5 MoE",
            model_type="ernie4_5_moe",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,
                moe_num_experts=mf.N_EXPERTS,
                moe_k=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                moe_num_shared_experts=2,  # one shared MLP of 2 x 48
                moe_layer_start_index=1,  # layer 0 dense
                tie_word_embeddings=True,  # as the ERNIE 4.5 checkpoints: no lm_head.weight in the file
            ),
            router="topk_softmax",
            router_notes="f32 softmax over E; choice on softmax + e_score_correction_bias (moe_statics), weights the "
            "chosen softmax values renormalised",
            attention_notes="RoPE on interleaved pairs (GLM style), full head; tied embeddings",
            router_bias=True,
        ),
        dict(
            family="MiniMax-M2",
            model_type="minimax_m2",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=2,
                num_local_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,
                rope_parameters=rope(partial_rotary_factor=0.5),  # the checkpoints' rotary_dim = head_dim / 2
            ),
            router="sigmoid",
            router_notes="sigmoid; choice on sigmoid + e_score_correction_bias (on the MoE block), weights the chosen "
            "sigmoids renormalised",
            attention_notes="q/k RMSNorm over all heads together (q_norm [64], k_norm [32]); partial_rotary_factor 0.5",
            router_bias=True,
        ),
        dict(
            family="Phi-3.5-MoE (PhiMoE)",
            model_type="phimoe",
            kind="causal",
            kwargs=dict(
                c,
                num_hidden_layers=2,
                num_local_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,
                attention_bias=True,
                lm_head_bias=True,
                sliding_window=8,  # every layer; 8 < 12 tokens
                # LongRoPE as in the checkpoints (12 tokens < original 64: short factors and short_mscale apply)
                rope_parameters=rope(
                    rope_type="longrope",
                    original_max_position_embeddings=64,
                    short_factor=[1.0, 1.05, 1.1, 1.2, 1.4, 1.7, 2.1, 2.6],
                    long_factor=[1.0, 1.2, 1.5, 2.0, 2.8, 3.9, 5.3, 7.0],
                    short_mscale=1.243,
                    long_mscale=1.243,
                ),
            ),
            router="sparsemixer",
            router_notes="SparseMixer (eval): expert 1 = argmax of the logits, its weight = softmax over the logits "
            "whose relative gap to that max is at most 2 x router_jitter_noise (0.01); expert 2 and its weight "
            "likewise with expert 1 masked out; not renormalised; the router is an nn.Linear",
            attention_notes="q/k/v/o bias, lm_head bias; LayerNorm (with bias) instead of RMSNorm; sliding_window 8 on "
            "every layer; LongRoPE (short factors, short_mscale 1.243)",
        ),
        dict(
            family="FlexOlmo",
            model_type="flex_olmo",
            kind="causal",
            kwargs=dict(
                c,
                num_hidden_layers=2,
                num_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,
                norm_topk_prob=False,
            ),
            router="softmax",
            router_notes="softmax over E, top-k, not renormalised (norm_topk_prob false)",
            attention_notes="q/k RMSNorm over all heads together; post-norm blocks (post_attention_layernorm and "
            "post_feedforward_layernorm on the sublayer outputs, no input norm)",
        ),
        dict(
            family="Granite-MoE-Shared",
            model_type="granitemoeshared",
            kind="causal",
            kwargs=dict(
                c,
                num_hidden_layers=2,
                num_local_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,
                shared_intermediate_size=mf.I_DENSE,
                embedding_multiplier=12.0,
                attention_multiplier=1.0 / mf.HEAD_DIM,
                residual_multiplier=0.22,
                logits_scaling=4.0,
            ),
            router="topk_softmax",
            router_notes="linear `router.layer`, top-k on the logits, softmax over the k chosen",
            attention_notes="Granite multipliers (embedding 12, attention 1/16, residual 0.22, logits 1/4); shared MLP "
            "`shared_mlp` beside `block_sparse_moe` (input_linear [2 x 80, 64] / output_linear)",
        ),
        dict(
            family="Qwen3-Next",
            model_type="qwen3_next",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,
                full_attention_interval=3,  # layers 0, 1 linear_attention (Gated DeltaNet), layer 2 full_attention
                num_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                shared_expert_intermediate_size=mf.I_DENSE,
                intermediate_size=mf.I_DENSE,
                norm_topk_prob=True,
                linear_num_key_heads=2,
                linear_num_value_heads=4,
                linear_key_head_dim=16,
                linear_value_head_dim=16,
                linear_conv_kernel_dim=4,
                rope_parameters=rope(partial_rotary_factor=0.25),
            ),
            router="topk_softmax",
            router_notes="softmax over E, top-k, renormalised (norm_topk_prob)",
            attention_notes="layers 0, 1 Gated DeltaNet (linear_attn: in_proj_qkvz, in_proj_ba, conv1d, gated RMSNorm, "
            "out_proj), layer 2 gated full attention (q_proj [2 x 64], sigmoid output gate) with q/k RMSNorm per head; "
            "RMSNorms zero-centred (1 + w) except the gated one; partial_rotary_factor 0.25",
        ),
        dict(
            family="Qwen3.5-MoE (text)",
            model_type="qwen3_5_moe_text",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,
                layer_types=["linear_attention", "linear_attention", "full_attention"],
                num_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                shared_expert_intermediate_size=mf.I_DENSE,
                linear_num_key_heads=2,
                linear_num_value_heads=4,
                linear_key_head_dim=16,
                linear_value_head_dim=16,
                linear_conv_kernel_dim=4,
                rope_parameters=rope(partial_rotary_factor=0.25),
            ),
            router="topk_softmax",
            router_notes="softmax over E, top-k, renormalised",
            attention_notes="layers 0, 1 Gated DeltaNet (linear_attn: in_proj_qkv, in_proj_z, in_proj_b, in_proj_a, "
            "conv1d, gated RMSNorm, out_proj), layer 2 gated full attention with q/k RMSNorm per head; zero-centred "
            "RMSNorms (1 + w); partial_rotary_factor 0.25",
        ),
        dict(
            family="Jamba",
            model_type="jamba",
            kind="causal",
            kwargs=dict(
                {k: v for k, v in c.items() if k != "rope_parameters"},  # no RoPE
                num_hidden_layers=3,
                num_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,  # experts and dense MLPs alike
                expert_layer_period=2,
                expert_layer_offset=1,  # layer 1 MoE, layers 0 and 2 dense
                attn_layer_period=3,
                attn_layer_offset=2,  # layer 2 attention, layers 0 and 1 Mamba
                mamba_d_state=16,
                mamba_d_conv=4,
                mamba_expand=2,
            ),
            router="softmax",
            router_notes="linear `router`, softmax over E, top-k, not renormalised",
            attention_notes="layers 0, 1 Mamba (in_proj, conv1d, x_proj, dt_proj, dt/B/C RMSNorms, out_proj), layer 2 "
            "attention without RoPE; MoE on layer 1 only (expert_layer_period 2, offset 1)",
        ),
        dict(
            family="Granite-4.0-H (GraniteMoeHybrid)",
            model_type="granitemoehybrid",
            kind="causal",
            kwargs=dict(
                c,
                num_hidden_layers=3,
                layer_types=["mamba", "attention", "mamba"],
                num_local_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,
                shared_intermediate_size=mf.I_DENSE,
                embedding_multiplier=12.0,
                attention_multiplier=1.0 / mf.HEAD_DIM,
                residual_multiplier=0.22,
                logits_scaling=4.0,
                position_embedding_type="nope",  # as the Granite 4.0 H checkpoints: no RoPE
                mamba_n_heads=4,
                mamba_d_head=32,
                mamba_n_groups=1,
                mamba_d_state=16,
                mamba_d_conv=4,
                mamba_expand=2,
                mamba_chunk_size=8,  # 12 tokens span two chunks
            ),
            router="topk_softmax",
            router_notes="linear `router.layer`, top-k on the logits, softmax over the k chosen",
            attention_notes="layers 0, 2 Mamba2 (4 heads of 32, chunk 8), layer 1 attention without position "
            "embedding (nope); Granite multipliers; shared MLP `shared_mlp` on every layer",
        ),
        dict(
            family="Nemotron-H (Nemotron 3 Nano)",
            model_type="nemotron_h",
            kind="causal",
            kwargs=dict(
                {k: v for k, v in c.items() if k != "rope_parameters"},  # no RoPE
                head_dim=mf.HEAD_DIM,
                layers_block_type=["mamba", "moe", "attention"],  # one mixer per layer: M, E, *
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                moe_shared_expert_intermediate_size=mf.I_DENSE,
                intermediate_size=mf.I_DENSE,
                n_group=2,
                topk_group=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                mamba_num_heads=4,
                mamba_head_dim=32,
                n_groups=1,
                ssm_state_size=16,
                conv_kernel=4,
                chunk_size=8,  # 12 tokens span two chunks
            ),
            router="sigmoid",
            router_notes="sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, weights "
            "renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="one mixer per layer (`mixer`): layer 0 Mamba2 (4 heads of 32, chunk 8), layer 1 MoE, "
            "layer 2 attention without RoPE; UNGATED experts up_proj [E, I, H] / down_proj [E, H, I] with relu2, "
            "shared expert up/down relu2; hub layout under backbone.",
            router_bias=True,
        ),
        dict(
            family="DeepSeek-V3.2",
            model_type="deepseek_v32",
            kind="causal",
            kwargs=dict(
                c,
                num_key_value_heads=mf.N_HEADS,  # MLA: every head has its own K/V
                num_hidden_layers=2,
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=1,
                n_group=2,
                topk_group=1,
                first_k_dense_replace=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                q_lora_rank=32,
                kv_lora_rank=16,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=16,
                # the lightning indexer: 5 of the visible keys per query, so that queries past position 4 attend
                # to a subset of their 12 tokens
                index_topk=5,
                index_n_heads=8,
                index_head_dim=16,  # rope on its first 8 dimensions, the other 8 unrotated
                # YaRN with mscale != mscale_all_dim: cos and sin (the indexer's too) carry the attention factor
                rope_parameters=rope(rope_type="yarn", factor=4.0, original_max_position_embeddings=64,
                                     beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=0.8),
            ),
            router="sigmoid",
            router_notes="sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, weights "
            "renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="MLA (q LoRA 32, kv LoRA 16, qk_nope 16 + qk_rope 8, v_head 16, rope on interleaved pairs) "
            "restricted by DeepSeek sparse attention: the indexer (wq_b on the q LoRA latent, wk + LayerNorm k_norm, "
            "weights_proj; 8 heads of 16, rope on halves of the first 8 dims) keeps index_topk 5 keys per query; "
            "YaRN (factor 4, original 64, mscale 1, mscale_all_dim 0.8)",
            router_bias=True,
        ),
        dict(
            family="GLM-5 (GLM-MoE-DSA)",
            model_type="glm_moe_dsa",
            kind="causal",
            kwargs=dict(
                c,
                num_key_value_heads=mf.N_HEADS,  # MLA: every head has its own K/V
                num_hidden_layers=3,
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=1,
                n_group=1,
                topk_group=1,
                first_k_dense_replace=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                q_lora_rank=32,
                kv_lora_rank=16,
                qk_nope_head_dim=24,
                qk_rope_head_dim=8,
                v_head_dim=32,
                index_topk=4,
                index_n_heads=8,
                index_head_dim=16,
                # layer 1 has no indexer: it reuses layer 0's choice of keys
                indexer_types=["full", "shared", "full"],
                rope_parameters=rope(),
            ),
            router="sigmoid",
            router_notes="sigmoid + e_score_correction_bias for the choice, one group, weights renormalised "
            "(norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="MLA (q LoRA 32, kv LoRA 16, qk_nope 24 + qk_rope 8, v_head 32) restricted by DeepSeek "
            "sparse attention, index_topk 4 (indexer of 8 heads of 16), the indexer's rope on interleaved pairs; "
            "indexer_types full, shared, full (layer 1 reuses layer 0's keys and has no indexer)",
            router_bias=True,
        ),
        dict(
            family="LFM2-MoE",
            model_type="lfm2_moe",
            kind="causal",
            kwargs=dict(
                c,
                tie_word_embeddings=True,  # as the LFM2 checkpoints
                num_hidden_layers=3,
                layer_types=["conv", "full_attention", "conv"],
                num_dense_layers=1,  # layer 0 dense, layers 1 and 2 MoE
                num_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                conv_L_cache=3,
                conv_bias=True,  # in_proj, out_proj and conv biases (the LFM2 checkpoints have none)
                use_expert_bias=True,
                norm_topk_prob=True,
                routed_scaling_factor=2.0,
            ),
            router="sigmoid",
            router_notes="linear `gate`, sigmoid; choice on sigmoid + `expert_bias` (F32 buffer on the MoE block), "
            "weights the chosen sigmoids renormalised (sum + 1e-6) x routed_scaling_factor 2",
            attention_notes="layers 0, 2 gated short convolution (`conv`: in_proj into B, C, x; conv over B*x; C*conv; "
            "out_proj; with biases), layer 1 attention with q/k RMSNorm per head before RoPE and `out_proj`; norms "
            "`operator_norm`, `ffn_norm`, final `embedding_norm`; tied embeddings; dense MLP w1/w3/w2 on layer 0",
        ),
        dict(
            family="MiniMax-Text-01",
            model_type="minimax",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,
                layer_types=["linear_attention", "full_attention", "linear_attention"],
                block_size=5,  # the 12 tokens span three lightning blocks (5, 5, 2)
                num_local_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,
                linear_attn_alpha_factor=1.5,
                linear_attn_beta_factor=0.75,
                full_attn_alpha_factor=1.25,
                full_attn_beta_factor=0.9,
                mlp_alpha_factor=1.1,
                mlp_beta_factor=0.8,
            ),
            router="topk_softmax",
            router_notes="softmax over the experts, top-2, the chosen weights always renormalised (= softmax of the "
            "top-2 logits)",
            attention_notes="layers 0, 2 lightning attention (silu(qkv_proj) per head [q | k | v], decay per head and "
            "layer, block_size 5, RMSNorm eps 1e-6, sigmoid(output_gate) gate, out_proj), layer 1 softmax attention "
            "with full-head RoPE; each residual taken after the norm and weighted by its alpha/beta factors",
        ),
        dict(
            family="LongCat-Flash",
            model_type="longcat_flash",
            kind="causal",
            kwargs=dict(
                c,
                num_key_value_heads=mf.N_HEADS,  # MLA: as many key/value heads as heads
                num_layers=2,  # each with two attention and two MLP sublayers
                n_routed_experts=mf.N_EXPERTS,
                zero_expert_num=3,  # zero experts 8, 9, 10 go to experts 0, 2 and 5 with weight 0
                moe_topk=mf.TOP_K,
                expert_ffn_hidden_size=mf.I_EXPERT,
                ffn_hidden_size=mf.I_DENSE,
                routed_scaling_factor=6.0,
                q_lora_rank=32,
                kv_lora_rank=16,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                head_dim=8,  # the rope's size: transformers builds it for head_dim
                v_head_dim=16,
            ),
            router="softmax_zero_experts",
            router_notes="softmax over the 8 experts and 3 zero-computation experts, top-2 chosen on the scores plus "
            "e_score_correction_bias, the scores x routed_scaling_factor 6 (not renormalised); a zero expert passes "
            "the token through, scaled by its weight, and its slot goes to expert (j - 8) * 8 // 3 with weight 0",
            attention_notes="two MLA sublayers (q LoRA, queries x sqrt(64/32), the normed latent x sqrt(64/16), rope on "
            "adjacent pairs) and two dense MLPs (mlps) per layer, each after its norm; the MoE reads the first MLP's "
            "input and is added after the second MLP",
            router_bias=True,
            zero_experts=True,
        ),
        dict(
            family="Kimi-Linear",
            model_type="kimi_linear",
            kind="causal",
            kwargs=dict(
                {k: v for k, v in c.items() if k != "rope_parameters"},  # no position embedding at all
                num_key_value_heads=mf.N_HEADS,  # MLA: every head has its own K/V
                num_hidden_layers=3,
                layer_types=["linear_attention", "full_attention", "linear_attention"],
                first_k_dense_replace=1,
                num_local_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=1,  # one shared MLP of 48
                n_group=2,
                topk_group=1,
                routed_scaling_factor=2.446,
                norm_topk_prob=True,
                q_lora_rank=None,
                kv_lora_rank=32,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=16,
                linear_num_heads=3,  # 3 x 16 = 48 channels of q, k and v, unlike hidden_size
                linear_head_dim=16,
                linear_conv_kernel_dim=4,
            ),
            router="sigmoid",
            router_notes="DeepSeek-V3's: sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, "
            "weights renormalised (moe_renormalize) x routed_scaling_factor 2.446",
            attention_notes="layers 0, 2 Kimi Delta Attention (q/k/v_proj with short convolutions, a decay per key "
            "channel from f_a/f_b_proj, A_log, dt_bias, rate b_proj, output gate g_a/g_b_proj with a sigmoid-gated "
            "RMSNorm, o_proj; 3 heads of 16), layer 1 MLA without rope (q_proj, kv_a_proj_with_mqa, kv_b_proj; "
            "qk_nope 16 + qk_rope 8, v_head 16); dense MLP on layer 0; config keys under KimiLinearConfig's names "
            "(moe_renormalize, num_expert_group, num_experts_per_token)",
            router_bias=True,
        ),
        dict(
            family="Sarvam (MLA)",
            model_type="sarvam_mla",
            kind="causal",
            kwargs=dict(
                c,
                num_key_value_heads=mf.N_HEADS,  # MLA: every head has its own K/V
                num_hidden_layers=3,
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=2,  # one shared MLP of 2 x 48
                first_k_dense_replace=1,
                n_group=4,
                topk_group=2,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                q_lora_rank=None,  # the config class's default: q_proj directly
                kv_lora_rank=16,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=16,
                rope_parameters=rope(rope_type="yarn", factor=4.0, original_max_position_embeddings=64,
                                     beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0),
            ),
            router="sigmoid",
            router_notes="DeepSeek-V3's: sigmoid + e_score_correction_bias for the choice, n_group 4 / topk_group 2, "
            "weights renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="DeepSeek-V3 MLA without q LoRA, qk_nope 16 + qk_rope 8, v_head 16, RoPE on interleaved "
            "pairs (rope_interleave); YaRN (factor 4, original 64, mscale_all_dim 1 folded into the softmax scale)",
            router_bias=True,
        ),
        dict(
            family="Solar Open",
            model_type="solar_open",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=2,
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                n_shared_experts=2,  # one shared MLP of 2 x 48
                n_group=2,
                topk_group=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                attention_bias=True,  # q/k/v biases; o_proj never has one
            ),
            router="sigmoid",
            router_notes="GLM4-MoE's: sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, "
            "weights renormalised (norm_topk_prob) x routed_scaling_factor 2.5; every layer MoE",
            attention_notes="Llama attention with q/k/v bias (attention_bias), no q/k norm, whole-head RoPE",
            router_bias=True,
        ),
        dict(
            family="GLM-4.7-Flash (GLM4-MoE-Lite)",
            model_type="glm4_moe_lite",
            kind="causal",
            kwargs=dict(
                c,
                num_key_value_heads=mf.N_HEADS,  # MLA: every head has its own K/V
                num_hidden_layers=3,
                mlp_layer_types=["sparse", "dense", "sparse"],  # a dense layer between two MoE layers
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=1,
                n_group=2,
                topk_group=1,
                routed_scaling_factor=1.8,
                norm_topk_prob=True,
                q_lora_rank=32,
                kv_lora_rank=16,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=24,  # v heads wider than q/k heads, as in GLM-4.7-Flash
                rope_interleave=True,
            ),
            router="sigmoid",
            router_notes="GLM4-MoE's: sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, "
            "weights renormalised (norm_topk_prob) x routed_scaling_factor 1.8; mlp_layer_types [sparse, dense, sparse]",
            attention_notes="DeepSeek-V3 MLA with q LoRA (q_a_proj, q_a_layernorm, q_b_proj), qk_nope 16 + qk_rope 8, "
            "v_head 24, RoPE on interleaved pairs (rope_interleave)",
            router_bias=True,
        ),
        dict(
            family="HY-V3",
            model_type="hy_v3",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,  # mlp_layer_types: layer 0 dense, layers 1 and 2 MoE
                num_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                num_shared_experts=1,
                router_scaling_factor=2.826,
                attention_bias=True,
                initializer_range=0.02,  # the class's 0.006 leaves the choice to the correction bias alone
            ),
            router="sigmoid",
            router_notes="f32 sigmoid + e_score_correction_bias (on the MoE block) for the choice, no groups, weights "
            "always renormalised x router_scaling_factor 2.826",
            attention_notes="q/k RMSNorm per head before RoPE; q/k/v/o bias (attention_bias); shared MLP `shared_mlp` on "
            "the hub",
            router_bias=True,
        ),
        dict(
            family="Kimi-K2.5",
            model_type="kimi_k25",
            kind="vl",
            kwargs=dict(
                text_config=dict(
                    c,
                    num_key_value_heads=mf.N_HEADS,  # MLA: every head has its own K/V
                    num_hidden_layers=2,
                    n_routed_experts=mf.N_EXPERTS,
                    num_experts_per_tok=mf.TOP_K,
                    moe_intermediate_size=mf.I_EXPERT,
                    intermediate_size=mf.I_DENSE,
                    n_shared_experts=1,
                    n_group=2,
                    topk_group=1,
                    first_k_dense_replace=1,
                    routed_scaling_factor=2.5,
                    norm_topk_prob=True,
                    q_lora_rank=32,
                    kv_lora_rank=16,
                    qk_nope_head_dim=16,
                    qk_rope_head_dim=8,
                    v_head_dim=16,
                ),
                vision_config=dict(
                    num_hidden_layers=1,
                    hidden_size=32,
                    num_attention_heads=2,
                    intermediate_size=64,
                    pos_emb_height=8,
                    pos_emb_width=8,
                ),
                projection_hidden_size=32,
                # The wrapper embeds its image and video placeholder ids as id 0: ids absent from the golden
                # calibration ids too (254 is in them).
                image_token_id=t[0],
                video_token_id=t[2],
                vision_start_token_id=t[3],
                vision_end_token_id=t[4],
                # tie_word_embeddings left to the wrapper class: tied (no lm_head.weight in the file)
            ),
            router="sigmoid",
            router_notes="DeepSeek-V3's: sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, "
            "weights renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="DeepSeek-V3 text model (MLA with q LoRA) in the Kimi-K2.5 wrapper, whose class default ties "
            "the lm_head to the embedding; vision tower of 1 block",
            router_bias=True,
        ),
        dict(
            family="Qwen3-Omni-MoE (thinker)",
            model_type="qwen3_omni_moe_thinker",
            kind="vl",
            kwargs=dict(
                text_config=dict(
                    c,
                    head_dim=mf.HEAD_DIM,
                    num_hidden_layers=3,
                    mlp_only_layers=[1],  # a dense layer between two MoE layers
                    num_experts=mf.N_EXPERTS,
                    num_experts_per_tok=mf.TOP_K,
                    moe_intermediate_size=mf.I_EXPERT,
                    intermediate_size=mf.I_DENSE,
                    norm_topk_prob=True,
                    # interleaved multimodal RoPE; sections sum to head_dim / 2 (text-only: all three positions agree)
                    rope_parameters=rope(mrope_section=[4, 2, 2], mrope_interleaved=True, interleaved=True),
                ),
                audio_config=dict(
                    d_model=32,
                    encoder_layers=1,
                    encoder_attention_heads=2,
                    encoder_ffn_dim=64,
                    downsample_hidden_size=32,
                    output_dim=mf.HIDDEN,
                ),
                vision_config=dict(
                    depth=1,
                    hidden_size=32,
                    num_heads=2,
                    intermediate_size=64,
                    out_hidden_size=mf.HIDDEN,
                    deepstack_visual_indexes=[0],
                ),
                audio_token_id=t[0],
                image_token_id=t[1],
                video_token_id=t[2],
                audio_start_token_id=t[3],
                user_token_id=t[4],
                tie_word_embeddings=False,
            ),
            router="topk_softmax",
            router_notes="Qwen3-MoE's: softmax over E, top-k, renormalised (norm_topk_prob); mlp_only_layers [1]",
            attention_notes="Qwen3-MoE layers: q/k RMSNorm per head, no sliding window; interleaved M-RoPE (mrope_section "
            "[4,2,2]); audio encoder and vision tower of 1 block each",
        ),
        dict(
            family="EXAONE-MoE (K-EXAONE)",
            model_type="exaone_moe",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,  # first_k_dense_replace 1: layer 0 dense, layers 1 and 2 MoE
                num_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                num_shared_experts=1,
                n_group=2,
                topk_group=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                first_k_dense_replace=1,
                sliding_window=8,  # 8 < 12 tokens
                sliding_window_pattern=2,  # layers 0 and 2 sliding, layer 1 full attention without RoPE
            ),
            router="sigmoid",
            router_notes="DeepSeek-V3's: sigmoid + e_score_correction_bias for the choice (on the MoE block on the hub), "
            "n_group 2 / topk_group 1, weights renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="q/k RMSNorm per head before RoPE; sliding_window 8 on layers 0 and 2 (sliding_window_pattern "
            "2), layer 1 full attention without RoPE (global NoPE)",
            router_bias=True,
        ),
        dict(
            family="Flint",
            model_type="flint",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,
                layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                mlp_only_layers=[1],  # layer 1 dense, layers 0 and 2 MoE
                num_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                shared_expert_intermediate_size=mf.I_DENSE,
                norm_topk_prob=True,
                sliding_window=8,  # 8 < 12 tokens
            ),
            router="sigmoid",
            router_notes="f32 sigmoid, top-k of the sigmoids, renormalised (norm_topk_prob); no correction bias; "
            "ungated shared expert `shared_expert`",
            attention_notes="q/k RMSNorm per head; attention sinks (softmax_offset on the hub); sliding_window 8 on layers "
            "0 and 2, which alone have RoPE; layer 1 full attention without RoPE",
        ),
        dict(
            family="Granite-MoE-SWA",
            model_type="granitemoe_swa",
            kind="causal",
            kwargs=dict(
                c,
                num_hidden_layers=3,
                layer_types=["full_attention", "sliding_attention", "sliding_attention"],
                layer_rope_theta=[0, 10000.0, 10000.0],  # layer 0 without RoPE
                sliding_window=8,  # 8 < 12 tokens
                num_local_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,
                shared_intermediate_size=mf.I_DENSE,
                embedding_multiplier=12.0,
                attention_multiplier=1.0 / mf.HEAD_DIM,
                residual_multiplier=0.22,
                logits_scaling=4.0,
            ),
            router="topk_softmax",
            router_notes="linear `router`, top-k on the logits, softmax over the k chosen",
            attention_notes="Granite multipliers (embedding 12, attention 1/16, residual 0.22, logits 1/4); attention "
            "sinks (a sigmoid scale of the output); sliding_window 8 on layers 1 and 2; layer_rope_theta [0, 1e4, 1e4] "
            "(layer 0 without RoPE); shared MLP `shared_mlp`",
        ),
        dict(
            family="DeepSeek-OCR-2",
            model_type="deepseek_ocr2",
            kind="vl",
            kwargs=dict(
                text_config=dict(
                    c,
                    num_hidden_layers=3,
                    mlp_layer_types=["dense", "sparse", "sparse"],
                    n_routed_experts=mf.N_EXPERTS,
                    num_experts_per_tok=mf.TOP_K,
                    moe_intermediate_size=mf.I_EXPERT,
                    intermediate_size=mf.I_DENSE,
                    n_shared_experts=2,  # one shared MLP of 2 x 48
                    topk_method="group_limited_greedy",
                    n_group=4,
                    topk_group=2,
                    routed_scaling_factor=2.0,
                ),
                vision_config=OCR_VISION,
                image_token_id=t[0],
                tie_word_embeddings=False,
            ),
            router="softmax",
            router_notes="DeepSeek-V2's: softmax over E; group_limited_greedy: n_group 4 / topk_group 2 by the max score "
            "of each group; weights not renormalised, x routed_scaling_factor 2",
            attention_notes="Llama multi-head attention, RoPE on halves; mlp_layer_types [dense, sparse, sparse]; SAM + "
            "encoder vision tower of 1 block each",
        ),
        dict(
            family="Unlimited-OCR",
            model_type="unlimited_ocr",
            kind="vl",
            kwargs=dict(
                text_config=dict(
                    c,
                    num_key_value_heads=mf.N_HEADS,  # its eager attention repeats no kv head (multi-head, as released)
                    num_hidden_layers=3,
                    first_k_dense_replace=1,  # read when mlp_layer_types is absent: layer 0 dense
                    n_routed_experts=mf.N_EXPERTS,
                    num_experts_per_tok=mf.TOP_K,
                    moe_intermediate_size=mf.I_EXPERT,
                    intermediate_size=mf.I_DENSE,
                    n_shared_experts=2,
                    routed_scaling_factor=1.5,
                    sliding_window=8,  # reference sliding window: a whole sequence still attends causally
                ),
                vision_config=UNLIMITED_OCR_VISION,
                image_token_id=t[0],
                tie_word_embeddings=False,
            ),
            router="softmax",
            router_notes="DeepSeek-V2's greedy: softmax over E, top-k, not renormalised, x routed_scaling_factor 1.5",
            attention_notes="Llama multi-head attention, RoPE on halves; reference_sliding_attention layers (window 8 "
            "for decoded tokens only: causal over a whole sequence); SAM + CLIP vision tower of 1 block each",
        ),
        dict(
            family="Aria (text)",
            model_type="aria_text",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=2,
                moe_num_experts=mf.N_EXPERTS,
                moe_topk=mf.TOP_K,
                intermediate_size=mf.I_EXPERT,  # the experts' size; the shared MLP is 2 x 48
                moe_num_shared_experts=2,
            ),
            router="topk_softmax",
            router_notes="linear `router`, top-k on the logits, softmax over the k chosen",
            attention_notes="Llama attention; experts stacked input axis first (fc1 [E, H, 2I], fc2 [E, I, H] on the "
            "hub); shared MLP `shared_experts` of 2 x 48",
        ),
        dict(
            family="Gemma 4 (MoE)",
            model_type="gemma4_text",
            kind="causal",
            kwargs=gemma4_text(c, "gelu_pytorch_tanh"),
            router="softmax_per_expert_scale",
            router_notes="`router`: weightless RMSNorm of the layer's residual x `scale` x hidden^-0.5, `proj`, softmax "
            "over E, top-k, renormalised, x `per_expert_scale` of each chosen expert",
            attention_notes="sliding layers (window 8): head_dim 16, 2 KV heads, default RoPE (theta 1e4); full layers: "
            "head_dim 32 (global_head_dim), 1 KV head (num_global_key_value_heads) whose k_proj output is also the "
            "value (attention_k_eq_v, no v_proj), proportional RoPE (theta 1e6, 4 of 16 frequencies: "
            "partial_rotary_factor 0.25); q/k RMSNorm per head, weightless v norm, scaling 1; norms before and after "
            "each sublayer; dense MLP (gelu_pytorch_tanh) and experts side by side with their own norms; layer_scalar; "
            "embeddings x sqrt(hidden); final_logit_softcapping 0.25; tied embeddings",
        ),
        dict(
            family="Gemma 4 (MoE, multimodal)",
            model_type="gemma4",
            kind="vl",
            kwargs=dict(
                # The wrapper writes pad_token_id over its placeholders (none in text alone): an id not in input_ids.
                text_config=dict(gemma4_text(c, "gelu"), pad_token_id=245),
                vision_config=dict(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    num_key_value_heads=2,
                    head_dim=16,
                    patch_size=4,
                    position_embedding_size=64,
                    pooling_kernel_size=2,
                ),
                boi_token_id=t[0],
                eoi_token_id=t[1],
                image_token_id=t[2],
                video_token_id=t[3],
                boa_token_id=t[4],
                eoa_token_index=t[5],
                audio_token_id=t[6],
                tie_word_embeddings=True,
            ),
            router="softmax_per_expert_scale",
            router_notes="as gemma4_text",
            attention_notes="the Gemma4ForConditionalGeneration wrapper (a vision tower of 1 block, no audio tower) "
            "around gemma4_text's text model, its experts and MLPs with the exact GELU (hidden_activation gelu)",
        ),
        dict(
            family="Param2-MoE",
            model_type="param2moe",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=1,
                n_group=2,
                topk_group=1,
                first_k_dense_replace=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                use_qk_norm=True,
                tie_word_embeddings=True,  # the class default: no lm_head.weight in the file
            ),
            router="sigmoid",
            router_notes="GLM4-MoE's: sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, weights "
            "renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="GLM4-MoE modules: q/k RMSNorm per head, whole-head RoPE (partial_rotary_factor 1); tied embeddings; the "
            "hub layout (Bailing names) fuses q, k and v into attention.query_key_value",
            router_bias=True,
        ),
        dict(
            family="Sarvam-MoE",
            model_type="sarvam_moe",
            kind="causal",
            kwargs=dict(
                c,
                head_dim=mf.HEAD_DIM,
                num_hidden_layers=3,
                n_routed_experts=mf.N_EXPERTS,
                num_experts_per_tok=mf.TOP_K,
                moe_intermediate_size=mf.I_EXPERT,
                intermediate_size=mf.I_DENSE,
                n_shared_experts=1,
                n_group=2,
                topk_group=1,
                first_k_dense_replace=1,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
                use_qk_norm=True,
            ),
            router="sigmoid",
            router_notes="GLM4-MoE's: sigmoid + e_score_correction_bias for the choice, n_group 2 / topk_group 1, weights "
            "renormalised (norm_topk_prob) x routed_scaling_factor 2.5",
            attention_notes="GLM4-MoE modules: q/k RMSNorm per head, whole-head RoPE (partial_rotary_factor 1); the "
            "hub layout (Bailing names) fuses q, k and v into attention.query_key_value",
            router_bias=True,
        ),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def randomise_constants(model, g: torch.Generator, keep_f32: set):
    """Give parameters and persistent buffers that are all 0 or all 1 at init small random values (see header).
    Runs after make_fixtures.build_model's own bias initialisation, with its generator."""
    for name, t in model.state_dict(keep_vars=True).items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        ones, zeros = bool((t == 1).all()), bool((t == 0).all())
        if not (ones or zeros):
            continue
        assert not name.endswith("e_score_correction_bias"), f"{name}: set router_bias on the family"
        noise = torch.randn(t.shape, generator=g)
        if name.endswith(".expert_bias"):  # LFM2's router bias, a buffer declared float32: kept so, as the others
            t.data.copy_(0.01 * noise)
            keep_f32.add(name)
            continue
        leaf = name.rsplit(".", 2)[-2] if "." in name else name
        if ones:
            t.data.copy_(1.0 + 0.1 * noise)
        elif "norm" in leaf:
            t.data.copy_(0.1 * noise)
        else:
            t.data.copy_(0.02 * noise)


def classify_key(key: str) -> str:
    """make_fixtures.classify_key, plus shared MLPs named shared_mlp, a router linear nested in its gate or router
    module (gate.wg, LongCat-Flash's router.classifier), e_score_correction_bias wherever it is kept (gate.moe_statics, the MoE block) and LFM2-MoE's
    expert_bias."""
    if re.search(r"\.shared_(mlp|experts?)\.|\.shared_expert_gate\.", key):
        return "shared"
    if re.search(r"\.gate\.wg\.weight$|\.router\.classifier\.weight$|\.e_score_correction_bias$|\.expert_bias$", key):
        return "router"
    return mf.classify_key(key)


def text_cfg_json(cfg_json: dict) -> tuple[dict, str]:
    """The text model's part of config.json and its path prefix ('' or 'text_config.')."""
    if "text_config" in cfg_json:
        return cfg_json["text_config"], "text_config."
    return cfg_json, ""


def config_keys(cfg_json: dict, experts: int, top_k: int, inter: int) -> dict:
    tc, prefix = text_cfg_json(cfg_json)
    expert_keys = [k for k in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts") if k in tc]
    assert expert_keys and all(tc[k] == experts for k in expert_keys), expert_keys
    topk_key = next(k for k in ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_k", "top_k", "top_k_experts") if k in tc)
    assert tc[topk_key] == top_k, topk_key
    inter_key = next(k for k in ("moe_intermediate_size", "expert_ffn_hidden_size", "intermediate_size") if k in tc)
    assert tc[inter_key] == inter, inter_key
    return {
        "experts": [prefix + k for k in expert_keys],
        "top_k": prefix + topk_key,
        "intermediate": prefix + inter_key,
    }


def write_transposed_experts(src: Path, dst: Path):
    """A copy of the checkpoint in src with every stacked experts tensor stored transposed: gate_up_proj
    [E, H, 2I] and down_proj [E, I, H], the layout of the published Qwen3-VL-MoE checkpoints (transformers reads it,
    transposing where the shapes differ from its own, but writes [E, 2I, H] / [E, H, I])."""
    dst.mkdir(parents=True)
    for name in ("config.json", "generation_config.json"):
        shutil.copyfile(src / name, dst / name)
    tensors, n = {}, 0
    with safe_open(src / "model.safetensors", framework="pt") as f:
        metadata = f.metadata()
        for k in f.keys():
            t = f.get_tensor(k)
            if re.search(r"\.experts\.(gate_up_proj|down_proj)$", k):
                t, n = t.transpose(1, 2).contiguous(), n + 1
            tensors[k] = t
    assert n, "no stacked experts tensors"
    save_file(tensors, dst / "model.safetensors", metadata=metadata)


def disk_prefix(prefix: str, tensors: dict) -> str:
    """The checkpoint's spelling of an in-memory module prefix (model.layers.1.): the same, under backbone.
    (Nemotron-H's hub layout), language_model.model.blocks. (Kimi-K2.5's hub layout as transformers 5.25 writes
    it: its reverse renaming turns every `layers` into `blocks`), or model. without language_model. (the hub layout of
    Qwen3-Omni's thinker)."""
    kimi = re.sub(r"^model\.language_model\.layers\.", "language_model.model.blocks.", prefix)
    thinker = re.sub(r"^model\.language_model\.", "model.", prefix)
    for cand in (prefix, re.sub(r"^model\.", "backbone.", prefix), kimi, thinker):
        if any(k.startswith(cand) for k in tensors):
            return cand
    raise AssertionError(f"no tensor under {prefix}")


def experts_layout(emod, geo: dict) -> dict:
    """in_memory_experts_layout of MANIFEST.json; ungated experts (no gate_up_proj) give up_proj instead and
    gated: false."""
    if hasattr(emod, "gate_up_proj"):
        return {
            "gate_up_proj": list(emod.gate_up_proj.shape),
            "down_proj": list(emod.down_proj.shape),
            "transposed": geo["transposed"],
            "gate_up_concatenated": geo["concatenated"],
            "bias": geo["has_bias"],
        }
    return {
        "gate_up_proj": None,
        "up_proj": list(emod.up_proj.shape),
        "down_proj": list(emod.down_proj.shape),
        "transposed": geo["transposed"],
        "gate_up_concatenated": None,
        "bias": geo["has_bias"],
        "gated": False,
    }


def indexer_margin(model, input_ids: torch.Tensor) -> float | None:
    """The smallest relative gap, over every query of every DeepSeek sparse attention indexer that sees more keys than
    index_topk, between the score of the last key the indexer keeps and that of the best key it drops (None when the
    model has no indexer). The scores are the ones the indexer hands to topk, taken during a forward on input_ids.
    Another implementation sums in another order: with a tie or a near tie it could keep another key."""
    indexers = [m for n, m in model.named_modules() if n.endswith(".indexer")]
    if not indexers:
        return None
    original = torch.Tensor.topk
    taken: list[tuple[int, torch.Tensor]] = []

    def tap(mod):
        def topk(t, *args, **kwargs):
            taken.append((mod.index_topk, t.detach().clone()))
            return original(t, *args, **kwargs)
        return topk

    def before(mod, args):
        torch.Tensor.topk = tap(mod)

    def after(mod, args, output):
        torch.Tensor.topk = original

    handles = [h for m in indexers for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        torch.Tensor.topk = original
        for h in handles:
            h.remove()
    assert len(taken) == len(indexers), (len(taken), len(indexers))
    margin = float("inf")
    for keep, scores in taken:
        for sequence in scores.reshape(-1, scores.shape[-2], scores.shape[-1]):
            for s in range(keep, sequence.shape[0]):  # query s sees keys 0..s (no padding in input_ids)
                ranked = sequence[s, : s + 1].double().sort(descending=True).values
                last, first_dropped = ranked[keep - 1].item(), ranked[keep].item()
                margin = min(margin, (last - first_dropped) / max(abs(last), abs(first_dropped), 1e-30))
    return margin


def mlp_intermediate(mod) -> int | None:
    """The intermediate size of a dense MLP / shared expert module."""
    for attr in ("gate_proj", "up_proj", "w1"):  # w1: LFM2-MoE's dense MLP
        lin = getattr(mod, attr, None)
        if isinstance(lin, torch.nn.Linear):
            return lin.out_features
    lin = getattr(mod, "input_linear", None)  # Granite: [2I, H]
    if isinstance(lin, torch.nn.Linear):
        return lin.out_features // 2
    return None


def shared_of(layer, block) -> tuple[list[str], int | None]:
    """Names (relative to the block, or to the layer when the shared MLP sits beside the block) and intermediate
    size of the shared experts of one MoE layer."""
    for owner in (block, layer):
        names = [n for n, _ in owner.named_children()
                 if (n.startswith("shared_expert") or n == "shared_mlp") and n != "shared_expert_gate"]
        if names:
            return names, mlp_intermediate(getattr(owner, names[0]))
    return [], None


def dense_intermediate(layers, dense_layers: list[int]) -> int | None:
    for li in dense_layers:
        for attr in ("mlp", "feed_forward", "mixer"):
            inter = mlp_intermediate(getattr(layers[li], attr, None))
            if inter is not None:
                return inter
    return None


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def family_of(entry: dict) -> str:
    """The model type a MANIFEST.json entry was built for (its directory under families/)."""
    return Path(entry["path"]).parts[1]


def main(only: set[str]) -> int:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    tokenizer_json, eos_id = mf.build_tokenizer()
    all_families = families(eos_id)
    unknown = only - {f["model_type"] for f in all_families}
    if unknown:
        raise SystemExit(f"no family of model type {', '.join(sorted(unknown))}")
    kept = [e for e in json.loads((OUT / "MANIFEST.json").read_text())["fixtures"] if family_of(e) not in only] if only else []
    for old in [OUT / mt for mt in sorted(only)] if only else [OUT]:
        if old.exists():
            shutil.rmtree(old)
    OUT.mkdir(parents=True, exist_ok=True)

    input_ids = mf.make_input_ids()
    assert not set(VISION_TOKEN_IDS) & set(input_ids.flatten().tolist())

    manifest: list[dict] = []
    problems: list[str] = []

    for fam in [f for f in all_families if not only or f["model_type"] in only]:
        mt = fam["model_type"]
        print(f"\n=== {fam['family']} ({mt})")
        config = AutoConfig.for_model(mt, **fam["kwargs"])
        auto_cls = AutoModelForImageTextToText if fam["kind"] == "vl" else AutoModelForCausalLM
        model_cls = auto_cls._model_mapping[type(config)]
        lkw = mf.load_kwargs(model_cls)
        seed, _, expected_bf16, model = mf.find_seed(config, model_cls, lkw, fam, input_ids, auto_cls,
                                                     randomise_constants)
        print(f"  model seed {seed}")
        tcfg = config.get_text_config()
        hidden = tcfg.hidden_size

        # ---- structure, from the modules
        layers_name, layers = mf.decoder_layers(model)
        exp_mods = mf.experts_modules(model)
        moe_layers, dense_layers = [], []
        for li in range(len(layers)):
            names = [n for n, _ in exp_mods if n.startswith(f"{layers_name}.{li}.")]
            (moe_layers if names else dense_layers).append(li)
        first_moe = f"{layers_name}.{moe_layers[0]}."
        en, emod = next((n, m) for n, m in exp_mods if n.startswith(first_moe))
        geo = mf.experts_geometry(emod, hidden)
        block_name, block = mf.parent_of(model, en)
        router_name, router = mf.router_of(block, geo["experts"], hidden)
        shared_children, shared_inter = shared_of(layers[moe_layers[0]], block)
        dense_inter = dense_intermediate(layers, dense_layers)

        # ---- save
        for sub in ("text_config", "vision_config", "audio_config"):  # sub-configs keep their build dtype otherwise
            if getattr(model.config, sub, None) is not None:
                getattr(model.config, sub).dtype = torch.bfloat16
        fam_dir = OUT / mt
        dirs: list[tuple[str, str | None, Path]] = []  # layout, variant, dir
        hub = fam_dir / "hub"
        model.save_pretrained(hub)
        dirs.append(("hub", None, hub))
        fused = fam_dir / "fused"
        model.save_pretrained(fused, save_original_format=False)
        if mf.safetensors_index(hub) == mf.safetensors_index(fused):
            shutil.rmtree(fused)
            print("  fused layout == hub layout: only hub/ kept")
        else:
            dirs.append(("fused", None, fused))
        if fam.get("transposed_variant"):
            transposed = fam_dir / "hub_transposed"
            write_transposed_experts(hub, transposed)
            dirs.append(("hub", "transposed", transposed))

        with torch.no_grad():
            want = expected_bf16(input_ids=input_ids).logits.float()
            first_ref = None
            for layout, variant, d in dirs:
                tag = layout + (f"_{variant}" if variant else "")
                rel = d.relative_to(mf.FIXTURES)
                mf.clean_dir(d)
                (d / "tokenizer.json").write_text(tokenizer_json)
                (d / "tokenizer_config.json").write_text(json.dumps(mf.TOKENIZER_CONFIG, indent=2) + "\n")
                tensors = mf.safetensors_index(d)

                # reload in f32 and check against the model that was saved
                loaded, info = auto_cls.from_pretrained(d, dtype=torch.float32, output_loading_info=True, **lkw)
                loaded.eval()
                assert type(loaded) is model_cls
                for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
                    if info.get(k):
                        problems.append(f"{rel}: {k} = {info[k]}")
                rec = mf.Recorder(loaded)
                logits = loaded(input_ids=input_ids).logits.float()
                rec.remove()
                if not torch.equal(logits, want):
                    diff = (logits - want).abs().max().item()
                    msg = f"{rel}: logits differ from the saved model by {diff:g}"
                    (problems.append if diff > 1e-5 else print)(msg)

                margin = indexer_margin(loaded, input_ids)
                if margin is not None:
                    print(f"  {tag}: smallest relative gap at the indexers' top-k boundary {margin:.3g}")
                    if margin < 1e-3:
                        problems.append(f"{rel}: an indexer's top-k choice is a near tie (relative gap {margin:.3g})")

                ref = {"input_ids": input_ids.clone(), "logits": logits.contiguous()}
                for name, a in sorted(rec.amax.items()):
                    ref[f"amax.{name}"] = a.reshape(())
                estats, router_kinds = rec.experts_stats()
                ref.update(estats)
                for name in sorted(router_kinds):
                    print(f"  {tag}: {name} tokens/expert {estats[f'tokens.{name}'].tolist()}")
                for name, cnt in ((k, v) for k, v in estats.items() if k.startswith("tokens.")):
                    if (cnt == 0).any():
                        problems.append(f"{rel}: an expert of {name} gets no token: {cnt.tolist()}")
                if fam.get("zero_experts"):  # every MoE layer sends some tokens through its zero experts
                    for name, calls in rec.router_io.items():
                        chosen = calls[0][1][2]  # LongcatFlashTopkRouter: (logits, weights, indices before the move)
                        zero = int((chosen >= geo["experts"]).sum())
                        print(f"  {tag}: {name} slots on zero experts {zero} of {chosen.numel()}")
                        if zero == 0:
                            problems.append(f"{rel}: no token of {name} chooses a zero expert")
                save_file({k: v.contiguous() for k, v in ref.items()}, d / "reference.safetensors",
                          metadata={"generator": GENERATOR})
                (d / "reference.safetensors").chmod(0o644)
                if first_ref is None:
                    first_ref = ref
                elif first_ref.keys() != ref.keys() or any(not torch.equal(first_ref[k], ref[k]) for k in ref):
                    problems.append(f"{rel}: reference differs from the other layout")

                kinds = set(router_kinds.values())
                assert len(kinds) == 1, router_kinds
                router_kind = kinds.pop()
                if router_kind == "unknown" and fam["router"] not in KNOWN_ROUTERS:
                    router_kind = fam["router"]  # a kind make_fixtures.classify_router does not know (SparseMixer)
                if router_kind != fam["router"]:
                    problems.append(f"{rel}: router classified {router_kind}, family says {fam['router']}")

                # tensors of the first MoE layer, as written
                groups: dict[str, dict] = {"experts": {}, "router": {}, "shared": {}}
                disk_first_moe = disk_prefix(first_moe, tensors)
                for k, (shape, dt, _) in sorted(tensors.items()):
                    if k.startswith(disk_first_moe):
                        grp = classify_key(k)
                        if grp in groups:
                            groups[grp][k] = {"shape": shape, "dtype": dt}
                print(f"  {tag} expert tensors of {disk_first_moe[:-1]}:")
                for k, v in groups["experts"].items():
                    if not re.search(r"\.experts\.[1-9]\d*\.", k):
                        print(f"    {k} {v['shape']} {v['dtype']}")
                for grp in ("router", "shared"):
                    for k, v in groups[grp].items():
                        print(f"    ({grp}) {k} {v['shape']} {v['dtype']}")

                cfg_json = json.loads((d / "config.json").read_text())
                top_k = int(mf.experts_per_token(tcfg))
                entry = {
                    "path": str(rel),
                    "family": fam["family"],
                    "model_type": cfg_json["model_type"],
                    "architecture": cfg_json["architectures"][0],
                    "layout": layout,
                    "variant": variant,
                    "dtype": "bfloat16",
                    "tensor_dtypes": sorted({v[1] for v in tensors.values()}),
                    "files": sorted({v[2] for v in tensors.values()}),
                    "sharded": (d / "model.safetensors.index.json").exists(),
                    "num_layers": len(layers),
                    "moe_layers": moe_layers,
                    "dense_layers": dense_layers,
                    "experts": geo["experts"],
                    "top_k": top_k,
                    "hidden": int(hidden),
                    "intermediate": geo["intermediate"],
                    "dense_intermediate": dense_inter,
                    "in_memory_experts_layout": experts_layout(emod, geo),
                    "expert_tensor_names": list(groups["experts"]),
                    "expert_tensors": groups["experts"],
                    "router": router_kind,
                    "router_module_in_memory": f"{block_name}.{router_name}",
                    "router_tensors": groups["router"],
                    "router_e_score_correction_bias": any(
                        hasattr(m, "e_score_correction_bias") for m in (block, router, *router.children())),
                    "norm_topk_prob": getattr(tcfg, "norm_topk_prob", None),
                    "routed_scaling_factor": getattr(tcfg, "routed_scaling_factor", None),
                    "n_group": getattr(tcfg, "n_group", None),
                    "topk_group": getattr(tcfg, "topk_group", None),
                    "shared_experts": bool(shared_children),
                    "shared_expert_intermediate": shared_inter,
                    "shared_expert_gate": hasattr(block, "shared_expert_gate"),
                    "shared_expert_tensors": groups["shared"],
                    "config_keys": config_keys(cfg_json, geo["experts"], top_k, geo["intermediate"]),
                    "experts_modules_in_memory": sorted(router_kinds),
                    "reference": "reference.safetensors",
                    "model_seed": seed,
                }
                manifest.append(entry)
                print(f"  {tag}: loaded OK, router={router_kind}, {len(tensors)} tensors, "
                      f"dtypes {entry['tensor_dtypes']}")

    if problems:
        print("\nPROBLEMS:")
        for p in problems:
            print("  " + p)
        return 1

    tk = AutoTokenizer.from_pretrained(mf.FIXTURES / manifest[0]["path"])
    assert len(tk) == mf.VOCAB, len(tk)
    order = [f["model_type"] for f in all_families]
    manifest = sorted(kept + manifest, key=lambda e: order.index(family_of(e)))  # stable: layouts keep their order
    readme_rows = [f for f in all_families if any(family_of(e) == f["model_type"] for e in manifest)]

    (OUT / "MANIFEST.json").write_text(json.dumps(
        {"generator": GENERATOR, "transformers": transformers.__version__,
         "torch": torch.__version__.split("+")[0], "input_ids_shape": list(mf.SEQ_SHAPE), "vocab_size": mf.VOCAB,
         "fixtures": manifest}, indent=2) + "\n")
    write_readme(manifest, readme_rows, eos_id)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"\nwrote {len(manifest)} fixture directories, {total / 1e6:.2f} MB in all")
    return 0


def write_readme(manifest: list[dict], fams: list[dict], eos_id: int):
    by_mt: dict[str, list[dict]] = {}
    for e in manifest:
        by_mt.setdefault(e["model_type"], []).append(e)
    lines = [
        "# More MoE family fixtures (generated — do not edit)",
        "",
        f"Tiny random Mixture-of-Experts checkpoints written by transformers {transformers.__version__}, with "
        "reference outputs, for families `../MANIFEST.json` does not cover. Regenerate with "
        "`tools/make_family_fixtures.py` (see its header). `MANIFEST.json` here has the same per-directory schema "
        "as `../MANIFEST.json` (`path` relative to `fixtures/`) and is the ground truth for tests.",
        "",
        "Every directory holds the files described in `../README.md`: `config.json`, `generation_config.json`, "
        f"`model.safetensors`, `tokenizer.json` (byte-level BPE, 256 entries, `<|endoftext|>` = {eos_id}), "
        "`tokenizer_config.json`, `reference.safetensors` (`input_ids` int64 [2,12], `logits` f32 [2,12,256], "
        "`amax.<nn.Linear name>`, `amax.<experts>.gate_up_input`, `amax.<experts>.down_input`, `tokens.<experts>`).",
        "",
        "| family | model_type | dirs | E | K | I | layers | dense layers | router | shared experts | attention |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fam in fams:
        entries = by_mt[fam["model_type"]]
        e0 = entries[0]
        shared = "no"
        if e0["shared_experts"]:
            gate = ", sigmoid gate" if e0["shared_expert_gate"] else ""
            shared = f"yes (I={e0['shared_expert_intermediate']}{gate})"
        dense = "-"
        if e0["dense_layers"]:
            dense = f"{e0['dense_layers']}" + (f" (I={e0['dense_intermediate']})" if e0["dense_intermediate"]
                                               else " (no MLP)")
        lines.append(
            f"| {e0['family']} | `{e0['model_type']}` | {', '.join(e['path'].rsplit('/', 1)[1] for e in entries)} | "
            f"{e0['experts']} | {e0['top_k']} | {e0['intermediate']} | {e0['num_layers']} | {dense} | "
            f"`{e0['router']}`: {fam['router_notes']} | {shared} | {fam['attention_notes']} |"
        )
    lines += ["", "## Fixture directories", "",
              "| path | layout | tensor dtypes | expert tensors of the first MoE layer |", "|---|---|---|---|"]
    for e in manifest:
        seen = {}
        for n, v in e["expert_tensors"].items():
            seen.setdefault(re.sub(r"\.experts\.\d+\.", ".experts.{e}.", n), v["shape"])
        names = "<br>".join(f"`{n}` {s}" for n, s in seen.items())
        lines.append(f"| `{e['path']}` | {e['layout']} | {', '.join(e['tensor_dtypes'])} | {names} |")
    lines += [
        "",
        "## Notes",
        "",
        "- Router kinds are those of `../README.md` (`softmax`, `topk_softmax`, `sigmoid`), plus `sparsemixer` "
        "(PhiMoE); the router column says how each family chooses and weights its experts.",
        "- Parameters that are all zeros or all ones at init (norm weights, biases, `e_score_correction_bias`) hold "
        "small random values, so a forward that skips one of them does not match the logits.",
        "- Vision-language wrappers hold a tiny vision tower; the references come from text-only `input_ids` through "
        "the wrapper and cover the language model (`model.language_model.layers.*`). Their `config_keys` in "
        "`MANIFEST.json` are paths into `config.json` (`text_config.num_experts`).",
        "- `hub` and `fused` of one family hold the same bf16 weights and have identical references. "
        "`qwen3_vl_moe/hub_transposed` holds them too, with the stacked experts stored transposed (`gate_up_proj` "
        "[E, H, 2I], `down_proj` [E, I, H]) as in the published Qwen3-VL-MoE checkpoints; transformers 5.25 reads "
        "that layout but writes [E, 2I, H] / [E, H, I], so its `hub` and `fused` are the same and only `hub` is kept.",
        "- Hybrid models: `dense_layers` are the layers without routed experts. Jamba's have a dense MLP; Nemotron-H's "
        "have none (one mixer per layer: Mamba2, MoE or attention). Mamba / Gated DeltaNet layers ran with "
        "transformers' PyTorch implementations.",
        "- Nemotron-H's experts are ungated (`up_proj` [E, I, H], `down_proj` [E, H, I], relu2): its "
        "`in_memory_experts_layout` has `gated: false`, `up_proj` and `gate_up_proj: null`; `gate_up_input` is the "
        "input of `up_proj`, `down_input` is relu2(up). Its hub layout is under `backbone.`.",
        "- Every expert of every MoE layer receives at least one token from `input_ids` (`model_seed`).",
        "- DeepSeek sparse attention (`deepseek_v32`, `glm_moe_dsa`): `index_topk` (5, 4) is below the 12 tokens, so "
        "later queries attend to some of the keys they see; no indexer score ties, or nearly ties (relative gap under "
        "1e-3), where the top-k choice is made, since transformers breaks such ties arbitrarily.",
    ]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main(set(sys.argv[1:])))
