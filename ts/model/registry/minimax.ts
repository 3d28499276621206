/**
 * MiniMax-M2: sigmoid router choosing on the scores plus `e_score_correction_bias` (on the MoE block), the
 * chosen scores renormalised (no groups, no scaling); every layer MoE with w1/w3/w2 experts under
 * `block_sparse_moe` on the hub; q/k norms over the whole projections; partial rope (`rotary_dim`).
 * transformers: models/minimax_m2/modeling_minimax_m2.py
 */
import { fusedGateUp, perExpertW1W3W2 } from './layouts'
import type { ArchitectureEntry } from './types'

export const minimaxM2: ArchitectureEntry = {
  modelTypes: ['minimax_m2'],
  family: 'MiniMax-M2',
  layouts: [perExpertW1W3W2('block_sparse_moe'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'all' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    partialRotary: true,
    rotaryDimKey: 'rotary_dim',
    slidingWindow: 'never',
    // configuration_minimax_m2.py (default_theta 5e6). The router has no groups and always renormalises.
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 48,
      num_key_value_heads: 8,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1,
      max_position_embeddings: 196608,
      rope_theta: 5000000,
    },
  },
}
