/**
 * EXAONE-MoE (K-EXAONE): DeepSeek-V3's MoE block (sigmoid router choosing with `e_score_correction_bias`, groups,
 * routed scaling, ungated shared experts) placed by `mlp_layer_types` (the first `first_k_dense_replace` layers dense
 * without it), in OLMoE-style pre-norm layers with per-head q/k norms before the rope; sliding-window layers from
 * `layer_types` (or every `sliding_window_pattern`-th layer full), and with a sliding window set only the sliding
 * layers rotate q and k (global NoPE).
 * transformers: models/exaone_moe/modeling_exaone_moe.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const exaoneMoe: ArchitectureEntry = {
  modelTypes: ['exaone_moe'],
  family: 'EXAONE-MoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'mlp_layer_types', firstDenseKey: 'first_k_dense_replace', firstDense: 1 },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'layer_types',
    defaultLayerTypes: 'full_every_pattern',
    ropeOnSlidingLayersOnly: { withoutWindow: 'everywhere' },
    // configuration_exaone_moe.py
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 32,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 2.5,
      max_position_embeddings: 2048,
      rope_theta: 10000,
      sliding_window: 4096,
      sliding_window_pattern: 4,
      first_k_dense_replace: 1,
    },
  },
}
