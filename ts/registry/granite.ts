/**
 * Granite-MoE: experts fused on the hub as `input_linear [E,2I,H]` / `output_linear [E,H,I]`, router
 * `router.layer`; top-K on the logits then softmax over the K. transformers 5 renames them to
 * `experts.gate_up_proj` / `experts.down_proj` / `router.weight`.
 * transformers: models/granitemoe/modeling_granitemoe.py
 */
import type { ArchitectureEntry } from './types'

export const graniteMoe: ArchitectureEntry = {
  modelTypes: ['granitemoe'],
  family: 'Granite-MoE',
  layouts: [
    {
      kind: 'fused',
      block: 'block_sparse_moe',
      tensors: { gateUp: 'input_linear.weight', down: 'output_linear.weight' },
      router: 'router.layer.weight',
    },
    {
      kind: 'fused',
      block: 'block_sparse_moe',
      tensors: { gateUp: 'experts.gate_up_proj', down: 'experts.down_proj' },
      router: 'router.weight',
    },
  ],
  router: 'topk_softmax',
  placement: { kind: 'all' },
}
