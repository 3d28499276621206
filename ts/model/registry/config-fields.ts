/**
 * Where the fields moe-quant reads live in each family's config.json: one table per family, beside the
 * default spellings. A field is a list of paths tried in order: `a.b` reads a nested object, `a[0]` an element
 * of an array, `a[]` the length of an array. A family lists only what differs from the defaults.
 */

/** The fields of the text model moe-quant reads. */
export interface ConfigFields {
  hiddenSize: readonly string[]
  numLayers: readonly string[]
  vocabSize: readonly string[]
  /** Routed experts per MoE layer. */
  numExperts: readonly string[]
  /** Experts per token. */
  topK: readonly string[]
  /** The per-expert intermediate size, most specific first. */
  expertIntermediate: readonly string[]
  /** The dense MLP's intermediate size. */
  intermediateSize: readonly string[]
  numAttentionHeads: readonly string[]
  numKeyValueHeads: readonly string[]
  headDim: readonly string[]
}

/** Where a family nests its text model, and how it spells the fields. */
export interface ConfigTable {
  /** Paths to the text model's config object, tried in order; the whole config when none is present. */
  textConfig: readonly string[]
  fields: ConfigFields
  /** Why moe-quant does not handle the family at all (its MoE is not one it can read), when it does not. */
  unsupported?: string
}

export const DEFAULT_CONFIG_TABLE: ConfigTable = {
  textConfig: ['text_config'],
  fields: {
    hiddenSize: ['hidden_size'],
    numLayers: ['num_hidden_layers'],
    vocabSize: ['vocab_size'],
    numExperts: ['num_experts', 'num_local_experts', 'n_routed_experts'],
    topK: ['num_experts_per_tok', 'num_experts_per_token', 'moe_topk', 'top_k'],
    expertIntermediate: ['moe_intermediate_size', 'intermediate_size'],
    intermediateSize: ['intermediate_size'],
    numAttentionHeads: ['num_attention_heads'],
    numKeyValueHeads: ['num_key_value_heads'],
    headDim: ['head_dim'],
  },
}

type Overrides = { textConfig?: readonly string[]; fields?: Partial<ConfigFields>; unsupported?: string }

/** ERNIE 4.5: `moe_num_experts`, `moe_k`. */
const ernie: Overrides = { fields: { numExperts: ['moe_num_experts'], topK: ['moe_k'] } }
/** Nemotron-H: the layer count is the length of `layers_block_type` (transformers derives it, whatever
 * `num_hidden_layers` says); configs with the legacy `hybrid_override_pattern` give `num_hidden_layers`. */
const nemotronH: Overrides = { fields: { numLayers: ['layers_block_type[]', 'num_hidden_layers'] } }
/** GLM-5 Next: `head_dim` is 0 (its linear-attention layers use `linear_head_dim`); not read. */
const glm5Next: Overrides = { fields: { headDim: [] } }

/** Gemma 4: `top_k_experts`. */
const gemma4: Overrides = { fields: { topK: ['top_k_experts'] } }

/** Per `model_type` (the outer one for `textConfig`, the text model's for `fields`). */
const OVERRIDES: Readonly<Record<string, Overrides>> = {
  gemma4_text: gemma4,
  diffusion_gemma_text: gemma4,
  dbrx: {
    fields: {
      hiddenSize: ['d_model'],
      numLayers: ['n_layers'],
      numExperts: ['ffn_config.moe_num_experts'],
      topK: ['ffn_config.moe_top_k'],
      expertIntermediate: ['ffn_config.ffn_hidden_size'],
      intermediateSize: [],
      numAttentionHeads: ['n_heads'],
      numKeyValueHeads: ['attn_config.kv_n_heads'],
    },
  },
  aria_text: { fields: { numExperts: ['moe_num_experts'], topK: ['moe_topk'] } },
  ernie4_5_moe: ernie,
  longcat_flash: {
    fields: { numLayers: ['num_layers'], expertIntermediate: ['expert_ffn_hidden_size'], intermediateSize: ['ffn_hidden_size'], topK: ['moe_topk'] },
  },
  nemotron_h: nemotronH,
  jetmoe: { unsupported: 'its attention is a mixture of experts too (self_attention.experts, mixture of attention heads), which moe-quant does not read' },
  ernie4_5_vl_moe_text: {
    ...ernie,
    unsupported: 'each MoE block holds text and vision experts side by side (one expert count per modality), which moe-quant does not read yet',
  },
  zaya: { unsupported: 'its router is an MLP (mlp.gate.router_mlp), not one [experts, hidden] linear, which moe-quant does not read yet' },
  glm5_next_text: glm5Next,
  qwen3_omni_moe: { textConfig: ['thinker_config.text_config', 'text_config'] },
}

/** The config table of a family: where its text model is (by the outer `model_type`) and its fields (by the
 * text model's `model_type`). */
export function configTable(outerModelType: string | undefined, textModelType: string | undefined): ConfigTable {
  const outer = outerModelType === undefined ? undefined : OVERRIDES[outerModelType]
  const text = textModelType === undefined ? undefined : OVERRIDES[textModelType]
  const unsupported = text?.unsupported ?? outer?.unsupported
  return {
    textConfig: outer?.textConfig ?? DEFAULT_CONFIG_TABLE.textConfig,
    fields: { ...DEFAULT_CONFIG_TABLE.fields, ...text?.fields },
    ...(unsupported ? { unsupported } : {}),
  }
}

/** The families with their own spellings, for documentation and tests. */
export const CONFIG_OVERRIDES: readonly string[] = Object.keys(OVERRIDES)
