/**
 * Qwen2-MoE and Qwen3-MoE: softmax top-K router (renormalised when `norm_topk_prob`), MoE placement by
 * `mlp_only_layers` and `decoder_sparse_step`; Qwen2-MoE adds a sigmoid-gated shared expert. Qwen3-VL-MoE's
 * text stack is Qwen3-MoE with the top-K always renormalised, its experts fused (stored `[E,H,2I]` on the
 * hub, `[E,2I,H]` when transformers saves them) and its M-RoPE, which for text alone is the default rope.
 * transformers: models/qwen2_moe/modeling_qwen2_moe.py, models/qwen3_moe/modeling_qwen3_moe.py,
 * models/qwen3_vl_moe/modeling_qwen3_vl_moe.py, models/qwen3_omni_moe/modeling_qwen3_omni_moe.py
 */
import { fusedGateUp, fusedTransposedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const qwen3Moe: ArchitectureEntry = {
  modelTypes: ['qwen3_moe'],
  family: 'Qwen3-MoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_topk',
  placement: { kind: 'sparse_step' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'when_enabled',
    // configuration_qwen3_moe.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 4,
      norm_topk_prob: false,
      max_position_embeddings: 32768,
      rope_theta: 10000,
      use_sliding_window: false,
    },
  },
}

export const qwen2Moe: ArchitectureEntry = {
  modelTypes: ['qwen2_moe'],
  family: 'Qwen2-MoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_topk',
  placement: { kind: 'sparse_step' },
  sharedExperts: { module: 'shared_expert', gate: 'shared_expert_gate.weight' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'layer_types',
    // configuration_qwen2_moe.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 16,
      num_key_value_heads: 16,
      norm_topk_prob: false,
      max_position_embeddings: 32768,
      rope_theta: 10000,
      use_sliding_window: false,
    },
  },
}

export const qwen3VlMoe: ArchitectureEntry = {
  modelTypes: ['qwen3_vl_moe_text', 'qwen3_vl_moe'],
  family: 'Qwen3-VL-MoE',
  layouts: [fusedGateUp('mlp'), fusedTransposedGateUp('mlp')],
  router: 'softmax_topk_norm',
  placement: { kind: 'sparse_step' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    // configuration_qwen3_vl_moe.py (Qwen3VLMoeTextConfig, default_theta 5e5)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 16,
      num_key_value_heads: 16,
      max_position_embeddings: 128000,
      rope_theta: 500000,
    },
  },
}

/** Qwen3-Omni-MoE's thinker: its text model is Qwen3-MoE's (per-head q/k norms, softmax router renormalised when
 * `norm_topk_prob`, MoE by `mlp_only_layers` and `decoder_sparse_step`) with no sliding window and M-RoPE, which for
 * text alone is the default rope; nested in the thinker (`text_config`) or the whole Omni model
 * (`thinker_config.text_config`). */
export const qwen3OmniMoe: ArchitectureEntry = {
  modelTypes: ['qwen3_omni_moe_text'],
  family: 'Qwen3-Omni-MoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_topk',
  placement: { kind: 'sparse_step' },
  // The thinker owns the lm_head; its config class does not tie it.
  wrappers: { qwen3_omni_moe_thinker: { tieWordEmbeddings: false } },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    // configuration_qwen3_omni_moe.py (Qwen3OmniMoeTextConfig, default_theta 1e6)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 28,
      num_key_value_heads: 4,
      norm_topk_prob: true,
      max_position_embeddings: 32768,
      rope_theta: 1000000,
    },
  },
}
