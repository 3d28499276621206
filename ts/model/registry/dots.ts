/**
 * dots.llm1: DeepSeek-V3's router (sigmoid, correction bias, groups, routed scaling) and ungated shared experts
 * in GQA layers with per-head q/k norms; dense MLPs below `first_k_dense_replace`; sliding-window attention
 * on the layers from `max_window_layers` on.
 * transformers: models/dots1/modeling_dots1.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const dots1: ArchitectureEntry = {
  modelTypes: ['dots1'],
  family: 'dots.llm1',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'layer_types',
    defaultLayerTypes: 'sliding_from_max_window_layers',
    // configuration_dots1.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 32,
      norm_topk_prob: false,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1,
      max_position_embeddings: 2048,
      rope_theta: 10000,
      sliding_window: 4096,
      max_window_layers: 62,
    },
  },
}
