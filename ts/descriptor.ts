/**
 * The model descriptor: everything the Rust forward needs to reproduce transformers' forward of a checkpoint
 * (full tensor and module names, block kinds, hyper-parameters), decided here once from config.json, the
 * header listing, the inspect report and the registry. The types are generated from
 * `crates/core/src/model/descriptor.rs` (snake_case, serde). Rust never re-derives any of it: every default transformers applies
 * when a config key is absent is resolved here.
 *
 * Naming convention (as descriptor.rs says): projections and MLPs are *module* names (the Rust side appends
 * `.weight` / `.bias`); norms, embeddings, the lm_head, routers, biases and expert tensors are full *tensor*
 * names; per-expert tensor names contain `{e}`.
 */
import * as path from 'node:path'

import { parseConfig, type TextConfig } from './config'
import { findLayerPrefix } from './detect'
import { MoeQuantError } from './errors'
import { expertTensorNames, type InspectReport, reportFromListing } from './inspect'
import { type HeaderListing, readListing, type TensorHeader } from './listing'
import { refuseQuantizedSource } from './quantized'
import { lookupArchitecture } from './registry'
import type { ArchitectureEntry, ConfigScalar, ForwardDecl } from './registry/types'
import type { MoeLayer } from './resolve'

// The descriptor's types are declared in Rust (crates/core/src/model/descriptor.rs) and generated.
export type {
  AttentionDescriptor,
  DenseMlpDescriptor,
  ExpertActivation,
  ExpertLayout,
  GqaDescriptor,
  LayerDescriptor,
  MlaDescriptor,
  MlpDescriptor,
  ModelDescriptor,
  MoeDescriptor,
  RopeDescriptor,
  RopeKind,
  RouterDescriptor,
  RouterKind,
  SharedExpertDescriptor,
} from './native/contract'
import type {
  AttentionDescriptor,
  DenseMlpDescriptor,
  ExpertActivation,
  ExpertLayout,
  GqaDescriptor,
  LayerDescriptor,
  MlaDescriptor,
  MlpDescriptor,
  ModelDescriptor,
  MoeDescriptor,
  RopeDescriptor,
  RopeKind,
  RouterDescriptor,
  RouterKind,
  SharedExpertDescriptor,
} from './native/contract'

// ---------------------------------------------------------------------------------------------------------
// Config access with transformers' defaults.

function unsupported(entry: ArchitectureEntry | undefined, modelType: string, reason: string): never {
  const family = entry ? `${entry.family} (${modelType})` : modelType
  throw new MoeQuantError('E_LAYOUT_UNRECOGNISED', `forward not supported for ${family}: ${reason}`)
}

/** Reads config.json values, falling back to the family's transformers defaults. */
class ConfigValues {
  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly defaults: Readonly<Record<string, ConfigScalar>>,
    private readonly file: string,
  ) {}

  /** The value as transformers sees it: config.json's (null included), else the class default. */
  value(key: string): unknown {
    return Object.prototype.hasOwnProperty.call(this.raw, key) ? this.raw[key] : this.defaults[key]
  }

  invalid(key: string, expected: string, value: unknown = this.value(key)): never {
    throw new MoeQuantError('E_CONFIG_INVALID', `${this.file}: "${key}" must be ${expected}, got ${JSON.stringify(value)}`, {
      file: this.file,
    })
  }

  number(key: string): number {
    const value = this.value(key)
    if (typeof value !== 'number' || !Number.isFinite(value)) this.invalid(key, 'a number')
    return value
  }

  integer(key: string, min = 1): number {
    const value = this.value(key)
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) this.invalid(key, `an integer ≥ ${min}`)
    return value
  }

  /** An integer, or null when config.json (or the default) says null. */
  optionalInteger(key: string): number | null {
    const value = this.value(key)
    return value === null || value === undefined ? null : this.integer(key)
  }

  boolean(key: string): boolean {
    const value = this.value(key)
    if (typeof value !== 'boolean') this.invalid(key, 'true or false')
    return value
  }
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

/** Python truthiness of a config number (None and 0 are false). */
const truthy = (value: unknown): value is number => typeof value === 'number' && value !== 0

/** transformers' yarn `get_mscale`. */
function yarnMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1
}

/** The rope parameters after transformers' `convert_rope_params_to_dict` + `standardize_rope_params`. */
function ropeParameters(values: ConfigValues, raw: Record<string, unknown>): Record<string, unknown> {
  // `rope_scaling` (older configs) wins over `rope_parameters`, as in convert_rope_params_to_dict.
  const source = [raw.rope_scaling, raw.rope_parameters].find((v) => isObject(v) && Object.keys(v).length > 0)
  const params: Record<string, unknown> = isObject(source) ? { ...source } : {}
  for (const key of ['full_attention', 'sliding_attention', 'chunked_attention']) {
    if (isObject(params[key])) {
      throw new MoeQuantError('E_CONFIG_INVALID', `rope parameters given per attention type (${key}) are not supported by this family`)
    }
  }
  params.rope_type = params.rope_type ?? params.type ?? 'default'
  params.rope_theta = params.rope_theta ?? values.value('rope_theta')
  const partial = params.partial_rotary_factor ?? values.value('partial_rotary_factor')
  if (partial !== undefined && partial !== null) params.partial_rotary_factor = partial
  if (['llama3', 'yarn', 'longrope'].includes(params.rope_type as string)) {
    // A top-level original_max_position_embeddings (Phi-3 style) takes priority.
    const topLevel = raw.original_max_position_embeddings
    if (topLevel !== undefined) params.original_max_position_embeddings = topLevel
    else params.original_max_position_embeddings = params.original_max_position_embeddings ?? values.value('max_position_embeddings')
  }
  return params
}

function ropeNumber(params: Record<string, unknown>, key: string, required: boolean): number | undefined {
  const value = params[key]
  if (value === undefined || value === null) {
    if (required) throw new MoeQuantError('E_CONFIG_INVALID', `config.json: rope type "${params.rope_type}" needs "${key}"`)
    return undefined
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new MoeQuantError('E_CONFIG_INVALID', `config.json: rope parameter "${key}" must be a number, got ${JSON.stringify(value)}`)
  }
  return value
}

/** The rope descriptor, every default resolved (transformers' modeling_rope_utils.py). */
function buildRope(
  entry: ArchitectureEntry,
  forward: ForwardDecl,
  values: ConfigValues,
  params: Record<string, unknown>,
  ropeHeadDim: number,
): RopeDescriptor {
  const kind = params.rope_type as string
  const theta = ropeNumber(params, 'rope_theta', true) as number
  // theta^(-2i/d) is infinite for 0 and NaN below: every rotated query and key would be NaN.
  if (!(theta > 0)) throw new MoeQuantError('E_CONFIG_INVALID', `config.json: "rope_theta" must be a positive number, got ${theta}`)
  const partial = ropeNumber(params, 'partial_rotary_factor', false) ?? 1
  let rotaryDim = ropeHeadDim
  if (forward.partialRotary) rotaryDim = Math.trunc(ropeHeadDim * partial)
  else if (partial !== 1 && kind !== 'default') {
    // The family rotates whole heads but the scaled-rope functions would shorten the frequencies.
    throw new MoeQuantError(
      'E_CONFIG_INVALID',
      `config.json: partial_rotary_factor ${partial} with rope type "${kind}" is inconsistent for ${entry.family}, which rotates whole heads`,
    )
  }
  if (rotaryDim <= 0 || rotaryDim % 2 !== 0) {
    throw new MoeQuantError('E_CONFIG_INVALID', `config.json: the rotary dimension ${rotaryDim} must be even and positive`)
  }
  const interleaved = forward.ropeInterleaveKey ? values.value(forward.ropeInterleaveKey) === true : false
  const rope: RopeDescriptor = { kind: 'default', theta, rotary_dim: rotaryDim, interleaved }
  switch (kind) {
    case 'default':
      return rope
    case 'linear':
      return { ...rope, kind: 'linear', factor: ropeNumber(params, 'factor', true) }
    case 'llama3':
      return {
        ...rope,
        kind: 'llama3',
        factor: ropeNumber(params, 'factor', true),
        low_freq_factor: ropeNumber(params, 'low_freq_factor', true),
        high_freq_factor: ropeNumber(params, 'high_freq_factor', true),
        original_max_position_embeddings: ropeNumber(params, 'original_max_position_embeddings', true),
      }
    case 'yarn': {
      const original = ropeNumber(params, 'original_max_position_embeddings', true) as number
      const factor = ropeNumber(params, 'factor', false) ?? values.number('max_position_embeddings') / original
      const mscale = ropeNumber(params, 'mscale', false)
      const mscaleAllDim = ropeNumber(params, 'mscale_all_dim', false)
      let attentionFactor = ropeNumber(params, 'attention_factor', false)
      if (attentionFactor === undefined) {
        attentionFactor =
          truthy(mscale) && truthy(mscaleAllDim) ? yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAllDim) : yarnMscale(factor)
      }
      const truncate = params.truncate
      if (truncate !== undefined && truncate !== null && typeof truncate !== 'boolean') {
        throw new MoeQuantError('E_CONFIG_INVALID', `config.json: rope parameter "truncate" must be true or false, got ${JSON.stringify(truncate)}`)
      }
      const yarn: RopeDescriptor = {
        ...rope,
        kind: 'yarn',
        factor,
        original_max_position_embeddings: original,
        // transformers: `beta_fast or 32`, `beta_slow or 1`.
        beta_fast: ropeNumber(params, 'beta_fast', false) || 32,
        beta_slow: ropeNumber(params, 'beta_slow', false) || 1,
        attention_factor: attentionFactor,
        truncate: truncate === undefined || truncate === null ? true : truncate,
      }
      if (mscale !== undefined) yarn.mscale = mscale
      if (mscaleAllDim !== undefined) yarn.mscale_all_dim = mscaleAllDim
      return yarn
    }
    default:
      return unsupported(entry, entry.modelTypes[0] ?? '', `rope type "${kind}" (the forward knows default, linear, llama3 and yarn)`)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Building the descriptor.

const fmt = (shape: readonly number[]): string => `[${shape.join(', ')}]`

/** Tensors of a decoder layer that the forward legitimately does not load (quantization scales of FP8 sources,
 * rotary caches some checkpoints carry). */
const IGNORED_LAYER_TENSOR = /(\.rotary_emb\.inv_freq|_scale_inv|\.weight_scale|\.input_scale)$/

/**
 * Builds the model descriptor of a checkpoint from its inspect report, parsed config and header listing.
 * Every name it returns exists in the listing with the shape the forward expects.
 *
 * @throws MoeQuantError `E_LAYOUT_UNRECOGNISED` ("forward not supported for …") for families or features the
 *   descriptor cannot express yet, `E_CONFIG_INVALID` for config values transformers could not use,
 *   `E_LAYOUT_MISSING_TENSOR` / `E_LAYOUT_SHAPE` when the checkpoint disagrees with config.json.
 */
export function buildDescriptor(report: InspectReport, config: TextConfig, listing: HeaderListing): ModelDescriptor {
  const entry = report.architecture === 'registry' ? lookupArchitecture(config.modelType) : undefined
  if (!entry) {
    unsupported(undefined, config.modelType, `model_type "${config.modelType}" has no registry entry, so its forward is unknown (its experts were only recognised by structure)`)
  }
  const forward = entry.forward
  if (!forward) unsupported(entry, config.modelType, entry.forwardUnsupported ?? 'the registry entry declares no forward')

  const file = path.join(listing.dir, 'config.json')
  const raw = config.raw
  const values = new ConfigValues(raw, forward.configDefaults, file)
  const byName = new Map<string, TensorHeader>(listing.tensors.map((t) => [t.name, t]))
  const hidden = config.hiddenSize

  // Features of the family's forward that the descriptor cannot express: refuse rather than guess.
  const hiddenAct = values.value('hidden_act') ?? 'silu'
  if (forward.expertActivation === 'silu' && hiddenAct !== 'silu') {
    unsupported(entry, config.modelType, `hidden_act "${String(hiddenAct)}" (the forward implements silu)`)
  }
  if (forward.slidingWindow === 'when_set' && values.value('sliding_window') !== null && values.value('sliding_window') !== undefined) {
    unsupported(entry, config.modelType, `sliding-window attention (sliding_window ${JSON.stringify(values.value('sliding_window'))}) is not expressible in the descriptor yet`)
  }
  if (forward.slidingWindow === 'when_enabled' && values.value('use_sliding_window') === true) {
    unsupported(entry, config.modelType, 'sliding-window attention (use_sliding_window true) is not expressible in the descriptor yet')
  }
  if (Array.isArray(raw.layer_types) && raw.layer_types.some((t) => t !== 'full_attention')) {
    unsupported(entry, config.modelType, `layer_types ${JSON.stringify(raw.layer_types)}: only full attention is expressible in the descriptor yet`)
  }
  if (forward.clipQkvKey) {
    const clip = values.value(forward.clipQkvKey)
    if (clip !== null && clip !== undefined) {
      unsupported(entry, config.modelType, `${forward.clipQkvKey} ${JSON.stringify(clip)} (clamping q/k/v) is not expressible in the descriptor yet`)
    }
  }

  const tensor = (name: string, shape: readonly number[] | null, what: string): TensorHeader => {
    const found = byName.get(name)
    if (!found) {
      throw new MoeQuantError('E_LAYOUT_MISSING_TENSOR', `${name} (${what}) is missing from the checkpoint`, { tensor: name })
    }
    if (shape && fmt(found.shape) !== fmt(shape)) {
      throw new MoeQuantError(
        'E_LAYOUT_SHAPE',
        `${name} is ${fmt(found.shape)}; ${what} should be ${fmt(shape)} according to config.json`,
        { tensor: name, shape: found.shape, file: found.file, expected: fmt(shape) },
      )
    }
    return found
  }

  // Model-level tensors.
  const layersPrefix = findLayerPrefix(listing.tensors)
  const base = layersPrefix.replace(/(layers|blocks)\.$/, '')
  const tie = values.value('tie_word_embeddings') === true
  const lmHeadName = ['lm_head.weight', ...listing.tensors.map((t) => t.name).filter((n) => n.endsWith('.lm_head.weight')).sort((a, b) => a.length - b.length)].find((n) =>
    byName.has(n),
  )
  let embed = `${base}embed_tokens.weight`
  if (!byName.has(embed) && tie && lmHeadName) embed = lmHeadName // transformers ties whichever of the two exists
  const embedTensor = tensor(embed, null, 'the token embedding')
  const vocab = config.vocabSize ?? (embedTensor.shape[0] as number)
  tensor(embed, [vocab, hidden], 'the token embedding [vocab_size, hidden_size]')
  let lmHead: string
  if (lmHeadName) lmHead = lmHeadName
  else if (tie) lmHead = embed
  else {
    throw new MoeQuantError('E_LAYOUT_MISSING_TENSOR', 'lm_head.weight is missing and config.json does not tie the word embeddings (tie_word_embeddings)', {
      tensor: 'lm_head.weight',
    })
  }
  tensor(lmHead, [vocab, hidden], 'the output projection [vocab_size, hidden_size]')
  const finalNorm = `${base}norm.weight`
  tensor(finalNorm, [hidden], 'the final norm')

  // Attention hyper-parameters.
  const numHeads = values.integer('num_attention_heads')
  const kvValue = values.value('num_key_value_heads')
  const numKvHeads = kvValue === null || kvValue === undefined ? numHeads : values.integer('num_key_value_heads')
  const headDim = typeof raw.head_dim === 'number' ? values.integer('head_dim') : Math.floor(hidden / numHeads)
  const rmsEpsKey = ['rms_norm_eps', 'layer_norm_eps', 'layer_norm_epsilon'].find((k) => typeof raw[k] === 'number') ?? 'rms_norm_eps'
  const rmsNormEps = values.number(rmsEpsKey)
  // A negative epsilon can make the normalised variance negative, and its square root NaN.
  if (rmsNormEps < 0) values.invalid(rmsEpsKey, 'a number ≥ 0')
  const params = ropeParameters(values, raw)

  let mla: { qLora: number | null; kvLora: number; nope: number; rope: number; v: number } | undefined
  if (forward.attention === 'mla') {
    mla = {
      qLora: values.optionalInteger('q_lora_rank'),
      kvLora: values.integer('kv_lora_rank'),
      nope: values.integer('qk_nope_head_dim', 0),
      rope: values.integer('qk_rope_head_dim'),
      v: values.integer('v_head_dim'),
    }
    if (values.value('attention_bias') === true) {
      unsupported(entry, config.modelType, 'attention_bias true: MLA projection biases are not expressible in the descriptor yet')
    }
  }
  // DeepSeek's config replaces head_dim by qk_rope_head_dim, which is what its rope rotates.
  const rope = buildRope(entry, forward, values, params, mla ? mla.rope : headDim)

  let scaling: number
  switch (forward.attentionScale) {
    case 'inverse_sqrt_head_dim':
      scaling = headDim ** -0.5
      break
    case 'attention_multiplier':
      scaling = values.number('attention_multiplier')
      break
    case 'mla_yarn_mscale': {
      if (!mla) throw new MoeQuantError('E_INTERNAL', `${entry.family}: mla_yarn_mscale scaling without MLA attention`)
      scaling = (mla.nope + mla.rope) ** -0.5
      // modeling_deepseek_v3.yarn_apply_mscale: any scaled rope with a non-zero mscale_all_dim.
      if (params.rope_type !== 'default' && truthy(params.mscale_all_dim)) {
        const factor = ropeNumber(params, 'factor', true) as number
        const m = yarnMscale(factor, params.mscale_all_dim)
        scaling = scaling * m * m
      }
      break
    }
  }

  const multiplier = (key: string | undefined): number => (key ? values.number(key) : 1)
  const residualMultiplier = multiplier(forward.multipliers?.residual)
  const qkNormEnabled = forward.qkNormKey ? values.value(forward.qkNormKey) === true : undefined
  const activation: ExpertActivation = forward.expertActivation
  const moeByLayer = new Map<number, MoeLayer>(report.moeLayers.map((l) => [l.layer, l]))

  const layers: LayerDescriptor[] = []
  for (let index = 0; index < config.numLayers; index++) {
    const prefix = `${layersPrefix}${index}.`
    const used = new Set<string>()
    const ignored = new Set<string>()
    const use = (name: string, shape: readonly number[] | null, what: string): string => {
      tensor(name, shape, what)
      used.add(name)
      return name
    }
    const has = (name: string): boolean => byName.has(name)

    const inputNorm = use(`${prefix}input_layernorm.weight`, [hidden], 'the input norm [hidden_size]')
    const postNorm = use(`${prefix}post_attention_layernorm.weight`, [hidden], 'the post-attention norm [hidden_size]')

    // Attention.
    let attention: AttentionDescriptor
    const attn = `${prefix}self_attn`
    if (mla) {
      const qkHead = mla.nope + mla.rope
      for (const module of ['q_a_proj', 'q_proj', 'kv_a_proj_with_mqa', 'o_proj']) {
        if (has(`${attn}.${module}.bias`)) {
          unsupported(entry, config.modelType, `${attn}.${module}.bias: MLA projection biases are not expressible in the descriptor yet`)
        }
      }
      const descriptor: MlaDescriptor = {
        kv_a_proj: `${attn}.kv_a_proj_with_mqa`,
        kv_a_norm: `${attn}.kv_a_layernorm.weight`,
        kv_b_proj: `${attn}.kv_b_proj`,
        o_proj: `${attn}.o_proj`,
        num_heads: numHeads,
        kv_lora_rank: mla.kvLora,
        qk_nope_head_dim: mla.nope,
        qk_rope_head_dim: mla.rope,
        v_head_dim: mla.v,
        scaling,
      }
      if (mla.qLora === null) {
        if (has(`${attn}.q_a_proj.weight`)) {
          throw new MoeQuantError('E_CONFIG_INVALID', `${file}: q_lora_rank is null but the checkpoint holds ${attn}.q_a_proj.weight`, { file })
        }
        descriptor.q_proj = `${attn}.q_proj`
        use(`${attn}.q_proj.weight`, [numHeads * qkHead, hidden], 'q_proj [heads·qk_head_dim, hidden_size]')
      } else {
        descriptor.q_a_proj = `${attn}.q_a_proj`
        descriptor.q_a_norm = `${attn}.q_a_layernorm.weight`
        descriptor.q_b_proj = `${attn}.q_b_proj`
        use(`${attn}.q_a_proj.weight`, [mla.qLora, hidden], 'q_a_proj [q_lora_rank, hidden_size]')
        use(descriptor.q_a_norm, [mla.qLora], 'q_a_layernorm [q_lora_rank]')
        use(`${attn}.q_b_proj.weight`, [numHeads * qkHead, mla.qLora], 'q_b_proj [heads·qk_head_dim, q_lora_rank]')
      }
      use(`${attn}.kv_a_proj_with_mqa.weight`, [mla.kvLora + mla.rope, hidden], 'kv_a_proj_with_mqa [kv_lora_rank + qk_rope_head_dim, hidden_size]')
      use(descriptor.kv_a_norm, [mla.kvLora], 'kv_a_layernorm [kv_lora_rank]')
      use(`${attn}.kv_b_proj.weight`, [numHeads * (mla.nope + mla.v), mla.kvLora], 'kv_b_proj [heads·(qk_nope_head_dim + v_head_dim), kv_lora_rank]')
      use(`${attn}.o_proj.weight`, [hidden, numHeads * mla.v], 'o_proj [hidden_size, heads·v_head_dim]')
      attention = { kind: 'mla', ...descriptor }
    } else {
      const q = `${attn}.q_proj`
      const k = `${attn}.k_proj`
      const v = `${attn}.v_proj`
      const o = `${attn}.o_proj`
      use(`${q}.weight`, [numHeads * headDim, hidden], 'q_proj [heads·head_dim, hidden_size]')
      use(`${k}.weight`, [numKvHeads * headDim, hidden], 'k_proj [kv_heads·head_dim, hidden_size]')
      use(`${v}.weight`, [numKvHeads * headDim, hidden], 'v_proj [kv_heads·head_dim, hidden_size]')
      use(`${o}.weight`, [hidden, numHeads * headDim], 'o_proj [hidden_size, heads·head_dim]')
      const biases = [q, k, v].map((m) => has(`${m}.bias`))
      if (biases.some((b) => b !== biases[0])) {
        throw new MoeQuantError('E_LAYOUT_UNRECOGNISED', `${attn}: q/k/v biases must all be present or all absent (found q ${biases[0]}, k ${biases[1]}, v ${biases[2]})`)
      }
      const qkvBias = biases[0] === true
      if (qkvBias) {
        use(`${q}.bias`, [numHeads * headDim], 'q_proj bias')
        use(`${k}.bias`, [numKvHeads * headDim], 'k_proj bias')
        use(`${v}.bias`, [numKvHeads * headDim], 'v_proj bias')
      }
      const oBias = has(`${o}.bias`)
      if (oBias) use(`${o}.bias`, [hidden], 'o_proj bias')
      const gqa: GqaDescriptor = { q, k, v, o, qkv_bias: qkvBias, o_bias: oBias, num_heads: numHeads, num_kv_heads: numKvHeads, head_dim: headDim, scaling }
      const qNorm = `${attn}.q_norm.weight`
      const kNorm = `${attn}.k_norm.weight`
      const withNorms = qkNormEnabled ?? (has(qNorm) || has(kNorm))
      if (withNorms) {
        // Per head `[head_dim]` (Qwen3, GLM4) or over the whole projection (OLMoE); the shape tells them apart.
        const qShape = byName.get(qNorm)?.shape ?? []
        const perHead = qShape.length === 1 && qShape[0] === headDim
        use(qNorm, perHead ? [headDim] : [numHeads * headDim], perHead ? 'q_norm [head_dim]' : 'q_norm [heads·head_dim]')
        use(kNorm, perHead ? [headDim] : [numKvHeads * headDim], perHead ? 'k_norm [head_dim]' : 'k_norm [kv_heads·head_dim]')
        gqa.q_norm = qNorm
        gqa.k_norm = kNorm
      } else if (qkNormEnabled === false) {
        // transformers builds no q/k norm modules; tensors in the checkpoint are unused.
        ignored.add(qNorm).add(kNorm)
      }
      attention = { kind: 'gqa', ...gqa }
    }

    // Feed-forward.
    let mlp: MlpDescriptor
    const moe = moeByLayer.get(index)
    if (moe) {
      mlp = { kind: 'moe', ...moeDescriptor(entry, values, moe, activation, byName, use, config.modelType) }
      for (const name of expertTensorNames(moe)) used.add(name)
    } else {
      const block = ['mlp', 'feed_forward'].find((b) => has(`${prefix}${b}.gate_proj.weight`))
      if (!block) {
        throw new MoeQuantError('E_LAYOUT_MISSING_TENSOR', `layer ${index} has neither routed experts nor a dense MLP (${prefix}mlp.gate_proj.weight)`)
      }
      mlp = { kind: 'dense', ...denseMlp(`${prefix}${block}`, hidden, byName, use) }
    }

    // Any other tensor of the layer would be silently left out of the forward: refuse instead.
    for (const t of listing.tensors) {
      if (!t.name.startsWith(prefix) || used.has(t.name) || ignored.has(t.name) || IGNORED_LAYER_TENSOR.test(t.name)) continue
      unsupported(entry, config.modelType, `${t.name} ${fmt(t.shape)} belongs to layer ${index} but the descriptor's forward would not use it`)
    }

    layers.push({ index, input_norm: inputNorm, post_attention_norm: postNorm, residual_multiplier: residualMultiplier, attention, mlp })
  }

  return {
    hidden_size: hidden,
    vocab_size: vocab,
    rms_norm_eps: rmsNormEps,
    embed,
    embedding_multiplier: multiplier(forward.multipliers?.embedding),
    final_norm: finalNorm,
    lm_head: lmHead,
    logits_scaling: multiplier(forward.multipliers?.logits),
    rope,
    layers,
  }
}

type Use = (name: string, shape: readonly number[] | null, what: string) => string

/** A gated MLP's module names, checking `gate/up [I, H]`, `down [H, I]`. */
function denseMlp(module: string, hidden: number, byName: Map<string, TensorHeader>, use: Use): DenseMlpDescriptor {
  const gate = byName.get(`${module}.gate_proj.weight`)
  const intermediate = gate?.shape.length === 2 ? (gate.shape[0] as number) : 0
  use(`${module}.gate_proj.weight`, [intermediate, hidden], 'gate_proj [intermediate, hidden_size]')
  use(`${module}.up_proj.weight`, [intermediate, hidden], 'up_proj [intermediate, hidden_size]')
  use(`${module}.down_proj.weight`, [hidden, intermediate], 'down_proj [hidden_size, intermediate]')
  return { gate: `${module}.gate_proj`, up: `${module}.up_proj`, down: `${module}.down_proj` }
}

function moeDescriptor(
  entry: ArchitectureEntry,
  values: ConfigValues,
  layer: MoeLayer,
  activation: ExpertActivation,
  byName: Map<string, TensorHeader>,
  use: Use,
  modelType: string,
): MoeDescriptor {
  const t = layer.tensors
  const experts = layer.experts
  const hidden = layer.hidden
  use(t.router, [experts, hidden], 'the router weight [experts, hidden_size]')
  const router: RouterDescriptor = {
    kind: layer.router,
    weight: t.router,
    norm_topk_prob: false,
    n_group: 1,
    topk_group: 1,
    routed_scaling_factor: 1,
  }
  if (t.routerBias) router.bias = use(t.routerBias, [experts], 'the router bias [experts]')
  if (t.correctionBias) router.correction_bias = use(t.correctionBias, [experts], 'e_score_correction_bias [experts]')
  switch (layer.router) {
    case 'softmax_topk':
      router.norm_topk_prob = values.boolean('norm_topk_prob')
      break
    case 'softmax_topk_norm':
      router.norm_topk_prob = true
      break
    case 'sigmoid_group_topk': {
      router.norm_topk_prob = values.boolean('norm_topk_prob')
      router.n_group = values.integer('n_group')
      router.topk_group = values.integer('topk_group')
      router.routed_scaling_factor = values.number('routed_scaling_factor')
      if (experts % router.n_group !== 0 || router.topk_group > router.n_group) {
        throw new MoeQuantError(
          'E_CONFIG_INVALID',
          `config.json: ${experts} experts cannot be split into n_group ${router.n_group} groups with topk_group ${router.topk_group}`,
        )
      }
      break
    }
    case 'topk_softmax':
    case 'topk_sigmoid':
      break
  }

  const descriptor: MoeDescriptor = {
    block: layer.block,
    layout: layer.layout,
    experts,
    top_k: layer.topK,
    hidden,
    intermediate: layer.intermediate,
    down: t.down,
    activation,
    router,
  }
  if (t.gate) descriptor.gate = t.gate
  if (t.up) descriptor.up = t.up
  if (t.gateUp) descriptor.gate_up = t.gateUp
  if (t.gateUpBias) descriptor.gate_up_bias = t.gateUpBias
  if (t.downBias) descriptor.down_bias = t.downBias

  // Shared experts: what the registry declares must be what the checkpoint holds.
  const declared = entry.sharedExperts
  const found = layer.sharedExperts
  if (!!declared !== !!found || (declared && found && !!declared.gate !== !!found.gate)) {
    const describe = (s: { gate?: string } | null | undefined): string => (s ? (s.gate ? 'gated shared experts' : 'ungated shared experts') : 'no shared experts')
    unsupported(entry, modelType, `${layer.block}: the family has ${describe(declared)} but the checkpoint holds ${describe(found)}`)
  }
  if (found) {
    const shared: SharedExpertDescriptor = { mlp: denseMlp(found.module, hidden, byName, use) }
    if (found.gate) shared.gate = use(found.gate, [1, hidden], 'the shared-expert gate [1, hidden_size]')
    descriptor.shared = shared
  }
  return descriptor
}

/**
 * Reads a checkpoint's headers and returns the descriptor the native forward is given.
 *
 * @param dir A Hugging Face model directory.
 * @throws MoeQuantError as inspectModel does, plus `E_LAYOUT_UNRECOGNISED` ("forward not supported for …")
 *   for families whose forward the descriptor cannot express (GPT-OSS, Llama 4 for now).
 * @example
 *   const descriptor = await describeModel('./Qwen3-30B-A3B')
 *   console.log(descriptor.layers[0].mlp.kind, descriptor.rope.theta)
 */
export async function describeModel(dir: string): Promise<ModelDescriptor> {
  if (typeof dir !== 'string' || dir.length === 0) {
    throw new MoeQuantError('E_OPTION_INVALID', `describeModel(dir): expected a directory path string, got ${JSON.stringify(dir)}`)
  }
  const listing = await readListing(dir)
  // A ModelOpt export is read dequantized (evaluateModel compares one with its original).
  refuseQuantizedSource(listing, { modelOpt: false })
  const report = reportFromListing(listing)
  const config = parseConfig(listing.config, path.join(listing.dir, 'config.json'))
  return buildDescriptor(report, config, listing)
}
