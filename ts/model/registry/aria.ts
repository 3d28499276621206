/**
 * Aria (its text model, alone or in the vision-language wrapper): every layer MoE, experts stacked with the input
 * axis first (`experts.fc1.weight [E,H,2I]`, gate columns first, and `fc2.weight [E,I,H]` on the hub;
 * `experts.gate_up_proj` / `down_proj` in transformers 5), top-K on the router logits then softmax over the K, a
 * shared MLP beside them; Llama attention (biases when `attention_bias`).
 * transformers: models/aria/modeling_aria.py
 */
import type { ArchitectureEntry } from './types'

export const ariaText: ArchitectureEntry = {
  modelTypes: ['aria_text'],
  family: 'Aria',
  layouts: [
    {
      kind: 'fused_transposed',
      block: 'mlp',
      tensors: { gateUp: 'experts.fc1.weight', down: 'experts.fc2.weight' },
      router: 'router.weight',
    },
    {
      kind: 'fused_transposed',
      block: 'mlp',
      tensors: { gateUp: 'experts.gate_up_proj', down: 'experts.down_proj' },
      router: 'router.weight',
    },
  ],
  router: 'topk_softmax',
  placement: { kind: 'all' },
  sharedExperts: { module: 'shared_experts' },
  wrappers: { aria: { tieWordEmbeddings: false } },
  forward: {
    attention: 'gqa',
    attentionScale: 'inverse_sqrt_head_dim',
    expertActivation: 'silu',
    slidingWindow: 'never',
    // configuration_aria.py (AriaTextConfig)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      num_attention_heads: 32,
      num_key_value_heads: 32,
      head_dim: 128,
      max_position_embeddings: 2048,
      rope_theta: 10000,
    },
  },
}
