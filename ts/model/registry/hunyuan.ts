/**
 * Hunyuan-MoE (HunYuan MoE V1, Hunyuan-A13B): every layer MoE with a shared MLP as wide as an expert; router
 * `gate.wg` (softmax, top-K, renormalised); per-head q/k norms `query_layernorm` / `key_layernorm` after the
 * rope; the hub's `dynamic` rope with a fixed `alpha` (NTK-alpha: a larger base).
 * transformers: models/hunyuan_v1_moe/modeling_hunyuan_v1_moe.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const hunyuanV1Moe: ArchitectureEntry = {
  modelTypes: ['hunyuan_v1_moe'],
  family: 'Hunyuan-MoE',
  layouts: [perExpertGateUpDown('mlp', 'gate.wg.weight'), fusedGateUp('mlp', 'gate.wg.weight')],
  router: 'softmax_topk_norm',
  placement: { kind: 'all' },
  sharedExperts: { module: 'shared_mlp' },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    qkNorm: { q: 'query_layernorm', k: 'key_layernorm', afterRope: true },
    ropeNtkAlpha: true,
    slidingWindow: 'never',
    // configuration_hunyuan_v1_moe.py
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: null,
      max_position_embeddings: 2048,
      rope_theta: 10000,
    },
  },
}
