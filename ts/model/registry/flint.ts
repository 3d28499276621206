/**
 * Flint: Qwen3-MoE layers with a sigmoid router (top-K of the sigmoids, renormalised when `norm_topk_prob`, no
 * correction bias, groups or scaling) and an ungated shared expert; attention sinks on every layer
 * (`softmax_offset` on the hub); sliding-window layers from `layer_types`, and only those rotate q and k (the
 * full-attention layers have no position embedding). MoE unless in `mlp_only_layers`.
 * transformers: models/flint/modeling_flint.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const flint: ArchitectureEntry = {
  modelTypes: ['flint'],
  family: 'Flint',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'sparse_step' },
  sharedExperts: { module: 'shared_expert' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    routerParameters: { groups: false, scaled: false },
    attentionSinks: true,
    sinkNames: ['sinks', 'softmax_offset'],
    slidingWindow: 'layer_types',
    defaultLayerTypes: 'full_first_two_every_fourth_last',
    ropeOnSlidingLayersOnly: { withoutWindow: 'nowhere' },
    // configuration_flint.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 4,
      head_dim: 128,
      norm_topk_prob: true,
      max_position_embeddings: 262144,
      rope_theta: 10000,
      sliding_window: 513,
    },
  },
}
