/**
 * Jamba: Mamba (Mamba-1) and attention layers, attention where `i % attn_layer_period == attn_layer_offset`
 * (`self_attn`, no rope), Mamba elsewhere (`mamba`: dt, B and C RMS-normalised); each followed by an MoE block
 * (`feed_forward`: `router`, softmax top-K, not renormalised) where `i % expert_layer_period ==
 * expert_layer_offset`, a dense MLP elsewhere. Norms `input_layernorm` and `pre_ff_layernorm`, final norm
 * `final_layernorm`.
 * transformers: models/jamba/modeling_jamba.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const jamba: ArchitectureEntry = {
  modelTypes: ['jamba'],
  family: 'Jamba',
  layouts: [perExpertGateUpDown('feed_forward', 'router.weight'), fusedGateUp('feed_forward', 'router.weight')],
  router: 'softmax_topk',
  placement: { kind: 'expert_layer_period' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    positionEmbedding: 'none',
    routerRenormalises: false,
    modelTensors: { embed: 'embed_tokens.weight', finalNorm: 'final_layernorm.weight' },
    hybrid: {
      // JambaConfig derives layers_block_type and layer_types from the attention period; config.json has neither.
      layerTypes: [],
      kinds: { mamba: 'mamba', attention: 'attention' },
      defaultLayerTypes: {
        period: { key: 'attn_layer_period', default: 8 },
        offset: { key: 'attn_layer_offset', default: 4 },
        atOffset: 'attention',
        elsewhere: 'mamba',
      },
      singleMixer: false,
      modules: { mamba: 'mamba', attention: 'self_attn' },
      norms: { mixer: 'input_layernorm', mlp: 'pre_ff_layernorm' },
      mamba: {
        expand: ['mamba_expand'],
        stateSize: ['mamba_d_state'],
        convKernel: ['mamba_d_conv'],
        dtRank: ['mamba_dt_rank'],
        convBias: ['mamba_conv_bias'],
        projBias: ['mamba_proj_bias'],
        activation: ['hidden_act'],
        norms: { dt: 'dt_layernorm', b: 'b_layernorm', c: 'c_layernorm', eps: ['rms_norm_eps'] },
      },
    },
    // configuration_jamba.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 8,
      max_position_embeddings: 262144,
      mamba_d_state: 16,
      mamba_d_conv: 4,
      mamba_expand: 2,
      mamba_dt_rank: 'auto',
      mamba_conv_bias: true,
      mamba_proj_bias: false,
    },
  },
}
