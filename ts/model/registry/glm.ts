/**
 * GLM-4.5 / GLM4-MoE: DeepSeek-V3's router (sigmoid, correction bias, groups, routed scaling), dense MLPs
 * below `first_k_dense_replace`, ungated shared experts, GQA attention with optional q/k norm, partial rope.
 * GLM-4.5V's text stack is the same without q/k norms; its M-RoPE is, for text alone, the default rope.
 * transformers: models/glm4_moe/modeling_glm4_moe.py, models/glm4v_moe/modeling_glm4v_moe.py,
 * models/solar_open/modeling_solar_open.py, models/glm4_moe_lite/modeling_glm4_moe_lite.py; Param2-MoE and Sarvam-MoE
 * run GLM4-MoE's modules (models/param2moe, models/sarvam_moe: config classes only).
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry, ForwardDecl } from './types'

export const glm4Moe: ArchitectureEntry = {
  modelTypes: ['glm4_moe'],
  family: 'GLM4-MoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    partialRotary: true,
    qkNormKey: 'use_qk_norm',
    slidingWindow: 'never',
    // configuration_glm4_moe.py (partial_rotary_factor 0.5 "for BC")
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 96,
      num_key_value_heads: 8,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1,
      max_position_embeddings: 131072,
      rope_theta: 10000,
      partial_rotary_factor: 0.5,
      use_qk_norm: false,
    },
  },
}

export const glm4vMoe: ArchitectureEntry = {
  ...glm4Moe,
  modelTypes: ['glm4v_moe_text', 'glm4v_moe'],
  family: 'GLM-4.5V',
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    partialRotary: true,
    slidingWindow: 'never',
    // configuration_glm4v_moe.py (Glm4vMoeTextConfig; partial_rotary_factor 0.5 set in __post_init__)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 96,
      num_key_value_heads: 8,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1,
      max_position_embeddings: 65536,
      rope_theta: 10000,
      partial_rotary_factor: 0.5,
    },
  },
}

/** Solar Open: GLM4-MoE's MoE block (sigmoid router, correction bias, groups, routed scaling, ungated shared
 * experts) on every layer, in Llama decoder layers (q/k/v biases with `attention_bias`, no o bias, no q/k norm,
 * the whole head rotated). */
export const solarOpen: ArchitectureEntry = {
  modelTypes: ['solar_open'],
  family: 'Solar-Open',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'all' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    withoutQkNorm: true,
    slidingWindow: 'never',
    // configuration_solar_open.py (default_theta 1e6)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 64,
      num_key_value_heads: 8,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1,
      max_position_embeddings: 131072,
      rope_theta: 1000000,
    },
  },
}

/** GLM-4.7-Flash (GLM4-MoE-Lite): DeepSeek-V3's MLA attention and GLM4-MoE's MoE block (sigmoid router, correction
 * bias, groups, routed scaling, ungated shared experts); `mlp_layer_types` places the MoE layers (the first layer
 * dense without it). */
export const glm4MoeLite: ArchitectureEntry = {
  modelTypes: ['glm4_moe_lite'],
  family: 'GLM4-MoE-Lite',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'mlp_layer_types', firstDense: 1 },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'mla',
    attentionScale: 'mla_yarn_mscale',
    expertActivation: 'silu',
    ropeInterleaveKey: 'rope_interleave',
    slidingWindow: 'never',
    // configuration_glm4_moe_lite.py
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 20,
      num_key_value_heads: 20,
      q_lora_rank: 768,
      kv_lora_rank: 512,
      qk_nope_head_dim: 192,
      qk_rope_head_dim: 64,
      v_head_dim: 256,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1.8,
      max_position_embeddings: 202752,
      rope_theta: 10000,
      rope_interleave: true,
    },
  },
}

/** The hub layout of Param2 and Sarvam-MoE (Bailing names, which transformers' conversion mapping renames on load):
 * `word_embeddings`, the attention module `attention` with q, k and v fused in `query_key_value` (split in that
 * order), its output `dense`, the q/k norms `query_layernorm` / `key_layernorm` (before the rope). */
const BAILING_NAMES: NonNullable<ForwardDecl['layoutNames']> = {
  suffix: '.attention.query_key_value.weight',
  names: {
    attentionModule: 'attention',
    fusedQkv: 'query_key_value',
    attentionOutput: 'dense',
    qkNorm: { q: 'query_layernorm', k: 'key_layernorm', afterRope: false },
    modelTensors: { embed: 'word_embeddings.weight', finalNorm: 'norm.weight' },
  },
  // conversion_mapping.py (sarvam_moe, param2moe)
  exportRenames: [
    [/^model\.word_embeddings(?=\.|$)/, 'model.embed_tokens'],
    [/\.attention(?=\.|$)/, '.self_attn'],
    [/\.self_attn\.dense(?=\.|$)/, '.self_attn.o_proj'],
    [/\.self_attn\.query_layernorm(?=\.|$)/, '.self_attn.q_norm'],
    [/\.self_attn\.key_layernorm(?=\.|$)/, '.self_attn.k_norm'],
    [/\.mlp\.gate\.expert_bias$/, '.mlp.gate.e_score_correction_bias'],
  ],
}

/** Param2-MoE: GLM4-MoE's modules under its own config class (the whole head rotated, q/k norms, tied embeddings);
 * its hub checkpoints have Bailing names, q, k and v fused. */
export const param2Moe: ArchitectureEntry = {
  ...glm4Moe,
  modelTypes: ['param2moe'],
  family: 'Param2-MoE',
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    partialRotary: true,
    qkNormKey: 'use_qk_norm',
    slidingWindow: 'never',
    layoutNames: BAILING_NAMES,
    // configuration_param2moe.py (default_theta 5e5, partial_rotary_factor 1)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: true,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 64,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 2.5,
      max_position_embeddings: 32768,
      rope_theta: 500000,
      partial_rotary_factor: 1,
      use_qk_norm: true,
    },
  },
}

/** Sarvam-MoE: GLM4-MoE's modules under its own config class (the whole head rotated, q/k norms); its hub
 * checkpoints have Bailing names, q, k and v fused. */
export const sarvamMoe: ArchitectureEntry = {
  ...glm4Moe,
  modelTypes: ['sarvam_moe'],
  family: 'Sarvam-MoE',
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    partialRotary: true,
    qkNormKey: 'use_qk_norm',
    slidingWindow: 'never',
    layoutNames: BAILING_NAMES,
    // configuration_sarvam_moe.py (default_theta 8e6, partial_rotary_factor 1)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 64,
      num_key_value_heads: 4,
      head_dim: 64,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 2.5,
      max_position_embeddings: 131072,
      rope_theta: 8000000,
      partial_rotary_factor: 1,
      use_qk_norm: true,
    },
  },
}

