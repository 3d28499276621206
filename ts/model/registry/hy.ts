/**
 * HY-V3 (Hunyuan 3): a sigmoid router choosing on the scores plus `e_score_correction_bias` (on the MoE block), the
 * chosen scores always renormalised and scaled by `router_scaling_factor`, no groups; ungated shared experts
 * (`shared_mlp` on the hub, `shared_experts` in transformers 5); MoE layers placed by `mlp_layer_types` (the first
 * layer dense without it); per-head q/k norms before the rope.
 * transformers: models/hy_v3/modeling_hy_v3.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const hyV3: ArchitectureEntry = {
  modelTypes: ['hy_v3'],
  family: 'HY-V3',
  layouts: [perExpertGateUpDown('mlp', 'router.gate.weight'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'mlp_layer_types', firstDense: 1 },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    routerParameters: { normTopkProb: true, groups: false, routedScalingKey: 'router_scaling_factor' },
    slidingWindow: 'never',
    // configuration_hy_v3.py (default_theta 11158840)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 64,
      num_key_value_heads: 8,
      router_scaling_factor: 2.826,
      max_position_embeddings: 131072,
      rope_theta: 11158840,
    },
  },
}
