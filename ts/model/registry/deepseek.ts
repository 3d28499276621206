/**
 * DeepSeek-V3 (and R1, Kimi-K2 shapes; Kimi-K2.5's text model): sigmoid router with `e_score_correction_bias`,
 * group-limited top-K and routed scaling; dense MLPs below `first_k_dense_replace`; ungated shared experts; MLA
 * attention.
 * DeepSeek-V2: the same blocks with a softmax router (`greedy`, or `group_limited_greedy` by each group's best
 * score), routed scaling and no renormalisation, and the rope always on adjacent pairs.
 * transformers: models/deepseek_v3/modeling_deepseek_v3.py, models/deepseek_v2/modeling_deepseek_v2.py
 * Sarvam-MLA: DeepSeek-V3 under its own config class (models/sarvam_mla/configuration_sarvam_mla.py).
 * DeepSeek-OCR-2 and Unlimited-OCR: DeepSeek-V2's MoE block in Llama layers
 * (models/deepseek_ocr2/modeling_deepseek_ocr2.py, models/unlimited_ocr/modeling_unlimited_ocr.py).
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const deepseekV3: ArchitectureEntry = {
  modelTypes: ['deepseek_v3', 'kimi_k2'],
  family: 'DeepSeek-V3',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
  // Kimi-K2.5 nests a DeepSeek-V3 (or kimi_k2) text model; its config class ties the lm_head by default. Its wrapper
  // embeds its image and video placeholder ids as id 0; the forward embeds every id as itself (text calibration data
  // holds no placeholder).
  wrappers: { kimi_k25: { tieWordEmbeddings: true } },
  forward: {
    attention: 'mla',
    attentionScale: 'mla_yarn_mscale',
    expertActivation: 'silu',
    ropeInterleaveKey: 'rope_interleave',
    slidingWindow: 'never',
    // configuration_deepseek_v3.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 128,
      num_key_value_heads: 128,
      q_lora_rank: 1536,
      kv_lora_rank: 512,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      v_head_dim: 128,
      norm_topk_prob: true,
      n_group: 8,
      topk_group: 4,
      routed_scaling_factor: 2.5,
      max_position_embeddings: 4096,
      rope_theta: 10000,
      rope_interleave: true,
    },
  },
}

export const deepseekV2: ArchitectureEntry = {
  modelTypes: ['deepseek_v2'],
  family: 'DeepSeek-V2',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'mla',
    attentionScale: 'mla_yarn_mscale',
    expertActivation: 'silu',
    ropeAdjacentPairs: true,
    slidingWindow: 'never',
    // configuration_deepseek_v2.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 32,
      q_lora_rank: 1536,
      kv_lora_rank: 512,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      v_head_dim: 128,
      topk_method: 'greedy',
      n_group: null,
      topk_group: null,
      routed_scaling_factor: 1,
      max_position_embeddings: 2048,
      rope_theta: 10000,
    },
  },
}

/** Sarvam's MLA model: DeepSeek-V3's modules under its own config class (no q LoRA by default); its older configs
 * spell the yarn rope `deepseek_yarn` in `rope_scaling`, which the config class reads as yarn. */
export const sarvamMla: ArchitectureEntry = {
  modelTypes: ['sarvam_mla'],
  family: 'Sarvam-MLA',
  layouts: deepseekV3.layouts,
  router: 'sigmoid_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'mla',
    attentionScale: 'mla_yarn_mscale',
    expertActivation: 'silu',
    ropeInterleaveKey: 'rope_interleave',
    ropeScalingAliases: { deepseek_yarn: 'yarn' },
    slidingWindow: 'never',
    // configuration_sarvam_mla.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 64,
      num_key_value_heads: null,
      q_lora_rank: null,
      kv_lora_rank: 512,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      v_head_dim: 128,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 2.5,
      max_position_embeddings: 4096,
      rope_theta: 10000,
      rope_interleave: true,
    },
  },
}

/** DeepSeek-OCR-2's text model: DeepSeek-V2's MoE block (softmax router, `greedy` or `group_limited_greedy`, routed
 * scaling, no renormalisation; ungated shared experts) placed by `mlp_layer_types`, in Llama layers (multi-head
 * attention with biases when `attention_bias`, the rope on halves). */
export const deepseekOcr2: ArchitectureEntry = {
  modelTypes: ['deepseek_ocr2_text'],
  family: 'DeepSeek-OCR-2',
  layouts: deepseekV2.layouts,
  router: 'softmax_group_topk',
  placement: { kind: 'mlp_layer_types', firstDense: 0 },
  sharedExperts: { module: 'shared_experts' },
  wrappers: { deepseek_ocr2: { tieWordEmbeddings: false } },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    // configuration_deepseek_ocr2.py (DeepseekOcr2TextConfig, DeepSeek-V2's defaults)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: null,
      topk_method: 'greedy',
      n_group: null,
      topk_group: null,
      routed_scaling_factor: 1,
      max_position_embeddings: 2048,
      rope_theta: 10000,
    },
  },
}

/** Unlimited-OCR's text model: DeepSeek-OCR-2's, with `reference_sliding_attention` layers whose window applies to
 * decoded tokens only (a whole sequence attends causally); without `mlp_layer_types`, the first
 * `first_k_dense_replace` layers are dense. */
export const unlimitedOcr: ArchitectureEntry = {
  ...deepseekOcr2,
  modelTypes: ['unlimited_ocr_text'],
  family: 'Unlimited-OCR',
  placement: { kind: 'mlp_layer_types', firstDenseKey: 'first_k_dense_replace', firstDense: 1 },
  wrappers: { unlimited_ocr: { tieWordEmbeddings: false } },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    causalLayerTypes: ['reference_sliding_attention'],
    // configuration_unlimited_ocr.py (UnlimitedOcrTextConfig)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 10,
      num_key_value_heads: 10,
      topk_method: 'greedy',
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1,
      max_position_embeddings: 32768,
      rope_theta: 10000,
    },
  },
}

