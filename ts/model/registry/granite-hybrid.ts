/**
 * Granite-4.0-H (GraniteMoeHybrid): Granite-MoE's experts and router (`block_sparse_moe`, top-K on the logits
 * then softmax over the K) with a shared MLP `shared_mlp` (one `input_linear [2S, H]`, gate rows first) on every
 * layer; each layer's token mixer is Mamba-2 (`mamba`) or attention (`self_attn`) as `layer_types` says, the
 * attention rotating only when `position_embedding_type` is `rope`; Granite's multipliers.
 * transformers: models/granitemoehybrid/modeling_granitemoehybrid.py
 */
import { graniteMoe } from './granite'
import type { ArchitectureEntry } from './types'

export const graniteMoeHybrid: ArchitectureEntry = {
  modelTypes: ['granitemoehybrid'],
  family: 'Granite-4.0-H',
  // Granite-MoE's experts and router, as stored on the hub and by transformers 5.
  layouts: graniteMoe.layouts,
  router: 'topk_softmax',
  placement: { kind: 'all' },
  sharedExperts: { module: 'shared_mlp' },
  forward: {
    attention: 'gqa',
    attentionScale: 'attention_multiplier',
    expertActivation: 'silu',
    multipliers: { embedding: 'embedding_multiplier', residual: 'residual_multiplier', logits: 'logits_scaling' },
    slidingWindow: 'never',
    positionEmbedding: { key: 'position_embedding_type', rope: 'rope' },
    hybrid: {
      layerTypes: ['layer_types', 'layers_block_type'],
      // configuration_utils._LEGACY_LAYER_TYPE_REMAP: mamba → linear_attention, attention → full_attention.
      kinds: { linear_attention: 'mamba2', mamba: 'mamba2', full_attention: 'attention', attention: 'attention' },
      defaultLayerTypes: 'mamba2',
      singleMixer: false,
      modules: { mamba2: 'mamba', attention: 'self_attn' },
      mamba2: {
        heads: ['mamba_n_heads'],
        headDim: ['mamba_d_head'],
        expand: ['mamba_expand'],
        groups: ['mamba_n_groups'],
        stateSize: ['mamba_d_state'],
        convKernel: ['mamba_d_conv'],
        chunkSize: ['mamba_chunk_size'],
        convBias: ['mamba_conv_bias'],
        projBias: ['mamba_proj_bias'],
        activation: ['hidden_act'],
        timeStepLimit: ['time_step_limit'],
        normEps: ['rms_norm_eps'],
      },
    },
    // configuration_granitemoehybrid.py
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
      position_embedding_type: null,
      mamba_n_heads: 128,
      mamba_n_groups: 1,
      mamba_d_state: 256,
      mamba_d_head: 'auto',
      mamba_d_conv: 4,
      mamba_expand: 2,
      mamba_chunk_size: 256,
      mamba_conv_bias: true,
      mamba_proj_bias: false,
    },
  },
}
