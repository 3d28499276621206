/**
 * The token mixers of hybrid and linear-attention families in a registry entry: Gated DeltaNet and Kimi Delta
 * Attention layers, Mamba-2, Mamba, gated short convolutions and lightning attention, and how a hybrid stack says
 * which layer runs which (re-exported by types.ts).
 */
/**
 * Decoder layers whose token mixer is linear attention instead of self-attention, as config `layer_types` says
 * (`linear_attention` / `full_attention`), or, when config.json has none, as the family's config class derives them.
 */
export type LinearAttentionDecl = GatedDeltaNetDecl | KimiDeltaAttentionDecl

/** Gated DeltaNet (Qwen3-Next, Qwen3.5) in `linear_attn`: input projections, `conv1d`, `dt_bias`, `A_log`, a gated
 * `norm` and `out_proj`; without `layer_types`, every layer but each `intervalKey`-th. */
export interface GatedDeltaNetDecl {
  kind: 'gated_delta_net'
  /** How its input projections are stored: `grouped` (Qwen3-Next: `in_proj_qkvz` and `in_proj_ba`, grouped by key
   * head) or `split` (Qwen3.5: `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`). */
  projections: 'grouped' | 'split'
  /** Config key of the interval of full-attention layers when `layer_types` is absent. */
  intervalKey: string
}

/**
 * Kimi Delta Attention (Kimi-Linear) in `self_attn`: `q_proj`, `k_proj`, `v_proj` and their convolution (`conv1d`, or
 * the hub's `q_conv1d`, `k_conv1d`, `v_conv1d`), the decay's `f_a_proj`, `f_b_proj`, `dt_bias`, `A_log` (under
 * `forget_gate` in transformers 5's layout), `b_proj`, the output gate's `g_a_proj`, `g_b_proj`, the gated `o_norm`
 * and `o_proj`. Its sizes and, without `layer_types`, its layers come from config.json as KimiLinearConfig reads
 * them: the checkpoint's `linear_attn_config` first (`head_dim`, `num_heads`, `short_conv_kernel_size`, and the
 * 1-based `full_attn_layers` / `kda_layers`), then `linear_head_dim`, `linear_num_heads`, `linear_conv_kernel_dim`;
 * without either list, full attention on layers 4, 8, 12, … (from 0).
 */
export interface KimiDeltaAttentionDecl {
  kind: 'kimi_delta_attention'
}

/** The mixer of one decoder layer of a hybrid family. */
export type HybridLayerKind = 'mamba2' | 'mamba' | 'short_conv' | 'lightning' | 'attention' | 'moe' | 'mlp'

/** Where a family's config.json gives the sizes and switches of its Mamba-2 mixers: for each, the keys tried in
 * order (the aliases its config class reads first, then its own name). */
export interface Mamba2Decl {
  heads: readonly string[]
  /** The head size; absent or `"auto"`: `expand × hidden_size / heads`. */
  headDim: readonly string[]
  expand: readonly string[]
  groups: readonly string[]
  stateSize: readonly string[]
  convKernel: readonly string[]
  chunkSize: readonly string[]
  convBias: readonly string[]
  /** in_proj and out_proj biases. */
  projBias: readonly string[]
  /** The convolution's activation (the forward implements silu). */
  activation: readonly string[]
  /** `[min, max]` of the time step. */
  timeStepLimit: readonly string[]
  /** The gated norm's epsilon. */
  normEps: readonly string[]
}

/** Where a family's config.json gives the sizes and switches of its Mamba (Mamba-1) mixers, keys tried in order
 * as for Mamba-2. */
export interface MambaDecl {
  /** `intermediate = expand × hidden_size`. */
  expand: readonly string[]
  stateSize: readonly string[]
  convKernel: readonly string[]
  /** The rank of the time-step projection; `"auto"`: `ceil(hidden_size / 16)`. */
  dtRank: readonly string[]
  convBias: readonly string[]
  /** in_proj and out_proj biases. */
  projBias: readonly string[]
  /** The convolution's activation (the forward implements silu). */
  activation: readonly string[]
  /** The RMSNorms of dt, B and C (Jamba's `dt_layernorm`, `b_layernorm`, `c_layernorm`), relative to the mixer,
   * and the keys of their epsilon; absent where the mixer has none. */
  norms?: { dt: string; b: string; c: string; eps: readonly string[] }
}

/** Where a family's config.json gives the kernel and the bias switch of its gated short convolutions. */
export interface ShortConvDecl {
  kernel: readonly string[]
  /** in_proj, out_proj and the convolution carry biases. */
  bias: readonly string[]
}

/** Where a family's config.json gives the block size of its lightning attention, and the eps of its output norm
 * (MiniMax-Text-01 leaves it at the norm class's default). */
export interface LightningDecl {
  blockSize: readonly string[]
  normEps: number
}

/** Layer kinds a config class derives from a period: the kind `atOffset` on the layers `i` with `i % period ==
 * offset`, `elsewhere` on the others (Jamba's `attn_layer_period` / `attn_layer_offset`); each key with the class's
 * default, or no key where the class fixes the number. */
export interface PeriodicLayerKinds {
  period: { key?: string; default: number }
  offset: { key?: string; default: number }
  atOffset: HybridLayerKind
  elsewhere: HybridLayerKind
}

/** A hybrid family: which mixer each decoder layer has, and where its Mamba-2 mixers' parameters are. */
export interface HybridDecl {
  /** Config keys of the per-layer list of kinds, tried in order. */
  layerTypes: readonly string[]
  /** Config key of a string with one character per layer (Nemotron-H's legacy `hybrid_override_pattern`), read
   * when config.json has no list. */
  patternKey?: string
  /** What each spelling of a kind, in the list or the pattern, means (legacy spellings included). */
  kinds: Readonly<Record<string, HybridLayerKind>>
  /** The kinds transformers' config class uses when config.json gives none: every layer one kind, a list, or
   * kinds it derives from a period. */
  defaultLayerTypes: HybridLayerKind | readonly HybridLayerKind[] | PeriodicLayerKinds
  /** Each layer holds one mixer after one norm (Nemotron-H); otherwise a token mixer (`mamba2` or `attention`)
   * and then the MLP, each after its norm. */
  singleMixer: boolean
  /** Each mixer's module, relative to the decoder layer. */
  modules: { mamba2?: string; mamba?: string; short_conv?: string; lightning?: string; attention: string; moe?: string; mlp?: string }
  /** The norm of a single-mixer layer, relative to the decoder layer. */
  norm?: string
  /** The norms before the token mixer and before the MLP, relative to the decoder layer, when not
   * `input_layernorm` and `post_attention_layernorm` (Jamba's `pre_ff_layernorm`). */
  norms?: { mixer: string; mlp: string }
  /** The family's Mamba-2 mixers. */
  mamba2?: Mamba2Decl
  /** The family's Mamba mixers. */
  mamba?: MambaDecl
  /** The family's gated short convolutions. */
  shortConv?: ShortConvDecl
  /** The family's lightning attention. */
  lightning?: LightningDecl
}
