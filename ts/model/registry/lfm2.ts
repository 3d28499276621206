/**
 * LFM2-MoE: each layer's token mixer is a gated short convolution (`conv`) or attention (`self_attn`, q/k RMSNorms
 * per head before the rope, output `out_proj`) as `layer_types` says (`conv` / `full_attention`), after
 * `operator_norm`; then, after `ffn_norm`, a dense MLP (`feed_forward.w1/w3/w2`) on the first `num_dense_layers`
 * layers and an MoE block (`feed_forward`) on the others: sigmoid router `gate` choosing with `expert_bias`, the
 * chosen sigmoids renormalised over their sum + 1e-6 and scaled. Final norm `embedding_norm`; tied embeddings.
 * transformers: models/lfm2_moe/modeling_lfm2_moe.py
 */
import { fusedGateUp, perExpertW1W3W2 } from './layouts'
import type { ArchitectureEntry } from './types'

export const lfm2Moe: ArchitectureEntry = {
  modelTypes: ['lfm2_moe'],
  family: 'LFM2-MoE',
  layouts: [perExpertW1W3W2('feed_forward', 'gate.weight'), fusedGateUp('feed_forward', 'gate.weight')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'num_dense_layers' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    qkNorm: { q: 'q_layernorm', k: 'k_layernorm', afterRope: false },
    attentionOutput: 'out_proj',
    routerRenormEps: 1e-6,
    routerBiasKey: 'use_expert_bias',
    modelTensors: { embed: 'embed_tokens.weight', finalNorm: 'embedding_norm.weight' },
    hybrid: {
      layerTypes: ['layer_types'],
      kinds: { conv: 'short_conv', full_attention: 'attention' },
      // Lfm2MoeConfig has no default: its layers cannot be built without layer_types.
      defaultLayerTypes: [],
      singleMixer: false,
      modules: { short_conv: 'conv', attention: 'self_attn' },
      norms: { mixer: 'operator_norm', mlp: 'ffn_norm' },
      shortConv: { kernel: ['conv_L_cache'], bias: ['conv_bias'] },
    },
    // configuration_lfm2_moe.py (default_theta 1e6)
    configDefaults: {
      norm_eps: 1e-5,
      tie_word_embeddings: true,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      max_position_embeddings: 128000,
      rope_theta: 1000000,
      conv_bias: false,
      conv_L_cache: 3,
      num_dense_layers: 2,
      use_expert_bias: true,
      routed_scaling_factor: 1,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
    },
  },
}
