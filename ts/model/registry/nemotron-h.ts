/**
 * Nemotron-H (Nemotron 3 Nano): every decoder layer holds one mixer (`mixer`) after one norm (`norm`): Mamba-2,
 * attention without rope, an MoE block or a dense MLP, as `layers_block_type` (or the legacy
 * `hybrid_override_pattern`) says. Ungated relu² experts (`up_proj`, `down_proj`) and an ungated relu² shared
 * expert; sigmoid router with `e_score_correction_bias`, group-limited top-K and routed scaling. Stored under
 * `backbone.` on the hub (`embeddings`, `norm_f`).
 * transformers: models/nemotron_h/modeling_nemotron_h.py
 */
import type { ArchitectureEntry } from './types'

export const nemotronH: ArchitectureEntry = {
  modelTypes: ['nemotron_h'],
  family: 'Nemotron-H',
  layouts: [
    {
      kind: 'per_expert',
      block: 'mixer',
      tensors: { up: 'experts.{e}.up_proj.weight', down: 'experts.{e}.down_proj.weight' },
      router: 'gate.weight',
    },
    { kind: 'fused', block: 'mixer', tensors: { up: 'experts.up_proj', down: 'experts.down_proj' }, router: 'gate.weight' },
  ],
  router: 'sigmoid_group_topk',
  placement: { kind: 'hybrid_moe_layers' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'relu2',
    slidingWindow: 'never',
    positionEmbedding: 'none',
    modelTensors: { embed: 'embeddings.weight', finalNorm: 'norm_f.weight' },
    hybrid: {
      layerTypes: ['layers_block_type', 'layer_types'],
      patternKey: 'hybrid_override_pattern',
      kinds: {
        linear_attention: 'mamba2',
        mamba: 'mamba2',
        full_attention: 'attention',
        attention: 'attention',
        moe: 'moe',
        mlp: 'mlp',
        M: 'mamba2',
        '*': 'attention',
        E: 'moe',
        '-': 'mlp',
      },
      defaultLayerTypes: ['mamba2', 'moe', 'attention', 'mlp'],
      singleMixer: true,
      modules: { mamba2: 'mixer', attention: 'mixer', moe: 'mixer', mlp: 'mixer' },
      norm: 'norm',
      // NemotronHConfig.__post_init__ reads the mamba_-prefixed aliases first.
      mamba2: {
        heads: ['mamba_num_heads'],
        headDim: ['mamba_head_dim'],
        expand: ['mamba_expand', 'expand'],
        groups: ['mamba_n_groups', 'n_groups'],
        stateSize: ['ssm_state_size'],
        convKernel: ['mamba_d_conv', 'conv_kernel'],
        chunkSize: ['mamba_chunk_size', 'chunk_size'],
        convBias: ['mamba_conv_bias', 'use_conv_bias'],
        projBias: ['use_bias'],
        activation: ['mamba_hidden_act'],
        timeStepLimit: ['mamba_dt_limit', 'time_step_limit'],
        normEps: ['layer_norm_epsilon'],
      },
    },
    // configuration_nemotron_h.py
    configDefaults: {
      layer_norm_epsilon: 1e-5,
      tie_word_embeddings: false,
      mlp_hidden_act: 'relu2',
      mlp_bias: false,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      max_position_embeddings: 4096,
      mamba_num_heads: 128,
      mamba_head_dim: 64,
      mamba_hidden_act: 'silu',
      n_groups: 8,
      ssm_state_size: 128,
      conv_kernel: 4,
      expand: 2,
      chunk_size: 128,
      use_conv_bias: true,
      use_bias: false,
      moe_latent_size: null,
      routed_scaling_factor: 1,
      n_group: 1,
      topk_group: 1,
      norm_topk_prob: true,
    },
  },
}
