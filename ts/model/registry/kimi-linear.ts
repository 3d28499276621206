/**
 * Kimi-Linear (`kimi_linear`): a hybrid decoder whose `linear_attention` layers mix tokens with Kimi Delta Attention
 * (a Gated DeltaNet decaying per key channel, in `self_attn`) and whose `full_attention` layers with MLA that has
 * no position embedding (no rope: the `qk_rope_head_dim` channels are used as they are; scaling `qk_head_dim^-0.5`);
 * layer kinds from `layer_types`, else the hub's `linear_attn_config`, else full attention on layers 4, 8, …
 * DeepSeek-V3's MoE (sigmoid router with `e_score_correction_bias`, groups, routed scaling) with shared experts,
 * dense below `first_k_dense_replace`, or as `mlp_layer_types` says. The hub stores the experts as
 * `block_sparse_moe.experts.{e}.w1/w3/w2`; transformers 5 writes that block name for every MLP of its hub layout,
 * dense ones included. Its config class stores some keys under other names (`moe_renormalize`,
 * `num_expert_group`, …), which config.json may use. ModelOpt 0.47 exports it under transformers 5's names (the
 * KDA convolutions joined in `conv1d`, the decay's tensors in `forget_gate`, every MLP in `mlp`, the experts as
 * `gate_proj`/`up_proj`/`down_proj`): its reverse conversion refuses to split the 3-D `conv1d` weight.
 * transformers: models/kimi_linear/modeling_kimi_linear.py, configuration_kimi_linear.py
 */
import { fusedGateUp, perExpertW1W3W2 } from './layouts'
import type { ArchitectureEntry } from './types'

export const kimiLinear: ArchitectureEntry = {
  modelTypes: ['kimi_linear'],
  family: 'Kimi-Linear',
  layouts: [perExpertW1W3W2('block_sparse_moe'), fusedGateUp('mlp')],
  router: 'sigmoid_group_topk',
  placement: { kind: 'mlp_layer_types', firstDenseKey: 'first_k_dense_replace', firstDense: 1 },
  sharedExperts: { module: 'shared_experts' },
  // conversion_mapping.py's kimi_linear renames and joins, which ModelOpt 0.47 keeps in its exports.
  exportInMemoryNames: {
    renames: [
      [/\.block_sparse_moe\./, '.mlp.'],
      [/\.self_attn\.(f_a_proj|f_b_proj|dt_bias|A_log)\b/, '.self_attn.forget_gate.$1'],
    ],
    joins: [{ parts: ['.q_conv1d.weight', '.k_conv1d.weight', '.v_conv1d.weight'], joined: '.conv1d.weight' }],
  },
  forward: {
    attention: 'mla',
    attentionScale: 'inverse_sqrt_qk_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    positionEmbedding: 'none',
    linearAttention: { kind: 'kimi_delta_attention' },
    // KimiLinearConfig.attribute_map
    configAliases: {
      norm_topk_prob: ['moe_renormalize'],
      n_group: ['num_expert_group'],
      num_experts_per_tok: ['num_experts_per_token'],
      num_local_experts: ['num_experts'],
      n_shared_experts: ['num_shared_experts'],
      max_position_embeddings: ['model_max_length'],
    },
    // configuration_kimi_linear.py
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 32,
      q_lora_rank: null,
      kv_lora_rank: 512,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      v_head_dim: 128,
      attention_bias: false,
      n_group: 1,
      topk_group: 1,
      norm_topk_prob: true,
      routed_scaling_factor: 2.446,
      linear_head_dim: 128,
      linear_num_heads: 32,
      linear_conv_kernel_dim: 4,
    },
  },
}
