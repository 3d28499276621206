/**
 * DeepSeek-V3 (and R1, Kimi-K2 shapes): sigmoid router with `e_score_correction_bias`, group-limited
 * top-K and routed scaling; dense MLPs below `first_k_dense_replace`; ungated shared experts; MLA attention.
 * transformers: models/deepseek_v3/modeling_deepseek_v3.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const deepseekV3: ArchitectureEntry = {
  modelTypes: ['deepseek_v3', 'kimi_k2'],
  family: 'DeepSeek-V3',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
}
