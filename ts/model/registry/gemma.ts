/**
 * Gemma 4's MoE text model (`gemma4_text`, and the `gemma4` multimodal wrapper's text stack): scaled embeddings;
 * sliding and full attention layers (`layer_types`, by default full on every sixth layer and the last), each type
 * with its own rope (`rope_parameters` per layer type: default on sliding layers, proportional on full ones), the
 * full layers with their own head size (`global_head_dim`) and, with `attention_k_eq_v`, their own KV heads
 * (`num_global_key_value_heads`) and k's projection as the values; q/k RMSNorms per head, a weightless v norm, q·k
 * unscaled; norms before and after each sublayer; in each layer a dense MLP and the routed experts side by side,
 * each branch normed apart, the router reading the layer's un-normed residual (weightless RMSNorm × `scale` ×
 * hidden^-0.5, softmax, top-k, renormalised, × `per_expert_scale`); `layer_scalar` on each layer's output; the
 * logits soft-capped. Every RMSNorm multiplies by its weight in f32.
 *
 * The 26B-A4B checkpoint has no per-layer embeddings (`hidden_size_per_layer_input` 0), no KV sharing across layers
 * (`num_kv_shared_layers` 0) and causal text attention (`use_bidirectional_attention` "vision" concerns image
 * tokens): configurations with those are refused, naming the block.
 * transformers: models/gemma4/modeling_gemma4.py
 */
import { fusedGateUp } from './layouts'
import type { ArchitectureEntry } from './types'

export const gemma4: ArchitectureEntry = {
  modelTypes: ['gemma4_text', 'gemma4'],
  family: 'Gemma 4',
  // The experts and the router sit in the decoder layer itself.
  layouts: [fusedGateUp('', 'router.proj.weight')],
  router: 'softmax_topk_norm',
  placement: { kind: 'all' },
  // Gemma4TextScaledWordEmbedding subclasses nn.Embedding, which ModelOpt 0.47 converts by exact type only: it has no
  // quantizer and is not listed in exclude_modules.
  exportUnlisted: ['.embed_tokens'],
  // Gemma4Config ties the output projection to the token embedding (tie_word_embeddings defaults to true); the
  // wrapper writes the pad token over its image, video and audio placeholders before embedding them.
  wrappers: {
    gemma4: {
      tieWordEmbeddings: true,
      placeholders: { tokens: { image_token_id: 258880, video_token_id: 258884, audio_token_id: 258881 }, padKey: 'pad_token_id' },
    },
  },
  forward: {
    attention: 'gqa',
    attentionScale: 'one',
    expertActivation: 'silu',
    activationKey: 'hidden_activation',
    slidingWindow: 'layer_types',
    defaultLayerTypes: 'full_every_sixth_and_last',
    embeddingScaleSqrtHidden: true,
    normWeightInF32: true,
    logitSoftcapKey: 'final_logit_softcapping',
    sandwichNorms: {
      mixerInput: 'input_layernorm',
      mixerOutput: 'post_attention_layernorm',
      mlpInput: 'pre_feedforward_layernorm',
      mlpOutput: 'post_feedforward_layernorm',
    },
    layerScalar: 'layer_scalar',
    denseBesideExperts: {
      module: 'mlp',
      expertsInput: 'pre_feedforward_layernorm_2',
      expertsOutput: 'post_feedforward_layernorm_2',
      mlpOutput: 'post_feedforward_layernorm_1',
    },
    scaledRouter: { scale: 'scale', perExpertScale: 'per_expert_scale' },
    layerTypeAttention: {
      wideType: 'full_attention',
      headDim: { key: 'global_head_dim', default: 512 },
      kvHeads: 'num_global_key_value_heads',
      keysAsValues: 'attention_k_eq_v',
      ropeDefaults: {
        sliding_attention: { rope_type: 'default', rope_theta: 10000 },
        full_attention: { rope_type: 'proportional', partial_rotary_factor: 0.25, rope_theta: 1000000 },
      },
      // Gemma4TextConfig forces the last layer to full attention (with a warning).
      lastLayer: 'full_attention',
    },
    valueNorm: true,
    configLimits: [
      { key: 'hidden_size_per_layer_input', allowed: [0, null], block: 'per-layer embeddings (hidden_size_per_layer_input)' },
      { key: 'num_kv_shared_layers', allowed: [0], block: 'KV sharing across layers (num_kv_shared_layers)' },
      { key: 'use_bidirectional_attention', allowed: [null, 'vision'], block: 'bidirectional attention over text tokens (use_bidirectional_attention "all")' },
      { key: 'attention_bias', allowed: [false], block: 'attention biases (attention_bias)' },
    ],
    // configuration_gemma4.py (Gemma4TextConfig)
    configDefaults: {
      rms_norm_eps: 1e-6,
      tie_word_embeddings: true,
      hidden_activation: 'gelu_pytorch_tanh',
      num_attention_heads: 8,
      num_key_value_heads: 4,
      head_dim: 256,
      max_position_embeddings: 131072,
      sliding_window: 512,
      final_logit_softcapping: null,
      hidden_size_per_layer_input: 256,
      num_kv_shared_layers: 0,
      attention_k_eq_v: false,
      num_global_key_value_heads: null,
      use_bidirectional_attention: null,
      attention_bias: false,
      pad_token_id: 0,
    },
  },
}
