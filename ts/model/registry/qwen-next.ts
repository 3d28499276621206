/**
 * Qwen3-Next and Qwen3.5-MoE (its text stack; the vision-language wrapper holds the same under
 * `model.language_model.`): hybrid decoders whose layers mix tokens with Gated DeltaNet linear attention or, every
 * `full_attention_interval`-th layer, with gated self-attention (q_proj also yields a sigmoid gate of the output;
 * per-head q/k norms; partial rope, a quarter of each head by default). Every RMSNorm but the DeltaNet's gated one
 * multiplies by `1 + w`. MoE with a softmax top-K router and a sigmoid-gated shared expert. Qwen3-Next stores the
 * DeltaNet's projections grouped by key head (`in_proj_qkvz`, `in_proj_ba`), renormalises the top-K when
 * `norm_topk_prob` and places MoE like Qwen3-MoE; Qwen3.5 splits them (`in_proj_qkv`, `in_proj_z`, `in_proj_b`,
 * `in_proj_a`), always renormalises and has MoE on every layer. Its M-RoPE is, for text alone, the default rope.
 * transformers: models/qwen3_next/modeling_qwen3_next.py, models/qwen3_5_moe/modeling_qwen3_5_moe.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry, ConfigScalar } from './types'

/** The config-class defaults both families share (configuration_qwen3_next.py, configuration_qwen3_5_moe.py:
 * `partial_rotary_factor` 0.25 set in `__post_init__`, `default_theta` 1e4). */
const HYBRID_DEFAULTS: Readonly<Record<string, ConfigScalar>> = {
  rms_norm_eps: 1e-6,
  tie_word_embeddings: false,
  hidden_act: 'silu',
  num_attention_heads: 16,
  num_key_value_heads: 2,
  head_dim: 256,
  max_position_embeddings: 32768,
  rope_theta: 10000,
  partial_rotary_factor: 0.25,
  linear_conv_kernel_dim: 4,
  linear_key_head_dim: 128,
  linear_value_head_dim: 128,
  linear_num_key_heads: 16,
  linear_num_value_heads: 32,
  full_attention_interval: 4,
}

export const qwen3Next: ArchitectureEntry = {
  modelTypes: ['qwen3_next'],
  family: 'Qwen3-Next',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_topk',
  placement: { kind: 'sparse_step' },
  sharedExperts: { module: 'shared_expert', gate: 'shared_expert_gate.weight' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    partialRotary: true,
    slidingWindow: 'never',
    normWeightOffset: 1,
    attentionOutputGate: true,
    linearAttention: { kind: 'gated_delta_net', projections: 'grouped', intervalKey: 'full_attention_interval' },
    configDefaults: { ...HYBRID_DEFAULTS, norm_topk_prob: true },
  },
}

export const qwen35Moe: ArchitectureEntry = {
  modelTypes: ['qwen3_5_moe_text', 'qwen3_5_moe'],
  family: 'Qwen3.5-MoE',
  layouts: [fusedGateUp('mlp'), perExpertGateUpDown('mlp')],
  router: 'softmax_topk_norm',
  placement: { kind: 'all' },
  sharedExperts: { module: 'shared_expert', gate: 'shared_expert_gate.weight' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    partialRotary: true,
    slidingWindow: 'never',
    normWeightOffset: 1,
    attentionOutputGate: true,
    linearAttention: { kind: 'gated_delta_net', projections: 'split', intervalKey: 'full_attention_interval' },
    configDefaults: HYBRID_DEFAULTS,
  },
}
