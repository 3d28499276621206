/**
 * OLMoE: softmax top-K router (renormalised when `norm_topk_prob`), every layer MoE, q/k norms over the
 * whole projection. FlexOlmo: the same blocks, each norm on its sublayer's output (post-norm, no input norms).
 * transformers: models/olmoe/modeling_olmoe.py, models/flex_olmo/modeling_flex_olmo.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const olmoe: ArchitectureEntry = {
  modelTypes: ['olmoe'],
  family: 'OLMoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_topk',
  placement: { kind: 'all' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    clipQkvKey: 'clip_qkv',
    // configuration_olmoe.py
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 16,
      num_key_value_heads: null,
      norm_topk_prob: false,
      max_position_embeddings: 4096,
      rope_theta: 10000,
      clip_qkv: null,
    },
  },
}

export const flexOlmo: ArchitectureEntry = {
  modelTypes: ['flex_olmo'],
  family: 'FlexOlmo',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_topk',
  placement: { kind: 'all' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    postNorms: true,
    slidingWindow: 'never',
    // configuration_flex_olmo.py (default_theta 5e5)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: null,
      norm_topk_prob: false,
      max_position_embeddings: 4096,
      rope_theta: 500000,
    },
  },
}
