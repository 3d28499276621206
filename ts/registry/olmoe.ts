/**
 * OLMoE: softmax top-K router (renormalised when `norm_topk_prob`), every layer MoE, q/k norms over the
 * whole projection. transformers: models/olmoe/modeling_olmoe.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const olmoe: ArchitectureEntry = {
  modelTypes: ['olmoe'],
  family: 'OLMoE',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'softmax_topk',
  placement: { kind: 'all' },
}
