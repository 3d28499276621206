/**
 * Dense decoders the calibration forward covers with the blocks of the MoE families: Llama (biases, llama3
 * rope), Qwen3 (per-head q/k norms), Mistral (sliding window). Every layer is a dense gated MLP; all linears
 * but the lm_head are quantized, as ModelOpt does.
 * transformers: models/llama/modeling_llama.py, models/qwen3/modeling_qwen3.py, models/mistral/modeling_mistral.py
 */
import type { ArchitectureEntry, ForwardDecl } from './types'

/** A dense family: no layouts, no router, no MoE layer. */
function denseEntry(modelType: string, family: string, forward: ForwardDecl): ArchitectureEntry {
  return { modelTypes: [modelType], family, layouts: [], placement: { kind: 'none' }, forward }
}

export const llama = denseEntry('llama', 'Llama', {
  attention: 'gqa',
  attentionScale: 'inverse_sqrt_head_dim',
  expertActivation: 'silu',
  slidingWindow: 'never',
  // configuration_llama.py; `mlp_bias` is refused by the spec (its MLPs have no biases in the descriptor).
  configDefaults: {
    rms_norm_eps: 1e-6,
    tie_word_embeddings: false,
    hidden_act: 'silu',
    num_attention_heads: 32,
    num_key_value_heads: null,
    max_position_embeddings: 2048,
    rope_theta: 10000,
  },
})

export const qwen3 = denseEntry('qwen3', 'Qwen3', {
  attention: 'gqa',
  attentionScale: 'inverse_sqrt_head_dim',
  expertActivation: 'silu',
  slidingWindow: 'layer_types',
  // configuration_qwen3.py
  configDefaults: {
    rms_norm_eps: 1e-6,
    tie_word_embeddings: true,
    hidden_act: 'silu',
    num_attention_heads: 32,
    num_key_value_heads: 32,
    max_position_embeddings: 32768,
    rope_theta: 10000,
    use_sliding_window: false,
  },
})

export const mistral = denseEntry('mistral', 'Mistral', {
  attention: 'gqa',
  attentionScale: 'inverse_sqrt_head_dim',
  expertActivation: 'silu',
  slidingWindow: 'when_set',
  // configuration_mistral.py
  configDefaults: {
    rms_norm_eps: 1e-6,
    tie_word_embeddings: false,
    hidden_act: 'silu',
    num_attention_heads: 32,
    num_key_value_heads: 8,
    max_position_embeddings: 131072,
    rope_theta: 10000,
    sliding_window: 4096,
  },
})
