/**
 * DeepSeek-V3.2 and GLM-5: DeepSeek-V3's blocks (sigmoid group router with `e_score_correction_bias`, dense MLPs
 * below `first_k_dense_replace`, ungated shared experts, MLA with a q LoRA and the rope on adjacent pairs) where
 * DeepSeek sparse attention restricts each query to the `index_topk` keys its lightning indexer scores highest.
 * The indexer's rope rotates halves on DeepSeek-V3.2 and adjacent pairs on GLM-5, whose `shared` layers have no
 * indexer and reuse the keys of the last layer that has one.
 * transformers: models/deepseek_v32/modeling_deepseek_v32.py, models/glm_moe_dsa/modeling_glm_moe_dsa.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const deepseekV32: ArchitectureEntry = {
  modelTypes: ['deepseek_v32'],
  family: 'DeepSeek-V3.2',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'mla',
    attentionScale: 'mla_yarn_mscale',
    expertActivation: 'silu',
    ropeAdjacentPairs: true,
    slidingWindow: 'never',
    sparseAttention: { indexerRopeAdjacentPairs: false },
    // configuration_deepseek_v32.py
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 128,
      num_key_value_heads: 128,
      q_lora_rank: 1536,
      kv_lora_rank: 512,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      v_head_dim: 128,
      norm_topk_prob: true,
      n_group: 8,
      topk_group: 4,
      routed_scaling_factor: 2.5,
      max_position_embeddings: 163840,
      rope_theta: 10000,
      attention_bias: false,
      index_topk: 2048,
      index_head_dim: 128,
      index_n_heads: 64,
    },
  },
}

export const glmMoeDsa: ArchitectureEntry = {
  modelTypes: ['glm_moe_dsa'],
  family: 'GLM-5',
  layouts: [perExpertGateUpDown('mlp'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
  forward: {
    attention: 'mla',
    attentionScale: 'mla_yarn_mscale',
    expertActivation: 'silu',
    ropeAdjacentPairs: true,
    slidingWindow: 'never',
    sparseAttention: { indexerRopeAdjacentPairs: true, sharedLayers: true },
    // configuration_glm_moe_dsa.py (GlmMoeDsaConfig over DeepseekV32Config)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 64,
      num_key_value_heads: 64,
      q_lora_rank: 2048,
      kv_lora_rank: 512,
      qk_nope_head_dim: 192,
      qk_rope_head_dim: 64,
      v_head_dim: 256,
      norm_topk_prob: true,
      n_group: 1,
      topk_group: 1,
      routed_scaling_factor: 2.5,
      max_position_embeddings: 202752,
      rope_theta: 10000,
      attention_bias: false,
      index_topk: 2048,
      index_head_dim: 128,
      index_n_heads: 32,
    },
  },
}
