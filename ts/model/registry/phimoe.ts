/**
 * Phi-3.5-MoE (PhiMoE): SparseMixer router (two experts), every layer MoE with w1/w3/w2 experts under
 * `block_sparse_moe` on the hub (`mlp` and `router` in transformers 5); LayerNorms with biases; biased attention
 * and lm_head; sliding window whenever `sliding_window` is set; LongRoPE with its short factors.
 * transformers: models/phimoe/modeling_phimoe.py
 */
import { fusedGateUp, perExpertW1W3W2 } from './layouts'
import type { ArchitectureEntry } from './types'

export const phimoe: ArchitectureEntry = {
  modelTypes: ['phimoe'],
  family: 'PhiMoE',
  layouts: [perExpertW1W3W2('block_sparse_moe'), fusedGateUp('mlp', 'router.weight')],
  router: 'sparsemixer',
  placement: { kind: 'all' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    layerNorm: true,
    ropeLongShortFactors: true,
    slidingWindow: 'when_set',
    // configuration_phimoe.py (default_theta 1e6)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 8,
      max_position_embeddings: 131072,
      rope_theta: 1000000,
      sliding_window: null,
      router_jitter_noise: 0.01,
    },
  },
}
