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
      routerModule: 'router',
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
  forward: {
    attention: 'gqa',
    attentionScale: 'attention_multiplier',
    expertActivation: 'silu',
    multipliers: { embedding: 'embedding_multiplier', residual: 'residual_multiplier', logits: 'logits_scaling' },
    slidingWindow: 'never',
    // configuration_granitemoe.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: null,
      max_position_embeddings: 2048,
      rope_theta: 10000,
      attention_multiplier: 1,
      embedding_multiplier: 1,
      residual_multiplier: 1,
      logits_scaling: 1,
    },
  },
}
