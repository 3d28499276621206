/**
 * ERNIE 4.5 MoE: softmax router choosing on the scores plus `e_score_correction_bias` (`moe_statics`, [1, E]),
 * the chosen scores renormalised (sum floored at `moe_norm_min`); ungated shared experts; MoE every
 * `moe_layer_interval`-th layer between `moe_layer_start_index` and `moe_layer_end_index`; rope on adjacent
 * pairs.
 * transformers: models/ernie4_5_moe/modeling_ernie4_5_moe.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const ernie45Moe: ArchitectureEntry = {
  modelTypes: ['ernie4_5_moe'],
  family: 'ERNIE-4.5-MoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_bias_topk',
  placement: { kind: 'start_end_interval' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    ropeAdjacentPairs: true,
    slidingWindow: 'never',
    // configuration_ernie4_5_moe.py (default_theta 5e5)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: true,
      hidden_act: 'silu',
      num_attention_heads: 20,
      num_key_value_heads: 4,
      moe_norm_min: 1e-12,
      max_position_embeddings: 131072,
      rope_theta: 500000,
    },
  },
}
