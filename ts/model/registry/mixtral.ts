/**
 * Mixtral: softmax top-K router, always renormalised; every layer MoE. The hub stores `block_sparse_moe`
 * with w1/w3/w2; transformers 5 renames the block to `mlp` and fuses the experts.
 * transformers: models/mixtral/modeling_mixtral.py
 */
import { fusedGateUp, perExpertW1W3W2 } from './layouts'
import type { ArchitectureEntry } from './types'

export const mixtral: ArchitectureEntry = {
  modelTypes: ['mixtral'],
  family: 'Mixtral',
  layouts: [perExpertW1W3W2('block_sparse_moe'), fusedGateUp('mlp')],
  router: 'softmax_topk_norm',
  placement: { kind: 'all' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'when_set',
    // configuration_mixtral.py (default_theta 1e6)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 8,
      max_position_embeddings: 131072,
      rope_theta: 1000000,
      sliding_window: null,
    },
  },
}
