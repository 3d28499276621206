/**
 * LongCat-Flash (`longcat_flash`): each decoder layer holds two MLA attentions and two dense MLPs, each after its
 * norm, and an MoE reading the first MLP's input whose output is added after the second MLP (a shortcut); the
 * router scores the routed experts and `zero_expert_num` zero-computation experts after them (softmax, chosen on the
 * scores plus `e_score_correction_bias`, the scores times `routed_scaling_factor`), and a token that chooses a zero
 * expert passes through, scaled by its weight; MLA scales its queries and its key/value latent
 * (`√(hidden_size / q_lora_rank)`, `√(hidden_size / kv_lora_rank)`) and rotates adjacent pairs.
 * transformers: models/longcat_flash/modeling_longcat_flash.py
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry } from './types'

export const longcatFlash: ArchitectureEntry = {
  modelTypes: ['longcat_flash'],
  family: 'LongCat-Flash',
  layouts: [perExpertGateUpDown('mlp', 'router.classifier.weight'), fusedGateUp('mlp', 'router.classifier.weight')],
  router: 'softmax_bias_topk_scaled',
  placement: { kind: 'all' },
  // ModelOpt 0.47 puts KV cache quantizers on attention classes whose name ends with `Attention`; LongCat-Flash's
  // is `LongcatFlashMLA`, so its export of this family, KV cache options or not, has kv_cache_quant_algo null.
  kvCacheUnquantized: "its attention class, LongcatFlashMLA, is not one ModelOpt 0.47 puts KV cache quantizers on, so ModelOpt writes kv_cache_quant_algo null whatever hf_ptq's --kv_cache_qformat",
  forward: {
    attention: 'mla',
    attentionScale: 'mla_yarn_mscale',
    expertActivation: 'silu',
    ropeAdjacentPairs: true,
    slidingWindow: 'never',
    doubleSublayers: true,
    mlaLoraScaling: true,
    mlaRopeHeadDimKey: 'head_dim',
    zeroExpertsKey: 'zero_expert_num',
    // configuration_longcat_flash.py (default_theta 1e7)
    configDefaults: {
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 64,
      num_key_value_heads: null,
      max_position_embeddings: 131072,
      rope_theta: 10000000,
      q_lora_rank: 1536,
      kv_lora_rank: 512,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      head_dim: 64,
      v_head_dim: 128,
      qk_head_dim: null,
      attention_bias: false,
      routed_scaling_factor: 6,
      zero_expert_num: 256,
    },
  },
}
