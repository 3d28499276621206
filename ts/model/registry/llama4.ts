/**
 * Llama 4 (text model): fused experts stored transposed, `gate_up_proj [E,H,2I]` (gate columns first)
 * and `down_proj [E,I,H]`; top-K on the logits with sigmoid scores; a shared expert on every MoE layer;
 * MoE every `interleave_moe_layer_step`-th layer (or the layers listed in `moe_layers`). Attention: complex
 * (adjacent-pair) rope with a weightless q/k norm after it and chunked masks on the rope layers; layers without
 * rope (`no_rope_layers`) attend globally with temperature tuning.
 * transformers: models/llama4/modeling_llama4.py
 */
import type { ArchitectureEntry } from './types'

export const llama4: ArchitectureEntry = {
  modelTypes: ['llama4_text', 'llama4'],
  family: 'Llama4',
  layouts: [
    {
      kind: 'fused_transposed',
      block: 'feed_forward',
      tensors: { gateUp: 'experts.gate_up_proj', down: 'experts.down_proj' },
      router: 'router.weight',
    },
  ],
  router: 'topk_sigmoid',
  exportStacked: true,
  placement: { kind: 'interleave' },
  sharedExperts: { module: 'shared_expert' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'layer_types',
    defaultLayerTypes: 'chunked_on_rope_layers',
    ropeAdjacentPairs: true,
    weightlessQkNormKey: 'use_qk_norm',
    noRope: {
      layersKey: 'no_rope_layers',
      intervalKey: 'no_rope_layer_interval',
      temperature: { enabled: 'attn_temperature_tuning', scale: 'attn_scale', floorScale: 'floor_scale' },
    },
    // configuration_llama4.py (Llama4TextConfig)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 40,
      num_key_value_heads: 8,
      max_position_embeddings: 131072,
      rope_theta: 500000,
      use_qk_norm: true,
      no_rope_layer_interval: 4,
      attention_chunk_size: 8192,
      attn_temperature_tuning: true,
      floor_scale: 8192,
      attn_scale: 0.1,
    },
  },
}
