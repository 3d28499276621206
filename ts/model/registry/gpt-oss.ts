/**
 * GPT-OSS: fused experts `gate_up_proj [E,H,2I]` with gate and up interleaved (even columns gate, odd
 * up) and biases, `down_proj [E,I,H]`; router with bias, top-K on the logits then softmax over the K.
 * The structure alone cannot tell interleaved from concatenated columns, so this entry must say it.
 * Attention: biases, a learned sink logit per head, sliding-window layers as `layer_types` says, yarn rope.
 * transformers: models/gpt_oss/modeling_gpt_oss.py
 */
import type { ArchitectureEntry } from './types'

export const gptOss: ArchitectureEntry = {
  modelTypes: ['gpt_oss'],
  family: 'GPT-OSS',
  layouts: [
    {
      kind: 'fused_interleaved',
      block: 'mlp',
      tensors: {
        gateUp: 'experts.gate_up_proj',
        down: 'experts.down_proj',
        gateUpBias: 'experts.gate_up_proj_bias',
        downBias: 'experts.down_proj_bias',
      },
      router: 'router.weight',
    },
  ],
  router: 'topk_softmax',
  exportStacked: true,
  placement: { kind: 'all' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'gpt_oss',
    slidingWindow: 'layer_types',
    defaultLayerTypes: 'alternate_sliding',
    attentionSinks: true,
    // configuration_gpt_oss.py: the rope parameters and default_theta of the config class.
    ropeDefaults: { rope_type: 'yarn', factor: 32, beta_fast: 32, beta_slow: 1, truncate: false, original_max_position_embeddings: 4096 },
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 64,
      num_key_value_heads: 8,
      max_position_embeddings: 131072,
      rope_theta: 150000,
      sliding_window: 128,
      swiglu_alpha: 1.702,
      swiglu_limit: 7,
    },
  },
}
