/**
 * Granite-MoE: experts fused on the hub as `input_linear [E,2I,H]` / `output_linear [E,H,I]`, router
 * `router.layer`; top-K on the logits then softmax over the K. transformers 5 renames them to
 * `experts.gate_up_proj` / `experts.down_proj` / `router.weight`. Granite-MoE-Shared adds a shared MLP beside the
 * block (`shared_mlp.input_linear [2S,H]`, gate rows first, and `output_linear`) inside the residual multiplier.
 * transformers: models/granitemoe/modeling_granitemoe.py, models/granitemoeshared/modeling_granitemoeshared.py,
 * models/granitemoe_swa/modeling_granitemoe_swa.py
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

export const graniteMoeShared: ArchitectureEntry = {
  ...graniteMoe,
  modelTypes: ['granitemoeshared'],
  family: 'Granite-MoE-Shared',
  sharedExperts: { module: 'shared_mlp' },
}

/** Granite-MoE-SWA: Granite-MoE-Shared's layers (the shared MLP left out when `shared_intermediate_size` is 0) with
 * attention sinks on every layer, sliding-window layers from `layer_types` (every fourth layer from layer 0 full
 * without it) and a rope base per layer (`layer_rope_theta`, 0 for a layer without rope). */
export const graniteMoeSwa: ArchitectureEntry = {
  modelTypes: ['granitemoe_swa'],
  family: 'Granite-MoE-SWA',
  layouts: graniteMoe.layouts,
  router: 'topk_softmax',
  placement: { kind: 'all' },
  sharedExperts: { module: 'shared_mlp', optional: true },
  forward: {
    attention: 'gqa',
    attentionScale: 'attention_multiplier',
    expertActivation: 'silu',
    multipliers: { embedding: 'embedding_multiplier', residual: 'residual_multiplier', logits: 'logits_scaling' },
    attentionSinks: true,
    slidingWindow: 'layer_types',
    defaultLayerTypes: 'full_every_fourth',
    layerRopeThetaKey: 'layer_rope_theta',
    // configuration_granitemoe_swa.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 32,
      max_position_embeddings: 2048,
      rope_theta: 10000,
      attention_multiplier: 1,
      embedding_multiplier: 1,
      residual_multiplier: 1,
      logits_scaling: 1,
      sliding_window: 128,
    },
  },
}

