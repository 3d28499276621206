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
}
