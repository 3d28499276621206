/**
 * MiniMax-Text-01 (`minimax`): lightning attention (`self_attn` with `qkv_proj`, `output_gate`, `norm`, `out_proj`)
 * on the `linear_attention` layers, softmax attention with the full head rotated on the `full_attention` layers
 * (config `layer_types`, else full attention on the even layers); each residual taken after its norm and weighted
 * (`*_alpha_factor`, `*_beta_factor`); Mixtral's MoE on every layer (softmax top-K, always renormalised).
 * transformers: models/minimax/modeling_minimax.py
 *
 * MiniMax-M2: sigmoid router choosing on the scores plus `e_score_correction_bias` (on the MoE block), the
 * chosen scores renormalised (no groups, no scaling); every layer MoE with w1/w3/w2 experts under
 * `block_sparse_moe` on the hub; q/k norms over the whole projections; partial rope (`rotary_dim`).
 * transformers: models/minimax_m2/modeling_minimax_m2.py
 */
import { fusedGateUp, perExpertW1W3W2 } from './layouts'
import type { ArchitectureEntry } from './types'

export const minimaxM2: ArchitectureEntry = {
  modelTypes: ['minimax_m2'],
  family: 'MiniMax-M2',
  layouts: [perExpertW1W3W2('block_sparse_moe'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'all' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    partialRotary: true,
    rotaryDimKey: 'rotary_dim',
    slidingWindow: 'never',
    // configuration_minimax_m2.py (default_theta 5e6). The router has no groups and always renormalises.
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 48,
      num_key_value_heads: 8,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 1,
      max_position_embeddings: 196608,
      rope_theta: 5000000,
    },
  },
}

export const miniMaxText: ArchitectureEntry = {
  modelTypes: ['minimax'],
  family: 'MiniMax-Text-01',
  layouts: [perExpertW1W3W2('block_sparse_moe'), fusedGateUp('mlp')],
  router: 'softmax_topk_norm',
  placement: { kind: 'all' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'when_set',
    hybrid: {
      layerTypes: ['layer_types'],
      kinds: { linear_attention: 'lightning', full_attention: 'attention' },
      // MiniMaxConfig: "full_attention" if (i + 1) % 2 else "linear_attention".
      defaultLayerTypes: { period: { default: 2 }, offset: { default: 0 }, atOffset: 'attention', elsewhere: 'lightning' },
      singleMixer: false,
      modules: { lightning: 'self_attn', attention: 'self_attn' },
      // The output norm keeps MiniMaxRMSNorm's default eps.
      lightning: { blockSize: ['block_size'], normEps: 1e-6 },
    },
    normedResidual: {
      mixer: {
        lightning: ['linear_attn_alpha_factor', 'linear_attn_beta_factor'],
        attention: ['full_attn_alpha_factor', 'full_attn_beta_factor'],
      },
      mlp: ['mlp_alpha_factor', 'mlp_beta_factor'],
    },
    // configuration_minimax.py (default_theta 1e6)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 8,
      max_position_embeddings: 131072,
      rope_theta: 1000000,
      sliding_window: null,
      block_size: 256,
      full_attn_alpha_factor: 1,
      full_attn_beta_factor: 1,
      linear_attn_alpha_factor: 1,
      linear_attn_beta_factor: 1,
      mlp_alpha_factor: 1,
      mlp_beta_factor: 1,
    },
  },
}
