/**
 * GLM-4.5 / GLM4-MoE: DeepSeek-V3's router (sigmoid, correction bias, groups, routed scaling), dense MLPs
 * below `first_k_dense_replace`, ungated shared experts, GQA attention with optional q/k norm.
 * transformers: models/glm4_moe/modeling_glm4_moe.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const glm4Moe: ArchitectureEntry = {
  modelTypes: ['glm4_moe'],
  family: 'GLM4-MoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
}
