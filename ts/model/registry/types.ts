/**
 * The shape of one architecture registry entry: a declarative description of a model family's MoE
 * blocks. Tensor patterns are relative to a decoder layer (`model.layers.L.`); `{e}` stands for the expert
 * index. An entry always wins over the generic structural match. The kinds the native forward implements are
 * its own declarations (native/contract.ts).
 */
import type { ExpertActivation, ExpertLayout, RouterKind as NativeRouterKind } from '../../native/contract'
import type { ConfigLimitDecl, DenseBesideExpertsDecl, LayerTypeAttentionDecl, SandwichNormsDecl, ScaledRouterDecl } from './branches'
import type { LinearAttentionDecl, HybridLayerKind, HybridDecl } from './mixers'

// The token mixers' declarations live in mixers.ts.
export type { LinearAttentionDecl, GatedDeltaNetDecl, KimiDeltaAttentionDecl, HybridLayerKind, Mamba2Decl, MambaDecl, ShortConvDecl, LightningDecl, PeriodicLayerKinds, HybridDecl } from './mixers'

/**
 * How the routed experts of one MoE layer are stored (the native core's ExpertLayout):
 * - `per_expert`: `experts.{e}.gate_proj.weight [I,H]`, `up_proj [I,H]`, `down_proj [H,I]` (or w1/w3/w2);
 * - `fused`: `gate_up_proj [E,2I,H]` (gate rows first, then up), `down_proj [E,H,I]`;
 * - `fused_transposed`: `gate_up_proj [E,H,2I]` (gate columns first), `down_proj [E,I,H]`;
 * - `fused_interleaved`: `gate_up_proj [E,H,2I]` with gate/up interleaved (even columns gate, odd up),
 *   `down_proj [E,I,H]`.
 */
export type ExpertLayoutKind = ExpertLayout

/**
 * How a router turns logits into the K experts and their weights (the native core's RouterKind):
 * - `softmax_topk`: softmax over all experts, top-K, renormalised when `norm_topk_prob` (Qwen, OLMoE);
 * - `softmax_topk_norm`: softmax, top-K, always renormalised (Mixtral, MiniMax, Qwen3.5);
 * - `sigmoid_group_topk`: sigmoid scores + correction bias for choosing, group-limited top-K, routed scaling
 *   (DeepSeek-V3, GLM4);
 * - `topk_softmax`: top-K on the logits, softmax over the K (Granite, GPT-OSS);
 * - `topk_sigmoid`: top-K on the logits, sigmoid of the K (Llama4);
 * - `softmax_group_topk`: softmax, group-limited top-K by each group's best score, routed scaling, never
 *   renormalised (DeepSeek-V2);
 * - `softmax_bias_topk`: softmax, the K chosen on the scores plus `e_score_correction_bias`, renormalised with the
 *   sum floored at `moe_norm_min` (ERNIE 4.5);
 * - `softmax_bias_topk_scaled`: softmax, the K chosen on the scores plus `e_score_correction_bias`, their scores times
 *   `routed_scaling_factor`, never renormalised (LongCat-Flash, whose router also scores its zero experts);
 * - `sparsemixer`: PhiMoE's SparseMixer, two experts each weighted by a softmax over the logits close to its own.
 */
export type RouterKind = NativeRouterKind

/** The names of one MoE block's expert tensors (per-expert ones contain `{e}`). */
export interface ExpertTensorNames {
  gate?: string
  up?: string
  down: string
  gateUp?: string
  gateUpBias?: string
  downBias?: string
}

/** One on-disk layout a family may use, with its exact tensor names. */
export interface LayoutDecl {
  kind: ExpertLayoutKind
  /** Block path inside the decoder layer, e.g. `mlp`, `block_sparse_moe`, `feed_forward`. */
  block: string
  /** Expert tensors relative to the block. */
  tensors: ExpertTensorNames
  /** Router weight `[E,H]` relative to the block. */
  router: string
}

/** Which decoder layers are MoE, from config.json. */
export type PlacementRule =
  /** Every layer is MoE. */
  | { kind: 'all' }
  /** Qwen: MoE unless in `mlp_only_layers`, and only every `decoder_sparse_step`-th layer. */
  | { kind: 'sparse_step' }
  /** DeepSeek/GLM: dense below `first_k_dense_replace`, then every `moe_layer_freq`-th layer. */
  | { kind: 'first_k_dense' }
  /** Llama4: `moe_layers`, or every `interleave_moe_layer_step`-th layer. */
  | { kind: 'interleave' }
  /** No MoE layer: a dense model of a family the forward covers (Llama, Qwen3, Mistral). */
  | { kind: 'none' }
  /** ERNIE 4.5: every `moe_layer_interval`-th layer from `moe_layer_start_index` to `moe_layer_end_index` (-1:
   * the last). */
  | { kind: 'start_end_interval' }
  /** Hybrid families whose layers each hold one mixer (Nemotron-H): the layers whose kind is `moe` (ForwardDecl
   * `hybrid`). */
  | { kind: 'hybrid_moe_layers' }
  /** Jamba: every `expert_layer_period`-th layer from `expert_layer_offset` (when there is more than one expert). */
  | { kind: 'expert_layer_period' }
  /** LFM2-MoE: dense below `num_dense_layers`, MoE from there on. */
  | { kind: 'num_dense_layers' }
  /** GLM-4.7-Flash, EXAONE-MoE, HY-V3: `mlp_layer_types` ("dense" or "sparse" per layer); without it the first
   * `firstDenseKey` layers are dense (`firstDense` when config.json, or the config class, has no such key). */
  | { kind: 'mlp_layer_types'; firstDenseKey?: string; firstDense: number }

/** Shared experts that every token goes through. */
export interface SharedExpertsDecl {
  /** Module path relative to the block (`shared_expert`, `shared_experts`). */
  module: string
  /** `sigmoid(gate(x))` scales the shared output (Qwen2-MoE), relative to the block. */
  gate?: string
  /** The config may leave them out (Granite-MoE-SWA's `shared_intermediate_size` 0). */
  optional?: boolean
}

/** The self-attention of a family's decoder layers. */
export type AttentionKind =
  /** `self_attn.{q,k,v,o}_proj` (grouped-query; multi-head when the kv heads equal the heads). */
  | 'gqa'
  /** DeepSeek multi-head latent attention: `q_proj` or `q_a_proj`/`q_a_layernorm`/`q_b_proj`,
   * `kv_a_proj_with_mqa`, `kv_a_layernorm`, `kv_b_proj`, `o_proj`. */
  | 'mla'

/** What multiplies q·k before the attention softmax. */
export type AttentionScale =
  /** `head_dim^-0.5`. */
  | 'inverse_sqrt_head_dim'
  /** 1: q and k are normed instead (Gemma 4). */
  | 'one'
  /** config `attention_multiplier` (Granite). */
  | 'attention_multiplier'
  /** `qk_head_dim^-0.5`, times `mscale(factor, mscale_all_dim)²` when the rope is scaled and
   * `mscale_all_dim` is set (DeepSeek-V3 `yarn_apply_mscale`). */
  | 'mla_yarn_mscale'
  /** `qk_head_dim^-0.5` (`qk_nope_head_dim + qk_rope_head_dim`), whatever the rope says (Kimi-Linear's MLA). */
  | 'inverse_sqrt_qk_head_dim'

/**
 * The activation of the routed experts (the native core's ExpertActivation; shared experts and dense MLPs use
 * the gated one, or `relu2` in a `relu2` family): `silu` is a gated `act(gate) * up`, with `act` silu (config
 * `hidden_act` = `silu`) or, in a family declaring `activationKey`, the silu or GELU that key names;
 * `gpt_oss` is GPT-OSS's clamp at 7, `(up + 1) · gate · sigmoid(1.702 · gate)`; `relu2` is ungated
 * `relu(up)²`, with config `mlp_hidden_act` = `relu2` (Nemotron-H).
 */
export type ExpertActivationKind = ExpertActivation

/** When a family's attention uses a sliding window (transformers' rule for its config). */
export type SlidingWindowRule =
  /** Never. */
  | 'never'
  /** On every layer whenever config `sliding_window` is set (Mixtral). */
  | 'when_set'
  /** On every layer, only when config `use_sliding_window` is true (Qwen3-MoE). */
  | 'when_enabled'
  /** Per layer, from config `layer_types`: `sliding_attention` layers see `sliding_window` positions,
   * `chunked_attention` layers their `attention_chunk_size` chunk (GPT-OSS, Llama4). */
  | 'layer_types'

/** The `layer_types` transformers' config class derives when config.json has none. */
export type DefaultLayerTypes =
  /** Sliding on even layers, full on odd ones (GPT-OSS). */
  | 'alternate_sliding'
  /** Chunked on the layers with rope when `attention_chunk_size` is set, else full (Llama4). */
  | 'chunked_on_rope_layers'
  /** Sliding from layer `max_window_layers` on when `sliding_window` is set, else full (dots.llm1). */
  | 'sliding_from_max_window_layers'
  /** Full on every `sliding_window_pattern`-th layer, sliding elsewhere (EXAONE-MoE; needs `sliding_window`). */
  | 'full_every_pattern'
  /** Full on the first two layers, every fourth layer from layer 1 and the last one, sliding elsewhere (Flint). */
  | 'full_first_two_every_fourth_last'
  /** Full on every fourth layer from layer 0, sliding elsewhere (Granite-MoE-SWA). */
  | 'full_every_fourth'
  /** Full on every sixth layer and the last one, sliding elsewhere (Gemma 4). */
  | 'full_every_sixth_and_last'

/** Llama4's layers without rope (NoPE) and what differs on them. */
export interface NoRopeDecl {
  /** Config key of the per-layer list, 1 where the layer uses rope (`no_rope_layers`). */
  layersKey: string
  /** Config key of the interval the default list is made from: every `interval`-th layer has no rope. */
  intervalKey: string
  /** Config keys of the attention temperature tuning on NoPE layers (`attn_temperature_tuning`, `attn_scale`,
   * `floor_scale`). */
  temperature: { enabled: string; scale: string; floorScale: string }
}

/** The residual taken after each norm, each term weighted (MiniMax-Text-01): config keys of `[α, β]` after the
 * token mixer of each kind, and after the MLP. */
export interface NormedResidualDecl {
  mixer: Readonly<Partial<Record<HybridLayerKind, readonly [string, string]>>>
  mlp: readonly [string, string]
}

/**
 * DeepSeek sparse attention on MLA layers (DeepSeek-V3.2, GLM-5): each query attends to the `index_topk` keys a
 * lightning indexer (`self_attn.indexer`: `wq_b`, `wk`, `k_norm`, `weights_proj`; `index_n_heads` heads of
 * `index_head_dim`) scores highest.
 */
export interface SparseAttentionDecl {
  /** The indexer's rope rotates adjacent pairs (GLM-5) instead of halves (DeepSeek-V3.2). */
  indexerRopeAdjacentPairs: boolean
  /** Layers may reuse the keys of the last layer with an indexer and have none (GLM-5's `shared` layers, from
   * config `indexer_types`, or else `index_topk_pattern`, or else `index_topk_freq` / `index_skip_topk_offset`). */
  sharedLayers?: boolean
}

/** A scalar of the forward that a family reads from config.json. */
export type ConfigScalar = number | boolean | string | null

/**
 * How the calibration forward of a family is built: what its transformers `modeling_<family>.py` does
 * beyond the MoE block. Everything here is declarative; `model/spec/` turns it into the descriptor.
 */
export interface ForwardDecl {
  attention: AttentionKind
  attentionScale: AttentionScale
  expertActivation: ExpertActivationKind
  /** Config key naming the activation of the gated experts and MLPs, an `ACT2FN` name (`silu`, `gelu`,
   * `gelu_pytorch_tanh`, `gelu_new` …; Gemma 4's `hidden_activation`), read with the config class's default;
   * without it they are silu and config `hidden_act` must say so. */
  activationKey?: string
  /** The rope rotates only the leading `head_dim × partial_rotary_factor` dimensions (GLM4). Without it the
   * whole head is rotated and transformers ignores `partial_rotary_factor`. */
  partialRotary?: boolean
  /** Config key of the number of rotated dimensions, read as `partial_rotary_factor = value / head_dim` when
   * config.json has it (MiniMax-M2's legacy `rotary_dim`). */
  rotaryDimKey?: string
  /** Config key that makes the rope rotate adjacent pairs instead of halves (DeepSeek-V3 `rope_interleave`). */
  ropeInterleaveKey?: string
  /** The q/k norm modules when not `q_norm` / `k_norm` (Hunyuan's `query_layernorm` / `key_layernorm`), and
   * whether they apply after the rope instead of before. */
  qkNorm?: { q: string; k: string; afterRope: boolean }
  /** The norms of the residual stream are LayerNorms with a bias (PhiMoE), not RMSNorms. */
  layerNorm?: boolean
  /** Each decoder layer norms its sublayers' outputs (`post_attention_layernorm`, `post_feedforward_layernorm`:
   * FlexOlmo) instead of their inputs. */
  postNorms?: boolean
  /** Each decoder layer takes its residuals after the norms, weighted (MiniMax-Text-01). */
  normedResidual?: NormedResidualDecl
  /** A `longrope` rope is computed as PhiMoE does: its short factors whatever the length, `short_mscale` or, past
   * `original_max_position_embeddings` positions, `long_mscale` on cos and sin. */
  ropeLongShortFactors?: boolean
  /** A `dynamic` rope with a fixed `alpha` is Hunyuan's NTK-alpha rope: the default rope with
   * `theta · alpha^(d / (d − 2))`. */
  ropeNtkAlpha?: boolean
  /** Config key that switches the q/k norms on (GLM4 `use_qk_norm`); without it they are used whenever the
   * checkpoint holds `self_attn.q_norm` / `k_norm`. */
  qkNormKey?: string
  /** The attention has no q/k norms whatever the checkpoint holds (Solar Open's Llama attention). */
  withoutQkNorm?: boolean
  /** Config keys of the scalar multipliers (Granite): embeddings ×, each residual branch ×, logits ÷. */
  multipliers?: { embedding: string; residual: string; logits: string }
  slidingWindow: SlidingWindowRule
  /** Layer types that, in one forward of whole sequences without a cache, mask as full causal attention
   * (Unlimited-OCR's `reference_sliding_attention`: the window applies to decoded tokens only). */
  causalLayerTypes?: readonly string[]
  /** The `layer_types` used when config.json has none (with `slidingWindow: 'layer_types'`; all full without). */
  defaultLayerTypes?: DefaultLayerTypes
  /** Rope types of a legacy `rope_scaling` that the config class renames (Sarvam-MLA's `deepseek_yarn` is yarn). */
  ropeScalingAliases?: Readonly<Record<string, string>>
  /** The config class's rope parameters, used when config.json has neither `rope_scaling` nor `rope_parameters`. */
  ropeDefaults?: Readonly<Record<string, ConfigScalar>>
  /** Every attention layer has `self_attn.sinks [heads]` (GPT-OSS). */
  attentionSinks?: boolean
  /** The names the sinks may have in the attention module, tried in order, when not `sinks` (Flint's hub:
   * `softmax_offset`). */
  sinkNames?: readonly string[]
  /** Config key of a per-layer rope base (Granite-MoE-SWA `layer_rope_theta`): 0 is a layer without rope; the
   * others must agree (one rope for the model), and override the rope parameters' base. */
  layerRopeThetaKey?: string
  /** The rope rotates q and k on sliding-window layers only (EXAONE-MoE, Flint: their full-attention layers have no
   * position embedding); without `sliding_window`, on every layer (`everywhere`) or on none (`nowhere`). */
  ropeOnSlidingLayersOnly?: { withoutWindow: 'everywhere' | 'nowhere' }
  /** The rope rotates adjacent pairs, always (Llama4's complex rope). */
  ropeAdjacentPairs?: boolean
  /** Config key that switches on a weightless RMSNorm of q and k after the rope, on layers with rope (Llama4
   * `use_qk_norm`). */
  weightlessQkNormKey?: string
  /** Layers without rope (Llama4). */
  noRope?: NoRopeDecl
  /** A `sigmoid_group_topk` router whose config class fixes some of its parameters (HY-V3: always renormalised, no
   * groups; Flint: no groups, no scaling), and the config key of its routed scaling when not
   * `routed_scaling_factor`. */
  routerParameters?: { normTopkProb?: boolean; groups?: false; scaled?: false; routedScalingKey?: string }
  /** Config key of a clamp of q/k/v (OLMoE `clip_qkv`); a set value is refused (not expressible yet). */
  clipQkvKey?: string
  /** Every RMSNorm of the decoder (input, post-attention, final, q/k) multiplies by `offset + w`: 1 on
   * Qwen3-Next and Qwen3.5, whose norm weights start at 0 (`x̂ · (1 + w)`); 0 (plain `w`) when absent. */
  normWeightOffset?: number
  /** `q_proj` yields, head after head, the query then an output gate of `head_dim` each; the attention output is
   * multiplied by `sigmoid(gate)` before `o_proj` (Qwen3-Next, Qwen3.5). */
  attentionOutputGate?: boolean
  /** Layers mixing tokens with linear attention (Qwen3-Next, Qwen3.5, Kimi-Linear); all layers use self-attention
   * without it. */
  linearAttention?: LinearAttentionDecl
  /** Whether the model has a rotary embedding: always (absent), never (`none`: every attention layer is
   * position-free), or when config `key` equals `rope` (Granite-4.0-H's `position_embedding_type`). */
  positionEmbedding?: 'none' | { key: string; rope: string }
  /** Names of the token embedding and the final norm beside the layers, when not `embed_tokens.weight` and
   * `norm.weight` (Nemotron-H: `embeddings.weight`, `norm_f.weight`). */
  modelTensors?: { embed: string; finalNorm: string }
  /** The output projection of the attention, relative to it, when not `o_proj` (LFM2's `out_proj`). */
  attentionOutput?: string
  /** What a `sigmoid_group_topk` router adds to the sum of the chosen weights before dividing by it, when not
   * 1e-20 (LFM2: 1e-6). */
  routerRenormEps?: number
  /** Config key that switches the router's choice bias on (LFM2 `use_expert_bias`); off, a bias the checkpoint holds
   * is refused (transformers would not load it). */
  routerBiasKey?: string
  /** false: the `softmax_topk` router never renormalises the chosen weights, whatever config `norm_topk_prob` says
   * (Jamba, whose router does not read it); absent: as `norm_topk_prob` says. */
  routerRenormalises?: false
  /** Layers of different mixers (Mamba-2, attention, MoE, MLP). */
  hybrid?: HybridDecl
  /** LongCat-Flash's double sublayers: each decoder layer holds two attentions (`self_attn.0`, `self_attn.1`) and two
   * dense MLPs (`mlps.0`, `mlps.1`), each after its norm (`input_layernorm.0`/`.1`, `post_attention_layernorm.0`/`.1`),
   * and its MoE (`mlp`) reads the first MLP's normed input, its output added after the second MLP. */
  doubleSublayers?: boolean
  /** LongCat-Flash's MLA scales the queries by `√(hidden_size / q_lora_rank)` and the normed key/value latent by
   * `√(hidden_size / kv_lora_rank)`. */
  mlaLoraScaling?: boolean
  /** Config key of the rope's head size when not `qk_rope_head_dim` (LongCat-Flash's rope is built for `head_dim`;
   * transformers can run it only when the two agree). */
  mlaRopeHeadDimKey?: string
  /** Config key of the number of zero-computation experts the router scores after the routed ones (LongCat-Flash's
   * `zero_expert_num`; null or 0: none): a token that chooses one passes through, scaled by its weight. */
  zeroExpertsKey?: string
  /** MLA restricted by DeepSeek sparse attention; its config `layer_types` (`indexed_attention`) name the cache
   * kind, not a mask. */
  sparseAttention?: SparseAttentionDecl
  /** Tensors (by the end of their names) of a layout the forward cannot read, and why: the forward of such a
   * checkpoint is refused. */
  unreadTensors?: readonly { suffix: string; reason: string }[]
  /** The attention module of a decoder layer, when not `self_attn` (Param2 / Sarvam-MoE hub: `attention`). */
  attentionModule?: string
  /** One module of the attention projects q, k and v, its output rows q's, k's then v's (Param2 / Sarvam-MoE hub:
   * `query_key_value`, which transformers splits in that order on load); its bias, if any, likewise. */
  fusedQkv?: string
  /** Another layout of the family's checkpoints, told by a tensor whose name ends with `suffix`: its names
   * replace the forward's (Param2 / Sarvam-MoE hub checkpoints: Bailing names, q, k and v fused). */
  layoutNames?: {
    suffix: string
    names: Partial<Pick<ForwardDecl, 'attentionModule' | 'fusedQkv' | 'attentionOutput' | 'qkNorm' | 'modelTensors'>>
    /** The renames transformers applies on load, in order (pattern, replacement), giving the names ModelOpt
     * exports such a checkpoint under (the fused q/k/v as `q_proj`, `k_proj`, `v_proj` beside the renamed module). */
    exportRenames: readonly (readonly [RegExp, string])[]
  }
  /** The embeddings are multiplied by `sqrt(hidden_size)`, rounded to the compute dtype (Gemma 4). */
  embeddingScaleSqrtHidden?: boolean
  /** Every RMSNorm multiplies by its weight in f32, before the cast back (Gemma 4). */
  normWeightInF32?: boolean
  /** Config key of the soft-capping of the logits, `cap · tanh(logits / cap)` (null: none). */
  logitSoftcapKey?: string
  /** Each sublayer has a norm on its input and another on its output (Gemma 4). */
  sandwichNorms?: SandwichNormsDecl
  /** A `[1]` tensor of each decoder layer multiplying its output (Gemma 4's `layer_scalar`). */
  layerScalar?: string
  /** A dense MLP and the routed experts side by side, normed apart (Gemma 4). */
  denseBesideExperts?: DenseBesideExpertsDecl
  /** The router's input scaled and its weights scaled per expert (Gemma 4). */
  scaledRouter?: ScaledRouterDecl
  /** Head size, KV heads, values and rope by layer type (Gemma 4). */
  layerTypeAttention?: LayerTypeAttentionDecl
  /** A weightless RMSNorm of the value heads (Gemma 4). */
  valueNorm?: boolean
  /** Config values the forward cannot take, each refused naming what it would need. */
  configLimits?: readonly ConfigLimitDecl[]
  /** Keys the family's config class stores under other names (its `attribute_map`, e.g. Kimi-Linear's
   * `moe_renormalize` for `norm_topk_prob`): config.json may spell them either way, the stored names read first. */
  configAliases?: Readonly<Record<string, readonly string[]>>
  /** transformers' config-class defaults for the keys the forward reads, used when config.json omits them
   * (`num_key_value_heads: null` means "equal to num_attention_heads"). */
  configDefaults: Readonly<Record<string, ConfigScalar>>
}

/** A wrapper (by its outer `model_type`) nesting a family's text model. */
export interface WrapperDecl {
  /** Whether its class ties the output projection to the token embedding when its config.json does not say. */
  tieWordEmbeddings: boolean
  /** Token ids the wrapper embeds as its text model's pad token (Gemma 4: its image, video and audio placeholders,
   * which it replaces before the embedding): the outer config's keys with their class defaults, and the text config's
   * key of the pad token. */
  placeholders?: { tokens: Readonly<Record<string, number>>; padKey: string }
}

export interface ArchitectureEntry {
  /** `model_type` values (of the text model) this entry handles. */
  modelTypes: readonly string[]
  /** Human-readable family name. */
  family: string
  /** Every layout the family is found in; the first that matches a layer's tensors is used. */
  layouts: readonly LayoutDecl[]
  /** The router of the MoE layers (absent for a dense family). */
  router?: RouterKind
  placement: PlacementRule
  sharedExperts?: SharedExpertsDecl
  /** ModelOpt exports this family's experts stacked, as stored (its BMM-style experts export: GPT-OSS, Llama4);
   * other families' experts are exported one module per expert and projection. */
  exportStacked?: boolean
  /** Wrappers (by their outer `model_type`) that nest this text model and own its `lm_head`: transformers 5 ties the
   * output projection to the token embedding as the wrapper's config says, else as its class defaults (Kimi-K2.5:
   * tied). */
  wrappers?: Readonly<Record<string, WrapperDecl>>
  /** Modules (by the end of their names) ModelOpt puts no quantizer on, and so never lists in `exclude_modules`,
   * where it lists their kind elsewhere (Gemma 4's token embedding, a subclass of nn.Embedding ModelOpt does not
   * convert). */
  exportUnlisted?: readonly string[]
  /** ModelOpt exports the family under transformers 5's in-memory names whatever the checkpoint's layout
   * (Kimi-Linear: its reverse of the conversion transformers applies on load cannot split the joined `conv1d` back
   * into the hub's three, and it then keeps every in-memory name), so moe-quant writes them too: the renames from
   * the hub's names, the tensors transformers joins along their first axis (by the end of their names, in order,
   * and the joined tensor's), and the routed experts one module per expert and projection under the block of the
   * family's fused layout (`mlp.experts.{e}.gate_proj`, `up_proj`, `down_proj`). */
  exportInMemoryNames?: {
    renames: readonly (readonly [RegExp, string])[]
    joins: readonly { parts: readonly string[]; joined: string }[]
  }
  /** Why ModelOpt quantizes no KV cache of this family, whatever hf_ptq's `--kv_cache_qformat` says (it writes
   * `kv_cache_quant_algo: null`): moe-quant then leaves it unquantized by default and refuses the KV cache options. */
  kvCacheUnquantized?: string
  /** How the calibration forward is built; absent when `forwardUnsupported` says why it cannot be yet. */
  forward?: ForwardDecl
  /** Why the descriptor cannot express this family's forward yet (describeModel refuses it with this). */
  forwardUnsupported?: string
}
